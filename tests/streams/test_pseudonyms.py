"""Pseudonymous ids: keyed, stable, idempotent, and the key never leaves its file or env."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from streamrank.settings import Settings
from streams.pseudonyms import KEY_FILE, RAW_IDS, Pseudonymizer


def test_a_keyed_hash_that_is_stable_idempotent_and_unlinkable_without_the_key(
    tmp_path: Path,
) -> None:
    one = Pseudonymizer.from_settings(Settings(home=tmp_path, user_id_key="k1"))
    other = Pseudonymizer.from_settings(Settings(home=tmp_path, user_id_key="k2"))
    p = one("alice@example.com")
    assert p.startswith("p_") and len(p) == 34 and "alice" not in p
    assert one("alice@example.com") == p  # stable: profiles and arms survive restarts
    assert one(p) == p  # idempotent: a pseudonym is never hashed twice
    assert other("alice@example.com") != p  # another key, another (unlinkable) id
    assert one("bob") != p
    assert "k1" not in repr(one)
    assert RAW_IDS("alice@example.com") == "alice@example.com"
    assert Pseudonymizer.from_settings(Settings(home=tmp_path, pseudonymize=False)) is RAW_IDS


def test_without_a_configured_key_the_home_gets_one_private_key(tmp_path: Path) -> None:
    first = Pseudonymizer.from_settings(Settings(home=tmp_path))
    second = Pseudonymizer.from_settings(Settings(home=tmp_path))  # another process, same home
    assert first("u1") == second("u1") != "u1"
    key = tmp_path / KEY_FILE
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    elsewhere = Pseudonymizer.from_settings(Settings(home=tmp_path / "other"))
    assert elsewhere("u1") != first("u1")
