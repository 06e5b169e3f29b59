"""The peer in the benchmark: an MLServer custom runtime serving the same bundle from the same registry.

It runs inside MLServer's own virtual environment (made by ``bench/run.py``, never a project dependency), with
the project root on ``PYTHONPATH`` so that the bundle's pipeline (and its ``SchemaEncoder``) unpickles.
"""

from __future__ import annotations

import os
from typing import Any

from mlserver import MLModel
from mlserver.codecs import PandasCodec
from mlserver.types import InferenceRequest, InferenceResponse

from batcomputer.models.registry import Registry
from batcomputer.models.registry_store import open_store


class BundleRuntime(MLModel):  # type: ignore[misc]
    """Loads ``BENCH_MODEL@production`` (verified, as Batcomputer's workers do) and answers ``predict_proba``
    for the decoded pandas frame, with the schema's output names as columns."""

    async def load(self) -> bool:
        registry = Registry(open_store(os.environ["BATCOMPUTER_REGISTRY"]))
        bundle = registry.bundle(os.environ.get("BENCH_MODEL", "crime"), "production", pipeline=True)
        self._pipeline = bundle.pipeline
        self._fields = bundle.schema.field_names
        self._names = [bundle.schema.outputs[int(c)] for c in bundle.pipeline.classes_]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        import pandas as pd

        frame: Any = self.decode_request(payload, default_codec=PandasCodec)
        frame = frame.reindex(columns=self._fields)  # a field the request left out is missing: imputed
        for column in frame.columns:
            if frame[column].dtype == object:
                frame[column] = [v.decode() if isinstance(v, bytes) else v for v in frame[column]]
        probabilities = self._pipeline.predict_proba(frame)
        return PandasCodec.encode_response(self.name, pd.DataFrame(probabilities, columns=self._names))
