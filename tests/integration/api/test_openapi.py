"""The OpenAPI document covers every route, per model, and its examples are valid requests."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import requests
from flask import Flask
from openapi_spec_validator import validate

from api.app import create_app
from batcomputer.settings import Settings
from tests.conftest import Services

Stack = tuple[str, Settings, Services]


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with the document's components attached, so $refs resolve."""
    return {**schema, "components": document["components"]}


def served_routes(app: Flask) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                routes.add((path, method.lower()))
    return routes


def test_every_served_route_is_documented(stack: Stack) -> None:
    base, settings, _ = stack
    document = requests.get(f"{base}/openapi.json", timeout=10).json()
    validate(document)  # a valid OpenAPI 3.0 document
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    missing = served_routes(create_app(settings)) - documented
    assert missing == set()
    assert requests.get(f"{base}/swagger.json", timeout=10).json() == document


def test_each_model_has_its_own_request_and_result_schemas(stack: Stack) -> None:
    base, _, _ = stack
    document = requests.get(f"{base}/openapi.json", timeout=10).json()
    crime = document["components"]["schemas"]["CrimeRecord"]
    assert crime["required"] == ["force", "crime", "month"]
    assert crime["properties"]["month"] == {"type": "integer", "minimum": 1, "maximum": 12,
                                            "description": crime["properties"]["month"]["description"]}
    assert "Burglary" in crime["properties"]["crime"]["enum"]
    assert crime["properties"]["district"]["nullable"] is True
    result = document["components"]["schemas"]["TitanicResult"]
    assert result["required"] == ["died_proba", "survived_proba", "label"]
    for path in ("/api/models/crime/jobs", "/api/models/titanic/jobs", "/api/models/{model}/jobs",
                 "/api/predict"):
        responses = document["paths"][path]["post"]["responses"]
        assert {"400", "404", "503"} <= set(responses), path


def test_examples_validate_against_the_document_and_the_gateway(stack: Stack) -> None:
    base, _, _ = stack
    document = requests.get(f"{base}/openapi.json", timeout=10).json()
    checked = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            media = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            for name, example in media.get("examples", {}).items():
                jsonschema.validate(example["value"], resolve(document, media["schema"]))
                url = base + path.replace("{model}", name.split("-record")[0])
                response = requests.request(method, url + "?wait=20", json=example["value"], timeout=30)
                assert response.status_code == 200, (path, name, response.text)
                checked += 1
    assert checked >= 9
