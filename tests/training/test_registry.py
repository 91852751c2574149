"""The model registry: what serves, promotions gated by a backtest, rollbacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamrank.cli import main
from training.artifact import LATEST_FILE, META_FILE, models_root
from training.registry import ModelRegistry, RegistryError, promotion_evidence


def trained_version(home: Path, version: str) -> str:
    """A version as training leaves it: its directory and the LATEST pointer."""
    directory = models_root(home) / version
    directory.mkdir(parents=True)
    (directory / META_FILE).write_text(json.dumps({"version": version}))
    (models_root(home) / LATEST_FILE).write_text(version)
    return version


def backtest_report(home: Path, namespace: str, ndcg: dict[str, float], **extra: object) -> None:
    out = home / "namespaces" / namespace / "backtest"
    out.mkdir(parents=True)
    results = {name: {"overall": {"ndcg@10": value}} for name, value in ndcg.items()}
    report = {"k": 10, "cut": "2026-01-01T00:00:00Z", "results": results, **extra}
    (out / "backtest.json").write_text(json.dumps(report))


def test_training_does_not_change_what_serves_once_a_version_was_promoted(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    assert registry.serving() is None  # nothing trained: the no-model default
    first = trained_version(tmp_path, "20260101-000000-aaaa")
    assert registry.serving() == first  # nothing promoted yet: the newest trained
    second = trained_version(tmp_path, "20260102-000000-bbbb")
    assert registry.serving() == second
    registry.promote(first, forced=True)
    third = trained_version(tmp_path, "20260103-000000-cccc")
    assert registry.serving() == first and registry.latest() == third
    registry.promote(third)
    assert registry.serving_dir() == models_root(tmp_path) / third


def test_rollbacks_walk_back_through_the_promotions(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    a, b = trained_version(tmp_path, "a-1"), trained_version(tmp_path, "b-2")
    registry.promote(a)
    registry.promote(b)
    registry.promote(None)  # the no-model default may be promoted too
    assert registry.serving() is None
    assert registry.rollback().version == b
    assert registry.rollback().version == a
    assert registry.rollback().version == b  # what served before the first promotion (LATEST)
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback()
    assert [c.action for c in registry.history()] == ["promote"] * 3 + ["rollback"] * 3


def test_an_unknown_version_is_refused(tmp_path: Path) -> None:
    trained_version(tmp_path, "a-1")
    for bad in ("nope", "../models", ".", ""):
        with pytest.raises(RegistryError, match="no trained model"):
            ModelRegistry(tmp_path).promote(bad)
    assert ModelRegistry(tmp_path).history() == []


def test_a_backtest_decides_a_promotion(tmp_path: Path) -> None:
    evidence = promotion_evidence(tmp_path, "b", "a")
    assert not evidence.allowed and "streamrank backtest NAMESPACE --model b --model a" in (
        evidence.reason
    )
    backtest_report(tmp_path, "older", {"model b": 0.05, "model a": 0.04})
    assert promotion_evidence(tmp_path, "b", "a").allowed
    assert not promotion_evidence(tmp_path, "a", "b").allowed  # worse than what serves
    assert not promotion_evidence(tmp_path, "b", None).allowed  # no stream-default row there
    backtest_report(tmp_path, "newer", {"model a": 0.04}, failed={"model b": "scores are nan"})
    refused = promotion_evidence(tmp_path, "b", "a")  # the newest backtest holding both wins
    assert not refused.allowed and "failed" in refused.reason and "newer" in refused.reason
    backtest_report(tmp_path, "default", {"model b": 0.03, "stream-default": 0.02})
    assert promotion_evidence(tmp_path, "b", None).allowed


def test_promote_and_rollback_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMRANK_HOME", str(tmp_path))
    a = trained_version(tmp_path, "20260101-000000-aaaa")
    b = trained_version(tmp_path, "20260102-000000-bbbb")
    assert main(["promote", a, "--force"]) == 0  # nothing to compare with: forced
    assert main(["promote", b]) == 3
    assert "refused: no backtest compares model" in capsys.readouterr().err
    backtest_report(tmp_path, "ns", {f"model {a}": 0.05, f"model {b}": 0.06})
    assert main(["promote", b]) == 0
    assert ModelRegistry(tmp_path).serving() == b
    assert main(["models"]) == 0
    assert f"* {b}" in capsys.readouterr().out
    assert main(["rollback"]) == 0 and ModelRegistry(tmp_path).serving() == a
    assert main(["promote", "missing"]) == 2
    history = ModelRegistry(tmp_path).history()
    assert [(c.action, c.version, c.forced) for c in history] == [
        ("promote", a, True),
        ("promote", b, False),
        ("rollback", a, False),
    ]
    assert "ndcg@10 0.0600 against 0.0500" in history[1].evidence


def test_a_model_below_the_no_model_default_never_serves_by_default(tmp_path: Path) -> None:
    good = trained_version(tmp_path, "20260101-000000-good")
    weak = trained_version(tmp_path, "20260102-000000-weak")
    meta_path = models_root(tmp_path) / weak / META_FILE
    meta_path.write_text(json.dumps({"version": weak, "beats_stream_default": False}))
    registry = ModelRegistry(tmp_path)
    assert registry.latest() == weak and registry.serving() == good
    meta_path.parent.parent.joinpath(good, META_FILE).write_text(
        json.dumps({"version": good, "beats_stream_default": False})
    )
    assert registry.serving() is None  # the stream ranks
    registry.promote(weak, forced=True)  # an operator may still choose it
    assert registry.serving() == weak
