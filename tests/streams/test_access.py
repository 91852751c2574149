"""Who may call what on whose data (streams/access.py): scopes, user tokens, the open single
host, and the failure limit. The HTTP side is in tests/integration/test_slice.py (the
attacker's test) and tests/streams/test_collector.py."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from streamrank.settings import Settings
from streams.access import (
    ANYONE,
    AccessPolicy,
    FailureLimiter,
    Refused,
    Scope,
    UserTokens,
    credential_from_headers,
)

SECRET = b"k" * 32
TOKENS = UserTokens(SECRET, ttl_s=600)
KEYS = {Scope.EVENTS: ["ev-key"], Scope.READ: ["rd-key"], Scope.ADMIN: ["ad-key"]}


def refusal(call) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(Refused) as refused:
        call()
    return refused.value.status, refused.value.reason


def test_a_token_names_one_user_for_a_limited_time() -> None:
    token = TOKENS.issue("alice")
    assert TOKENS.user_of(token) == "alice"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="streamrank")
    assert claims["exp"] - claims["iat"] == 600
    now = int(time.time())
    stale = jwt.encode(
        {"sub": "alice", "aud": "streamrank", "iat": now - 99, "exp": now - 60}, SECRET
    )
    assert refusal(lambda: TOKENS.user_of(stale)) == (401, "the token has expired")


@pytest.mark.parametrize(
    "token",
    [
        UserTokens(b"x" * 32).issue("alice"),  # another secret
        jwt.encode({"sub": "alice", "aud": "streamrank", "iat": 1, "exp": 2**40}, None, "none"),
        jwt.encode({"sub": "alice", "aud": "elsewhere", "iat": 1, "exp": 2**40}, SECRET),
        jwt.encode({"sub": "alice", "aud": "streamrank", "iat": 1}, SECRET),  # never expires
        jwt.encode({"aud": "streamrank", "iat": 1, "exp": 2**40}, SECRET),  # no one
        TOKENS.issue("alice", audience="streamrank-storefront"),  # the shop's cookie
        "a.b.c",
    ],
)
def test_a_token_not_signed_for_the_api_is_refused(token: str) -> None:
    status, _ = refusal(lambda: TOKENS.user_of(token))
    assert status == 401


def test_scopes_keys_and_tokens() -> None:
    policy = AccessPolicy(KEYS, TOKENS)
    assert not policy.open
    assert refusal(lambda: policy.caller(None))[0] == 401
    assert refusal(lambda: policy.caller("ev-keyx"))[0] == 401
    policy.authorize("ev-key", Scope.EVENTS, "anyone")
    policy.authorize("rd-key", Scope.READ, "anyone")
    for scope in Scope:
        policy.authorize("ad-key", scope, "anyone")  # admin holds every scope
    assert refusal(lambda: policy.authorize("ev-key", Scope.READ, "u")) == (
        403,
        "this events key does not allow read",
    )
    assert refusal(lambda: policy.authorize("rd-key", Scope.EVENTS, "u"))[0] == 403
    token = TOKENS.issue("alice")
    policy.authorize(token, Scope.READ, "alice")
    policy.authorize(token, Scope.EVENTS, "alice", "alice")
    assert refusal(lambda: policy.authorize(token, Scope.READ, "bob")) == (
        403,
        "the token is for another user",
    )
    assert refusal(lambda: policy.authorize(token, Scope.EVENTS, "alice", "bob"))[0] == 403
    assert refusal(lambda: policy.authorize(token, Scope.ADMIN, "alice"))[0] == 403


def test_the_open_single_host_reads_and_writes_but_never_erases() -> None:
    policy = AccessPolicy({}, TOKENS)
    assert policy.open and policy.caller(None) is ANYONE
    policy.authorize(None, Scope.READ, "anyone")
    assert refusal(lambda: policy.authorize(None, Scope.ADMIN, "u"))[0] == 403
    assert refusal(lambda: policy.caller("wrong.token.given"))[0] == 401  # wrong, even here
    assert policy.caller(TOKENS.issue("alice")).user_id == "alice"  # tokens still bind


def test_an_address_that_keeps_failing_is_refused_for_a_while() -> None:
    policy = AccessPolicy(KEYS, TOKENS, FailureLimiter(per_minute=60, burst=2))
    for _ in range(2):
        assert refusal(lambda: policy.authorize("guess", Scope.READ, "u", client="c"))[0] == 401
    status, _ = refusal(lambda: policy.authorize("rd-key", Scope.READ, "u", client="c"))
    assert status == 429
    policy.authorize("rd-key", Scope.READ, "u", client="other")  # only that address
    for _ in range(5):  # a caller whose calls succeed never pays
        policy.authorize("rd-key", Scope.READ, "u", client="good")


def test_the_secret_comes_from_the_settings_or_the_home(tmp_path: Path) -> None:
    home = Settings(home=tmp_path / "h")
    first = UserTokens.from_settings(home).issue("u")
    assert UserTokens.from_settings(home).user_of(first) == "u"  # another process, same home
    assert (tmp_path / "h" / "token.secret").stat().st_mode & 0o777 == 0o600
    given = Settings(home=tmp_path / "g", token_secret="z" * 40)
    assert UserTokens.from_settings(given).user_of(UserTokens(b"z" * 40).issue("u")) == "u"
    with pytest.raises(ValueError):
        UserTokens(b"short")


def test_credentials_come_from_either_header() -> None:
    assert credential_from_headers("Bearer abc", None) == "abc"
    assert credential_from_headers("bearer abc ", "k") == "abc"
    assert credential_from_headers(None, "k") == "k"
    assert credential_from_headers("Basic xyz", None) is None
