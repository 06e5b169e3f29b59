"""The versioned model registry: immutable numbered versions, atomic aliases with history, verified loads."""

from __future__ import annotations

import getpass
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from batcomputer.errors import (
    AliasMoved,
    AliasNotFound,
    AliasPinned,
    BadRequest,
    Conflict,
    IntegrityError,
    ModelNotFound,
    RegistryCorrupt,
    VersionNotFound,
)
from batcomputer.jobqueue.keyspace import DEFAULT_ALIAS
from batcomputer.models import bundle as bundles
from batcomputer.models.bundle import Bundle, Draft
from batcomputer.models.registry_store import Store, open_store, unique_name
from batcomputer.models.schema import Schema
from batcomputer.settings import Settings

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
VERSION = re.compile(r"^[0-9]{1,9}$")  # ASCII digits only: str.isdigit() also accepts '²', which int() refuses
MAX_VERSION = 999_999_999
MAX_SWAP_ATTEMPTS = 50
MAX_REASON_CHARS = 1_000
MAX_BY_CHARS = 200
MAX_HISTORY = 200  # alias moves kept per alias: every submission pinned to the alias reads this file


def parse_version(text: str) -> int:
    """A version number given as text (a query parameter, ``model@3``), or a ``BadRequest`` naming it."""
    if not VERSION.match(text) or int(text) < 1:
        raise BadRequest(f"version must be a whole number from 1 to {MAX_VERSION}, not {text[:40]!r}",
                         field="version")
    return int(text)


def parse_json_file(raw: bytes, key: str) -> Any:
    """Parse a registry JSON file; a truncated or edited one is ``RegistryCorrupt`` naming it."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise RegistryCorrupt(f"registry file {key} is not valid JSON ({exc}); restore it from a backup or "
                              "republish", file=key) from None


def check_name(kind: str, name: str) -> str:
    if not NAME.match(name):
        raise BadRequest(f"{kind} {name!r} is not a valid name (lower-case letters, digits, '-' and '_')",
                         field=kind)
    return name


ANY = object()  # set_alias's ``expect`` when the alias may point anywhere


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Published:
    """The outcome of a publish: the version, and whether it is new or an existing identical one."""

    model: str
    version: int
    created: bool
    sha256: str


class Registry:
    """Models and their versions in a store. Layout under the root, per model:

    ``bundles/<id>/``  the bundle files, uploaded first under a name unique to the publisher;
    ``versions/<N>.json``  the index entry (bundle path, manifest hash), created exclusively: the commit point;
    ``aliases/<A>.json``  the alias target and its whole history, replaced by compare-and-swap.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._aliases: dict[str, tuple[Any, dict[str, Any] | None]] = {}  # key -> (signature, parsed state)

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        return cls(open_store(settings.registry, settings.registry_options))

    # -- reading the index -------------------------------------------------------------------

    def models(self) -> list[str]:
        return [m for m in self.store.list("") if NAME.match(m) and self.store.list(f"{m}/versions")]

    def versions(self, model: str) -> list[int]:
        names = self.store.list(f"{check_name('model', model)}/versions")
        return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())

    def entry(self, model: str, version: int) -> dict[str, Any]:
        key = f"{check_name('model', model)}/versions/{int(version)}.json" if 1 <= version <= MAX_VERSION else ""
        raw = self.store.read(key) if key else None
        if raw is None:
            if not self.versions(model):
                raise ModelNotFound(f"model {model!r} is not in the registry", model=model)
            raise VersionNotFound(f"model {model!r} has no version {version}; versions: "
                                  f"{', '.join(map(str, self.versions(model)))}", model=model, version=version)
        entry: dict[str, Any] = parse_json_file(raw, key)
        return entry

    def resolve(self, model: str, ref: str | int | None = None, default_alias: str = DEFAULT_ALIAS) -> int:
        """Turn a version number, an alias name or nothing (the default alias) into a version number."""
        if isinstance(ref, int) or (isinstance(ref, str) and ref[:1].isdigit()):
            version = ref if isinstance(ref, int) else parse_version(ref)
            self.entry(model, version)
            return version
        alias = ref or default_alias
        state = self._alias_state(model, alias)
        if state is None or state.get("version") is None:
            if not self.versions(model):
                raise ModelNotFound(f"model {model!r} is not in the registry", model=model)
            raise AliasNotFound(f"model {model!r} has no alias {alias!r}; aliases: "
                                f"{', '.join(sorted(self.aliases(model))) or 'none'}", model=model, alias=alias)
        return int(state["version"])

    # -- publishing ----------------------------------------------------------------------------

    def publish(self, draft: Draft) -> Published:
        """Publish a draft as the next version, or return the existing version with identical content."""
        model = check_name("model", draft.model)
        files = draft.files()
        probe = draft.manifest(files, version=0)
        for version in reversed(self.versions(model)):
            if self.entry(model, version).get("fingerprint") == probe["fingerprint"]:
                return Published(model, version, False, self.entry(model, version)["manifest_sha256"])
        where = f"{model}/bundles/{unique_name()}"
        for name, data in files.items():
            self.store.write(f"{where}/{name}", data)
        for _ in range(MAX_SWAP_ATTEMPTS):
            version = max(self.versions(model), default=0) + 1
            manifest = bundles.dump_json(draft.manifest(files, version))
            self.store.write(f"{where}/{bundles.MANIFEST_FILE}", manifest)
            entry = {"version": version, "bundle": where.split("/", 1)[1], "manifest_sha256": bundles.sha256(manifest),
                     "fingerprint": probe["fingerprint"], "created": now()}
            if self.store.create(f"{model}/versions/{version}.json", bundles.dump_json(entry)):
                return Published(model, version, True, entry["manifest_sha256"])
        raise Conflict(f"could not allocate a version of {model!r} after {MAX_SWAP_ATTEMPTS} attempts")

    # -- loading -------------------------------------------------------------------------------

    def _verified(self, model: str, version: int, names: tuple[str, ...] | None) -> tuple[dict[str, Any], str,
                                                                                          dict[str, bytes], str]:
        """The verified manifest, its hash, the named files (each verified; None: every file the manifest
        lists) and where the bundle lies."""
        entry = self.entry(model, version)
        where = f"{model}/{entry['bundle']}"
        raw = self.store.read(f"{where}/{bundles.MANIFEST_FILE}")
        if raw is None:
            raise IntegrityError(f"{where}/{bundles.MANIFEST_FILE}: missing", file=bundles.MANIFEST_FILE)
        manifest = bundles.verify_manifest(raw, entry["manifest_sha256"], where)
        files = {n: bundles.verify_file(manifest, n, self.store.read(f"{where}/{n}"), where)
                 for n in (names if names is not None else tuple(manifest["files"]))}
        return manifest, entry["manifest_sha256"], files, where

    def bundle(self, model: str, ref: str | int | None = None, *, pipeline: bool = False) -> Bundle:
        """Load and verify a bundle; with ``pipeline`` also unpickle the fitted pipeline (needs scikit-learn)."""
        version = self.resolve(model, ref)
        names = (bundles.SCHEMA_FILE, bundles.METRICS_FILE) + ((bundles.PIPELINE_FILE,) if pipeline else ())
        manifest, digest, files, where = self._verified(model, version, names)
        fitted, background = None, None
        if pipeline:
            bundles.check_compatible(manifest, where)
            fitted = bundles.load_pipeline(files[bundles.PIPELINE_FILE])
            if bundles.BACKGROUND_FILE in manifest["files"]:  # bundles published before explanations keep none
                _, _, extra, _ = self._verified(model, version, (bundles.BACKGROUND_FILE,))
                background = json.loads(extra[bundles.BACKGROUND_FILE])
        return Bundle(model=model, version=version, sha256=digest, manifest=manifest,
                      schema=Schema.from_json(json.loads(files[bundles.SCHEMA_FILE])),
                      metrics=json.loads(files[bundles.METRICS_FILE]), pipeline=fitted, background=background)

    def verify(self, model: str, version: int) -> str:
        """Check every file of a version against its manifest (without unpickling); return the manifest hash."""
        manifest, digest, _, where = self._verified(model, version, None)
        bundles.check_compatible(manifest, where)
        return digest

    def schema(self, model: str, ref: str | int | None = None) -> Schema:
        return self.bundle(model, ref).schema

    # -- aliases -------------------------------------------------------------------------------

    def _alias_state(self, model: str, alias: str) -> dict[str, Any] | None:
        key = f"{check_name('model', model)}/aliases/{check_name('alias', alias)}.json"
        signature = getattr(self.store, "signature", None)
        if signature is None:  # a remote store: a stat costs what a read does
            raw = self.store.read(key)
            return None if raw is None else parse_json_file(raw, key)
        seen = signature(key)  # local: re-read (with its growing history) only when the file changed
        cached = self._aliases.get(key)
        if seen is not None and cached is not None and cached[0] == seen:
            return cached[1]
        raw = self.store.read(key)
        state = None if raw is None else parse_json_file(raw, key)
        self._aliases[key] = (seen, state)
        return state

    def aliases(self, model: str) -> dict[str, int]:
        found = {}
        for name in self.store.list(f"{check_name('model', model)}/aliases"):
            if name.endswith(".json"):
                state = self._alias_state(model, name[:-5])
                if state and state.get("version") is not None:
                    found[name[:-5]] = int(state["version"])
        return found

    def history(self, model: str, alias: str | None = None) -> list[dict[str, Any]]:
        """Every alias move of a model (or of one alias), oldest first."""
        names = [alias] if alias else [n[:-5] for n in self.store.list(f"{model}/aliases") if n.endswith(".json")]
        moves = []
        for name in names:
            state = self._alias_state(model, name) or {}
            moves.extend(state.get("history", []))
        return sorted(moves, key=lambda m: m["at"])

    def _move(self, model: str, alias: str, choose: Any, by: str | None, reason: str, kind: str,
              pin: bool | None = None) -> dict[str, Any]:
        """Compare-and-swap loop: ``choose(state)`` picks the new version from the current alias state (and may
        refuse, raising). ``pin``: True pins the alias where it now points, False unpins it, None keeps its pin."""
        key = f"{check_name('model', model)}/aliases/{check_name('alias', alias)}.json"
        by = by or getpass.getuser()
        if len(reason) > MAX_REASON_CHARS:
            raise BadRequest(f"reason is {len(reason)} characters long; the limit is {MAX_REASON_CHARS}",
                             field="reason", limit=MAX_REASON_CHARS)
        if len(by) > MAX_BY_CHARS:
            raise BadRequest(f"by is {len(by)} characters long; the limit is {MAX_BY_CHARS}", field="by",
                             limit=MAX_BY_CHARS)
        for _ in range(MAX_SWAP_ATTEMPTS):
            current = self.store.read_versioned(key)
            state = parse_json_file(current[0], key) if current else {"version": None, "history": []}
            target = choose(state)
            self.entry(model, target)
            move = {"alias": alias, "from": state["version"], "to": target, "at": now(),
                    "by": by, "reason": reason, "kind": kind}
            new_state = {"version": target, "history": bounded([*state["history"], move])}
            pinned = {"by": by, "at": move["at"], "reason": reason}
            held = state.get("pin") if pin is None else (pinned if pin else None)
            if held:
                new_state["pin"] = held
                move["pinned"] = True
            if self.store.swap(key, bundles.dump_json(new_state), current[1] if current else None):
                return move
        raise Conflict(f"alias {alias!r} of {model!r} is changing too fast; try again")

    def set_alias(self, model: str, alias: str, version: int, by: str | None = None, reason: str = "",
                  pin: bool | None = None, expect: int | object | None = ANY,
                  automatic: bool = False) -> dict[str, Any]:
        """Point ``alias`` at ``version`` (which must exist) and record the move. ``pin``: True holds it there
        against every automatic move until unpinned, False unpins it. ``expect``: move only if the alias still
        points at that version (None: at nothing), else ``AliasMoved``. ``automatic`` (a flow, not a person):
        a pinned alias is not moved (``AliasPinned``)."""

        def check(state: dict[str, Any]) -> int:
            if expect is not ANY and state["version"] != expect:
                raise AliasMoved(f"alias {alias!r} of {model!r} points at {state['version']}, not {expect} as "
                                 f"compared", model=model, alias=alias, version=state["version"], expected=expect)
            if automatic and state.get("pin"):
                held = state["pin"]
                raise AliasPinned(f"alias {alias!r} of {model!r} is pinned to {state['version']} by {held['by']} "
                                  f"({held['at']}): automatic moves wait until it is unpinned", model=model,
                                  alias=alias, version=state["version"], pinned_by=held["by"])
            return int(version)

        return self._move(model, alias, check, by, reason or "promote", "move", pin)

    def unpin(self, model: str, alias: str = DEFAULT_ALIAS, by: str | None = None, reason: str = "") -> dict[str, Any]:
        """Let automatic moves move ``alias`` again (it stays where it points)."""
        state = self._alias_state(model, alias)
        if state is None or state.get("version") is None:
            raise AliasNotFound(f"model {model!r} has no alias {alias!r}", model=model, alias=alias)
        return self._move(model, alias, lambda current: int(current["version"]), by, reason or "unpin", "unpin",
                          pin=False)

    def pin(self, model: str, alias: str = DEFAULT_ALIAS) -> dict[str, Any] | None:
        """Who pinned ``alias``, when and why (None: not pinned)."""
        state = self._alias_state(model, alias) or {}
        found: dict[str, Any] | None = state.get("pin")
        return found

    def rollback(self, model: str, alias: str = DEFAULT_ALIAS, by: str | None = None,
                 reason: str = "") -> dict[str, Any]:
        """Move ``alias`` back to the target it had before its latest move that has not been rolled back."""

        def previous(state: dict[str, Any]) -> int:
            stack: list[int | None] = []
            for move in state["history"]:
                if move["kind"] == "rollback":
                    if stack:  # the move it undid may have left the bounded history
                        stack.pop()
                else:
                    stack.append(move["from"])
            if not stack or stack[-1] is None:
                raise Conflict(f"alias {alias!r} of {model!r} has no earlier target to roll back to",
                               model=model, alias=alias)
            return stack[-1]

        if self._alias_state(model, alias) is None:
            raise AliasNotFound(f"model {model!r} has no alias {alias!r}", model=model, alias=alias)
        return self._move(model, alias, previous, by, reason or "rollback", "rollback")


def bounded(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest ``MAX_HISTORY`` moves: the alias file stays small however often the alias moves."""
    return history[-MAX_HISTORY:]
