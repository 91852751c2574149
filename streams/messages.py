"""One message of the ``events`` topic as every reader sees it, and how it is judged.

The profile worker, replay, backtests and the experiment join all decode a message through
``ValidationLimits.decode``, so they accept and dead-letter exactly the same events.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamrank.settings import Settings
from streams.events import DecodedMessage, decode_message


@dataclass(frozen=True, slots=True)
class RawMessage:
    partition: int
    offset: int
    value: bytes | None
    timestamp: float | None = None  # the log's time for it (epoch s): validation, latency
    fence: int | None = None
    """Set on a fence (``streams/growth.py``): the partition count the topic grew to. A
    fence holds no events; every reader skips it."""


@dataclass(frozen=True)
class ValidationLimits:
    max_future_skew_s: float = 300.0
    max_event_bytes: int = 64 * 1024
    max_message_bytes: int = 4 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> ValidationLimits:
        return cls(settings.max_future_skew_s, settings.max_event_bytes, settings.max_message_bytes)

    def decode(self, msg: RawMessage, now: float) -> DecodedMessage:
        """One message judged as every consumer of ``events`` judges it (see ``arrival``)."""
        if msg.fence is not None:
            return DecodedMessage([], [])
        return decode_message(
            msg.value,
            now=arrival(msg, now),
            max_future_skew_s=self.max_future_skew_s,
            max_event_bytes=self.max_event_bytes,
            max_message_bytes=self.max_message_bytes,
        )


def arrival(msg: RawMessage, now: float) -> float:
    """When the message arrived, for the "from the future" check: its log time, capped by
    the processing clock (a forged future log time cannot widen the window). The live
    worker and a replay years later judge every event alike, so they dead-letter the same
    ones."""
    return now if msg.timestamp is None else min(msg.timestamp, now)
