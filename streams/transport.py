"""Faust's Kafka transport with one knob it hard-codes: how long a fetch may wait.

Faust builds its aiokafka consumer with ``fetch_max_wait_ms=1500``. A broker answers a
fetch as soon as ``fetch_min_bytes`` (1) is there, or at that deadline. Apache Kafka
answers early; the embedded broker (Tansu) was seen to hold fetches close to the deadline,
which alone put ~0.6 s between an event's append and the worker seeing it, with nothing
else running. A short wait costs an idle worker a few more empty fetches per second and
bounds that delay on any broker. ``StreamApp(..., fetch_max_wait_ms=N)`` sets it.
"""

from __future__ import annotations

import ssl
from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from streamrank.settings import Settings

FAUST_DEFAULT_FETCH_MAX_WAIT_MS = 1500


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # read by aiokafka when the consumer starts its fetcher, which happens later
        consumer._fetch_max_wait_ms = getattr(
            self.app, "fetch_max_wait_ms", FAUST_DEFAULT_FETCH_MAX_WAIT_MS
        )
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class StreamApp(faust.App):
    """``faust.App`` over the transport above."""

    def __init__(
        self, *args: Any, fetch_max_wait_ms: int = FAUST_DEFAULT_FETCH_MAX_WAIT_MS, **kwargs: Any
    ):
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


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


def stream_app(settings: Settings, group: str, web_port: int, **options: Any) -> StreamApp:
    """A Faust app of this project: the broker, fetch wait, partitions, group timeouts and
    web server every streamrank worker shares; ``options`` add app-specific settings."""
    return StreamApp(
        group,
        fetch_max_wait_ms=settings.worker_fetch_max_wait_ms,
        broker=f"kafka://{settings.bootstrap()}",
        broker_credentials=broker_credentials(settings),
        store="memory://",
        topic_partitions=settings.events_partitions,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        producer_acks=-1,
        web_host=settings.worker_web_host,
        web_port=web_port,
        web_in_thread=False,
        **options,
    )
