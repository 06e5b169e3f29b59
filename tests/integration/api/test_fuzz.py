"""Fuzzing the gateway from its own OpenAPI document (schemathesis): over a thousand generated requests, valid
and invalid, to every documented operation of the gateway (real Redis, the session's workers scoring the jobs it
submits), plus each operation's request-shape probes (methods it does not take, malformed and unsupported
Content-Types), and not one answers 5xx; every 4xx is problem details (application/problem+json with type,
title, status, detail and code) whose status is the response's, and every status of a generated request is one
the document lists for its operation. The one 5xx allowed is the documented 503 with Retry-After of the two
retrain routes when no Prefect server is configured (none is in the tests), and it too is problem details. The
same requests every run (derandomized), a fixed number per operation."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode, Response
from schemathesis.core.result import Ok
from schemathesis.generation.meta import REQUEST_SHAPE_PROBES, coverage_scenario

from api.app import create_app
from batcomputer.settings import Settings
from tests.conftest import Services

Stack = tuple[str, Settings, Services]
# Cases per operation and round: invalid ones, valid ones, and valid ones naming a model in the registry or a job
# that exists (random names are 404s, which stop before most of the code). An operation without parameters has
# only one case. With the probes, a little over MINIMUM_REQUESTS in all.
EXAMPLES = 18
MINIMUM_REQUESTS = 1_000
PROBLEM_FIELDS = ("type", "title", "status", "detail", "code")
# Answer 503 (problem details, Retry-After) by design when BATCOMPUTER_PREFECT_API_URL is unset, as in the tests.
UNAVAILABLE_BY_DESIGN = {"POST /api/models/{model}/retrain", "GET /api/models/{model}/retrains"}
RECORD = {"force": "West Yorkshire Police", "crime": "Burglary", "month": 10}
PARQUET = "application/vnd.apache.parquet"


def parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


# Parquet bodies: a valid file, one with other columns, or any bytes.
schemathesis.openapi.media_type(PARQUET, st.one_of(st.sampled_from([
    parquet(pa.table({name: [value] for name, value in RECORD.items()})), parquet(pa.table({"x": [1.5]}))]),
    st.binary()))


@pytest.fixture
def app(stack: Stack, tmp_path: Path) -> Flask:
    """The gateway in this process on the session's Redis and workers, with a copy of the registry: fuzzed alias
    moves and rollbacks must not move the session registry's aliases."""
    _, base, _ = stack
    registry = tmp_path / "registry"
    shutil.copytree(base.registry, registry)
    return create_app(dataclasses.replace(base, registry=str(registry)))


def fault(case: Case, response: Response) -> str | None:
    """What is wrong with an answer, or None: a 5xx, an error that is not problem details, a status the
    document does not list (for a request in the operation's own method and shape)."""
    status, operation = response.status_code, case.operation
    if status >= 500 and not (status == 503 and operation.label in UNAVAILABLE_BY_DESIGN
                              and "retry-after" in response.headers):
        return f"answered {status}: {response.content[:300]!r}"
    probe = coverage_scenario(case) in REQUEST_SHAPE_PROBES
    if not probe and str(status) not in operation.definition.raw["responses"]:
        return f"answered {status}, which the document does not list: {response.content[:300]!r}"
    if status < 400:
        return None
    media = (response.headers.get("content-type") or [""])[0].split(";")[0].strip()
    protocol = case.operation.path.startswith("/v2") and media == "application/json"  # the V2 routes' error shape
    if media != "application/problem+json" and not protocol:
        return f"{status} as {media or 'no Content-Type'}, not application/problem+json: {response.content[:300]!r}"
    try:
        body: Any = response.json()
    except ValueError:
        return f"{status} whose body is not JSON: {response.content[:300]!r}"
    if not isinstance(body, dict):
        return f"{status} whose body is not an object: {body!r}"
    missing = [name for name in (*PROBLEM_FIELDS, *(("error",) if protocol else ())) if name not in body]
    if missing:
        return f"{status} without {', '.join(missing)}: {body!r}"
    if body["status"] != status:
        return f"{status} whose body says status {body['status']!r}"
    return None


def rounds(operation: APIOperation, known: dict[str, list[str]]) -> list[st.SearchStrategy[Case]]:
    """Invalid cases, valid cases, and valid cases whose path names a known model or job."""
    found = [operation.as_strategy(GenerationMode.NEGATIVE), operation.as_strategy(GenerationMode.POSITIVE)]
    for name, values in known.items():
        if f"{{{name}}}" in operation.path:
            found.append(st.one_of([operation.as_strategy(GenerationMode.POSITIVE, path_parameters={name: value})
                                    for value in values]))
    return found


def fuzz(strategy: st.SearchStrategy[Case], check: Callable[[Case], None]) -> None:
    """``check`` up to EXAMPLES cases drawn from ``strategy``, the same ones every run (fewer where there are
    fewer); nothing to draw (no parameter or body to make invalid) is no case."""

    @hypothesis.settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                         phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @hypothesis.given(case=strategy)
    def run(case: Case) -> None:
        check(case)

    with contextlib.suppress(Unsatisfiable):
        run()


def probes(operation: APIOperation) -> list[Case]:
    """The operation's request-shape probes of schemathesis's coverage phase: every method it does not take, a
    malformed and an unsupported Content-Type."""
    schema = operation.schema
    cases = schema.iter_coverage_cases(operation, generation_modes=[GenerationMode.NEGATIVE],
                                       generation_config=schema.config.generation_for(operation=operation))
    return [case for case in cases if coverage_scenario(case) in REQUEST_SHAPE_PROBES]


def test_fuzzed_requests_get_no_5xx_and_every_4xx_is_problem_details(
        app: Flask, record_property: Callable[[str, object], None]) -> None:
    client = app.test_client()
    scored = client.post("/api/models/crime/jobs?wait=20", json=RECORD)
    batch = client.post("/api/models/crime/batches", data=parquet(pa.table({k: [v] for k, v in RECORD.items()})),
                        content_type=PARQUET)
    assert scored.status_code == 200 and batch.status_code == 202, (scored.get_json(), batch.get_json())
    known = {"model": app.extensions["gateway"].registry.models(),
             "job_id": [scored.get_json()["id"], batch.get_json()["id"]]}
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    sent: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    faults: dict[str, list[str]] = {}

    def check(case: Case) -> None:
        response = case.call()
        sent[case.operation.label] += 1
        statuses[response.status_code] += 1
        found = fault(case, response)
        if found is not None:
            faults.setdefault(case.operation.label, []).append(f"{found}; {case.as_curl_command()}")

    started = time.monotonic()
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()  # the document is one schemathesis reads in full
        operation = result.ok()
        for strategy in rounds(operation, known):
            fuzz(strategy, check)
        for case in probes(operation):
            check(case)
    elapsed = time.monotonic() - started
    total = sum(sent.values())
    record_property("fuzzed_requests", total)
    record_property("fuzz_seconds", round(elapsed, 1))
    print(f"\n{total} fuzzed requests to {len(sent)} operations in {elapsed:.1f} s; statuses "
          f"{dict(sorted(statuses.items()))}")
    report = [f"{label} ({len(found)}x): {found[0]}" for label, found in sorted(faults.items())]
    assert report == [], "\n".join(report)
    assert total >= MINIMUM_REQUESTS
