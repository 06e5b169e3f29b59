"""A small HTTP client of the gateway for batch files: submit, follow progress, download the output.

Used by ``batcomputer score`` and by flows that schedule bulk scoring; standard library only, and files are
streamed both ways (a file of any size costs a buffer of memory).
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batcomputer.errors import BatcomputerError

PARQUET = "application/vnd.apache.parquet"
FINAL = ("succeeded", "failed", "dead", "cancelled")


class GatewayError(BatcomputerError):
    """The gateway refused a request or could not be reached; ``detail`` says why, in its words."""

    code = "gateway"
    status = 502
    title = "Gateway request failed"


class Client:
    """``api_key``: the bearer key a gateway in the production profile needs (``BATCOMPUTER_API_KEY``)."""

    def __init__(self, base_url: str, timeout: float = 60, api_key: str | None = None) -> None:
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self.api_key = api_key

    def _open(self, method: str, path: str, data: Any = None, headers: dict[str, str] | None = None) -> Any:
        sent = {**(headers or {}), **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})}
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method, headers=sent)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            try:
                problem = json.loads(exc.read())
                detail = problem.get("detail") or str(problem)
            except ValueError:
                problem, detail = {}, f"HTTP {exc.code}"
            raise GatewayError(detail, http_status=exc.code, problem=problem) from None
        except OSError as exc:
            raise GatewayError(f"cannot reach the gateway at {self.base} ({exc}); is it running? "
                               f"(BATCOMPUTER_API_URL)") from None

    def _json(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        with self._open(method, path, data, {"Content-Type": "application/json"} if data else {}) as response:
            found: dict[str, Any] = json.loads(response.read())
            return found

    def submit_file(self, model: str, path: Path, columns: list[str] | None = None,
                    version: str | None = None) -> dict[str, Any]:
        """Upload a Parquet file as a batch; returns the accepted job."""
        query = {k: v for k, v in (("columns", ",".join(columns or [])), ("version", version)) if v}
        suffix = f"?{urllib.parse.urlencode(query)}" if query else ""
        with path.open("rb") as handle:
            headers = {"Content-Type": PARQUET, "Content-Length": str(os.fstat(handle.fileno()).st_size)}
            with self._open("POST", f"/api/models/{urllib.parse.quote(model)}/batches{suffix}", handle,
                            headers) as response:
                found: dict[str, Any] = json.loads(response.read())
                return found

    def submit_uris(self, model: str, input_uri: str, output_uri: str | None = None) -> dict[str, Any]:
        """Submit a file already in the storage roots; returns the accepted job."""
        body = {"input_uri": input_uri, **({"output_uri": output_uri} if output_uri else {})}
        return self._json("POST", f"/api/models/{urllib.parse.quote(model)}/batches", body)

    def model(self, model: str) -> dict[str, Any]:
        """A model's versions, aliases and current schema (with its training profile)."""
        return self._json("GET", f"/api/models/{urllib.parse.quote(model)}")

    def submit(self, model: str, records: list[dict[str, Any]], wait: float = 0) -> dict[str, Any]:
        """Submit records as one job (``wait``: seconds the gateway may wait for its end)."""
        suffix = f"?wait={wait:g}" if wait else ""
        return self._json("POST", f"/api/models/{urllib.parse.quote(model)}/jobs{suffix}", {"records": records})

    def append(self, model: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Append records to the model's input stream."""
        return self._json("POST", f"/api/models/{urllib.parse.quote(model)}/stream", {"records": records})

    def outcomes(self, model: str, outcomes: list[dict[str, Any]]) -> dict[str, Any]:
        """Send what really happened (``{"job", "index", "label"}`` items)."""
        return self._json("POST", f"/api/models/{urllib.parse.quote(model)}/outcomes", {"outcomes": outcomes})

    def job(self, job_id: str, wait: float = 0) -> dict[str, Any]:
        return self._json("GET", f"/api/jobs/{job_id}" + (f"?wait={wait:g}" if wait else ""))

    def follow(self, job_id: str, on_progress: Callable[[dict[str, Any]], None] | None = None,
               poll: float = 2.0) -> dict[str, Any]:
        """Wait for a job to end (each poll waits in the gateway up to ``poll`` seconds)."""
        while True:
            job = self.job(job_id, wait=poll)
            if on_progress is not None:
                on_progress(job)
            if job["state"] in FINAL:
                return job

    def download(self, job_id: str, target: Path) -> int:
        """Stream a finished batch's output to ``target``, written whole (a temporary file renamed)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=".download-", dir=target.parent)
        size = 0
        try:
            with os.fdopen(fd, "wb") as handle, self._open("GET", f"/api/jobs/{job_id}/output") as response:
                while piece := response.read(1 << 20):
                    handle.write(piece)
                    size += len(piece)
            os.replace(temporary, target)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
        return size
