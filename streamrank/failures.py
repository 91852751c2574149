"""What the command line says when a command fails: one line, what is wrong and what to do.

A user's mistake (a range that ends before it starts, a namespace name that is not one, a
model directory that is not there) or a dependency that is not running (the broker, Redis,
the Serve application) is an expected failure: it gets one line on stderr and an exit
code, 2 for a usage error and 1 for anything else. The traceback is for the developer:
``--debug`` (or ``--log-level debug``) lets the exception through.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydantic import ValidationError

USAGE = 2
FAILURE = 1


class UsageError(ValueError):
    """A command's arguments cannot be acted on (exit 2)."""


@dataclass(frozen=True)
class Failure:
    code: int
    message: str


def explain(exc: BaseException, settings_bootstrap: str | None = None) -> Failure:
    """The exit code and one line for a failed command."""
    from confluent_kafka import KafkaException

    from streams.replay import ReplayError

    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, UsageError | ReplayError):
        return Failure(USAGE, first)
    if isinstance(exc, ValidationError):
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
        )
        return Failure(USAGE, f"invalid settings or arguments ({fields})")
    if isinstance(exc, FileNotFoundError | NotADirectoryError | IsADirectoryError):
        where = exc.filename or first
        return Failure(FAILURE, f"{where}: {exc.strerror or 'not found'}")
    if isinstance(exc, PermissionError):
        return Failure(FAILURE, f"{exc.filename or first}: permission denied")
    if isinstance(exc, KafkaException):
        broker = settings_bootstrap or "the configured address"
        return Failure(
            FAILURE,
            f"the Kafka broker at {broker} did not answer ({_kafka_reason(exc)}): start it "
            "(`streamrank broker`), or set STREAMRANK_KAFKA_BOOTSTRAP to a running one",
        )
    if _is_redis_down(exc):
        return Failure(
            FAILURE,
            f"Redis did not answer ({first}): start it, or check STREAMRANK_REDIS_URL",
        )
    if _is_http_down(exc):
        return Failure(
            FAILURE,
            f"the Serve application did not answer ({first}): start it (`streamrank serve`)",
        )
    if isinstance(exc, ValueError):
        return Failure(USAGE, first)
    return Failure(FAILURE, f"{type(exc).__name__}: {first} (--debug shows where)")


def _kafka_reason(exc: BaseException) -> str:
    error = exc.args[0] if exc.args else None
    text = error.str() if hasattr(error, "str") else str(exc)
    return str(text)


def _is_redis_down(exc: BaseException) -> bool:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return isinstance(exc, RedisConnectionError | RedisTimeoutError)


def _is_http_down(exc: BaseException) -> bool:
    import httpx

    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


def quiet_librdkafka() -> None:
    """librdkafka logs every failed connection attempt (to the logger every client is given,
    ``infra.kafka_config.LIBRDKAFKA_LOG``); a one-shot command reports the outcome itself,
    so a broker that is down reads as one line, not a screen of retries."""
    from infra.kafka_config import LIBRDKAFKA_LOG

    LIBRDKAFKA_LOG.setLevel(logging.CRITICAL)
