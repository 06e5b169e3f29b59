"""The score message the gateway writes itself matches what Celery's own send_task writes, field for field."""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from batcomputer.jobqueue.broker import make_celery, task_message
from batcomputer.jobqueue.keyspace import QUEUE_BULK, QUEUE_RECORDS, TASK_SCORE, Keys
from batcomputer.settings import Settings
from tests.conftest import remove_keys

IDS = ("headers", "id"), ("headers", "root_id"), ("headers", "origin"), ("properties", "correlation_id"), \
    ("properties", "delivery_tag"), ("properties", "reply_to")


@pytest.fixture
def prefixed(redis_base_url: str) -> Iterator[Settings]:
    settings = dataclasses.replace(Settings.from_env({}), redis_url=redis_base_url,
                                   key_prefix=f"bct-{uuid.uuid4().hex[:10]}:")
    yield settings
    remove_keys(redis_base_url, settings.key_prefix)


def shape(message: dict[str, Any]) -> dict[str, Any]:
    """The message with its per-message identifiers blanked, and its body decoded."""
    copy = json.loads(json.dumps(message))
    for part, key in IDS:
        copy[part][key] = "<id>"
    copy["body"] = json.loads(base64.b64decode(copy["body"]))
    return copy


@pytest.mark.parametrize("queue", [QUEUE_RECORDS, QUEUE_BULK])
def test_the_message_is_the_one_celery_would_send(prefixed: Settings, queue: str) -> None:
    client = redis.Redis.from_url(prefixed.redis_url or "")
    make_celery(prefixed).send_task(TASK_SCORE, args=[["a1", "b2"]], queue=queue)
    theirs = json.loads(client.rpop(Keys(prefixed.key_prefix).queue(queue)) or b"{}")
    ours = json.loads(task_message(["a1", "b2"], queue))
    assert shape(ours) == shape(theirs)
    assert ours["headers"]["id"] == ours["headers"]["root_id"] == ours["properties"]["correlation_id"]
    assert ours["properties"]["delivery_tag"] != json.loads(task_message(["a1"], queue))["properties"]["delivery_tag"]
