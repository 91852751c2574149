"""Pseudonymous user ids: what Kafka, Faust and the online store know a user by.

The producer SDK, the HTTP collector and serving replace the site's raw user id with
``p_`` + the first 32 hex digits of HMAC-SHA256(key, raw id) before anything is sent or
read, so a raw id (an e-mail, a customer number) never reaches a topic, a worker's state or
a store, and nobody without the key can turn a pseudonym back into a person or link it to
another system's data. The same key always gives the same pseudonym, so profiles, replays
and experiment arms stay stable.

An id that already is a pseudonym passes through unchanged: hashing is idempotent, so a
tool that only ever saw pseudonyms (a replay, an experiment report) can call the API too.

The key comes from ``STREAMRANK_USER_ID_KEY``; without one, a random key is created once in
``<home>/user_id.key`` (mode 0600) and shared by every process of that home (the embedded
demo). Production sets the key for every producer, worker and replica alike.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from streamrank.settings import Settings
from streams.home_secrets import home_secret

PREFIX = "p_"
_PSEUDONYM = re.compile(r"^p_[0-9a-f]{32}$")
KEY_FILE = "user_id.key"


class Pseudonymizer:
    """``raw id -> pseudonym``; with ``key=None`` ids are kept as they are (``RAW_IDS``)."""

    def __init__(self, key: bytes | None):
        self._key = key

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def __call__(self, user_id: str) -> str:
        if self._key is None or _PSEUDONYM.match(user_id):
            return user_id
        digest = hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()
        return PREFIX + digest[:32]

    def __repr__(self) -> str:  # never the key
        return f"Pseudonymizer(enabled={self.enabled})"

    @classmethod
    def from_settings(cls, settings: Settings) -> Pseudonymizer:
        if not settings.pseudonymize:
            return RAW_IDS
        if settings.user_id_key is not None:
            return cls(settings.user_id_key.get_secret_value().encode())
        return cls(home_secret(settings.home_dir / KEY_FILE))


RAW_IDS = Pseudonymizer(None)
"""For code that must see raw ids on purpose (tests of the stream itself, benchmarks)."""
