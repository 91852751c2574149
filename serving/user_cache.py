"""The user tower's costly half, computed once per history instead of once per request.

A user vector is ``head(summary(history), context(profile))``: the transformer summary of
the engaged items changes only when the user engages with something, while the context
(decayed counts that move with the clock, category shares, interest) is cheap and read
fresh on every request. So the scorer keeps summaries in a bounded LRU keyed by the
encoded history itself (item rows and event types): two requests with the same history
share one transformer pass, a new event makes a new key, and a stale entry can never be
served. The vectors equal on-demand ones to float tolerance (a test), since the same
modules run on the same inputs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from serving import metrics
from training.artifact import RankingArtifact
from training.features import UserArrays


class SummaryCache:
    """User vectors for one model, with its history summaries kept in an LRU of
    ``size`` entries (0: none kept, every request pays the transformer)."""

    def __init__(self, artifact: RankingArtifact, size: int):
        self.artifact = artifact
        self.size = size
        self._entries: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # batches run on worker threads

    def __len__(self) -> int:
        return len(self._entries)

    def user_vectors(self, users: UserArrays) -> np.ndarray:
        if not self.size:
            return self.artifact.user_vectors(users)
        keys = [
            users.history[i].tobytes() + users.history_types[i].tobytes()
            for i in range(len(users.history))
        ]
        with self._lock:
            found = [self._entries.get(key) for key in keys]
            for key, summary in zip(keys, found, strict=True):
                if summary is not None:
                    self._entries.move_to_end(key)
        missing = [i for i, summary in enumerate(found) if summary is None]
        metrics.USER_SUMMARIES.labels("hit").inc(len(keys) - len(missing))
        if missing:
            metrics.USER_SUMMARIES.labels("miss").inc(len(missing))
            computed = self.artifact.summaries(users.history[missing], users.history_types[missing])
            rows = computed.float().cpu().numpy()
            with self._lock:
                for i, summary in zip(missing, rows, strict=True):
                    found[i] = self._entries[keys[i]] = summary.copy()  # not a view of the batch
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
        return self.artifact.user_vectors(users, np.stack(found))  # type: ignore[arg-type]
