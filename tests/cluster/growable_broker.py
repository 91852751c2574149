"""A Kafka-compatible broker that can add partitions to a topic, for the topic-growth test.

Tansu (the embedded broker) does not implement CreatePartitions; noida-db (a single
binary from PyPI that speaks the Kafka protocol among others) does."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient

from infra.processes import free_port, stop_process


def noida_binary() -> Path:
    import noida_db

    return Path(noida_db.__file__).parent / "noida-db"


class GrowableBroker:
    """noida-db's Kafka service alone, on a free port of 127.0.0.1; a context manager."""

    def __init__(self, data_dir: Path, log_path: Path):
        self.port = free_port()
        self.data_dir = data_dir
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> GrowableBroker:
        cmd = [str(noida_binary()), "start", "--only", "kafka"]
        cmd += ["--kafka-port", str(self.port), "--data-dir", str(self.data_dir)]
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            deadline = time.monotonic() + 30
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"noida-db exited with {self.process.returncode}")
                try:
                    socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"noida-db did not listen on {self.bootstrap}") from None
                    time.sleep(0.05)
            AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=20)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            stop_process(self.process, "noida-db")
            self.process = None
