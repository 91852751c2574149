"""Which store errors are retried and which stop the worker (streams/store_errors.py): real
SQLite errors where SQLite can make them, the errors Redis and the OS answer with."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from streams.store_errors import StoreFailed, permanent_kind, retry_store


def sqlite_error(db: Path, sql: str, *, uri: str = "", pragma: str = "") -> sqlite3.Error:
    connection = sqlite3.connect(f"file:{db}{uri}", uri=True, timeout=0)
    if pragma:
        connection.execute(pragma)
    with pytest.raises(sqlite3.Error) as raised:
        connection.execute(sql)
        connection.commit()
    connection.close()
    return raised.value


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "online.db"
    with sqlite3.connect(path) as connection:
        connection.execute("create table rows (k text primary key, v blob)")
    return path


def test_sqlite_errors_that_will_not_heal(db: Path) -> None:
    write = "insert into rows values ('k', x'00')"
    assert permanent_kind(sqlite_error(db, write, uri="?mode=ro")) == "read-only"
    assert permanent_kind(sqlite_error(db, "select * from profiles")) == "schema"
    assert permanent_kind(sqlite_error(db, "insert into rows (nope) values (1)")) == "schema"
    fill = (  # more pages than the file may have: SQLite's own "database or disk is full"
        "with recursive n(i) as (select 1 union all select i + 1 from n where i < 2000)"
        " insert into rows select i, randomblob(4096) from n"
    )
    full = sqlite_error(db, fill, pragma="pragma max_page_count = 20")
    assert "full" in str(full) and permanent_kind(full) == "full"


def test_a_locked_database_is_waited_for(db: Path) -> None:
    holder = sqlite3.connect(db)
    holder.execute("begin immediate")  # another writer holds the lock
    try:
        locked = sqlite_error(db, "insert into rows values ('k', x'00')")
        assert "locked" in str(locked)
        assert permanent_kind(locked) is None
    finally:
        holder.rollback()
        holder.close()


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "full"),
        (OSError(errno.EROFS, "Read-only file system"), "read-only"),
        (OSError(errno.ECONNREFUSED, "Connection refused"), None),
        (ResponseError("OOM command not allowed when used memory > 'maxmemory'."), "full"),
        (ResponseError("WRONGTYPE Operation against a key holding the wrong kind"), "schema"),
        (AuthenticationError("invalid username-password pair"), "credentials"),
        (ResponseError("READONLY You can't write against a read only replica."), None),
        (RedisConnectionError("Error 111 connecting"), None),
        (TimeoutError("timed out"), None),
    ],
)
def test_os_and_redis_errors(error: Exception, kind: str | None) -> None:
    assert permanent_kind(error) == kind


def test_a_cause_is_read_through_the_wrappers() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("feast: write failed") from inner
    except RuntimeError as outer:
        assert permanent_kind(outer) == "full"


def test_transient_errors_are_retried_and_lasting_ones_stop_at_once() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RedisConnectionError("down")
        return "written"

    assert retry_store(flaky, "test-flaky", first_delay_s=0.01) == "written"
    assert len(calls) == 3

    def full() -> None:
        calls.append(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    calls.clear()
    labels = {"what": "test-full", "kind": "full"}
    before = REGISTRY.get_sample_value("streamrank_store_failures_total", labels) or 0.0
    with pytest.raises(StoreFailed) as failed:
        retry_store(full, "test-full", first_delay_s=0.01)
    assert len(calls) == 1 and failed.value.kind == "full" and "test-full" in str(failed.value)
    assert REGISTRY.get_sample_value("streamrank_store_failures_total", labels) == before + 1
