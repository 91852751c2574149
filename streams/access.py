"""Who may call what, on whose data: server-side keys with scopes, and user-bound tokens.

Two kinds of credential, both sent as ``Authorization: Bearer …`` (a key may also come as
``X-API-Key: KEY``):

- **Keys** live on servers (the shop's backend, batch jobs, operators). Each carries one
  scope: ``events`` (post events and consent choices for any user:
  ``STREAMRANK_COLLECTOR_WRITE_KEYS``), ``read`` (recommendations, scores and profiles of any
  user: ``STREAMRANK_READ_KEYS``) or ``admin`` (everything, erasure included:
  ``STREAMRANK_ADMIN_KEYS``). A key is compared in constant time against every configured
  one (no early exit), so neither a match nor its position leaks through timing.
- **User tokens** are what a browser holds: a JWT (HS256, PyJWT) naming one user id
  (``sub``), short-lived (``exp``, ``STREAMRANK_TOKEN_TTL_S``), signed by the shop's backend
  with ``STREAMRANK_TOKEN_SECRET`` (``UserTokens.issue``, ``streamrank token USER``). It
  allows that user's own events, consent, profile view and recommendations, and nothing
  about anyone else; erasure never.

With no key of any scope configured (the embedded defaults, one machine) a request without
credentials may do what a server key of ``events`` or ``read`` could: the single-host demo
needs no set-up. Once any key is configured, every call needs a credential. A credential
that is given but wrong is refused in either mode, and a client address that keeps failing
is refused with 429 for a while (``FailureLimiter``), so keys and tokens cannot be guessed
at speed.
"""

from __future__ import annotations

import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

import jwt

from streamrank.settings import Settings
from streams.home_secrets import home_secret

TOKEN_AUDIENCE = "streamrank"
TOKEN_ALGORITHM = "HS256"
TOKEN_SECRET_FILE = "token.secret"
CLOCK_LEEWAY_S = 10  # between the signing backend's clock and ours


class Scope(StrEnum):
    EVENTS = "events"
    READ = "read"
    ADMIN = "admin"


class Refused(Exception):
    """A call that may not go ahead: ``status`` 401 (no or bad credential), 403 (a good
    credential that does not allow this) or 429 (too many failures), and why."""

    def __init__(self, status: int, reason: str, retry_after_s: int | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after_s = retry_after_s


class AccessKeys:
    """The configured keys of one scope."""

    def __init__(self, keys: Iterable[str]):
        self._keys = [k.encode() for k in keys if k]

    @property
    def configured(self) -> bool:
        return bool(self._keys)

    def match(self, given: str) -> bool:
        candidate = given.encode()
        matches = [hmac.compare_digest(candidate, k) for k in self._keys]
        return any(matches)


class UserTokens:
    """Signs and checks user-bound tokens. The shop's backend calls ``issue`` for the
    visitor it has authenticated and hands the token to the page."""

    def __init__(self, secret: bytes, ttl_s: int = 3600):
        if len(secret) < 32:
            raise ValueError("a token secret needs at least 32 bytes")
        self._secret = secret
        self.ttl_s = ttl_s

    @classmethod
    def from_settings(cls, settings: Settings) -> UserTokens:
        if settings.token_secret is not None:
            secret = settings.token_secret.get_secret_value().encode()
        else:
            secret = home_secret(settings.home_dir / TOKEN_SECRET_FILE)
        return cls(secret, settings.token_ttl_s)

    def issue(self, user_id: str, ttl_s: int | None = None, audience: str = TOKEN_AUDIENCE) -> str:
        """A token for ``user_id``, valid ``ttl_s`` seconds from now. ``audience`` keeps
        tokens minted for another purpose (the storefront's visitor cookie) out of the API."""
        if not user_id:
            raise ValueError("a token names a user id")
        now = int(time.time())
        claims = {"sub": user_id, "aud": audience, "iat": now, "exp": now + (ttl_s or self.ttl_s)}
        return jwt.encode(claims, self._secret, algorithm=TOKEN_ALGORITHM)

    def user_of(self, token: str, audience: str = TOKEN_AUDIENCE) -> str:
        """The user id a valid token names; ``Refused`` (401) with the reason otherwise."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[TOKEN_ALGORITHM],  # never "none", never the token's own choice
                audience=audience,
                leeway=CLOCK_LEEWAY_S,
                options={"require": ["sub", "exp", "iat", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Refused(401, "the token has expired") from None
        except jwt.InvalidSignatureError:
            raise Refused(401, "the token's signature is not valid") from None
        except jwt.InvalidTokenError as exc:
            raise Refused(401, f"not a valid token: {exc}") from None
        user = claims["sub"]
        if not isinstance(user, str) or not user:
            raise Refused(401, "the token names no user")
        return user


@dataclass(frozen=True)
class Caller:
    """Who is calling: the scopes they hold, and the one user a token binds them to."""

    scopes: frozenset[Scope]
    user_id: str | None = None  # None: any user (a server key, or the open single host)
    how: str = "key"

    def check(self, scope: Scope, *user_ids: str) -> None:
        """``Refused`` (403) unless this caller may act in ``scope`` on the data of every
        one of ``user_ids``."""
        if Scope.ADMIN not in self.scopes and scope not in self.scopes:
            raise Refused(403, f"this {self.how} does not allow {scope.value}")
        if self.user_id is not None and any(u != self.user_id for u in user_ids):
            raise Refused(403, "the token is for another user")


ANYONE = Caller(frozenset({Scope.EVENTS, Scope.READ}), None, "open single-host access")


class RateLimiter:
    """Token buckets per client: ``rate_per_s`` requests a second, bursts of ``burst``.
    The least recently seen clients are forgotten past ``max_clients`` (memory stays flat
    under a flood of spoofed addresses)."""

    def __init__(self, rate_per_s: float, burst: int, max_clients: int = 10_000):
        self.rate = rate_per_s
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def wait_s(self, client: str, now: float | None = None, take: bool = True) -> float:
        """0 when the request may go (and takes a token unless ``take`` is false), else
        seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, since = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - since) * self.rate)
        wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens - 1.0 if wait == 0.0 and take else tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


class FailureLimiter:
    """Refused calls cost a client address a token; with none left, 429 until they refill
    (``per_minute`` a minute, up to ``burst``). A client whose calls succeed never pays."""

    def __init__(self, per_minute: float, burst: int):
        self._bucket = RateLimiter(per_minute / 60.0, burst)

    def check(self, client: str) -> None:
        wait = self._bucket.wait_s(client, take=False)
        if wait > 0:
            raise Refused(429, "too many refused calls from this address", math.ceil(wait))

    def failed(self, client: str) -> None:
        self._bucket.wait_s(client)


class AccessPolicy:
    """Turns a request's credential into a ``Caller``, or refuses it."""

    def __init__(
        self,
        keys: dict[Scope, Iterable[str]],
        tokens: UserTokens,
        failures: FailureLimiter | None = None,
    ):
        self.keys = {scope: AccessKeys(keys.get(scope, ())) for scope in Scope}
        self.tokens = tokens
        self.failures = failures

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessPolicy:
        def plain(keys: list) -> list[str]:  # type: ignore[type-arg]
            return [k.get_secret_value() for k in keys]

        return cls(
            {
                Scope.EVENTS: plain(settings.collector_write_keys),
                Scope.READ: plain(settings.read_keys),
                Scope.ADMIN: plain(settings.admin_keys),
            },
            UserTokens.from_settings(settings),
            FailureLimiter(settings.auth_failures_per_minute, settings.auth_failure_burst),
        )

    @property
    def open(self) -> bool:
        """No key of any scope is configured: the single-host defaults."""
        return not any(k.configured for k in self.keys.values())

    def caller(self, credential: str | None) -> Caller:
        if not credential:
            if self.open:
                return ANYONE
            raise Refused(401, "a key or a user token is required")
        for scope, keys in self.keys.items():
            if keys.configured and keys.match(credential):
                return Caller(frozenset({scope}), None, f"{scope.value} key")
        if credential.count(".") != 2:  # not shaped like a JWT: an unknown key
            raise Refused(401, "the key is not valid")
        user = self.tokens.user_of(credential)
        return Caller(frozenset({Scope.EVENTS, Scope.READ}), user, "user token")

    def authorize(
        self, credential: str | None, scope: Scope, *user_ids: str, client: str = ""
    ) -> Caller:
        """The caller, checked for ``scope`` on the data of ``user_ids``; a refusal also
        counts against ``client``'s failure budget."""
        if self.failures is not None:
            self.failures.check(client)
        try:
            found = self.caller(credential)
        except Refused:
            self._failed(client)
            raise
        self.check(found, scope, *user_ids, client=client)
        return found

    def check(self, caller: Caller, scope: Scope, *user_ids: str, client: str = "") -> None:
        """``caller.check``, with a refusal counted against ``client`` (for a check that
        waits until the body says whose data it touches)."""
        try:
            caller.check(scope, *user_ids)
        except Refused:
            self._failed(client)
            raise

    def _failed(self, client: str) -> None:
        if self.failures is not None:
            self.failures.failed(client)


def credential_from_headers(authorization: str | None, api_key: str | None) -> str | None:
    """The key or token a request carries, from either header."""
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return api_key
