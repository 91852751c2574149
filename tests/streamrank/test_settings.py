from pathlib import Path

import pytest

from streamrank.settings import Settings


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STREAMRANK_KAFKA_BOOTSTRAP", "kafka:9092")
    monkeypatch.setenv("STREAMRANK_ONLINE_STORE", "redis")
    monkeypatch.setenv("STREAMRANK_HOME", str(tmp_path))
    s = Settings()
    assert s.bootstrap() == "kafka:9092"
    assert s.online_store == "redis"
    assert s.home_dir == tmp_path


def test_embedded_defaults_need_no_external_service() -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.online_store == "sqlite"
    assert s.kafka_bootstrap is None


def test_settings_cross_process_boundaries_as_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arms = {"control": "", "candidate": str(tmp_path / "m2")}
    s = Settings(home=tmp_path, events_partitions=8, kafka_bootstrap="h:1", experiment_arms=arms)
    env = s.as_env()
    assert env["STREAMRANK_EVENTS_PARTITIONS"] == "8"
    for name, value in env.items():  # what a child process sees
        monkeypatch.setenv(name, value)
    back = Settings()
    assert back.events_partitions == 8
    assert back.home_dir == tmp_path
    assert back.experiment_arms == arms
    assert back == s


def test_invalid_values_are_refused() -> None:
    with pytest.raises(ValueError):
        Settings(online_store="mongodb")  # type: ignore[arg-type]
