"""The partition count serving follows: read in the background, never waited for."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from streamrank.settings import Settings
from streams.growth import PartitionCount


def test_the_count_is_reread_in_the_background_after_the_refresh_interval(
    tmp_path: Path,
) -> None:
    settings = Settings(home=tmp_path, events_partitions=4, topic_metadata_refresh_s=0.2)
    counts = iter([8, 16])
    reading = threading.Event()

    def read() -> int:
        reading.wait(5)  # a slow broker: callers are not held
        return next(counts)

    follower = PartitionCount(settings, read)
    assert follower() == 4
    time.sleep(0.25)
    assert follower() == 4  # the read has started, not finished
    assert follower() == 4  # and only one runs at a time
    reading.set()
    deadline = time.monotonic() + 5
    while follower() != 8:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_failed_read_keeps_the_last_count(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, events_partitions=4, topic_metadata_refresh_s=0.05)

    def read() -> int:
        raise ConnectionError("broker down")

    follower = PartitionCount(settings, read)
    time.sleep(0.06)
    assert follower() == 4
    time.sleep(0.1)
    assert follower() == 4
