"""Calls a running gateway with the Open Inference Protocol's own clients, unchanged: tritonclient (HTTP) and the
KServe SDK's REST client. Runs in .venv-clients (python v2_calls.py BASE_URL [API_KEY]); prints what each
call answered as one JSON object for tests/integration/api/test_v2_clients.py to check."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import numpy as np
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from tritonclient.utils import InferenceServerException

RECORDS = [("West Yorkshire Police", "Burglary", 10), ("West Yorkshire Police", "Drugs", 3),
           ("West Yorkshire Police", "Vehicle crime", 12)]


def triton_inputs(records: list[tuple[str, str, int]], binary: bool) -> list[triton.InferInput]:
    columns = {"force": np.array([r[0] for r in records], dtype=object),
               "crime": np.array([r[1] for r in records], dtype=object),
               "month": np.array([r[2] for r in records], dtype=np.int64)}
    inputs = []
    for name, values in columns.items():
        tensor = triton.InferInput(name, [len(records)], "INT64" if values.dtype == np.int64 else "BYTES")
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    return inputs


def with_triton(base: str, headers: dict[str, str]) -> dict[str, Any]:
    client = triton.InferenceServerClient(base.split("://", 1)[1])
    found: dict[str, Any] = {"live": client.is_server_live(headers=dict(headers)),
                             "ready": client.is_server_ready(headers=dict(headers)),
                             "model_ready": client.is_model_ready("crime", headers=dict(headers)),
                             "version_ready": client.is_model_ready("crime", "1", headers=dict(headers)),
                             "metadata": client.get_model_metadata("crime", headers=dict(headers))}
    for binary in (True, False):
        result = client.infer("crime", triton_inputs(RECORDS, binary), headers=dict(headers), request_id="t-1")
        found[f"infer_binary_{binary}"] = {"caughtProb": result.as_numpy("caughtProb").tolist(),
                                           "label": [v.decode() if isinstance(v, bytes) else v
                                                     for v in result.as_numpy("label").tolist()],
                                           "response": result.get_response()}
    pinned = client.infer("crime", triton_inputs(RECORDS[:1], True), model_version="1", headers=dict(headers))
    found["pinned"] = pinned.get_response()["model_version"]
    try:
        client.infer("crime", triton_inputs([("West Yorkshire Police", "Jaywalking", 10)], True), headers=dict(headers))
        found["invalid"] = None
    except InferenceServerException as exc:
        found["invalid"] = {"status": exc.status(), "message": exc.message()}
    return found


async def with_kserve(base: str, headers: dict[str, str]) -> dict[str, Any]:
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    try:
        found: dict[str, Any] = {"live": await client.is_server_live(base, headers=dict(headers)),
                                 "ready": await client.is_server_ready(base, headers=dict(headers)),
                                 "model_ready": await client.is_model_ready(base, "crime", headers=dict(headers))}
        request = InferRequest(model_name="crime", request_id="k-1", infer_inputs=[
            InferInput("force", [3], "BYTES", [r[0] for r in RECORDS]),
            InferInput("crime", [3], "BYTES", [r[1] for r in RECORDS]),
            InferInput("month", [3], "INT64", [r[2] for r in RECORDS])])
        response = await client.infer(base, request, model_name="crime", headers=dict(headers))
        found["infer"] = {"id": response.id, "outputs": {o.name: list(o.data) for o in response.outputs},
                          "parameters": response.parameters}
        bad = InferRequest(model_name="crime", infer_inputs=[InferInput("force", [1], "BYTES", ["Nowhere"])])
        try:
            await client.infer(base, bad, model_name="crime", headers=dict(headers))
            found["invalid"] = None
        except Exception as exc:  # httpx.HTTPStatusError, carrying the protocol's error
            found["invalid"] = {"type": type(exc).__name__, "message": str(exc)}
        return found
    finally:
        await client.close()


def main() -> None:
    base = sys.argv[1]
    headers = {"Authorization": f"Bearer {sys.argv[2]}"} if len(sys.argv) > 2 else {}
    print(json.dumps({"triton": with_triton(base, headers),
                      "kserve": asyncio.run(with_kserve(base, headers))}, default=str))


if __name__ == "__main__":
    main()
