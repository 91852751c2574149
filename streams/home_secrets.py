"""Secrets kept in a home directory when no setting provides them (the embedded demo).

A secret is created once, with 32 random bytes in hex, in a file of mode 0600, and read by
every process of that home, so the worker, the Serve replicas and the CLI agree on it
without configuration. Production sets each secret for every process alike instead
(``STREAMRANK_USER_ID_KEY``, ``STREAMRANK_TOKEN_SECRET``).
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path


def home_secret(path: Path) -> bytes:
    """The secret in ``path``, created on first use; concurrent first uses agree on one."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process won the race: read its secret
        else:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32))
    for _ in range(100):  # a process that lost the creation race waits for the winner's write
        secret = path.read_text().strip()
        if secret:
            return secret.encode()
        time.sleep(0.01)
    raise RuntimeError(f"{path} is empty: delete it (what was made with it is lost)")
