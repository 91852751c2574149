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


def test_a_copy_with_another_home_lives_there(tmp_path: Path) -> None:
    """A worker's or a bench's settings are often the demo's with another home: the copy's
    directory is its own even after the original's was used (it is not cached)."""
    first = Settings(home=tmp_path / "first")
    assert first.home_dir == tmp_path / "first"
    second = first.model_copy(update={"home": tmp_path / "second"})
    assert second.home_dir == tmp_path / "second" and second.home_dir.is_dir()
    assert first.home_dir == tmp_path / "first"


def test_embedded_defaults_need_no_external_service() -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.online_store == "sqlite"
    assert s.kafka_bootstrap is None


def test_settings_cross_process_boundaries_as_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arms = {"control": "", "candidate": str(tmp_path / "m2")}
    s = Settings(
        home=tmp_path,
        events_partitions=8,
        kafka_bootstrap="h:1",
        experiment_arms=arms,
        gc_thresholds=(1000, 5, 5),
        replay_gc_thresholds=(2000, 6, 7),
    )
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


def test_kafka_security_reaches_every_client_and_the_secret_stays_out_of_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import faust

    from streams.transport import broker_credentials

    ca = tmp_path / "ca.pem"
    monkeypatch.setenv("STREAMRANK_KAFKA_BOOTSTRAP", "kafka:9093")
    monkeypatch.setenv("STREAMRANK_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("STREAMRANK_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("STREAMRANK_KAFKA_SASL_USERNAME", "streamrank")
    monkeypatch.setenv("STREAMRANK_KAFKA_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("STREAMRANK_KAFKA_SSL_CA_FILE", str(ca))
    s = Settings()
    assert s.kafka_client_config() == {
        "bootstrap.servers": "kafka:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "streamrank",
        "sasl.password": "hunter2",
        "ssl.ca.location": str(ca),
    }
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())
    assert s.as_env()["STREAMRANK_KAFKA_SASL_PASSWORD"] == "hunter2"  # child processes
    monkeypatch.delenv("STREAMRANK_KAFKA_SSL_CA_FILE")  # the system's CAs then
    credentials = broker_credentials(Settings())
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.username == "streamrank" and credentials.ssl_context is not None
    assert broker_credentials(Settings(kafka_security_protocol="PLAINTEXT")) is None
    assert Settings(kafka_security_protocol="PLAINTEXT").kafka_client_config() == {
        "bootstrap.servers": "kafka:9093"
    }
