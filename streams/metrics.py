"""Prometheus metrics of the profile worker (exposed at the worker's ``/metrics`` page)."""

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "streamrank_events_total",
    "Events seen by the profile worker, by outcome",
    ["outcome"],  # applied | duplicate | redelivered | dead | withheld (privacy) | forwarded
)
MESSAGES = Counter("streamrank_messages_total", "Kafka messages consumed from the events topic")
SKIPPED_MESSAGES = Counter(
    "streamrank_skipped_messages_total", "Redelivered messages whose effects were already written"
)
DEAD_LETTERS = Counter(
    "streamrank_dead_letters_total", "Messages or events sent to the dead-letter topic", ["kind"]
)
BATCH_SIZE = Histogram(
    "streamrank_batch_messages",
    "Messages per processed batch",
    buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000),
)
FLUSH_SECONDS = Histogram(
    "streamrank_flush_seconds",
    "Time to write one batch of state to the online store",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PROCESSING_SECONDS = Histogram(
    "streamrank_processing_seconds",
    "From the broker's append of a batch's oldest message to its state being written",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PROFILES_WRITTEN = Counter("streamrank_profiles_written_total", "Profile rows written")
LAG = Gauge(
    "streamrank_consumer_lag_messages",
    "Messages between the partition's high watermark and the worker's position",
    ["partition"],
)
COLLECTED = Counter(
    "streamrank_collector_events_total", "Events received by the HTTP collector", ["outcome"]
)
STORE_RETRIES = Counter(
    "streamrank_store_retries_total", "Online store calls that failed and were retried", ["what"]
)
STORE_FAILURES = Counter(
    "streamrank_store_failures_total",
    "Online store errors that waiting will not heal (streams/store_errors.py), by kind",
    ["what", "kind"],
)
STORE_FAILED = Gauge(
    "streamrank_store_failed",
    "1 while this worker has stopped taking events after a lasting store error",
)
PRIVACY_REQUESTS = Counter(
    "streamrank_privacy_requests_total", "Opt-outs, opt-ins and erasures applied", ["action"]
)
PRIVACY_SECONDS = Histogram(
    "streamrank_privacy_apply_seconds",
    "From a privacy request's time to its state being written and published",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
NAMESPACE_ERASE_FAILURES = Counter(
    "streamrank_namespace_erase_failures_total",
    "Replay namespaces that wiped users could not be removed from (see the worker log)",
)
UNJUDGED = Counter(
    "streamrank_unjudged_inputs_total",
    "Inputs whose validation raised an exception it did not foresee (dead-lettered or "
    "refused with reason 'internal'): a new class of bad input, see the log",
    ["where", "exception"],  # decode (every reader of events) | sdk | collector | impressions
)
STALLED_SEEKS = Counter(
    "streamrank_stalled_partition_seeks_total",
    "Seeks back to a partition whose messages stopped arriving (streams/stalls.py)",
)
