"""Storage primitives under the registry: a local folder or any fsspec URL, with atomic create and swap."""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any, Protocol


class Store(Protocol):
    """Keys are '/'-separated paths below the store's root."""

    url: str

    def read(self, key: str) -> bytes | None: ...

    def read_versioned(self, key: str) -> tuple[bytes, str] | None: ...

    def write(self, key: str, data: bytes) -> None: ...

    def create(self, key: str, data: bytes) -> bool: ...

    def swap(self, key: str, data: bytes, token: str | None) -> bool: ...

    def list(self, prefix: str) -> list[str]: ...


class LocalStore:
    """A folder on local disk: atomic renames, hard-link create-if-absent and lock-guarded swaps."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def read(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def signature(self, key: str) -> tuple[int, int, int] | None:
        """What changes whenever ``key`` is rewritten (every write is a rename: a new inode), for one stat
        call instead of a read; None if absent."""
        try:
            found = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return found.st_ino, found.st_mtime_ns, found.st_size

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        data = self.read(key)
        return None if data is None else (data, hashlib.sha256(data).hexdigest())

    def _staged(self, key: str, data: bytes) -> Path:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return Path(tmp)

    def write(self, key: str, data: bytes) -> None:
        tmp = self._staged(key, data)
        os.replace(tmp, self._path(key))

    def create(self, key: str, data: bytes) -> bool:
        tmp = self._staged(key, data)
        try:
            os.link(tmp, self._path(key))
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink()

    def swap(self, key: str, data: bytes, token: str | None) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f".{path.name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self.read_versioned(key)
            if (current[1] if current else None) != token:
                return False
            self.write(key, data)
            return True

    def list(self, prefix: str) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self._path(prefix)) if not n.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            return []


def _is_precondition_failed(exc: BaseException) -> bool:
    return getattr(exc, "status_code", None) == 412 or type(exc).__name__ == "ResourceModifiedError"


class FsspecStore:
    """Any fsspec filesystem that offers exclusive create and etag compare-and-swap (e.g. Azure via adlfs)."""

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        import fsspec

        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url, **(options or {}))
        self.root = root.rstrip("/")

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def read(self, key: str) -> bytes | None:
        try:
            return bytes(self.fs.cat_file(self._path(key)))
        except FileNotFoundError:
            return None

    def _forget(self, path: str) -> None:
        """Drop cached listings of ``path`` and its folder: ``info`` answers from the folder's listing."""
        self.fs.invalidate_cache(path)
        self.fs.invalidate_cache(path.rsplit("/", 1)[0])

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        path = self._path(key)
        self._forget(path)
        try:
            etag = str(self.fs.info(path)["etag"])  # before reading: a later write then fails the swap
            return bytes(self.fs.cat_file(path)), etag
        except FileNotFoundError:
            return None

    def write(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(self._path(key), data)

    def create(self, key: str, data: bytes) -> bool:
        try:
            self.fs.pipe_file(self._path(key), data, overwrite=False)
            return True
        except FileExistsError:
            return False
        except Exception as exc:
            if getattr(exc, "status_code", None) == 409:
                return False
            raise

    def swap(self, key: str, data: bytes, token: str | None) -> bool:
        if token is None:
            return self.create(key, data)
        try:
            self.fs.pipe_file(self._path(key), data, if_match=token)
            return True
        except Exception as exc:
            if _is_precondition_failed(exc):
                return False
            raise

    def list(self, prefix: str) -> list[str]:
        path = self._path(prefix)
        self._forget(path)
        try:
            entries = self.fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        return sorted(name.rstrip("/").rsplit("/", 1)[-1] for name in entries)


def is_local(url: str) -> bool:
    """Plain paths and file:// URLs are local folders; any other URL is read by fsspec over the network."""
    return "://" not in url or url.startswith("file://")


def open_store(url: str, options: dict[str, Any] | None = None) -> Store:
    """A local folder for plain paths and file:// URLs, else an fsspec store."""
    if is_local(url):
        return LocalStore(url.removeprefix("file://"))
    return FsspecStore(url, options)


def unique_name() -> str:
    return uuid.uuid4().hex


