"""Where batch files may live: the storage roots, URIs confined to them, and atomic writes of output parts."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from batcomputer.errors import BatcomputerError
from batcomputer.settings import Settings

TENANTS = "tenants"  # in every root: one folder per API key, the only place its files go by default


class StorageRefused(BatcomputerError):
    """A URI outside the storage roots, with ``..``, through a link that leads out, or of another scheme."""

    code = "storage_refused"
    status = 422
    title = "Storage location refused"


class StorageForbidden(BatcomputerError):
    """A URI inside the roots but outside every prefix the calling key is granted."""

    code = "storage_forbidden"
    status = 403
    title = "Storage location forbidden to this key"


@dataclass(frozen=True)
class Location:
    """A confined place: ``url`` as users see it, ``fs`` the fsspec filesystem, ``path`` within it."""

    url: str
    fs: Any
    path: str
    local: bool


@dataclass(frozen=True)
class Root:
    url: str
    protocol: str
    path: str  # local: the real path (links resolved); remote: the path without the protocol


def _split(uri: str) -> tuple[str, str]:
    """(protocol, path): plain paths and file:// URLs are local ("file")."""
    if "://" not in uri:
        return "file", uri
    protocol, _, rest = uri.partition("://")
    return protocol.lower(), rest


class Storage:
    """The roots batch inputs and outputs are confined to (``BATCOMPUTER_STORAGE_ROOTS``: local folders, or
    fsspec URLs such as ``abfs://container/batches``). The first root holds uploads and default outputs."""

    def __init__(self, roots: list[str], options: dict[str, Any] | None = None) -> None:
        if not roots:
            raise ValueError("at least one storage root is needed")
        self.options = options or {}
        self.roots: list[Root] = []
        for url in roots:
            protocol, path = _split(url.rstrip("/") or "/")
            if protocol == "file":
                os.makedirs(path, exist_ok=True)
                path = os.path.realpath(path)
            self.roots.append(Root(url, protocol, path.rstrip("/") or "/"))

    @classmethod
    def from_settings(cls, settings: Settings) -> Storage:
        roots = [root.strip() for root in settings.storage_roots.split(",") if root.strip()]
        return cls(roots, settings.storage_options)

    def _fs(self, protocol: str) -> Any:
        import fsspec

        return fsspec.filesystem(protocol, **({} if protocol == "file" else self.options))

    def confine(self, uri: str, field: str) -> Location:
        """The location of ``uri`` if it lies within a storage root; else ``StorageRefused`` naming ``field``."""
        if not isinstance(uri, str) or not uri.strip():
            raise StorageRefused(f"{field} must be a non-empty URI or path", field=field)
        if any(ord(c) < 32 for c in uri):
            raise StorageRefused(f"{field} may not contain control characters (NUL, line breaks)", field=field)
        protocol, path = _split(uri.strip())
        if ".." in PurePosixPath(path).parts or ".." in path.replace("\\", "/").split("/"):
            raise StorageRefused(f"{field} may not contain '..'", field=field, uri=uri)
        allowed = [root for root in self.roots if root.protocol == protocol]
        if not allowed:
            schemes = sorted({root.protocol for root in self.roots})
            raise StorageRefused(f"{field}: the scheme {protocol!r} is not allowed; storage roots take "
                                 f"{', '.join(schemes)}", field=field, uri=uri)
        if protocol == "file":
            real = os.path.realpath(path)  # follows every link: a link out of the root lands outside it
            for root in allowed:
                if real == root.path or real.startswith(root.path.rstrip("/") + "/"):
                    return Location(uri, self._fs("file"), real, True)
        else:
            clean = path.strip("/")
            for root in allowed:
                if clean == root.path.strip("/") or clean.startswith(root.path.strip("/") + "/"):
                    return Location(uri, self._fs(protocol), clean, False)
        raise StorageRefused(f"{field} {uri!r} is outside the storage roots "
                             f"({', '.join(root.url for root in self.roots)})", field=field, uri=uri)

    def prefixes(self, owner: str) -> list[str]:
        """Where ``owner``'s files live by default: its folder under ``tenants/`` in every root."""
        return [f"{root.url.rstrip('/')}/{TENANTS}/{owner}" for root in self.roots]

    def confine_to(self, uri: str, field: str, prefixes: list[str]) -> Location:
        """``confine``, and the location must also lie under one of ``prefixes`` (themselves confined to the
        roots); else ``StorageForbidden`` naming ``field`` and the prefixes the caller may use."""
        location = self.confine(uri, field)
        for prefix in prefixes:
            try:
                allowed = self.confine(prefix, field)
            except StorageRefused:
                continue
            if _split(location.url)[0] == _split(allowed.url)[0] and (location.path == allowed.path
                                or location.path.startswith(allowed.path.rstrip("/") + "/")):
                return location
        raise StorageForbidden(f"{field} {uri!r} is outside the places this key may use ({', '.join(prefixes)}); "
                               "an admin can grant a shared prefix: batcomputer keys grant NAME PREFIX",
                               field=field, uri=uri, allowed=prefixes)

    def place(self, name: str, owner: str | None = None) -> Location:
        """A location for ``name`` (a relative file name) in the first root, inside ``owner``'s folder when
        there is one: uploads and default outputs."""
        if owner is not None:
            name = f"{TENANTS}/{owner}/{name}"
        root = self.roots[0]
        if root.protocol == "file":
            return self.confine(os.path.join(root.path, name), "name")
        return self.confine(f"{root.protocol}://{root.path.strip('/')}/{name}", "name")


def commit(location: Location, data: bytes) -> None:
    """Write ``data`` at ``location`` all at once: readers see the old file or the whole new one, never part
    of it. Locally a temporary file in the same folder is renamed over it; an object store's single PUT of
    a blob is atomic already. A redelivered chunk committing again replaces only its own part."""
    if location.local:
        folder = os.path.dirname(location.path)
        os.makedirs(folder, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=".part-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, location.path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
        return
    location.fs.pipe_file(location.path, data)


def commit_file(location: Location, temporary: str) -> None:
    """Move a finished local file to ``location`` all at once (see ``commit``): a rename in the same folder
    locally, one upload to an object store."""
    if location.local:
        os.makedirs(os.path.dirname(location.path), exist_ok=True)
        os.replace(temporary, location.path)
        return
    location.fs.put_file(temporary, location.path)


def remove(location: Location) -> None:
    """Delete a file or a folder of parts; one already gone is fine."""
    with contextlib.suppress(FileNotFoundError):
        location.fs.rm(location.path, recursive=True)


def write_stream(location: Location, read: Any, limit: int, block: int = 1 << 20) -> int:
    """Copy a stream (``read(n)`` gives bytes, b"" at the end) to ``location``, committed whole; more than
    ``limit`` bytes is ``TooLarge`` and leaves nothing behind. Returns the bytes written."""
    from batcomputer.errors import BodyTooLarge

    written = 0
    if location.local:
        folder = os.path.dirname(location.path)
        os.makedirs(folder, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=".upload-", dir=folder)
        handle: Any = os.fdopen(fd, "wb")
    else:
        temporary = ""
        handle = location.fs.open(location.path, "wb")
    try:
        with handle:
            while piece := read(block):
                written += len(piece)
                if written > limit:
                    raise BodyTooLarge(f"the file is larger than the limit of {limit} bytes "
                                       f"(BATCOMPUTER_MAX_UPLOAD_BYTES)", limit=limit)
                handle.write(piece)
        if temporary:
            os.replace(temporary, location.path)
            temporary = ""
    except BaseException:
        if temporary and os.path.exists(temporary):
            os.unlink(temporary)
        elif not location.local:
            remove(location)
        raise
    return written


def local_location(path: Any) -> Location:
    """A local file chosen by the person at the command line (not confined: it is their own machine)."""
    import fsspec

    real = os.path.abspath(str(path))
    return Location(real, fsspec.filesystem("file"), real, True)
