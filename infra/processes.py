"""Child processes that never outlive their parent: start in their own session, stop as a
group (SIGTERM, then SIGKILL), and find free ports for them."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


QUIET_PORTS = (20_000, 32_768)
"""Where ``free_port`` looks first: above Ray's worker ports (10002-19999 by default) and
below Linux's default ephemeral range (32768-60999), where the kernel hands out ports to
every outgoing connection and to every ``bind(0)``. A port found free there stays free
until the child it is meant for binds it: one from the ephemeral range was once taken by
one of the Ray processes the demo starts at the same time as its worker."""


REUSE_AFTER_S = 60.0
"""How long ``free_port`` holds back a port it handed out: the caller may ask for several
before its children bind any (a Redis Cluster node's data and bus ports, six nodes at a
time), and two random picks from the same range now and then were the same port (one
node then failed to start, "Address already in use")."""
_handed_out: dict[int, float] = {}  # port -> when it was handed out (monotonic)
_handing_out = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on at ``host`` now, for a child process to bind, and not
    handed out by this process in the last ``REUSE_AFTER_S``."""
    low, high = QUIET_PORTS
    with contextlib.suppress(OSError, ValueError):  # the kernel's range, where it says
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        high = min(high, ephemeral_low)
    rng = random.SystemRandom()
    with _handing_out:
        now = time.monotonic()
        for port, at in list(_handed_out.items()):
            if now - at >= REUSE_AFTER_S:
                del _handed_out[port]
        for _ in range(100 if high > low else 0):
            port = rng.randrange(low, high)
            if port in _handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
            _handed_out[port] = now
            return port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # the kernel's choice
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        _handed_out[port] = now
        return port


def stop_process(process: subprocess.Popen, name: str, timeout: float = 10.0) -> None:  # type: ignore[type-arg]
    """Stop a child started with ``start_new_session=True`` and everything it spawned: its
    whole process group, SIGTERM, then SIGKILL for whatever is left after ``timeout``.
    The group is waited for, not only its leader: a supervisor shell dies at once on
    SIGTERM while the worker it started may still be stopping, or may never stop."""
    pgid = process.pid  # a session's leader leads its process group
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            process.poll()  # reap the leader if it is gone
            return
        deadline = time.monotonic() + wait
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(wait)
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _group_alive(pgid):
            log.info("%s (pid %d) stopped", name, process.pid)
            return
        log.warning("%s (pid %d, or what it started) ignored %s", name, process.pid, sig.name)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal is still a member
        return True
    return True


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def interrupt_on_stop_signals() -> dict[int, object]:
    """SIGINT and SIGTERM raise ``KeyboardInterrupt`` in the main thread, whatever this
    process inherited (a background job starts with SIGINT ignored). Returns the handlers
    it replaced."""
    return {sig: signal.signal(sig, _interrupt) for sig in STOP_SIGNALS}


@contextlib.contextmanager
def keeping_stop_handlers() -> Iterator[None]:
    """Put SIGINT's and SIGTERM's handlers back as they were once the block is done.

    ``ray.init`` installs Ray's own SIGTERM handler (it logs "SIGTERM received" and
    aborts, running no ``finally``), so a process that started Ray would leave Ray, and
    whatever else it started, behind on the first SIGTERM. Only the main thread can set
    handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


@contextlib.contextmanager
def stop_signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive inside the block wait for its end, then take effect
    as they would have (the handlers in force before the block run, once, for the first).

    For teardown: an interrupt raised inside one finalizer skips every finalizer after it
    (pytest, like most teardown code, catches ``Exception``, and ``KeyboardInterrupt`` is
    not one), so a stop arriving while the first server of a test bed was being stopped
    left the others, and their network, running. Stopping is bounded (``stop_process``
    escalates to SIGKILL), so holding a stop for its length costs seconds. Only the main
    thread can set handlers; elsewhere nothing is held."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, _: held.append(signum)) for sig in STOP_SIGNALS
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        if held:
            log.warning(
                "%s arrived during teardown; it takes effect now", signal.Signals(held[0]).name
            )
            signal.raise_signal(held[0])


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """So that SIGTERM and SIGINT, like Ctrl-C in a terminal, run every ``finally`` and
    leave no orphan."""
    previous = interrupt_on_stop_signals()
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
