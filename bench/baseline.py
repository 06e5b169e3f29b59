"""The seed-style baseline: a synchronous Flask route that calls predict_proba on one row per request."""

from __future__ import annotations

import os

import pandas as pd
from flask import Flask, jsonify, request

from batcomputer.models.registry import Registry
from batcomputer.settings import Settings


def create_baseline() -> Flask:
    settings = Settings.from_env()
    bundle = Registry.from_settings(settings).bundle(os.environ.get("BENCH_MODEL", "crime"), "production",
                                                     pipeline=True)
    pipeline, schema = bundle.pipeline, bundle.schema
    app = Flask("baseline")

    @app.post("/api/predict")
    def predict():  # type: ignore[no-untyped-def]
        record = request.get_json()
        row = {f.name: record.get(f.name) for f in schema.fields}
        frame = pd.DataFrame([row], columns=schema.field_names)
        proba = pipeline.predict_proba(frame)[0]
        return jsonify({schema.outputs[int(c)]: float(p) for c, p in zip(pipeline.classes_, proba, strict=True)})

    return app
