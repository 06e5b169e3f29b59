"""Streams with real Redis and real consumer processes: outputs equal in-process scoring, exactly one output
per entry when a consumer is SIGKILLed mid-stream, poison entries dead-lettered with reasons, 429 past the
backlog limit, and the status command."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from api.app import create_app
from batcomputer.jobqueue.streams import StreamStore
from batcomputer.models.registry import Registry
from batcomputer.models.scoring import score
from batcomputer.settings import Settings
from tests.conftest import Services, private_settings, remove_keys, run_cli, settings_env, wait_until
from tests.integration.api.test_api_batches import crime_table


@contextmanager
def own_streams(base: Settings, redis_url: str, tmp_path: Path, **overrides: Any) -> Iterator[tuple[Services,
                                                                                                   StreamStore]]:
    """Settings of the test's own (shipped defaults, own key prefix), consumers it starts, and the streams."""
    own = private_settings(base, redis_url, storage_roots=str(tmp_path / "batches"), **overrides)
    logs = tmp_path / "logs"
    logs.mkdir()
    services = Services(own, logs)
    store = StreamStore(redis.Redis.from_url(redis_url), own.key_prefix, "crime", own.stream_maxlen)
    try:
        yield services, store
    finally:
        services.stop()
        remove_keys(redis_url, own.key_prefix)


@pytest.fixture
def streaming(trained_registry: Settings, redis_base_url: str,
              tmp_path: Path) -> Iterator[tuple[Services, StreamStore]]:
    with own_streams(trained_registry, redis_base_url, tmp_path) as found:
        yield found


def records(settings: Settings, count: int) -> list[dict[str, Any]]:
    table = crime_table(Registry.from_settings(settings), count, seed=5, bad=False)
    fields = Registry.from_settings(settings).schema("crime").field_names
    return [{k: v for k, v in row.items() if k in fields and v is not None} for row in table.to_pylist()]


def outputs(store: StreamStore) -> list[dict[str, str]]:
    found = []
    for _, fields in store.redis.xrange(store.output, "-", "+"):
        found.append({k.decode(): v.decode() for k, v in fields.items()})
    return found


def consumer(services: Services, name: str) -> Any:
    return services.start(name, "stream", "crime")


def test_ten_thousand_entries_are_scored_like_in_process(streaming: tuple[Services, StreamStore]) -> None:
    services, store = streaming
    consumer(services, "consumer-1")
    sent = records(services.settings, 10_000)
    ids = []
    for start in range(0, len(sent), 2_000):
        ids += store.append([orjson.dumps(r) for r in sent[start:start + 2_000]], services.settings.stream_max_backlog,
                            meta={"source": "test"})
    wait_until(lambda: store.redis.xlen(store.output) >= 10_000, 120, "10,000 outputs")
    found = {o["in_id"]: o for o in outputs(store)}
    assert len(found) == 10_000 and set(found) == set(ids)
    bundle = Registry.from_settings(services.settings).bundle("crime", None, pipeline=True)
    expected = score(bundle, [{f: r.get(f) for f in bundle.schema.field_names} for r in sent])
    for entry_id, result in zip(ids, expected, strict=True):
        out = found[entry_id]
        assert (out["model"], out["version"], out["source"]) == ("crime", str(bundle.version), "test")
        assert float(out["caughtProb"]) == result["caughtProb"] and out["label"] == result["label"]
    assert store.redis.xlen(store.dead) == 0


def test_a_consumer_killed_mid_stream_leaves_exactly_one_output_per_entry(
        streaming: tuple[Services, StreamStore]) -> None:
    services, store = streaming
    doomed = consumer(services, "consumer-1")
    consumer(services, "consumer-2")
    sent = records(services.settings, 2_000) * 10
    ids = []
    for start in range(0, len(sent), 1_000):
        ids += store.append([orjson.dumps(r) for r in sent[start:start + 1_000]], services.settings.stream_max_backlog)
    wait_until(lambda: store.redis.xlen(store.output) >= 2_000, 60, "the consumers to be under way")
    services.kill(doomed)  # SIGKILL: whatever it had read and not written stays pending, owned by it
    wait_until(lambda: store.redis.xlen(store.output) >= len(ids), 180, "every entry to have its output")
    found = [o["in_id"] for o in outputs(store)]
    assert len(found) == len(ids) and sorted(found) == sorted(ids)  # each exactly once
    assert store.redis.xpending(store.input, "batcomputer")["pending"] == 0


def test_poison_entries_go_to_the_dead_letter_stream_with_their_reasons(
        streaming: tuple[Services, StreamStore]) -> None:
    services, store = streaming
    consumer(services, "consumer-1")
    good = records(services.settings, 3)
    bad = [b'{"force": "West Yorkshire Police", "crime": "Jaywalking", "month": 10}', b"{not json",
           b'["a", "list"]', b'{"force": "West Yorkshire Police", "crime": "Burglary"}']
    ids = store.append([orjson.dumps(good[0]), *bad, orjson.dumps(good[1])], 1_000)
    store.redis.xadd(store.input, {"other": "no record field"})
    wait_until(lambda: store.redis.xlen(store.dead) >= 5 and store.redis.xlen(store.output) >= 2, 60,
               "the dead letters and the outputs")
    letters = {}
    for _, fields in store.redis.xrange(store.dead, "-", "+"):
        entry = {k.decode(): v.decode() for k, v in fields.items()}
        letters[entry["in_id"]] = entry
    assert {letters[i]["code"] for i in ids[1:5]} == {"category", "bad_json", "type", "missing"}
    assert "Jaywalking" in letters[ids[1]]["reason"] and letters[ids[1]]["deliveries"] == "1"
    assert "month" in letters[ids[4]]["reason"]
    assert {o["in_id"] for o in outputs(store)} == {ids[0], ids[5]}


def test_the_producer_route_validates_appends_and_answers_429_past_the_backlog_limit(
        streaming: tuple[Services, StreamStore]) -> None:
    services, store = streaming
    client = create_app(services.settings).test_client()
    record = {"force": "West Yorkshire Police", "crime": "Burglary", "month": 10}
    accepted = client.post("/api/models/crime/stream", json={"records": [record, record]})
    assert accepted.status_code == 202 and len(accepted.get_json()["ids"]) == 2
    invalid = client.post("/api/models/crime/stream", json={**record, "month": 13})
    assert invalid.status_code == 422 and invalid.get_json()["problems"][0]["field"] == "month"
    limit = services.settings.stream_max_backlog
    body = orjson.dumps(record)
    for start in range(2, limit, 10_000):  # no consumer runs: the backlog grows to the limit
        store.append([body] * min(10_000, limit - start), limit)
    refused = client.post("/api/models/crime/stream", json=record)
    assert refused.status_code == 429, refused.get_json()
    assert int(refused.headers["Retry-After"]) >= 1 and refused.get_json()["backlog"] == limit
    assert store.redis.xlen(store.input) == limit  # nothing appended past it
    assert client.get("/readyz").get_json()["streams"]["crime"]["backlog"] == limit
    status = run_cli(settings_env(services.settings), "stream", "status", "crime")
    assert status.returncode == 0 and f'"backlog": {limit}' in status.stdout


def test_a_promotion_is_picked_up_by_running_consumers_between_batches(
        trained_registry: Settings, redis_base_url: str, tmp_path: Path) -> None:
    import shutil

    from training.trainer import train

    shutil.copytree(trained_registry.registry, tmp_path / "registry")
    with own_streams(trained_registry, redis_base_url, tmp_path, registry=str(tmp_path / "registry")) as (
            services, store):
        own = services.settings
        consumer(services, "consumer-1")
        body = orjson.dumps({"force": "West Yorkshire Police", "crime": "Burglary", "month": 10})
        store.append([body] * 50, 1_000)
        wait_until(lambda: store.redis.xlen(store.output) >= 50, 60, "the first outputs")
        spec = (Path(__file__).resolve().parents[3] / "training" / "specs" / "crime.toml").read_text()
        (tmp_path / "crime-quick.toml").write_text(spec.replace("max_iter = 60", "max_iter = 20"))
        promoted = train(own, str(tmp_path / "crime-quick.toml"), promote=True, report=lambda line: None)
        assert promoted.published.version == 2 and promoted.promoted
        store.append([body] * 50, 1_000)
        wait_until(lambda: store.redis.xlen(store.output) >= 100, 60, "the outputs after the promotion")
        versions = [o["version"] for o in outputs(store)]
        assert versions[:50] == ["1"] * 50 and versions[50:] == ["2"] * 50  # no restart, no mixed batch
