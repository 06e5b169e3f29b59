"""API keys: named, scoped, stored only as hashes (a keys file, or a Secret-mounted environment variable).

A key is 32 random bytes (URL-safe text) shown once when created; the file keeps its SHA-256 (a key has
too much entropy for a slow hash to add anything) and compares in constant time. Scopes: ``score`` (submit,
poll, batches, streams) and ``admin`` (all of that, and alias moves, rollback, retrain).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batcomputer.errors import BadRequest, ConfigurationError, Conflict, NotFound
from batcomputer.settings import Settings

SCOPES = ("score", "admin")
PREFIX = "bc_"  # keys say what they are (and secret scanners can find them)


@dataclass(frozen=True)
class Key:
    name: str
    scope: str
    grants: tuple[str, ...] = ()  # storage prefixes beyond the key's own folder that an admin granted it
    id: str = ""  # what owns jobs and files: the name and a digest of this key, so a name reused never inherits
    ordinal: int = 0  # its place in creation order (0: no key): which lane of each queue its work takes

    def allows(self, scope: str) -> bool:
        return self.scope == "admin" or self.scope == scope


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def owner_id(name: str, sha256: str) -> str:
    """The identity a key's jobs and files belong to: ``<name>.<8 hex of its digest>``. A key created later
    under a revoked key's name has another digest, so it sees none of the old key's work."""
    return f"{name}.{sha256[:8]}"


def keys_path(settings: Settings) -> Path:
    return Path(settings.keys_file) if settings.keys_file else Path(settings.state_dir) / "keys.json"


class KeyRing:
    """The keys the gateway accepts: the keys file's and those of ``BATCOMPUTER_API_KEYS``."""

    def __init__(self, path: Path, extra: dict[str, Any] | None = None) -> None:
        self.path = path
        self.extra = extra or {}

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        return cls(keys_path(settings), settings.api_keys)

    def _file(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"the keys file {self.path} is unreadable: {exc}") from None
        return dict(data.get("keys", {}))

    def entries(self) -> dict[str, Any]:
        return {**self._file(), **self.extra}

    def authenticate(self, token: str) -> Key | None:
        found = digest(token)
        match = None
        for name, entry in self.entries().items():
            if hmac.compare_digest(str(entry.get("sha256", "")), found) and not entry.get("revoked"):
                ordinal = int(entry.get("ordinal") or 1 + zlib.crc32(name.encode()) % 997)  # keys from the environment
                match = Key(name, str(entry.get("scope", "score")), tuple(entry.get("grants", ())),
                            owner_id(name, str(entry["sha256"])), ordinal)
        return match

    def create(self, name: str, scope: str) -> str:
        """Add a key; returns it (the only time it exists outside the caller's hands)."""
        if scope not in SCOPES:
            raise BadRequest(f"scope must be one of {', '.join(SCOPES)}", field="scope")
        if not name or len(name) > 100 or not all(c.isalnum() or c in "-_." for c in name):
            raise BadRequest("a key's name is 1-100 letters, digits, '-', '_' or '.'", field="name")
        keys = self._file()
        if name in keys and not keys[name].get("revoked"):
            raise Conflict(f"a key named {name!r} exists; revoke it first", field="name")
        token = PREFIX + secrets.token_urlsafe(32)
        created = datetime.now(UTC).isoformat(timespec="seconds")
        ordinal = 1 + max((int(entry.get("ordinal", 0)) for entry in keys.values()), default=len(keys))
        keys[name] = {"scope": scope, "sha256": digest(token), "created": created, "ordinal": ordinal}
        self._write(keys)
        return token

    def grant(self, name: str, prefix: str, withdraw: bool = False) -> tuple[str, ...]:
        """Let key ``name`` read and write batch files under ``prefix`` too (or no longer, ``withdraw``);
        returns its grants."""
        keys = self._file()
        if name not in keys or keys[name].get("revoked"):
            raise NotFound(f"no live key named {name!r} in {self.path}", field="name")
        grants = [g for g in keys[name].get("grants", []) if g != prefix]
        if not withdraw:
            grants.append(prefix)
        keys[name] = {**keys[name], "grants": grants}
        self._write(keys)
        return tuple(grants)

    def revoke(self, name: str) -> None:
        keys = self._file()
        if name not in keys:
            raise NotFound(f"no key named {name!r} in {self.path}", field="name")
        keys[name] = {**keys[name], "revoked": datetime.now(UTC).isoformat(timespec="seconds")}
        self._write(keys)

    def _write(self, keys: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=".keys-", dir=self.path.parent)
        with os.fdopen(fd, "w") as handle:
            json.dump({"keys": keys}, handle, indent=2, sort_keys=True)
        os.chmod(temporary, 0o600)
        os.replace(temporary, self.path)
