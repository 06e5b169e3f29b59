"""The OpenAPI 3.0 document, generated from the live model schemas in the registry."""

from __future__ import annotations

import re
from typing import Any

import batcomputer
from api.openapi_rollout import rollout_paths
from api.openapi_v2 import v2_paths
from batcomputer.errors import BatcomputerError
from batcomputer.jobqueue.keyspace import DEFAULT_ALIAS, STATES
from batcomputer.models.registry import MAX_REASON_CHARS, MAX_VERSION, NAME, Registry
from batcomputer.models.schema import CATEGORICAL, PROBLEM_CODES, Field, Schema

PROBLEM = {"$ref": "#/components/schemas/Problem"}
NAME_SCHEMA = {"type": "string", "pattern": NAME.pattern}  # model and alias names (anything else is a 400)
REASON_SCHEMA = {"type": "string", "maxLength": MAX_REASON_CHARS}
MAX_OFFSET = 10**9


def component_name(model: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[-_]", model))


def field_schema(field: Field) -> dict[str, Any]:
    if field.kind == CATEGORICAL:
        schema: dict[str, Any] = {"type": "string", "enum": list(field.categories or ())}
    else:
        schema = {"type": "integer" if field.integer else "number"}
        if field.minimum is not None:
            schema["minimum"] = field.minimum
        if field.maximum is not None:
            schema["maximum"] = field.maximum
    if field.nullable:
        schema["nullable"] = True
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
    schema["description"] = field.description + ("" if field.required else " (optional: imputed when absent)")
    return schema


def record_schema(schema: Schema) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False,
            "properties": {f.name: field_schema(f) for f in schema.fields},
            "required": [f.name for f in schema.fields if f.required]}


def example_record(schema: Schema) -> dict[str, Any]:
    """A valid record: the first category, or the middle of the range, of every required field."""
    example: dict[str, Any] = {}
    for field in schema.fields:
        if not field.required:
            continue
        if field.kind == CATEGORICAL:
            example[field.name] = (field.categories or ("",))[0]
        else:
            low, high = field.minimum or 0.0, field.maximum if field.maximum is not None else 100.0
            middle = (low + high) / 2
            example[field.name] = round(middle) if field.integer else middle
    return example


def result_schema(schema: Schema) -> dict[str, Any]:
    properties: dict[str, Any] = {name: {"type": "number", "minimum": 0, "maximum": 1,
                                         "description": f"probability of {label}"}
                                  for name, label in zip(schema.outputs, schema.labels, strict=True)}
    properties["label"] = {"type": "string", "enum": list(schema.labels), "description": "the most likely class"}
    properties["warnings"] = {"type": "array", "description": "What the training data never or rarely held in "
                              "this record (empty when all is familiar); /api/predict adds it only with "
                              "?warnings=true", "items": {"type": "object", "required": ["field", "code", "message"],
                                                          "properties": {"field": {"type": "string"},
                                                                         "code": {"type": "string", "enum": [
                                                                             "unseen", "rare",
                                                                             "outside_training_range"]},
                                                                         "message": {"type": "string"}}}}
    per_output = {"type": "object", "properties": {name: {"type": "number"} for name in schema.outputs}}
    properties["explanation"] = {
        "type": "object", "description": "With ?explain=true: the baseline (mean prediction over training rows) and "
        "each field's contribution to each output; baseline plus contributions equals the probability",
        "properties": {"baseline": per_output, "contributions": {"type": "object", "properties": {
            name: {"type": "object", "properties": {f: {"type": "number"} for f in schema.field_names}}
            for name in schema.outputs}}}}
    return {"type": "object", "properties": properties, "required": [*schema.outputs, "label"]}


def errors(*statuses: int) -> dict[str, Any]:
    reasons = {400: "Malformed request (bad JSON, bad parameter)", 401: "No API key, or an unknown or revoked one "
               "(production profile)", 403: "The key lacks the route's scope, or a page of another origin asked to "
               "change something", 404: "Unknown model, version, alias or job",
               409: "Conflict (Idempotency-Key reused with another body, alias race)",
               413: "Body or record count over the limit", 429: "Backlog past its limit: retry after the "
               "Retry-After header", 415: "A body of another media type than the route "
               "takes: `accepted` lists them", 422: "Invalid record (every field problem listed), or a storage URI "
               "or callback URL refused",
               502: "The worker could not score the record", 504: "Scoring the record ran past its time limit "
               "(code timeout)", 503: "Redis unreachable or no worker in time; "
               "retry after the Retry-After header"}
    return {str(s): {"description": reasons[s], "content": {"application/problem+json": {"schema": PROBLEM}}}
            for s in statuses}


def json_body(schema: dict[str, Any], examples: dict[str, Any] | None = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if examples:
        media["examples"] = {name: {"value": value} for name, value in examples.items()}
    return {"required": True, "content": {"application/json": media}}


def ok(description: str, schema: dict[str, Any], status: str = "200") -> dict[str, Any]:
    return {status: {"description": description, "content": {"application/json": {"schema": schema}}}}


VERSION_PARAMS = [
    {"name": "version", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_VERSION},
     "description": "Pin this version"},
    {"name": "alias", "in": "query", "required": False, "schema": NAME_SCHEMA,
     "description": f"Pin the version this alias points at now (default: {DEFAULT_ALIAS})"},
]
MODEL_PARAM = {"name": "model", "in": "path", "required": True, "schema": NAME_SCHEMA}
SEED_PARAMS = [{"name": "model", "in": "query", "required": False, "schema": NAME_SCHEMA,
                "description": "The model (default: BATCOMPUTER_DEFAULT_MODEL)"}, *VERSION_PARAMS]
JOB_PARAM = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
WAIT_PARAM = {"name": "wait", "in": "query", "required": False,
              "schema": {"type": "number", "minimum": 0, "maximum": 30},
              "description": "Seconds to wait for the job to finish before answering"}
EXPLAIN_PARAM = {"name": "explain", "in": "query", "required": False,
                 "schema": {"type": "string", "enum": ["true", "false"]},
                 "description": "true: each result carries `explanation`: the `baseline` (mean prediction over the "
                                "training rows) and each field's Shapley `contributions` to each output, which add "
                                "up to the result's probabilities; 422 not_explainable for a version without them"}
KEY_PARAM = {"name": "key", "in": "query", "required": False, "schema": {"type": "string", "minLength": 1,
                                                                        "maxLength": 200},
             "description": "Your own key of the one record sent, to send its outcome by later "
                            "(POST /api/models/{model}/outcomes with {\"key\", \"label\"})"}
KEYS_SCHEMA = {"type": "array", "items": {"type": "string", "nullable": True, "minLength": 1, "maxLength": 200},
               "description": "Your own key of each record (null for none), to send its outcome by later"}
TIMEOUT_PARAM = {"name": "timeout", "in": "query", "required": False,
                 "schema": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
                 "description": "Seconds the scoring of these records may take, at most "
                                "BATCOMPUTER_TIMEOUT_RECORDS_SECONDS (default: the model's limit, else that setting); "
                                "past it the job fails with code timeout"}


def records_body(models: list[str]) -> dict[str, Any]:
    """One record of one of ``models``, or ``{"records": [...]}``."""
    refs = [{"$ref": f"#/components/schemas/{component_name(m)}Record"} for m in models]
    record: dict[str, Any] = refs[0] if len(refs) == 1 else {"oneOf": refs}
    return {"oneOf": [record, {"type": "object", "required": ["records"], "additionalProperties": False,
                               "properties": {"records": {"type": "array", "minItems": 1, "items": record},
                                              "keys": KEYS_SCHEMA}}]}


def jobs_operation(model: str | None, schemas: dict[str, Schema]) -> dict[str, Any]:
    chosen = {model: schemas[model]} if model else schemas
    body = records_body(list(chosen))
    examples = {}
    for name, schema in chosen.items():
        examples[f"{name}-record"] = example_record(schema)
        examples[f"{name}-records"] = {"records": [example_record(schema)] * 2}
    return {
        "summary": f"Submit records to {model or 'a model'}",
        "description": "Validates every record against the model's schema, pins the version now, queues a job.",
        "tags": ["jobs"],
        "parameters": ([] if model else [MODEL_PARAM]) + [
            *VERSION_PARAMS, WAIT_PARAM, TIMEOUT_PARAM, EXPLAIN_PARAM, KEY_PARAM, {
            "name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"},
            "description": "The same key and body return the same job"}],
        "requestBody": json_body(body, examples),
        "responses": {**ok("The job finished within ?wait", {"$ref": "#/components/schemas/Job"}),
                      **ok("Accepted: poll the Location", {"$ref": "#/components/schemas/Job"}, "202"),
                      **errors(400, 404, 409, 413, 415, 422, 503)},
    }


PARQUET = "application/vnd.apache.parquet"


def batch_operation() -> dict[str, Any]:
    options = {"output_uri": {"type": "string", "description": "Where to write the output, inside the storage "
                              "roots (default: a file Batcomputer names and keeps BATCOMPUTER_BATCH_TTL_SECONDS)"},
               "callback_url": {"type": "string", "description": "POSTed the job when it ends, signed (see README)"},
               "columns": {"type": "string", "description": "Input columns the output keeps, comma-separated"},
               "key_column": {"type": "string", "description": "The input column holding your key of each row, "
                              "kept with its captured record, to send its outcome by"},
               "overwrite": {"type": "string", "enum": ["true", "false"], "description": "true: replace an "
                             "output_uri that exists (with API keys, one no other key's batch writes)"},
               "explain": {"type": "string", "enum": ["true", "false"], "description": "true: one column "
                           "explain.<output>.<field> per output and field, each field's contribution to the output's "
                           "probability (empty for rejected rows)"},
               "timeout": {"type": "number", "minimum": 0, "exclusiveMinimum": True,
                           "description": "Seconds scoring one chunk may "
                           "take, at most BATCOMPUTER_TIMEOUT_CHUNK_SECONDS (default: the model's limit, else that "
                           "setting, less for small chunks); rows that hang alone are rejected with code timeout"}}
    query = [{"name": name, "in": "query", "required": False, "schema": schema} for name, schema in options.items()]
    uris = {"type": "object", "required": ["input_uri"], "additionalProperties": False,
            "properties": {"input_uri": {"type": "string", "description": "A Parquet file inside the storage roots"},
                           **options}}
    upload = {"type": "object", "required": ["file"],
              "properties": {"file": {"type": "string", "format": "binary"}, **options}}
    return {
        "summary": "Score a Parquet file",
        "description": "The file as the body (or a multipart upload), or URIs in the storage roots. A bulk worker "
                       "checks its columns, splits it into chunks that every bulk worker scores, and merges the "
                       "parts into one output. Rows that fail validation are kept with their error, not dropped.",
        "tags": ["batches"],
        "parameters": [MODEL_PARAM, *VERSION_PARAMS, *query],
        "requestBody": {"required": True, "content": {
            PARQUET: {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {"schema": upload},
            "application/json": {"schema": uris, "example": {"input_uri": "var/batches/in/crimes.parquet"}}}},
        "responses": {**ok("Accepted: poll the Location for progress", {"$ref": "#/components/schemas/Job"}, "202"),
                      **errors(400, 403, 404, 409, 413, 415, 422)},
    }


def predict_operation(schemas: dict[str, Schema], default: str) -> dict[str, Any]:
    refs = [{"$ref": f"#/components/schemas/{component_name(m)}Record"} for m in schemas]
    outputs = [{"$ref": f"#/components/schemas/{component_name(m)}Result"} for m in schemas]
    examples = {name: example_record(schema) for name, schema in schemas.items() if name == default}
    return {
        "summary": "Score one record synchronously (the seed's API)",
        "description": f"Scores one record with the default model ({default}) or ?model=, through the workers.",
        "tags": ["seed"],
        "parameters": [{"name": "model", "in": "query", "required": False, "schema": {"type": "string",
                        "enum": list(schemas)}}, *VERSION_PARAMS, TIMEOUT_PARAM, EXPLAIN_PARAM, KEY_PARAM],
        "requestBody": json_body(refs[0] if len(refs) == 1 else {"oneOf": refs}, examples),
        "responses": {**ok("The named outputs", outputs[0] if len(outputs) == 1 else {"oneOf": outputs}),
                      **errors(400, 404, 413, 415, 502, 503, 504)},
    }


def build_document(registry: Registry, default_model: str, default_alias: str) -> dict[str, Any]:
    schemas: dict[str, Schema] = {}
    for model in registry.models():
        try:
            schemas[model] = registry.bundle(model, registry.resolve(model, None, default_alias)).schema
        except BatcomputerError:  # no production alias yet: document the newest version
            schemas[model] = registry.bundle(model, registry.versions(model)[-1]).schema
    components: dict[str, Any] = {
        "Problem": {"type": "object", "description": "RFC 9457 problem details", "required": ["type", "title",
                    "status", "detail", "code"], "properties": {
                        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                        "detail": {"type": "string"}, "code": {"type": "string"}, "instance": {"type": "string"},
                        "problems": {"type": "array", "items": {"$ref": "#/components/schemas/FieldProblem"}}}},
        "FieldProblem": {"type": "object", "required": ["field", "code", "message"], "properties": {
            "record": {"type": "integer"}, "field": {"type": "string", "nullable": True},
            "code": {"type": "string", "enum": list(PROBLEM_CODES)},
            "message": {"type": "string"}, "allowed": {"type": "array"}}},
        "Job": {"type": "object", "required": ["id", "state", "model", "version", "bundle_sha256", "created"],
                "properties": {
                    "id": {"type": "string"}, "state": {"type": "string", "enum": list(STATES)},
                    "model": {"type": "string"}, "version": {"type": "integer"}, "alias": {"type": "string"},
                    "bundle_sha256": {"type": "string"}, "count": {"type": "integer"},
                    "queue": {"type": "string"}, "attempts": {"type": "integer"},
                    "timeout": {"type": "number", "description": "The time limit the request asked for, in seconds "
                                "(absent: the model's, or the setting's)"},
                    "replays": {"type": "integer", "description": "How often an operator replayed it once dead"},
                    "created": {"type": "string"}, "started": {"type": "string"}, "finished": {"type": "string"},
                    "results": {"type": "array", "items": {"type": "object"}},
                    "error": {"type": "object", "description": "Why the job failed: code (validation, "
                              "scoring_error, timeout with its limit_seconds, dead, ...) and detail"},
                    "kind": {"type": "string", "enum": ["batch"], "description": "Absent for record jobs"},
                    "phase": {"type": "string", "enum": ["score", "merge"]},
                    "input": {"type": "string"}, "output": {"type": "string"}, "callback_url": {"type": "string"},
                    "rows_total": {"type": "integer", "nullable": True,
                                   "description": "Rows of the file; null until a worker has planned it"},
                    "rows_done": {"type": "integer"},
                    "rows_failed": {"type": "integer", "description": "Rows that failed validation: their "
                                    "error_code and error columns say why"},
                    "chunks_total": {"type": "integer", "nullable": True,
                                     "description": "Chunks of the file; null until a worker has planned it"},
                    "chunks_done": {"type": "integer"},
                    "rows_per_second": {"type": "number", "nullable": True},
                    "eta_seconds": {"type": "number", "nullable": True},
                    "webhook": {"type": "object", "description": "The callback's delivery: state (delivered, "
                                "retrying, undeliverable), attempts, status, error"}}},
        "AliasMove": {"type": "object", "properties": {"move": {"type": "object"}, "aliases": {"type": "object"}}},
    }
    for model, schema in schemas.items():
        components[f"{component_name(model)}Record"] = record_schema(schema)
        components[f"{component_name(model)}Result"] = result_schema(schema)
    any_object = {"type": "object"}
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "Liveness", "tags": ["health"], "responses": ok("Alive", any_object)}},
        "/readyz": {"get": {"summary": "Readiness: Redis and registry reachable; workers per queue",
                            "tags": ["health"], "responses": {**ok("Ready", any_object), **errors(503)}}},
        "/api/models": {"get": {"summary": "Models, versions, aliases, headline metrics", "tags": ["models"],
                                "responses": {**ok("Models", any_object), **errors(503)}}},
        "/api/models/{model}": {"get": {"summary": "A model: versions, aliases, schema, metrics", "tags": ["models"],
                                        "parameters": [MODEL_PARAM],
                                        "responses": {**ok("The model", any_object), **errors(400, 404)}}},
        "/api/models/{model}/jobs": {"post": jobs_operation(None, schemas)},
        "/api/models/{model}/batches": {"post": batch_operation()},
        "/api/models/{model}/stream": {"post": {
            "summary": "Append records to the model's input stream (scored by the stream consumers)",
            "tags": ["streams"], "parameters": [MODEL_PARAM],
            "requestBody": json_body(records_body(list(schemas))),
            "responses": {**ok("Appended: the entry ids", {"type": "object", "properties": {
                "model": {"type": "string"}, "stream": {"type": "string"},
                "ids": {"type": "array", "items": {"type": "string"}}}}, "202"),
                **errors(400, 404, 413, 415, 422, 429)}}},
        "/api/models/{model}/retrain": {"post": {
            "summary": "Retrain a model now: starts the retrain flow on the Prefect server", "tags": ["models"],
            "parameters": [MODEL_PARAM],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"policy": {"type": "string", "enum": ["auto", "always", "never"],
                                                            "default": "auto"}}}}}},
            "responses": {**ok("Started: the Prefect flow run", {"type": "object", "properties": {
                "flow_run_id": {"type": "string"}, "flow_run_name": {"type": "string"},
                "deployment": {"type": "string"}, "model": {"type": "string"}, "policy": {"type": "string"}}}, "202"),
                **errors(400, 404, 415, 503)}}},
        "/api/jobs/{job_id}/output": {"get": {
            "summary": "Download a finished batch's output (Parquet)", "tags": ["batches"],
            "parameters": [JOB_PARAM],
            "responses": {"200": {"description": "The output file: the input's columns (or ?columns=), one "
                                  "column per named output, label, error_code, error; rows in input order",
                                  "content": {PARQUET: {"schema": {"type": "string", "format": "binary"}}}},
                          **errors(404, 409)}}},
        "/api/jobs": {"get": {
            "summary": "Recent jobs, newest first", "tags": ["jobs"],
            "parameters": [{"name": n, "in": "query", "required": False, "schema": s} for n, s in (
                ("state", {"type": "string", "enum": list(STATES)}), ("model", {"type": "string"}),
                ("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
                ("offset", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}))],
            "responses": {**ok("A page of jobs", any_object), **errors(400, 503)}}},
        "/api/jobs/{job_id}": {
            "get": {"summary": "A job, with its results when finished", "tags": ["jobs"],
                    "parameters": [JOB_PARAM, WAIT_PARAM],
                    "responses": {**ok("The job", {"$ref": "#/components/schemas/Job"}), **errors(400, 404, 503)}},
            "delete": {"summary": "Cancel a queued job, or a batch that is queued or running (its outstanding "
                                  "chunks stop and its partial output is deleted)", "tags": ["jobs"],
                       "parameters": [JOB_PARAM],
                       "responses": {**ok("Cancelled", {"$ref": "#/components/schemas/Job"}),
                                     **errors(404, 409)}}},
        "/api/dead": {"get": {
            "summary": "Dead jobs (their worker was lost on every delivery), newest first; admin", "tags": ["jobs"],
            "parameters": [{"name": n, "in": "query", "required": False, "schema": s} for n, s in (
                ("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
                ("offset", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}))],
            "responses": {**ok("A page of dead jobs", any_object), **errors(400, 401, 403)}}},
        "/api/jobs/{job_id}/replay": {"post": {
            "summary": "Send a dead job again with its records and pinned version as accepted; admin",
            "tags": ["jobs"], "parameters": [JOB_PARAM],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {**ok("Queued again", {"$ref": "#/components/schemas/Job"}, "202"),
                          **errors(401, 403, 404, 409, 415)}}},
        "/api/predict/params": {"get": {
            "summary": "Each field: its categories, or 0 for a numeric field (the seed's API)", "tags": ["seed"],
            "parameters": SEED_PARAMS, "responses": {**ok("Fields", any_object), **errors(400, 404)}}},
        "/api/info": {"get": {"summary": "Status and the default model's metadata (the seed's API)", "tags": ["seed"],
                              "parameters": SEED_PARAMS, "responses": {**ok("Alive", any_object), **errors(400, 404)}}},
        "/openapi.json": {"get": {"summary": "This document", "tags": ["docs"],
                                  "responses": ok("OpenAPI", any_object)}},
        "/swagger.json": {"get": {"summary": "This document (the seed's address)", "tags": ["docs"],
                                  "responses": ok("OpenAPI", any_object)}},
        "/api/docs": {"get": {"summary": "Interactive documentation", "tags": ["docs"],
                              "responses": {"200": {"description": "HTML page"}}}},
        "/api/docs/assets/{filename}": {"get": {
            "summary": "Documentation page assets, served locally", "tags": ["docs"],
            "parameters": [{"name": "filename", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "A file"}, **errors(404)}}},
    }
    paths.update({
        "/metrics": {"get": {
            "summary": "Prometheus metrics of the whole cluster (jobs, latencies, queues, streams, versions)",
            "tags": ["health"], "responses": {"200": {"description": "Prometheus text format",
                                                       "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/api/models/{model}/monitoring": {"get": {
            "summary": "Drift of the model's captured traffic: PSI per field, warning rates, label mix, state",
            "tags": ["models"], "parameters": [MODEL_PARAM],
            "responses": {**ok("The monitor's latest look", {"type": "object", "properties": {
                "model": {"type": "string"}, "state": {"type": "string", "enum": ["ok", "warn", "alert"]},
                "alerts": {"type": "array", "items": {"type": "object"}},
                "windows": {"type": "object", "description": "Per window (hour, day) and version: records, PSI "
                            "per field, warning rates, labels, holdout_labels and quality (live log_loss, "
                            "accuracy, roc_auc, brier and calibration beside the holdout's)"},
                "history": {"type": "array", "description": "The latest looks in brief, oldest first: at, state "
                            "and per version records, PSI per field and live log_loss", "items": {
                                "type": "object", "properties": {"at": {"type": "string"}, "state": {"type": "string"},
                                                                 "versions": {"type": "object"}}}}}}),
                **errors(404)}}},
        "/api/models/{model}/outcomes": {"post": {
            "summary": "What really happened to scored records (joined with captured predictions: live quality)",
            "tags": ["models"], "parameters": [MODEL_PARAM],
            "requestBody": json_body({"type": "object", "required": ["outcomes"], "properties": {
                "outcomes": {"type": "array", "maxItems": 10_000, "items": {
                    "type": "object", "required": ["label"], "properties": {
                        "job": {"type": "string"}, "index": {"type": "integer", "minimum": 0},
                        "key": {"type": "string", "description": "instead of job and index: your key of the "
                                "record (keys, ?key= or ?key_column= when it was sent)"},
                        "label": {"type": "string"}}}}}}),
            "responses": {**ok("Kept", {"type": "object", "properties": {"kept": {"type": "integer"}}}),
                          **errors(400, 404, 415, 422)}}},
        "/api/models/{model}/retrains": {"get": {
            "summary": "The model's latest retrain runs on the Prefect server, with their decisions",
            "tags": ["models"], "parameters": [MODEL_PARAM],
            "responses": {**ok("Runs, newest first", {"type": "object", "properties": {
                "model": {"type": "string"}, "runs": {"type": "array", "items": {"type": "object"}}}}),
                **errors(404, 503)}}},
        "/": {"get": {"summary": "The web client", "tags": ["web"],
                      "responses": {"200": {"description": "HTML page"}}}},
        "/web/{filename}": {"get": {
            "summary": "The web client's assets", "tags": ["web"],
            "parameters": [{"name": "filename", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "A file"}, **errors(404)}}},
        "/web/fonts/{package}/{filename}": {"get": {
            "summary": "The web client's fonts, from their npm packages", "tags": ["web"],
            "parameters": [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                           for n in ("package", "filename")],
            "responses": {"200": {"description": "A font file"}, **errors(404)}}},
    })
    paths.update(rollout_paths(ok, errors, json_body, MODEL_PARAM, NAME_SCHEMA, REASON_SCHEMA))
    paths.update(v2_paths(schemas, example_record, ok, errors))
    if schemas:
        paths["/api/predict"] = {"post": predict_operation(schemas, default_model)}
    for model in schemas:
        paths[f"/api/models/{model}/jobs"] = {"post": jobs_operation(model, schemas)}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Batcomputer", "version": batcomputer.__version__,
                 "description": "Message-driven scoring of scikit-learn models: submit named-field records, "
                                "poll jobs, or call the seed's synchronous /api/predict."},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {"apiKey": {
            "type": "http", "scheme": "bearer", "description": "An API key (`batcomputer keys create`); needed in "
            "the production profile, where `score` keys submit and read their own jobs and `admin` keys also move "
            "aliases and start retraining. The local profile needs none."}}},
        "security": [{"apiKey": []}, {}],
    }
