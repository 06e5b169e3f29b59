"""The registry on a local folder and on Azure Blob (Azurite): versions, identity, races, aliases, integrity."""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from batcomputer.errors import AliasNotFound, Conflict, IncompatibleBundle, IntegrityError, ModelNotFound
from batcomputer.models import bundle as bundles
from batcomputer.models.bundle import Draft
from batcomputer.models.registry import Registry
from batcomputer.models.registry_store import LocalStore
from batcomputer.models.scoring import score

RECORD = {"pclass": 1, "sex": "female", "age": 29.0, "sibsp": 0, "parch": 0}


def variant(draft: Draft, tag: Any) -> Draft:
    """Same pipeline, different metrics: different content, so a different version."""
    return dataclasses.replace(draft, metrics={**draft.metrics, "tag": tag})


def test_publish_and_load_round_trip(registry: Registry, titanic_draft: Draft) -> None:
    published = registry.publish(titanic_draft)
    assert (published.version, published.created) == (1, True)
    loaded = registry.bundle("titanic", 1, pipeline=True)
    assert loaded.schema == titanic_draft.schema
    assert loaded.metrics == titanic_draft.metrics
    assert loaded.sha256 == published.sha256
    assert loaded.manifest["version"] == 1
    assert set(loaded.manifest["files"]) == {"model.joblib", "schema.json", "metrics.json", "background.json"}
    assert loaded.background == titanic_draft.background and len(loaded.background or ()) == 200
    assert loaded.manifest["environment"]["scikit-learn"].startswith("1.")
    result = score(loaded, [{**RECORD}])[0]
    assert result["died_proba"] + result["survived_proba"] == pytest.approx(1.0)
    assert registry.models() == ["titanic"]


def test_identical_content_returns_the_existing_version(registry: Registry, titanic_draft: Draft) -> None:
    first = registry.publish(titanic_draft)
    again = registry.publish(dataclasses.replace(titanic_draft, timings={"fit_seconds": 99.0}))
    assert (again.version, again.created) == (first.version, False)
    assert registry.publish(variant(titanic_draft, 2)).version == 2
    assert registry.versions("titanic") == [1, 2]


def _publish_many(registry: Registry, draft: Draft, worker: int, count: int, barrier: Any, out: Any) -> None:
    barrier.wait()
    out.put([registry.publish(variant(draft, f"{worker}-{i}")).version for i in range(count)])


def test_concurrent_publishers_get_distinct_versions(registry: Registry, titanic_draft: Draft) -> None:
    context = multiprocessing.get_context("spawn")
    workers, count = 3, 4
    barrier, out = context.Barrier(workers), context.Queue()
    processes = [context.Process(target=_publish_many, args=(registry, titanic_draft, w, count, barrier, out))
                 for w in range(workers)]
    for process in processes:
        process.start()
    versions = sorted(v for _ in processes for v in out.get(timeout=120))
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    assert versions == list(range(1, workers * count + 1))
    assert registry.versions("titanic") == versions


def test_aliases_move_with_history_and_roll_back(registry: Registry, titanic_draft: Draft) -> None:
    for tag in (1, 2, 3):
        registry.publish(variant(titanic_draft, tag))
    model = "titanic"
    for version in (1, 2, 3):
        registry.set_alias(model, "production", version, by="ci", reason=f"release {version}")
    registry.set_alias(model, "staging", 3, by="ci")
    assert registry.aliases(model) == {"production": 3, "staging": 3}
    assert registry.resolve(model, "production") == 3
    assert registry.resolve(model) == 3
    assert registry.resolve(model, "2") == 2

    move = registry.rollback(model, "production", by="ops", reason="bad release")
    assert (move["from"], move["to"], move["kind"], move["by"]) == (3, 2, "rollback", "ops")
    assert registry.rollback(model, "production")["to"] == 1
    with pytest.raises(Conflict, match="no earlier target"):
        registry.rollback(model, "production")
    history = registry.history(model, "production")
    assert [(m["from"], m["to"]) for m in history] == [(None, 1), (1, 2), (2, 3), (3, 2), (2, 1)]
    assert history[1]["reason"] == "release 2" and all(m["at"] for m in history)
    assert len(registry.history(model)) == 6


def test_aliases_refuse_unknown_targets(registry: Registry, titanic_draft: Draft) -> None:
    registry.publish(titanic_draft)
    with pytest.raises(ModelNotFound):
        registry.resolve("nosuch")
    with pytest.raises(AliasNotFound, match="production"):
        registry.resolve("titanic")
    with pytest.raises(Exception, match="no version 7"):
        registry.set_alias("titanic", "production", 7)


def _move_alias_many(registry: Registry, worker: int, count: int, barrier: Any) -> None:
    barrier.wait()
    for i in range(count):
        registry.set_alias("titanic", "production", 1 + (worker + i) % 2, by=f"w{worker}")


def test_concurrent_alias_moves_lose_no_history(registry: Registry, titanic_draft: Draft) -> None:
    registry.publish(titanic_draft)
    registry.publish(variant(titanic_draft, 2))
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(3)
    processes = [context.Process(target=_move_alias_many, args=(registry, w, 5, barrier)) for w in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    history = registry.history("titanic", "production")
    assert len(history) == 15
    assert all(a["to"] == b["from"] for a, b in itertools.pairwise(history))


@pytest.mark.parametrize("name", ["model.joblib", "schema.json", "metrics.json", "manifest.json"])
def test_one_changed_byte_is_refused(registry: Registry, titanic_draft: Draft, name: str) -> None:
    registry.publish(titanic_draft)
    entry = registry.entry("titanic", 1)
    key = f"titanic/{entry['bundle']}/{name}"
    data = bytearray(registry.store.read(key) or b"")
    data[len(data) // 2] ^= 0x01
    registry.store.write(key, bytes(data))
    with pytest.raises(IntegrityError, match=name.replace(".", r"\.")) as caught:
        registry.bundle("titanic", 1, pipeline=True)
    assert "sha256" in caught.value.detail and caught.value.extra["file"] == name


def test_a_bundle_from_another_scikit_learn_minor_is_refused(registry: Registry, titanic_draft: Draft,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    real = bundles.library_versions()
    monkeypatch.setattr(bundles, "library_versions", lambda: {**real, "scikit-learn": "1.5.2"})
    registry.publish(titanic_draft)
    monkeypatch.setattr(bundles, "library_versions", lambda: real)
    registry.bundle("titanic", 1)  # schema and metrics need no scikit-learn
    with pytest.raises(IncompatibleBundle, match=r"scikit-learn 1\.5\.2"):
        registry.bundle("titanic", 1, pipeline=True)


def test_alias_history_stays_bounded_and_rollback_still_works(tmp_path: Path, titanic_draft: Draft) -> None:
    from batcomputer.errors import BadRequest
    from batcomputer.models.registry import MAX_HISTORY, MAX_REASON_CHARS

    registry = Registry(LocalStore(tmp_path / "registry"))
    for tag in (1, 2):
        registry.publish(dataclasses.replace(titanic_draft, metrics={**titanic_draft.metrics, "tag": tag}))
    for move in range(MAX_HISTORY + 50):
        registry.set_alias("titanic", "production", 1 + move % 2, reason=f"move {move}")
    history = registry.history("titanic", "production")
    assert len(history) == MAX_HISTORY and history[-1]["reason"] == f"move {MAX_HISTORY + 49}"
    assert registry.rollback("titanic")["to"] == 1 + (MAX_HISTORY + 48) % 2
    with pytest.raises(BadRequest) as refused:
        registry.set_alias("titanic", "production", 1, reason="x" * (MAX_REASON_CHARS + 1))
    assert refused.value.extra["field"] == "reason"
