"""One way to configure a confluent-kafka client: a bootstrap address (tests, the embedded
broker) or the full base configuration the settings give (``Settings.kafka_client_config``:
bootstrap plus SASL/TLS), so every client of a deployment talks to Kafka the same way.

librdkafka's own log lines go to the ``librdkafka`` Python logger (confluent-kafka's
``logger`` setting), not straight to stderr, so the process's logging decides what shows."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

KafkaTarget = str | Mapping[str, str]

LIBRDKAFKA_LOG = logging.getLogger("librdkafka")


def client_config(target: KafkaTarget) -> dict[str, Any]:
    base: dict[str, Any] = (
        {"bootstrap.servers": target} if isinstance(target, str) else dict(target)
    )
    return {**base, "logger": LIBRDKAFKA_LOG}
