"""Batch storage: URIs confined to the roots (no '..', no link out, no other scheme) and atomic part commits."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import fsspec
import pytest

from batcomputer.files.storage import Storage, StorageRefused, commit


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage([str(tmp_path / "batches"), f"memory://bct-{uuid.uuid4().hex[:8]}/batches"])


def test_paths_and_urls_inside_a_root_are_confined_to_it(storage: Storage, tmp_path: Path) -> None:
    inside = tmp_path / "batches" / "in" / "crime.parquet"
    assert storage.confine(str(inside), "input_uri").path == str(inside.resolve())
    assert storage.confine(f"file://{inside}", "input_uri").local
    remote = storage.roots[1].url + "/in/crime.parquet"
    located = storage.confine(remote, "input_uri")
    assert not located.local and located.path.endswith("batches/in/crime.parquet")


@pytest.mark.parametrize(("uri", "reason"), [
    ("{root}/../secrets.parquet", "'..'"),
    ("{root}/in/../../secrets.parquet", "'..'"),
    ("{outside}/crime.parquet", "outside the storage roots"),
    ("/etc/passwd", "outside the storage roots"),
    ("s3://bucket/crime.parquet", "the scheme 's3' is not allowed"),
    ("http://example.org/crime.parquet", "the scheme 'http' is not allowed"),
    ("memory://elsewhere/crime.parquet", "outside the storage roots"),
    ("", "non-empty"),
    ("{root}/in\x00.parquet", "control characters"),  # a NUL byte was a 500 (issue 30)
])
def test_anything_else_is_refused_naming_the_field(storage: Storage, tmp_path: Path, uri: str, reason: str) -> None:
    (tmp_path / "outside").mkdir()
    with pytest.raises(StorageRefused) as refused:
        storage.confine(uri.format(root=tmp_path / "batches", outside=tmp_path / "outside"), "output_uri")
    assert refused.value.status == 422 and refused.value.extra["field"] == "output_uri"
    assert reason in refused.value.detail


def test_a_link_that_leads_out_of_the_root_is_refused(storage: Storage, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.parquet").write_bytes(b"PAR1")
    (tmp_path / "batches" / "escape").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StorageRefused, match="outside the storage roots"):
        storage.confine(str(tmp_path / "batches" / "escape" / "secret.parquet"), "input_uri")


def test_a_commit_replaces_a_part_whole_and_leaves_no_temporary_file(storage: Storage, tmp_path: Path) -> None:
    part = storage.place("job-1/part-00003.parquet")
    commit(part, b"first")
    commit(part, b"second, from a redelivered chunk")
    assert Path(part.path).read_bytes() == b"second, from a redelivered chunk"
    assert os.listdir(Path(part.path).parent) == ["part-00003.parquet"]


def test_a_commit_to_a_remote_root_is_one_put(storage: Storage) -> None:
    part = storage.confine(storage.roots[1].url + "/job-1/part-00000.parquet", "output_uri")
    commit(part, b"rows")
    assert fsspec.filesystem("memory").cat_file(part.path) == b"rows"
