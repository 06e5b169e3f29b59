"""The Open Inference Protocol's own clients, unchanged, against the live stack: tritonclient (HTTP, binary and
JSON tensors) and the KServe SDK's REST client. They live in .venv-clients (`make test-tools` builds it from
tests/clients/requirements.lock), since kserve pins pandas below 3; tests/clients/v2_calls.py makes the calls."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from batcomputer.models.registry import Registry
from batcomputer.models.schema import validate_records
from batcomputer.models.scoring import score
from batcomputer.settings import Settings
from tests.conftest import ROOT, Services

Stack = tuple[str, Settings, Services]
CLIENTS = ROOT / ".venv-clients" / "bin" / "python"
SCRIPT = Path(__file__).resolve().parents[2] / "clients" / "v2_calls.py"
RECORDS = [{"force": "West Yorkshire Police", "crime": "Burglary", "month": 10},
           {"force": "West Yorkshire Police", "crime": "Drugs", "month": 3},
           {"force": "West Yorkshire Police", "crime": "Vehicle crime", "month": 12}]


@pytest.fixture(scope="module")
def answers(stack: Stack) -> dict:
    assert CLIENTS.exists(), f"{CLIENTS} is missing: run `make test-tools`"
    base, _, _ = stack
    done = subprocess.run([str(CLIENTS), str(SCRIPT), base], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def in_process(settings: Settings) -> list[dict]:
    registry = Registry.from_settings(settings)
    bundle = registry.bundle("crime", registry.resolve("crime", None, "production"), pipeline=True)
    return score(bundle, validate_records(bundle.schema, RECORDS))


def test_tritonclient_sees_a_live_ready_server_and_the_models_metadata(answers: dict, stack: Stack) -> None:
    found = answers["triton"]
    assert found["live"] and found["ready"] and found["model_ready"] and found["version_ready"]
    inputs = {i["name"]: i["datatype"] for i in found["metadata"]["inputs"]}
    assert inputs == {"force": "BYTES", "crime": "BYTES", "month": "INT64", "district": "BYTES"}


def test_tritonclient_infers_with_binary_and_json_tensors_like_in_process(answers: dict, stack: Stack) -> None:
    _, settings, _ = stack
    want = in_process(settings)
    for binary in (True, False):
        got = answers["triton"][f"infer_binary_{binary}"]
        assert got["caughtProb"] == pytest.approx([w["caughtProb"] for w in want], abs=1e-12)
        assert got["label"] == [w["label"] for w in want]
        assert got["response"]["id"] == "t-1" and got["response"]["model_name"] == "crime"
    assert answers["triton"]["pinned"] == "1"
    invalid = answers["triton"]["invalid"]
    assert invalid["status"] == "422" and "'Jaywalking' is not allowed" in invalid["message"]


def test_the_kserve_rest_client_infers_and_reads_errors(answers: dict, stack: Stack) -> None:
    _, settings, _ = stack
    found = answers["kserve"]
    assert found["live"] is True and found["ready"] is True and found["model_ready"] is True
    want = in_process(settings)
    assert found["infer"]["id"] == "k-1"
    assert found["infer"]["outputs"]["caughtProb"] == pytest.approx([w["caughtProb"] for w in want], abs=1e-12)
    assert found["infer"]["outputs"]["label"] == [w["label"] for w in want]
    invalid = found["invalid"]
    assert invalid["type"] == "HTTPStatusError" and "422" in invalid["message"]
    assert "crime" in invalid["message"] and "month" in invalid["message"]  # the missing fields, named
