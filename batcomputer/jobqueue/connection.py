"""Redis connections every component shares: the configured URL, or the one a running `batcomputer up` left."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from batcomputer.errors import ConfigurationError
from batcomputer.settings import Settings

ADDRESS_FILE = "url"  # in <state dir>/redis/: where `up` leaves the URL of the Redis it uses, for commands beside it


def reachable(url: str, timeout: float = 1.0) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout).ping())
    except redis.RedisError:
        return False


def discover(state_dir: str) -> str | None:
    """The URL of the Redis a running ``batcomputer up`` uses (found or started), if it answers."""
    try:
        url = (Path(state_dir) / "redis" / ADDRESS_FILE).read_text().strip()
    except OSError:
        return None
    return url if url and reachable(url, 0.5) else None


def record_address(state_dir: str, url: str | None) -> None:
    """Leave ``url`` where ``discover`` finds it (None: remove it, the stack is stopping)."""
    path = Path(state_dir) / "redis" / ADDRESS_FILE
    if url is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(url + "\n")


def redis_url(settings: Settings) -> str:
    """BATCOMPUTER_REDIS_URL, else the Redis a running ``batcomputer up`` uses (from its state folder)."""
    if settings.redis_url:
        return settings.redis_url
    found = discover(settings.state_dir)
    if found is None:
        raise ConfigurationError("BATCOMPUTER_REDIS_URL is not set and no `batcomputer up` runs with state folder "
                                 f"{settings.state_dir!r}; set it, or start everything with `batcomputer up`, "
                                 "which finds or starts a Redis")
    return found


def redis_client(settings: Settings, pool_size: int | None = None, **options: Any) -> redis.Redis:
    """A Redis client with short timeouts: an outage must surface as an error, not a hang. With
    ``pool_size``, at most that many connections, and a caller beyond them waits (up to the socket timeout)
    for a free one instead of failing: for servers with more concurrent requests than connections."""
    options.setdefault("socket_connect_timeout", 2)
    options.setdefault("socket_timeout", 10)
    options.setdefault("health_check_interval", 15)
    if pool_size is None:
        return redis.Redis.from_url(redis_url(settings), **options)
    pool = redis.BlockingConnectionPool.from_url(redis_url(settings), max_connections=pool_size,
                                                 timeout=options["socket_timeout"], **options)
    return redis.Redis(connection_pool=pool)
