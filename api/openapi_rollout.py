"""The OpenAPI paths that move traffic between a model's versions: aliases, pins, rollback, the canary."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from batcomputer.models.registry import MAX_VERSION

Helper = Callable[..., dict[str, Any]]


def rollout_paths(ok: Helper, errors: Helper, json_body: Helper, model_param: dict[str, Any],
                  name_schema: dict[str, Any], reason_schema: dict[str, Any]) -> dict[str, Any]:
    """Paths of ``api.routes.models`` (aliases) and ``api.routes.rollout`` (the canary)."""
    canary = {"type": "object", "properties": {
        "model": {"type": "string"}, "production": {"type": "integer"},
        "canary": {"type": "object", "nullable": True, "properties": {
            "version": {"type": "integer"}, "percent": {"type": "number"}, "by": {"type": "string"},
            "at": {"type": "string", "format": "date-time"}, "steps": {"type": "array", "items": {"type": "number"}},
            "window_jobs": {"type": "integer"}, "state": {"type": "string", "enum": ["running", "stopped"]},
            "reason": {"type": "string", "nullable": True}}}}}
    return {
        "/api/models/{model}/aliases/{alias}": {"put": {
            "summary": "Point an alias at a version", "tags": ["models"],
            "parameters": [model_param, {"name": "alias", "in": "path", "required": True, "schema": name_schema}],
            "requestBody": json_body({"type": "object", "required": ["version"], "properties": {
                "version": {"type": "integer", "minimum": 1, "maximum": MAX_VERSION}, "reason": reason_schema,
                "pin": {"type": "boolean", "description": "true: hold it there, retraining never moves it until it "
                                                          "is unpinned; false: unpin it; absent: keep its pin"}},
                "description": "Who moved it (`by` in the history) is the calling key, never a field of the body"}),
            "responses": {**ok("Moved", {"$ref": "#/components/schemas/AliasMove"}), **errors(400, 404, 409, 415)}}},
        "/api/models/{model}/aliases/{alias}/pin": {"delete": {
            "summary": "Unpin an alias: retraining may move it again (it stays where it points)", "tags": ["models"],
            "parameters": [model_param, {"name": "alias", "in": "path", "required": True, "schema": name_schema}],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"reason": reason_schema}}}}},
            "responses": {**ok("Unpinned", {"$ref": "#/components/schemas/AliasMove"}),
                          **errors(400, 404, 409, 415)}}},
        "/api/models/{model}/rollback": {"post": {
            "summary": "Move an alias back to its previous target", "tags": ["models"], "parameters": [model_param],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"alias": name_schema, "reason": reason_schema}}}}},
            "responses": {**ok("Rolled back", {"$ref": "#/components/schemas/AliasMove"}),
                          **errors(400, 404, 409, 415)}}},
        "/api/models/{model}/rollout": {"get": {
            "summary": "Production, the canary, and the guards watching production's latest move",
            "description": "`watch`: the version and the one it replaced, its state (watching, passed, tripped: "
                           "moved back by `guard`, held: tripped but pinned), each guard's figures (failure "
                           "rate, warning rate, label mix PSI: old, new, limit) and the reason; `last`: the "
                           "window before it.",
            "tags": ["models"], "parameters": [model_param],
            "responses": {**ok("The rollout", {"type": "object"}), **errors(400, 404)}}},
        "/api/models/{model}/canary": {
            "get": {"summary": "The model's canary: the version taking a share of its unpinned traffic, or null",
                    "tags": ["models"], "parameters": [model_param],
                    "responses": {**ok("The canary", canary), **errors(400, 404)}},
            "put": {"summary": "Send a share of the unpinned jobs and /api/predict calls to another version",
                    "description": "Sticky by the record's key (`?key=`); requests that name a version or an alias "
                                   "are never rerouted; every job names the version that scored it.",
                    "tags": ["models"], "parameters": [model_param],
                    "requestBody": json_body({"type": "object", "required": ["version", "percent"], "properties": {
                        "version": {"type": "integer", "minimum": 1, "maximum": MAX_VERSION},
                        "percent": {"type": "number", "exclusiveMinimum": True, "minimum": 0,
                                    "exclusiveMaximum": True, "maximum": 100},
                        "steps": {"type": "array", "items": {"type": "number", "maximum": 100},
                                  "description": "Percents it advances to while its guards hold; 100: it "
                                                 "becomes production"},
                        "window_jobs": {"type": "integer", "minimum": 1,
                                        "description": "The canary's jobs judged at each step"}}}),
                    "responses": {**ok("The canary", canary), **errors(400, 404, 415)}},
            "delete": {"summary": "End the canary: all unpinned traffic goes to production again",
                       "tags": ["models"], "parameters": [model_param],
                       "responses": {**ok("No canary", canary), **errors(404)}}},
    }
