"""Model bundles: the fitted pipeline, schema, metrics and a manifest of hashes, and their verification."""

from __future__ import annotations

import hashlib
import io
import json
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from batcomputer.errors import IncompatibleBundle, IntegrityError
from batcomputer.models.schema import Schema

PIPELINE_FILE = "model.joblib"
SCHEMA_FILE = "schema.json"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.json"
BACKGROUND_FILE = "background.json"  # training rows explanations are measured against (never served by the API)
FORMAT = 1
# Manifest keys that differ between two publications of the same content.
RUN_DEPENDENT = ("version", "created", "timings", "git_commit", "run")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dump_json(data: Any) -> bytes:
    """Canonical JSON: sorted keys, fixed separators, so equal content gives equal bytes."""
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False).encode() + b"\n"


def library_versions() -> dict[str, str]:
    """Versions of what a pickled pipeline depends on, read without importing the libraries."""
    versions = {"python": platform.python_version()}
    for dist in ("scikit-learn", "numpy", "joblib"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "absent"
    return versions


def minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


@dataclass
class Draft:
    """A bundle about to be published: everything but its version number."""

    model: str
    pipeline: Any
    schema: Schema
    metrics: dict[str, Any]
    spec: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    git_commit: str | None = None
    run: dict[str, Any] | None = None  # what produced it (e.g. the Prefect flow run): not part of its content
    background: list[dict[str, Any]] | None = None  # a sample of the training rows' fields, for explanations

    def files(self) -> dict[str, bytes]:
        """Serialise the artifacts; the pipeline with joblib, the rest as canonical JSON."""
        import joblib

        buffer = io.BytesIO()
        joblib.dump(self.pipeline, buffer)
        return {
            PIPELINE_FILE: buffer.getvalue(),
            SCHEMA_FILE: dump_json(self.schema.to_json()),
            METRICS_FILE: dump_json(self.metrics),
            **({BACKGROUND_FILE: dump_json(self.background)} if self.background else {}),
        }

    def manifest(self, files: dict[str, bytes], version: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "format": FORMAT,
            "model": self.model,
            "files": {name: sha256(data) for name, data in sorted(files.items())},
            "environment": library_versions(),
            "data": self.data,
            "spec": self.spec,
        }
        body["fingerprint"] = fingerprint(body)
        body.update(version=version, created=datetime.now(UTC).isoformat(timespec="seconds"),
                    timings=self.timings, git_commit=self.git_commit)
        if self.run:
            body["run"] = self.run
        return body


def fingerprint(manifest: dict[str, Any]) -> str:
    """Hash of everything that defines a bundle's content (not its version, time or timings)."""
    stable = {k: v for k, v in manifest.items() if k not in (*RUN_DEPENDENT, "fingerprint")}
    return sha256(dump_json(stable))


def verify_manifest(raw: bytes, expected_sha256: str, where: str) -> dict[str, Any]:
    """Check the manifest's bytes against the hash kept in the registry index, then parse it."""
    actual = sha256(raw)
    if actual != expected_sha256:
        raise IntegrityError(f"{where}/{MANIFEST_FILE}: sha256 {actual} does not match the registry index "
                             f"({expected_sha256}); the manifest was changed after publication",
                             file=MANIFEST_FILE)
    manifest: dict[str, Any] = json.loads(raw)
    return manifest


def verify_file(manifest: dict[str, Any], name: str, data: bytes | None, where: str) -> bytes:
    """Check one bundle file against the manifest; raise naming the file and the reason."""
    expected = manifest["files"].get(name)
    if expected is None:
        raise IntegrityError(f"{where}/{name}: not listed in the manifest", file=name)
    if data is None:
        raise IntegrityError(f"{where}/{name}: missing from the bundle", file=name)
    actual = sha256(data)
    if actual != expected:
        raise IntegrityError(f"{where}/{name}: sha256 {actual} does not match the manifest ({expected}); "
                             "the file was changed after publication", file=name)
    return data


def check_compatible(manifest: dict[str, Any], where: str) -> None:
    """Refuse a pipeline pickled by another scikit-learn minor version than the one installed here."""
    built = manifest.get("environment", {}).get("scikit-learn", "absent")
    here = library_versions()["scikit-learn"]
    if minor(built) != minor(here):
        raise IncompatibleBundle(f"{where}/{PIPELINE_FILE}: built with scikit-learn {built}, but {here} is "
                                 f"installed; retrain it or install scikit-learn {minor(built)}.*",
                                 file=PIPELINE_FILE, built=built, installed=here)


@dataclass
class Bundle:
    """A published, verified bundle: manifest, schema, metrics and (when loaded) the fitted pipeline."""

    model: str
    version: int
    sha256: str  # the manifest's hash, which names every file's hash: the bundle's identity
    manifest: dict[str, Any]
    schema: Schema
    metrics: dict[str, Any]
    pipeline: Any = None
    background: list[dict[str, Any]] | None = None  # loaded with the pipeline, when the bundle keeps one

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"


def load_pipeline(data: bytes) -> Any:
    import sys

    import joblib

    from batcomputer.models import encoding

    # Bundles pickled before the core was split into packages name the encoder's old module: they load unchanged.
    sys.modules.setdefault("batcomputer.encoding", encoding)
    return joblib.load(io.BytesIO(data))
