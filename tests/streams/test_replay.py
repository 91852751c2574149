"""Replay on the real broker into a real namespace store: exact, isolated, resumable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from feature_repo.namespaces import Namespace, list_namespaces
from feature_repo.store import apply_repo
from infra.kafka_admin import committed_offsets
from streamrank.catalog import Catalog
from streamrank.cli import main as cli
from streamrank.demo import send_raw
from streamrank.settings import Settings
from streams.consistency import feature_differences
from streams.profile import UserProfile
from streams.replay import ReplayError, plan, replay
from streams.sink import FeastProfileStore
from tests.integration.checks import assert_profiles_equal, offline_truth
from tests.integration.streaming import make_events, send
from tests.integration.test_worker import poison_for
from training.registry import ModelRegistry, ranker_name

pytestmark = pytest.mark.integration


def test_a_time_range_replays_exactly_its_events_and_never_touches_live(
    settings: Settings, catalog: Catalog
) -> None:
    live = FeastProfileStore(apply_repo(settings))
    before = make_events(catalog, 300, 20, seed=1)
    sentinel = UserProfile("u0", as_of=1.0)  # a live row the replay must leave alone
    live.write_profiles([sentinel])
    send(settings, before)
    time.sleep(0.05)
    start = time.time()
    time.sleep(0.05)
    inside = make_events(catalog, 2000, 50, seed=2)
    send(settings, inside)
    poison = poison_for("u5", 0)  # what once crashed the live agent: one dead letter each
    send_raw(settings, [b"not json", b'[{"event_id": "x"}]', *poison])
    time.sleep(0.05)
    end = time.time()
    time.sleep(0.05)
    send(settings, make_events(catalog, 300, 20, seed=3))

    planned = plan(settings, start, end)
    namespace = Namespace(settings, "window")
    manifest = replay(settings, namespace, planned, workers=1, progress=False)

    assert manifest.complete
    assert (manifest.events, manifest.dead_letters) == (len(inside), 2 + len(poison))
    truth = offline_truth(inside, catalog)
    stored = FeastProfileStore(namespace.open_store()).read_profiles(sorted(truth))
    assert_profiles_equal(stored, truth)
    # the live side: its rows as they were, its consumer group never used
    assert live.read_profiles(["u0"])["u0"].as_of == 1.0
    assert live.read_profiles(["u1"])["u1"].event_count == 0
    parts = list(range(settings.events_partitions))
    assert set(
        committed_offsets(
            settings.bootstrap(), settings.consumer_group, settings.events_topic, parts
        ).values()
    ) == {-1001}
    # a second run with the same range has nothing to do; another range is refused
    assert replay(settings, namespace, planned, progress=False).events == len(inside)
    with pytest.raises(ReplayError, match="another range"):
        replay(settings, namespace, plan(settings, None, end), progress=False)


def test_two_processes_give_the_same_state_as_one(settings: Settings, catalog: Catalog) -> None:
    events = make_events(catalog, 3000, 80, seed=4)
    send(settings, events)
    planned = plan(settings, None)
    one = replay(settings, Namespace(settings, "one"), planned, workers=1, progress=False)
    two = replay(settings, Namespace(settings, "two"), planned, workers=2, progress=False)
    assert one.events == two.events == len(events)
    truth = offline_truth(events, catalog)
    for name in ("one", "two"):
        store = FeastProfileStore(Namespace(settings, name).open_store())
        assert_profiles_equal(store.read_profiles(sorted(truth)), truth)
    assert [m.namespace for m in list_namespaces(settings)] == ["one", "two"]


def test_a_profiles_only_replay_has_the_same_profiles_and_no_item_rows(
    settings: Settings, catalog: Catalog
) -> None:
    events = make_events(catalog, 2000, 60, seed=5)
    send(settings, events)
    planned = plan(settings, None)
    full = Namespace(settings, "full")
    lean = Namespace(settings, "lean")
    replay(settings, full, planned, workers=1, progress=False)
    manifest = replay(settings, lean, planned, workers=1, progress=False, profiles_only=True)
    assert manifest.profiles_only and manifest.events == len(events)
    users = sorted({e.user_id for e in events})
    mine = FeastProfileStore(lean.open_store())
    theirs = FeastProfileStore(full.open_store()).read_profiles(users)
    for user, profile in mine.read_profiles(users).items():
        assert not list(feature_differences(profile, theirs[user])), user
        assert profile.outbox == []
    assert all(not p.scores for p in mine.read_popularity([0, 1, 2, 3]).values())
    assert mine.read_checkpoints([0, 1, 2, 3]) == {
        p: planned.stop[p] - 1 for p in range(4)
    }  # resumable like any replay
    # a resumed replay keeps its mode, whatever the second call asks
    assert replay(settings, lean, planned, progress=False).profiles_only


def _replay_process(settings: Settings, *args: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **settings.as_env(),
        "STREAMRANK_REPLAY_BATCH_MESSAGES": "2",
        "STREAMRANK_REPLAY_FLUSH_S": "0",  # a checkpoint after every batch: many to kill between
    }
    return subprocess.Popen(
        [sys.executable, "-m", "streamrank", "replay", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_a_replay_killed_midway_resumes_and_ends_with_the_same_result(
    settings: Settings, catalog: Catalog
) -> None:
    events = make_events(catalog, 20_000, 300, seed=5)
    send(settings, events[:10_000])
    send(settings, events[10_000:])  # more messages: more batches to kill between
    end = str(time.time())
    args = ("--namespace", "killed", "--workers", "1", "--to", end)
    namespace = Namespace(settings, "killed")
    first = _replay_process(settings, *args)
    deadline = time.monotonic() + 120
    progressed = False
    while time.monotonic() < deadline and not progressed:
        time.sleep(0.2)
        if namespace.exists and (namespace.root / "online.db").exists():
            counts = FeastProfileStore(namespace.open_store()).read_partition_counts([0, 1, 2, 3])
            progressed = any(c.offset >= 0 for c in counts.values())
        assert first.poll() is None, first.stdout.read().decode()[-3000:]  # type: ignore[union-attr]
    assert progressed
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    assert not namespace.manifest().complete

    second = _replay_process(settings, *args)
    output = second.communicate(timeout=300)[0].decode()
    assert second.returncode == 0, output[-3000:]
    manifest = namespace.manifest()
    assert manifest.complete
    assert manifest.events == len(events)  # counted once, across both runs
    truth = offline_truth(events, catalog)
    stored = FeastProfileStore(namespace.open_store()).read_profiles(sorted(truth))
    assert_profiles_equal(stored, truth)
    for user, profile in truth.items():
        assert stored[user].totals == profile.totals, user  # nothing folded twice


def test_the_command_line_dry_run_replay_backtest_list_and_delete(
    settings: Settings,
    catalog: Catalog,
    trained: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    send(settings, make_events(catalog, 500, 10, seed=6))
    for key, value in settings.as_env().items():
        monkeypatch.setenv(key, value)
    assert cli(["replay", "--namespace", "dry", "--dry-run"]) == 0
    assert "500 valid events" in capsys.readouterr().out
    assert not Namespace(settings, "dry").root.exists()

    assert cli(["replay", "--namespace", "kept", "--workers", "1"]) == 0
    namespace = Namespace(settings, "kept")
    assert namespace.exists
    assert cli(["namespaces"]) == 0
    assert "kept" in capsys.readouterr().out
    model = trained / "models" / (trained / "models" / "LATEST").read_text().strip()
    assert (
        cli(["backtest", "--namespace", "kept", "--model", str(model), "--test-fraction", "0.3"])
        == 0
    )
    assert f"model {model.name}" in capsys.readouterr().out
    assert (namespace.root / "backtest" / "backtest.png").exists()
    assert cli(["backtest", "--namespace", "missing", "--model", str(model)]) == 2

    # the lifecycle on what the topic holds: train on the namespace's range (a first model
    # serves by default only if it beat the no-model default on its held-out examples),
    # backtest the two, and promote the one that does not serve only if it ranks as well
    assert cli(["train", "--namespace", "kept", "--fast", "--epochs", "1"]) == 0
    candidate = capsys.readouterr().out.split("streamrank promote ", 1)[1].split("`")[0]
    meta = json.loads((settings.home_dir / "models" / candidate / "model.json").read_text())
    assert meta["trained_on"] == "namespace kept"
    serving = ModelRegistry(settings.home_dir).serving()
    assert (serving == candidate) == meta["beats_stream_default"]
    other = None if serving == candidate else candidate
    assert cli(["promote", other or "stream-default"]) == 3  # no backtest compares them yet
    argv = ["backtest", "--namespace", "kept", "--model", candidate, "--test-fraction", "0.3"]
    assert cli([*argv, "--baselines"]) == 0  # what serves is in the report either way
    report = json.loads((namespace.root / "backtest" / "backtest.json").read_text())
    ndcg = {name: r["overall"]["ndcg@10"] for name, r in report["results"].items()}
    better = ndcg[ranker_name(other)] >= ndcg[ranker_name(serving)]
    assert cli(["promote", other or "stream-default"]) == (0 if better else 3)
    assert cli(["train", "--namespace", "missing"]) == 2
    assert cli(["namespaces", "--delete", "kept"]) == 0
    assert not namespace.root.exists()
    assert list_namespaces(settings) == []
    assert (settings.home_dir / "catalog.parquet").exists()  # the home itself is untouched
    with pytest.raises(ValueError, match="namespace"):
        Namespace(settings, "../escape")
