"""Promote and roll back a model while clients send requests: no error, no restart, and
every response after a switch names the new model (``bench/model_switch.py`` measures
the latency during the switch)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from bench.model_switch import Switch, SwitchLoad, summary
from bench.serving import load_profiles
from streamrank.catalog import Catalog
from streamrank.cli import main
from streamrank.datasets import Dataset
from streamrank.prepare import prepare
from tests.conftest import isolated_settings, make_home
from training.artifact import models_root
from training.registry import ModelRegistry

pytestmark = pytest.mark.integration


def second_model(home: Path, dataset: Dataset, catalog: Catalog) -> str:
    """Another trained version, on other users than the session's model."""
    from training.config import TrainConfig
    from training.encoder import default_encoder_path
    from training.train import Trainer, prepare_training_data

    config = TrainConfig(limit_users=30, epochs=1, batch_size=64, history_len=20, dim=32, seed=11)
    data = prepare_training_data(dataset.events, catalog, config, "test")
    return Trainer(catalog, default_encoder_path(), "cpu").fit(data, models_root(home)).name


def test_promote_and_rollback_under_load_fail_no_request(
    tmp_path: Path,
    trained: Path,
    catalog_home: Path,
    broker: object,
    dataset: Dataset,
    catalog: Catalog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from serving import app as serve_app

    home = make_home(tmp_path / "home", catalog_home)
    first = ModelRegistry(trained).latest()
    assert first is not None
    shutil.copytree(models_root(trained) / first, models_root(home) / first)
    second = second_model(home, dataset, catalog)
    settings = isolated_settings(home, broker.bootstrap, model_poll_s=0.25)  # type: ignore[attr-defined]
    monkeypatch.setenv("STREAMRANK_HOME", str(home))
    assert main(["promote", first, "--force"]) == 0
    registry = ModelRegistry(home)
    prepare(settings, dataset)
    users = load_profiles(settings, catalog, 3000)  # the last real events, folded

    url = serve_app.start(settings, num_cpus=2)
    switches = []
    try:
        with SwitchLoad(url, users) as load:
            load.wait_for(first, 0.0)
            time.sleep(3)
            # the registry's own calls, which `streamrank promote` and `rollback` end with
            # (the commands are tested elsewhere; starting one here would slow the clients)
            changes = [(second, lambda: registry.promote(second, forced=True))]
            changes.append((first, registry.rollback))
            for version, change in changes:
                at = time.monotonic()
                change()
                switches.append(Switch(version, at, load.wait_for(version, at)))
                time.sleep(2)
    finally:
        serve_app.stop()

    result = summary(load, switches, steady_s=2.5)
    print(result)  # the latency during a switch is measured by bench/model_switch.py
    assert result["errors"] == 0 and result["wrong_version"] == 0, result
    assert {c.version for c in load.between(0, switches[0].at)} == {first}
