"""The one loader of the job protocol's Lua scripts (``scripts/*.lua``) and the one way they are run.

Each script documents its KEYS and ARGV at its top. Names shared with Python (states, queues, phases, counters)
are written ``$name`` in the scripts and filled in here from the keyspace, their one owner. Key names come
from ``Keys`` too: a script that must reach keys it cannot name in advance (a job found by id while sweeping)
takes their prefix from ``Keys`` as an argument, never a literal.

Calls run as EVALSHA, pipelined when there are several, in one round trip; a Redis that does not know a
script (first use, or after a restart) gets them all loaded once and the calls run again.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from string import Template
from typing import Any

import redis

from batcomputer.jobqueue.keyspace import (
    BUSY,
    CANCELLED,
    DEAD,
    FAILED,
    FINAL,
    PHASE_MERGE,
    PHASE_SCORE,
    QUEUE_RECORDS,
    QUEUED,
    RUNNING,
    STAT_DUPLICATES,
    STAT_REPLAYED,
    STAT_RESCORED,
    STAT_RESENT,
    SUCCEEDED,
)

FOLDER = Path(__file__).with_name("scripts")
SENT_PATIENCE = 3  # sweeps that find a sent job's queue busy before it is sent again anyway (see sweep.lua)
NAMES = {"patience": str(SENT_PATIENCE), "final": "," + ",".join(sorted(FINAL)) + ",",
         "queued": QUEUED, "running": RUNNING, "busy": BUSY, "succeeded": SUCCEEDED, "cancelled": CANCELLED,
         "failed": FAILED, "dead": DEAD, "score": PHASE_SCORE, "merge": PHASE_MERGE, "records": QUEUE_RECORDS,
         "duplicates": STAT_DUPLICATES, "rescored": STAT_RESCORED, "resent": STAT_RESENT, "replayed": STAT_REPLAYED}

Call = tuple[str, list[str], list[Any]]  # script name, keys, args


@cache
def sources() -> dict[str, str]:
    """Every script by name (its file's stem), with the shared names filled in. A name a script uses that
    the keyspace does not give is an error here, not a silent literal in Redis."""
    found = {}
    for path in sorted(FOLDER.glob("*.lua")):
        found[path.stem] = Template(path.read_text()).substitute(NAMES)
    return found


class Scripts:
    """The scripts on one Redis client: ``run`` a list of calls, or ``call`` one."""

    def __init__(self, client: Any) -> None:
        self.redis = client
        self._shas: dict[str, str] = {}

    def call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return self.run([(name, keys, args)])[0]

    def run(self, calls: list[Call]) -> list[Any]:
        """Run the calls in one round trip and return their replies in order."""
        if not calls:
            return []
        for attempt in (1, 2):
            if not self._shas:
                self._shas = {name: self.redis.script_load(text) for name, text in sources().items()}
            try:
                if len(calls) == 1:  # no pipeline machinery for a lone call (the hot path's create)
                    name, keys, args = calls[0]
                    return [self.redis.evalsha(self._shas[name], len(keys), *keys, *args)]
                with self.redis.pipeline(transaction=False) as pipe:
                    for name, keys, args in calls:
                        pipe.evalsha(self._shas[name], len(keys), *keys, *args)
                    return list(pipe.execute())
            except redis.exceptions.NoScriptError:
                if attempt == 2:
                    raise
                self._shas = {}
        return []
