"""The Open Inference Protocol's routes in the OpenAPI document: health, metadata, readiness and infer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from api.tensors import datatype
from batcomputer.models.schema import Schema

DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
             "FP64", "BYTES"]
TENSOR = {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
    "name": {"type": "string", "description": "A field's name (inputs) or an output's name"},
    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1, "maxItems": 2,
              "description": "[n] or [n, 1]: one value per record"},
    "datatype": {"type": "string", "enum": DATATYPES},
    "parameters": {"type": "object"},
    "data": {"type": "array", "items": {}, "description": "The values, flat or one row per record"}}}
INFER_REQUEST = {"type": "object", "required": ["inputs"], "properties": {
    "id": {"type": "string", "maxLength": 200}, "parameters": {"type": "object"},
    "inputs": {"type": "array", "minItems": 1, "items": TENSOR},
    "outputs": {"type": "array", "items": {"type": "object", "required": ["name"],
                                           "properties": {"name": {"type": "string"}}}}}}
INFER_RESPONSE = {"type": "object", "required": ["model_name", "model_version", "outputs"], "properties": {
    "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
    "parameters": {"type": "object", "description": "job (its id), sha256, warnings (a list per record)"},
    "outputs": {"type": "array", "items": TENSOR}}}
METADATA = {"type": "object", "required": ["name", "platform", "inputs", "outputs"], "properties": {
    "name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
    "platform": {"type": "string"}, "parameters": {"type": "object"},
    "inputs": {"type": "array", "items": {"type": "object"}},
    "outputs": {"type": "array", "items": {"type": "object"}}}}
ANY = {"type": "object"}


def example_inputs(schema: Schema, record: dict[str, Any]) -> dict[str, Any]:
    """One record as an infer request: a tensor per field it gives."""
    inputs = []
    for field in schema.fields:
        if field.name in record:
            inputs.append({"name": field.name, "shape": [1], "datatype": datatype(field), "data": [record[field.name]]})
    return {"inputs": inputs}


def v2_paths(schemas: dict[str, Schema], example: Callable[[Schema], dict[str, Any]],
             ok: Callable[[str, dict[str, Any]], dict[str, Any]],
             problems: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    def errors(*statuses: int) -> dict[str, Any]:  # the project's problem details, as the protocol's JSON errors
        found = problems(*statuses)
        for response in found.values():
            response["content"] = {"application/json": response["content"]["application/problem+json"]}
            response["description"] += " (with the protocol's `error`: the detail)"
        return found

    model = {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
    version = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"},
               "description": "A version number (without it: the production alias, pinned when accepted)"}
    examples = {f"{name}-record": {"value": example_inputs(schema, example(schema))}
                for name, schema in schemas.items()}
    media: dict[str, Any] = {"schema": INFER_REQUEST}
    if examples:
        media["examples"] = examples
    infer = {"summary": "Score records sent as one tensor per field (the Open Inference Protocol)",
             "tags": ["open inference protocol"],
             "requestBody": {"required": True, "content": {"application/json": media}},
             "responses": {**ok("One tensor per output, then label; warnings in parameters", INFER_RESPONSE),
                           **errors(400, 404, 413, 415, 422, 429, 502, 503)}}
    meta = {"summary": "A model's inputs and outputs", "tags": ["open inference protocol"],
            "responses": {**ok("Model metadata", METADATA), **errors(400, 404)}}
    ready = {"summary": "Whether the model (version) resolves and its bundle verifies",
             "tags": ["open inference protocol"], "responses": {**ok("Ready", ANY), **errors(400, 404)}}
    health = {"tags": ["open inference protocol"], "responses": {**ok("Yes", ANY), **errors(503)}}
    return {
        "/v2": {"get": {"summary": "Server metadata", "tags": ["open inference protocol"],
                        "responses": ok("Name, version, extensions", ANY)}},
        "/v2/health/live": {"get": {"summary": "Live", **health}},
        "/v2/health/ready": {"get": {"summary": "Ready: Redis answers and a model is served", **health}},
        "/v2/models/{model}": {"get": {**meta, "parameters": [model]}},
        "/v2/models/{model}/versions/{version}": {"get": {**meta, "parameters": [model, version]}},
        "/v2/models/{model}/ready": {"get": {**ready, "parameters": [model]}},
        "/v2/models/{model}/versions/{version}/ready": {"get": {**ready, "parameters": [model, version]}},
        "/v2/models/{model}/infer": {"post": {**infer, "parameters": [model]}},
        "/v2/models/{model}/versions/{version}/infer": {"post": {
            **infer, "parameters": [model, version],
            "requestBody": {"required": True, "content": {"application/json": {"schema": INFER_REQUEST}}}}},
    }
