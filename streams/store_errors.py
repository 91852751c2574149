"""Store errors that heal and errors that will not.

A stream must not move past a write it could not make, so a store error is retried, with
backoff, for as long as it may heal: the store is down, slow, locked, failing over (the lag
shows the outage). Some errors never heal by waiting: a full disk, a read-only file or
replica that will stay so, a schema the code does not match, credentials the store
refuses. Retrying those forever stalls the partition with nothing but a log line saying
why, so they raise ``StoreFailed`` instead: the worker stops taking events (the checkpoint
stays where it was), reports it on ``/healthz`` (503, not ready) and in
``streamrank_store_failed``, and an operator fixes the store and restarts it
(``streams/app.py``).

The classification reads the exception and its causes: SQLite's error codes
(``sqlite3.Error.sqlite_errorname``), ``OSError`` errnos, and Redis's error replies.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from feature_repo.redis_store import ReplicationLost
from streams import metrics

log = logging.getLogger(__name__)
T = TypeVar("T")

SQLITE_PERMANENT = {
    "SQLITE_FULL": "full",
    "SQLITE_READONLY": "read-only",
    "SQLITE_PERM": "read-only",
    "SQLITE_CORRUPT": "corrupt",
    "SQLITE_NOTADB": "corrupt",
}
SCHEMA_WORDS = ("no such table", "no such column", "has no column named")
OS_PERMANENT = {
    errno.ENOSPC: "full",
    errno.EDQUOT: "full",
    errno.EROFS: "read-only",
    errno.EACCES: "read-only",
    errno.EPERM: "read-only",
}
REDIS_PERMANENT = {  # error replies by their first word
    "OOM": "full",  # maxmemory reached with a no-eviction policy
    "MISCONF": "full",  # the server cannot persist, and refuses writes
    "WRONGTYPE": "schema",
    "NOAUTH": "credentials",
    "WRONGPASS": "credentials",
    "NOPERM": "credentials",
}


class StoreFailed(RuntimeError):
    """A store error that waiting will not heal (``kind``: full, read-only, corrupt,
    schema, credentials) while doing ``what``."""

    def __init__(self, what: str, kind: str, cause: BaseException):
        super().__init__(f"{what}: lasting store error ({kind}): {cause}")
        self.what = what
        self.kind = kind


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def permanent_kind(exc: BaseException) -> str | None:
    """What kind of lasting failure ``exc`` (or one of its causes) is; None if it may heal."""
    from redis.exceptions import AuthenticationError, AuthorizationError, ResponseError

    for error in _chain(exc):
        if isinstance(error, sqlite3.Error):
            name = getattr(error, "sqlite_errorname", "") or ""
            for prefix, kind in SQLITE_PERMANENT.items():
                if name.startswith(prefix):
                    return kind
            if any(words in str(error) for words in SCHEMA_WORDS):
                return "schema"
        elif isinstance(error, OSError) and error.errno in OS_PERMANENT:
            return OS_PERMANENT[error.errno]
        elif isinstance(error, AuthenticationError | AuthorizationError):
            return "credentials"
        elif isinstance(error, ResponseError):
            first = str(error).split(" ", 1)[0].upper()
            if first in REDIS_PERMANENT:
                return REDIS_PERMANENT[first]
    return None


def retry_store(
    action: Callable[[], T], what: str, first_delay_s: float = 0.2, max_delay_s: float = 10.0
) -> T:
    """Run ``action`` until it succeeds, backing off while its errors may heal; a lasting
    one raises ``StoreFailed`` at once."""
    delay = first_delay_s
    attempt = 0
    while True:
        try:
            return action()
        except ReplicationLost:
            raise  # neither heals nor needs fixing: the writer rewinds to its checkpoints
        except Exception as exc:
            kind = permanent_kind(exc)
            if kind is not None:
                metrics.STORE_FAILURES.labels(what, kind).inc()
                raise StoreFailed(what, kind, exc) from exc
            attempt += 1
            metrics.STORE_RETRIES.labels(what).inc()
            log.warning("%s failed (attempt %d): %s; retrying in %.1fs", what, attempt, exc, delay)
            time.sleep(delay)
            delay = min(max_delay_s, delay * 2)
