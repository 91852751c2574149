"""The item half of a live worker's state in a process of its own.

Measured in ``bench/ingest.py``: of a worker's time per event, the item side (co-visitation
anchors aside) was about 40 %: applying effects to popularity and co-visitation rows, and
above all writing those rows. In one process every batch waits for them, and every item
flush (each ``item_flush_s``) stalls the profiles behind it, which is what made profiles
late. Here the profile half hands each batch's effects over a pipe once its profiles are
written and goes on with the next batch; this process applies them and writes item rows
and checkpoints (``streams/item_rows.py``). The two halves use two cores.

Nothing about exactly-once changes: the pipe carries what ``ItemRows.add`` would have got
in the same order, and a checkpoint is still written only after the rows and profiles it
covers. A lasting store error (``streams/store_errors.py``) is handed to the worker, which
halts with it. If this process dies, the worker must stop too (``ItemProcessDied``): effects it
held unwritten are covered only by the profiles' outboxes, which a restart, rewinding to
the checkpoints, applies again. If the worker dies, this process is killed with it (the
kernel's parent-death signal), so no write of the old owner can follow a rebalance.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

from feature_repo.redis_store import ReplicationLost
from streams import metrics
from streams.item_rows import ItemRows
from streams.memory import TRIM_EVERY_S, HeapTrimmer
from streams.outbox import ItemEffect
from streams.sink import FeastProfileStore, PartitionCounts
from streams.store_errors import StoreFailed

log = logging.getLogger(__name__)

START_TIMEOUT_S = 180.0  # a cold start imports Feast and opens the store
POLL_S = 1.0


class ItemProcessDied(RuntimeError):
    """The item process is gone; the worker must restart (and rewind to its checkpoints)."""


class ItemProcess:
    """``ItemSide`` over a pipe to the item process (the worker's half)."""

    def __init__(
        self,
        open_store: Callable[[], FeastProfileStore],
        max_covisits: int,
        flush_s: float,
        gc_thresholds: tuple[int, int, int] | None = None,
    ):
        """``open_store`` must be picklable (a module-level function or a partial of one):
        the child opens its own connection to the online store. ``gc_thresholds``: the
        child's collector pace (``streams/memory.py``; None: Python's)."""
        context = multiprocessing.get_context("spawn")  # never fork a process with threads
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=serve,
            args=(child, open_store, max_covisits, flush_s, os.getpid(), gc_thresholds),
            name="streamrank-items",
            daemon=True,
        )
        self._process.start()
        child.close()
        self._written: dict[int, int] = {}
        self._retries: dict[str, float] = {}
        self._wait_for("ready", START_TIMEOUT_S)
        log.info("item process %d ready", self._process.pid)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def load(self, counts: Mapping[int, PartitionCounts]) -> None:
        self._written.update({p: c.offset for p, c in counts.items()})
        self._send(("load", dict(counts)))

    def add(
        self,
        effects: Sequence[ItemEffect],
        covered: Mapping[int, int],
        counts: Mapping[int, PartitionCounts],
    ) -> None:
        if effects or covered:
            # plain tuples: a named tuple pickles through Python code, 4-5x slower, and
            # this process is the busier of the two
            self._send(("add", [tuple(e) for e in effects], dict(covered), dict(counts)))

    def flush(self, force: bool = False) -> None:
        """The child writes when due by itself; ``force`` writes now and waits. Otherwise
        what the child reported is read: on a quiet stream the worker's flush timer is the
        only caller, and a child that failed or asks for a rewind must not go unheard."""
        if force:
            self._send(("flush",))
            self._wait_for("done")
            return
        self._receive_notices()
        if not self._process.is_alive():
            raise ItemProcessDied(f"item process exited ({self._process.exitcode})")

    def written(self) -> Mapping[int, int]:
        self._receive_notices()
        return self._written

    def forget(self, partitions: Iterable[int] | None) -> None:
        parts = None if partitions is None else sorted(partitions)
        self._send(("forget", parts))
        self._wait_for("done")  # no write for these partitions can follow
        for p in list(self._written) if parts is None else parts:
            self._written.pop(p, None)

    def close(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(("stop",))
            self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        self._conn.close()

    # --- the pipe ---------------------------------------------------------------------------
    def _send(self, message: tuple[Any, ...]) -> None:
        try:
            self._conn.send(message)  # blocks while the child is behind: backpressure
        except OSError as exc:
            raise ItemProcessDied(f"item process gone ({self._process.exitcode})") from exc

    def _receive(self, timeout: float) -> tuple[Any, ...] | None:
        try:
            if not self._conn.poll(timeout):
                return None
            return self._conn.recv()
        except (EOFError, OSError) as exc:
            raise ItemProcessDied(f"item process gone ({self._process.exitcode})") from exc

    def _handle(self, message: tuple[Any, ...]) -> str:
        kind = message[0]
        if kind == "written":
            self._written.update(message[1])
            for what, total in message[2].items():  # the child's retries, on our /metrics
                step = total - self._retries.get(what, 0.0)
                if step > 0:
                    metrics.STORE_RETRIES.labels(what).inc(step)
                    self._retries[what] = total
        elif kind == "failed":
            raise ItemProcessDied(f"item process failed: {message[1]}")
        elif kind == "rewind":  # a store failover since the last checkpoint
            raise ReplicationLost(message[1])
        elif kind == "store_failed":  # a lasting store error: the worker halts, not restarts
            # counted here too: only the worker's registry is on /metrics, not this child's
            metrics.STORE_FAILURES.labels(message[1], message[2]).inc()
            raise StoreFailed(message[1], message[2], RuntimeError(message[3]))
        return str(kind)

    def _receive_notices(self) -> None:
        while (message := self._receive(0)) is not None:
            self._handle(message)

    def _wait_for(self, kind: str, timeout_s: float | None = None) -> None:
        waited = 0.0
        while True:
            message = self._receive(POLL_S)
            if message is not None:
                if self._handle(message) == kind:
                    return
                continue
            waited += POLL_S
            if not self._process.is_alive():
                raise ItemProcessDied(f"item process exited ({self._process.exitcode})")
            if timeout_s is not None and waited >= timeout_s:
                raise ItemProcessDied(f"no {kind!r} from the item process in {timeout_s:.0f} s")


# --- the child --------------------------------------------------------------------------------
def serve(
    conn: Connection,
    open_store: Callable[[], FeastProfileStore],
    max_covisits: int,
    flush_s: float,
    parent_pid: int,
    gc_thresholds: tuple[int, int, int] | None = None,
) -> None:
    """The item process: apply what the pipe brings, write when due, report what is written."""
    _die_with_parent(parent_pid)
    if gc_thresholds is not None:
        gc.set_threshold(*gc_thresholds)  # for the life of this process
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s items %(levelname)s %(name)s: %(message)s"
    )
    try:
        rows = ItemRows(open_store(), max_covisits, flush_s)
    except Exception as exc:  # reported, so the worker stops with the reason
        conn.send(("failed", repr(exc)))
        raise
    conn.send(("ready",))
    reported: dict[int, int] = {}
    retries: dict[str, float] = {}
    failed: tuple[str, ...] | None = None  # a lasting store error, or a rewind asked for
    trim_heap = HeapTrimmer()
    while True:
        trim_heap()
        wait = max(0.05, flush_s / 2) if rows.pending() else TRIM_EVERY_S
        try:
            ready = conn.poll(wait)
            message = conn.recv() if ready else ("tick",)
        except EOFError:
            return  # the worker is gone; what was unwritten is in its profiles' outboxes
        kind = message[0]
        if kind == "stop":
            return
        if failed is not None:  # writes nothing more; answers what waits for an answer
            if kind in ("flush", "forget"):
                conn.send(failed)
            continue
        try:
            _apply(rows, message)
        except ReplicationLost as lost:  # the worker exits, to rewind to the checkpoints
            failed = ("rewind", str(lost))
            conn.send(failed)
            continue
        except StoreFailed as failure:  # the worker halts with it (streams/store_errors.py)
            failed = ("store_failed", failure.what, failure.kind, str(failure.__cause__))
            conn.send(failed)
            continue
        written = rows.written()
        if kind == "forget":
            reported = {p: o for p, o in reported.items() if p in written}
        changed = {p: o for p, o in written.items() if reported.get(p) != o}
        now_retries = _retries()
        if changed or now_retries != retries:
            conn.send(("written", changed, now_retries))
            reported.update(changed)
            retries = now_retries
        if kind in ("flush", "forget"):
            conn.send(("done",))


def _apply(rows: ItemRows, message: tuple[Any, ...]) -> None:
    """One message from the worker, applied to the item rows."""
    kind = message[0]
    if kind == "add":
        rows.add([ItemEffect._make(e) for e in message[1]], *message[2:])
    elif kind == "load":
        rows.load(message[1])
    elif kind == "tick":
        rows.flush()
    elif kind == "flush":
        rows.flush(force=True)
    elif kind == "forget":
        rows.forget(message[1])


def _retries() -> dict[str, float]:
    """This process's store retries so far, by what was being done."""
    return {
        sample.labels["what"]: sample.value
        for family in metrics.STORE_RETRIES.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def _die_with_parent(parent_pid: int) -> None:
    """Linux: SIGKILL this process when the worker dies, however it dies. (The kernel
    signals when the *thread* that started this process ends: the worker starts it on its
    long-lived processing thread.)"""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the worker died before the signal was armed
        os._exit(0)
