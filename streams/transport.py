"""How every streamrank Faust worker reaches the broker: credentials, fetch wait, timeouts.

``stream_app`` builds the app; its consumer fetches with ``worker_fetch_max_wait_ms``
instead of Faust's hard-coded 1.5 s (``infra/private_apis.faust_app_class``), which alone
put ~0.6 s between an event's append and the worker seeing it on the embedded broker.
"""

from __future__ import annotations

import ssl
from typing import Any

import faust

from infra.private_apis import faust_app_class
from streamrank.settings import Settings


def broker_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """The settings' Kafka security for Faust's aiokafka (``kafka_client_config`` gives
    the same to confluent-kafka clients)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol.endswith("SSL"):
        cafile = str(settings.kafka_ssl_ca_file) if settings.kafka_ssl_ca_file else None
        context = ssl.create_default_context(cafile=cafile)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    password = settings.kafka_sasl_password
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=password.get_secret_value() if password else None,
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=context,
    )


def stream_app(settings: Settings, group: str, web_port: int, **options: Any) -> faust.App:
    """A Faust app of this project: the broker, fetch wait, partitions, group timeouts and
    web server every streamrank worker shares; ``options`` add app-specific settings."""
    return faust_app_class()(
        group,
        fetch_max_wait_ms=settings.worker_fetch_max_wait_ms,
        broker=f"kafka://{settings.bootstrap()}",
        broker_credentials=broker_credentials(settings),
        store="memory://",
        topic_partitions=settings.events_partitions,
        # a grown topic's new partitions are taken within this (``streams/growth.py``)
        consumer_metadata_max_age_ms=int(settings.topic_metadata_refresh_s * 1000),
        producer_metadata_max_age_ms=int(settings.topic_metadata_refresh_s * 1000),
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        # heartbeats go from the event loop, which a batch never blocks (it is written on
        # a thread); a session of at least 3 s leaves two of them to lose before a kick
        broker_session_timeout=settings.worker_session_timeout_s,
        broker_heartbeat_interval=1.0,
        producer_acks=-1,
        web_host=settings.worker_web_host,
        web_port=web_port,
        web_in_thread=False,
        **options,
    )
