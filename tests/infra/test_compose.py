"""The production stack's files, checked against the code (no Docker engine runs here):
every setting the stack passes exists and parses, every command is a real subcommand,
every address a service is told matches the service that listens there."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from streamrank.cli import build_parser
from streamrank.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("prepare", "worker", "experiment-worker", "serve")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def app_settings(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings an app container starts with (``${VAR:-default}`` take their default)."""
    for key in list(Settings.model_fields):
        monkeypatch.delenv(f"STREAMRANK_{key.upper()}", raising=False)
    for key, value in compose["x-streamrank"]["environment"].items():
        monkeypatch.setenv(key, substituted(key, value))
    return Settings()


def substituted(key: str, value: object) -> str:
    """``${VAR:-default}`` takes its default; ``${VAR:?}`` (required) a stand-in value."""
    text = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))
    # lists are JSON; a secret as long as a real one (the token secret needs 32 bytes)
    given = '["given"]' if key.endswith("_KEYS") else "given-value-as-long-as-a-real-secret"
    return re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", given, text)


def test_every_setting_the_stack_passes_exists_and_parses(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = compose["x-streamrank"]["environment"]
    fields = {f"STREAMRANK_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= fields, set(env) - fields
    settings = app_settings(compose, monkeypatch)
    assert settings.online_store == "redis"
    assert str(settings.home_dir) == "/var/lib/streamrank"
    assert settings.pseudonymize and settings.user_id_key is not None  # one key for all


def test_every_app_service_runs_a_real_subcommand_of_the_one_image(
    compose: dict[str, Any],
) -> None:
    subcommands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    for name in APP_SERVICES:
        service = compose["services"][name]
        assert service["image"] == "streamrank:latest"
        assert service["build"]["dockerfile"] == "infra/docker/Dockerfile"
        assert service["command"][0] in subcommands, name
    for name, service in compose["services"].items():
        for dependency in service.get("depends_on", {}):
            assert dependency in compose["services"], (name, dependency)


def test_addresses_match_the_services_that_listen_there(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = app_settings(compose, monkeypatch)
    services = compose["services"]
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{settings.bootstrap()}"
    redis = urlparse(settings.redis_url)
    assert redis.hostname in services and redis.port == 6379
    assert settings.serve_host == settings.worker_web_host == "0.0.0.0"
    assert services["serve"]["ports"] == [f"{settings.serve_port}:{settings.serve_port}"]

    prometheus = yaml.safe_load((ROOT / "infra" / "prometheus.yml").read_text())
    scraped = set()
    for job in prometheus["scrape_configs"]:
        for dns in job.get("dns_sd_configs", []):
            scraped |= {(name, dns["port"]) for name in dns["names"]}
        for static in job.get("static_configs", []):
            scraped |= {(t.split(":")[0], int(t.split(":")[1])) for t in static["targets"]}
    assert scraped == {
        ("worker", settings.worker_web_port),
        ("experiment-worker", settings.experiments_web_port),
        ("serve", settings.serve_port),
    }
    assert all(host in services for host, _ in scraped)

    # what the serve service adds: real settings, and addresses of services that listen there
    extra = services["serve"]["environment"]
    fields = {f"STREAMRANK_{name.upper()}" for name in Settings.model_fields}
    assert set(extra) <= fields, set(extra) - fields
    for key, value in extra.items():
        monkeypatch.setenv(key, substituted(key, value))
    serve = Settings()
    for url, service, port in (
        (serve.platform_worker_urls[0], "worker", settings.worker_web_port),
        (serve.platform_experiments_url, "experiment-worker", settings.experiments_web_port),
    ):
        parsed = urlparse(url)
        assert (parsed.hostname, parsed.port) == (service, port)
    collector = urlparse(serve.collector_public_url)
    published = services["worker"]["ports"][0]
    assert published.startswith(f"{collector.port}-") and published.endswith(
        f":{settings.worker_web_port}"
    )


def test_the_image_installs_pinned_cpu_torch_first_and_no_secret_is_written_down(
    compose: dict[str, Any],
) -> None:
    dockerfile = (ROOT / "infra" / "docker" / "Dockerfile").read_text()
    lines = [line.strip() for line in dockerfile.splitlines()]
    torch = next(i for i, line in enumerate(lines) if "torch==2.13.0" in line)
    package = next(i for i, line in enumerate(lines) if line == "RUN pip install .")
    assert torch < package
    assert "download.pytorch.org/whl/cpu" in lines[torch]
    for line in lines:
        if line.startswith("COPY ") and not line.startswith("COPY pyproject"):
            assert (ROOT / line.split()[1]).is_dir(), line
    environments = [compose["x-streamrank"]["environment"]]
    environments += [s.get("environment", {}) for s in compose["services"].values()]
    for env in environments:
        for key, value in env.items():
            literal = re.sub(r"\$\{[^}]*\}", "", str(value))  # what is not a ${reference}
            if re.search("PASSWORD|SECRET|TOKEN|_KEYS?$", key):
                assert not literal, key
            if "://" in literal:
                assert not urlparse(literal).password, key
    assert 'ENTRYPOINT ["streamrank"]' in dockerfile
