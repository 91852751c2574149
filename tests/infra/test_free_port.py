"""Ports for child processes come from outside the kernel's ephemeral range and Ray's
worker ports, so that no process started later is handed the same one by ``bind(0)``."""

from __future__ import annotations

import socket

import pytest

from infra import processes
from infra.processes import QUIET_PORTS, free_port


def test_free_ports_are_bindable_and_outside_the_ephemeral_range() -> None:
    ports = {free_port() for _ in range(20)}
    assert len(ports) > 1
    for port in ports:
        assert QUIET_PORTS[0] <= port < QUIET_PORTS[1]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))  # nothing holds it


def test_a_port_in_use_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", free_port()))
        held.listen()
        taken = held.getsockname()[1]
        monkeypatch.setattr(processes, "QUIET_PORTS", (taken, taken + 2))  # it and one more
        handed = []
        for _ in range(20):  # each as if a minute had passed since the last
            monkeypatch.setattr(processes, "_handed_out", {})
            handed.append(free_port())
        assert set(handed) == {taken + 1}


def test_no_port_is_handed_out_twice_before_its_child_can_have_bound_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A caller takes several ports before starting the children that bind them (six
    Redis Cluster nodes, two ports each): random picks from one range must not repeat."""
    monkeypatch.setattr(processes, "_handed_out", {})  # this test's own record
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)
