"""The Open Inference Protocol against the live stack: raw HTTP here, the real clients in test_v2_clients.py."""

from __future__ import annotations

import struct

import orjson
import pytest
import requests

from batcomputer.models.registry import Registry
from batcomputer.models.schema import validate_records
from batcomputer.models.scoring import score
from batcomputer.settings import Settings
from tests.conftest import Services

Stack = tuple[str, Settings, Services]
RECORDS = [{"force": "West Yorkshire Police", "crime": "Burglary", "month": 10},
           {"force": "West Yorkshire Police", "crime": "Drugs", "month": 3, "district": "Leeds"},
           {"force": "West Yorkshire Police", "crime": "Vehicle crime", "month": 12, "district": None}]


def tensors(records: list[dict[str, object]], fields: tuple[str, ...] = ("force", "crime", "month", "district"),
            ) -> list[dict[str, object]]:
    kinds = {"month": "INT64"}
    return [{"name": name, "shape": [len(records)], "datatype": kinds.get(name, "BYTES"),
             "data": [record.get(name) for record in records]} for name in fields]


def expected(settings: Settings, records: list[dict[str, object]], version: int | None = None) -> list[dict]:
    registry = Registry.from_settings(settings)
    number = version or registry.resolve("crime", None, "production")
    bundle = registry.bundle("crime", number, pipeline=True)
    return score(bundle, validate_records(bundle.schema, records))


def test_health_and_server_metadata(stack: Stack) -> None:
    base, _, _ = stack
    assert requests.get(f"{base}/v2/health/live", timeout=10).json() == {"live": True}
    assert requests.get(f"{base}/v2/health/ready", timeout=10).json() == {"ready": True}
    server = requests.get(f"{base}/v2", timeout=10).json()
    assert server["name"] == "batcomputer" and "binary_tensor_data" in server["extensions"]


def test_model_metadata_names_every_field_with_its_datatype(stack: Stack) -> None:
    base, settings, _ = stack
    meta = requests.get(f"{base}/v2/models/crime", timeout=10).json()
    schema = Registry.from_settings(settings).schema("crime")
    assert [i["name"] for i in meta["inputs"]] == list(schema.field_names)
    assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {"force": "BYTES", "crime": "BYTES",
                                                                  "month": "INT64", "district": "BYTES"}
    assert [o["name"] for o in meta["outputs"]] == [*schema.outputs, "label"]
    assert meta["versions"] and meta["platform"] == "scikit-learn"
    pinned = requests.get(f"{base}/v2/models/crime/versions/1", timeout=10).json()
    assert pinned["versions"] == ["1"] and pinned["parameters"]["version"] == 1
    assert requests.get(f"{base}/v2/models/crime/ready", timeout=10).json()["ready"] is True
    missing = requests.get(f"{base}/v2/models/nosuch/ready", timeout=10)
    assert missing.status_code == 404 and "nosuch" in missing.json()["error"]


def test_infer_scores_several_records_as_one_job_like_in_process(stack: Stack) -> None:
    base, settings, _ = stack
    response = requests.post(f"{base}/v2/models/crime/infer", json={"id": "req-1", "inputs": tensors(RECORDS)},
                             timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    want = expected(settings, RECORDS)
    assert body["id"] == "req-1" and body["model_name"] == "crime"
    assert body["model_version"] == str(Registry.from_settings(settings).resolve("crime", None, "production"))
    outputs = {o["name"]: o for o in body["outputs"]}
    assert list(outputs) == ["notCaughtProb", "caughtProb", "label"]
    for name in ("notCaughtProb", "caughtProb"):
        assert outputs[name]["shape"] == [3] and outputs[name]["datatype"] == "FP64"
        assert outputs[name]["data"] == pytest.approx([w[name] for w in want], abs=1e-12)
    assert outputs["label"]["data"] == [w["label"] for w in want]
    assert len(body["parameters"]["warnings"]) == 3
    job = requests.get(f"{base}/api/jobs/{body['parameters']['job']}", timeout=10).json()
    assert job["count"] == 3 and job["state"] == "succeeded"  # one job of three records, not three jobs


def test_pinned_version_requested_outputs_and_pandas_content_type(stack: Stack) -> None:
    base, settings, _ = stack
    body = {"parameters": {"content_type": "pd"}, "inputs": tensors(RECORDS[:2]), "outputs": [{"name": "caughtProb"}]}
    answer = requests.post(f"{base}/v2/models/crime/versions/1/infer", json=body, timeout=30).json()
    assert answer["model_version"] == "1"
    assert [o["name"] for o in answer["outputs"]] == ["caughtProb"]
    assert answer["outputs"][0]["data"] == pytest.approx([w["caughtProb"] for w in expected(settings, RECORDS[:2], 1)])


def test_binary_tensors_as_tritonclient_sends_them(stack: Stack) -> None:
    base, settings, _ = stack
    records = RECORDS[:2]
    blobs, inputs = [], []
    for name in ("force", "crime"):
        blob = b"".join(struct.pack("<I", len(r[name].encode())) + r[name].encode() for r in records)  # type: ignore[union-attr]
        blobs.append(blob)
        inputs.append({"name": name, "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(blob)}})
    month = struct.pack("<2q", *(r["month"] for r in records))  # type: ignore[misc]
    blobs.append(month)
    inputs.append({"name": "month", "shape": [2, 1], "datatype": "INT64", "parameters": {"binary_data_size": 16}})
    header = orjson.dumps({"inputs": inputs})
    response = requests.post(f"{base}/v2/models/crime/infer", data=header + b"".join(blobs), timeout=30,
                             headers={"Content-Type": "application/octet-stream",
                                      "Inference-Header-Content-Length": str(len(header))})
    assert response.status_code == 200, response.text
    got = {o["name"]: o["data"] for o in response.json()["outputs"]}
    assert got["caughtProb"] == pytest.approx([w["caughtProb"] for w in expected(settings, records)])


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"inputs": tensors([{**RECORDS[0], "crime": "Jaywalking"}, RECORDS[1]])}, 422, "'Jaywalking' is not allowed"),
    ({"inputs": tensors(RECORDS, ("force", "crime"))}, 422, "month"),
    ({"inputs": [*tensors(RECORDS[:2]), {"name": "extra", "shape": [2], "datatype": "FP64", "data": [1, 2]}]},
     422, "extra"),
    ({"inputs": [{**tensors(RECORDS)[0], "shape": [2]}]}, 400, "shape [2] holds 2 values and data has 3"),
    ({"inputs": [tensors(RECORDS)[0], tensors(RECORDS[:2])[1]]}, 400, "one value per record"),
    ({"inputs": [{**tensors(RECORDS)[0], "datatype": "STRING"}]}, 400, "datatype must be one of"),
    ({"inputs": tensors(RECORDS), "outputs": [{"name": "nope"}]}, 400, "unknown output 'nope'"),
    ({"inputs": []}, 400, "non-empty array"),
])
def test_bad_requests_name_the_problem_in_the_protocols_error(stack: Stack, body: dict, status: int,
                                                              words: str) -> None:
    base, _, _ = stack
    response = requests.post(f"{base}/v2/models/crime/infer", json=body, timeout=30)
    assert response.status_code == status, response.text
    answer = response.json()
    assert words in answer["error"] and answer["detail"] == answer["error"]
    if status == 422:  # every field problem, with its record, as on every other route
        assert all({"record", "field", "code"} <= set(p) for p in answer["problems"])
