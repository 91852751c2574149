"""One way to configure a confluent-kafka client: a bootstrap address (tests, the embedded
broker) or the full base configuration the settings give (``Settings.kafka_client_config``:
bootstrap plus SASL/TLS), so every client of a deployment talks to Kafka the same way."""

from __future__ import annotations

from collections.abc import Mapping

KafkaTarget = str | Mapping[str, str]


def client_config(target: KafkaTarget) -> dict[str, str]:
    if isinstance(target, str):
        return {"bootstrap.servers": target}
    return dict(target)
