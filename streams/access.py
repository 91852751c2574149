"""API keys for write and admin endpoints: the collector, consent and erasure.

A key is accepted when it equals one of the configured keys, compared in constant time
against every one of them (no early exit), so neither the match nor its position leaks
through timing. Clients send it as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable


class AccessKeys:
    def __init__(self, keys: Iterable[str]):
        self._keys = [k.encode() for k in keys]

    @property
    def configured(self) -> bool:
        return bool(self._keys)

    def allows(self, given: str | None) -> bool:
        """With no keys configured everything is allowed (the embedded defaults)."""
        if not self._keys:
            return True
        candidate = (given or "").encode()
        matches = [hmac.compare_digest(candidate, k) for k in self._keys]
        return any(matches)


def key_from_headers(authorization: str | None, api_key: str | None) -> str | None:
    """The key a request carries, from either header."""
    if authorization and authorization.startswith("Bearer "):
        return authorization[7:]
    return api_key
