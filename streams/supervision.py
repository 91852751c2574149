"""How a stream worker ends when a message cannot be finished: the process exits, and its
successor resumes from what is durable.

Faust restarts an agent whose body raised, and its ``take_events``/``events`` iterators
acknowledge the message in hand as they are closed: the restarted agent reads on past
events that were never applied, dead-lettered or counted. Judging a message never raises
(``streams/events.py``), so an exception in an agent is a fault of the machinery (a store,
a producer, a bug): the worker exits without acknowledging anything more, and the process
that replaces it starts from the committed offsets (the profile worker rewinds them to its
checkpoints at every assignment). A supervisor (systemd, Kubernetes, ``docker compose``
``restart:``) restarts it, as it would after a crash.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import NoReturn

import faust

log = logging.getLogger(__name__)

EXIT_UNFINISHED = 70  # EX_SOFTWARE: restart me


async def stopping(app: faust.App, within_s: float = 2.0) -> bool:
    """Whether the worker is being stopped. A stop signal goes to the worker's whole process
    group, so a child (the item process) may be gone before the worker's own handler has
    run: give that handler a moment to be seen before a failure is taken for a crash."""
    deadline = time.monotonic() + within_s
    while not app.should_stop and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return bool(app.should_stop)


async def exit_unfinished(app: faust.App, what: str, expected: bool = False) -> NoReturn:
    """End the process now, the message in hand neither finished nor acknowledged. Call it
    from inside the agent's loop (the iterator still open): a failure seen while the worker
    stops is a shutdown (exit 0); any other is a crash (exit 70), logged with its
    traceback. ``expected``: a rewind the system asks for (a store failover,
    ``streams/item_rows.py``), not a fault: exit 70 too, logged as a warning."""
    if await stopping(app):
        log.info("%s while the worker stopped", what)
        code = 0
    elif expected:
        log.warning("%s; the worker exits to resume from its checkpoints", what)
        code = EXIT_UNFINISHED
    else:
        log.critical("%s; stopping the worker (to resume from what is written)", what, exc_info=1)
        code = EXIT_UNFINISHED
    logging.shutdown()
    os._exit(code)
