"""Who is calling: API keys and scopes on every route (production profile), per-key rate limits, and the
rule that a job is visible only to the key that submitted it (by the key's id: a name reused is another owner)."""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, g, request

from batcomputer.apikeys import Key, KeyRing
from batcomputer.errors import ConfigurationError, Forbidden, NotFound, TooManyRequests, Unauthorized
from batcomputer.settings import Settings

PUBLIC = {"health.healthz", "health.readyz", "metrics.show_metrics", "docs.openapi", "docs.swagger", "docs.page",
          "docs.asset", "static", "web.index", "web.asset", "web.font", "v2.health_live", "v2.health_ready"}
ADMIN = {"models.move_alias", "models.unpin_alias", "models.rollback", "retraining.retrain", "jobs.list_dead",
         "jobs.replay_job", "monitoring.show_monitoring",  # monitoring: aggregates of every key's traffic
         "rollout.set_canary", "rollout.clear_canary", "rollout.show_canary",
         "rollout.show_rollout"}  # a rollout's figures are every key's traffic, like monitoring
LOCAL_ACTOR = "local"  # who moves an alias when there are no keys (the local profile)


def caller() -> Key | None:
    """The calling key (None in the local profile, where there are none)."""
    found: Key | None = g.get("key")
    return found


def actor() -> str:
    """What the alias history records as ``by``: the key's name, never text the client sends."""
    key = caller()
    return key.name if key else LOCAL_ACTOR


def check_owner(job: dict[str, Any]) -> dict[str, Any]:
    """The job if the caller may see it; another key's job is a 404, as if it did not exist."""
    key = caller()
    if key is not None and job.get("owner") != key.id:
        raise NotFound(f"job {job.get('id')!r} does not exist or has expired", job=job.get("id"))
    return job


def install(app: Flask, settings: Settings, redis: Any) -> None:
    if settings.profile != "production":
        return
    ring = KeyRing.from_settings(settings)
    if not ring.entries():
        raise ConfigurationError(f"the production profile needs API keys: create one with `batcomputer keys create "
                                 f"NAME --scope admin` (keys file {ring.path}) or set BATCOMPUTER_API_KEYS")
    prefix = settings.key_prefix

    def spend(who: str, label: str) -> None:
        """Count a request of ``who`` in this minute; past the limit, a 429."""
        window = int(time.time() // 60)
        counter = f"{prefix}rate:{who}:{window}"
        with redis.pipeline(transaction=False) as pipe:
            pipe.incr(counter)
            pipe.expire(counter, 120)
            used = pipe.execute()[0]
        if used > settings.rate_limit_per_minute:
            raise TooManyRequests(f"{label} made more than {settings.rate_limit_per_minute} requests this "
                                  f"minute", retry_after=max(1, 60 - int(time.time() % 60)),
                                  limit=settings.rate_limit_per_minute)

    @app.before_request
    def authenticate() -> None:
        if request.endpoint in PUBLIC or request.endpoint is None:
            return
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        key = ring.authenticate(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if key is None:  # guesses are rate-limited too, per client address
            spend(f"addr:{request.remote_addr or 'unknown'}", "this address (without a valid key)")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthorized("send an API key: Authorization: Bearer <key>", field="Authorization")
            raise Unauthorized("the API key is unknown or revoked", field="Authorization")
        needed = "admin" if request.endpoint in ADMIN else "score"
        if not key.allows(needed):
            raise Forbidden(f"this route needs a key with the {needed!r} scope; {key.name!r} has {key.scope!r}",
                            scope=needed)
        spend(key.id, repr(key.name))
        g.key = key

    @app.after_request
    def challenge(response: Any) -> Any:
        if response.status_code == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="batcomputer"'
        return response
