"""A partition is sought back only when messages wait past what the worker takes next and
its next offset has not moved for the whole wait."""

from streams.stalls import StallWatch


def test_a_partition_waiting_past_its_next_offset_is_sought_back_after_the_wait() -> None:
    watch = StallWatch(after_s=5.0)
    assert watch.stalled({"p4": (0, 1)}, now=0.0) == {}
    assert watch.stalled({"p4": (0, 1)}, now=4.9) == {}
    assert watch.stalled({"p4": (0, 1)}, now=5.0) == {"p4": 0}
    assert watch.stalled({"p4": (0, 1)}, now=6.0) == {}  # the seek gets its own wait
    assert watch.stalled({"p4": (0, 1)}, now=10.0) == {"p4": 0}


def test_progress_caught_up_partitions_and_unknown_ends_are_left_alone() -> None:
    watch = StallWatch(after_s=5.0)
    watch.stalled({"busy": (10, 50), "done": (7, 7), "new": (None, 3), "quiet": (0, None)}, 0.0)
    later = {"busy": (20, 60), "done": (7, 7), "new": (None, 3), "quiet": (0, None)}
    assert watch.stalled(later, now=6.0) == {}  # busy moved on; the others wait on nothing
    assert watch.stalled(later, now=12.0) == {"busy": 20}  # then it stopped moving


def test_a_revoked_partition_is_forgotten() -> None:
    watch = StallWatch(after_s=5.0)
    watch.stalled({"p1": (0, 3)}, now=0.0)
    watch.stalled({}, now=1.0)  # revoked
    assert watch.stalled({"p1": (0, 3)}, now=5.5) == {}  # assigned again: a fresh wait
