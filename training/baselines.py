"""The rankers a team would ship without a model, each a real implementation.

Every baseline is fitted on interactions known before the evaluation targets. It scores
every catalog item for every evaluation example, with the same ``[examples, items]``
contract as the model, so one metrics function judges them all.

- ``popular``: interaction counts over the fitting data;
- ``recent-popular``: point-in-time popularity, decayed counts of everything that happened
  before each example's time (τ = 7 days), the stream's own notion of "trending";
- ``item-knn``: cosine item-item similarity on the user-item matrix, top-100 neighbours
  per item, summed over the user's history (Sarwar et al. 2001; Deshpande & Karypis 2004);
- ``als`` / ``bpr``: matrix factorization from the ``implicit`` library (seed 004);
- ``minilm-zero-shot``: the pretrained text encoder without fine-tuning, the profile's
  interest vector against item text embeddings;
- ``recently-viewed``: the user's own newest items again, newest first (the row a shop
  shows as "recently viewed"; it earns something only where the shop's rule lets a seen
  item come back, ``serving.ranking.ShowAgain``);
- ``stream-default``: what serving ranks with before a model is trained (co-visitation
  from the user's recent items, recent popularity, the encoder's cosine), computed by
  serving's own functions over rows folded by the stream's own code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp

from serving.stream_ranker import Neighbours, StreamSignals, recency_scores, recent_items
from streamrank.catalog import Catalog
from streamrank.datasets import iter_events
from streams.covisitation import CovisitRow, covisit_edges, merge_neighbours
from streams.popularity import POPULARITY_WINDOWS
from streams.profile import ItemLookup, UserProfile, apply_event
from training.examples import Example, ordered_events

log = logging.getLogger(__name__)


class Ranker(Protocol):
    name: str

    def fit(self, interactions: pd.DataFrame) -> None: ...

    def score(self, examples: Sequence[Example]) -> np.ndarray: ...


def interaction_matrix(
    interactions: pd.DataFrame, users: dict[str, int], items: dict[str, int]
) -> sp.csr_matrix:
    """Binary user x item matrix of (user_id, item_id) pairs; unknown ids are dropped."""
    u = interactions["user_id"].map(users)
    i = interactions["item_id"].map(items)
    ok = u.notna() & i.notna()
    rows, cols = u[ok].astype(np.int64).to_numpy(), i[ok].astype(np.int64).to_numpy()
    matrix = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(users), len(items))
    )
    matrix.data[:] = 1.0  # duplicates summed by the constructor: binarise
    return matrix


def history_rows(examples: Sequence[Example], items: dict[str, int]) -> list[list[int]]:
    return [[items[i] for i in e.seen if i in items] for e in examples]


class Popular:
    name = "popular"

    def __init__(self, item_ids: Sequence[str]):
        self.items = {item: i for i, item in enumerate(item_ids)}
        self.counts = np.zeros(len(self.items), dtype=np.float32)

    def fit(self, interactions: pd.DataFrame) -> None:
        cols = interactions["item_id"].map(self.items).dropna().astype(np.int64)
        self.counts = np.bincount(cols, minlength=len(self.items)).astype(np.float32)

    def score(self, examples: Sequence[Example]) -> np.ndarray:
        return np.tile(self.counts, (len(examples), 1))


class RecentPopular:
    name = "recent-popular"

    def __init__(self, item_ids: Sequence[str], tau_s: float = 7 * 86_400.0):
        self.items = {item: i for i, item in enumerate(item_ids)}
        self.tau_s = tau_s
        self.times: list[np.ndarray] = []

    def fit(self, interactions: pd.DataFrame) -> None:
        """Keeps every event time per item; scoring only ever looks before an example."""
        cols = interactions["item_id"].map(self.items)
        ok = cols.notna()
        frame = pd.DataFrame({"col": cols[ok].astype(np.int64), "ts": interactions["ts"][ok]})
        grouped = frame.groupby("col")["ts"]
        self.times = [np.empty(0)] * len(self.items)
        for col, ts in grouped:
            self.times[int(col)] = np.sort(ts.to_numpy(dtype=np.float64))  # type: ignore[call-overload]

    def score(self, examples: Sequence[Example]) -> np.ndarray:
        """Σ exp(-(t - t_j)/τ) over an item's t_j < t, for every example time t.

        In log space: a running log-sum-exp of (t_j - t_max)/τ over the item's sorted
        times, shifted by (t_max - t)/τ. Both terms may be huge (an example years before
        the item's last event: e^(10^4)) but their sum, the log of the answer, is at most
        log(count), so nothing overflows. A plain prefix sum of exp(...) times
        exp((t_max - t)/τ) gave inf · 0 = NaN on data spanning years."""
        at = np.array([e.ts for e in examples], dtype=np.float64)
        out = np.zeros((len(examples), len(self.items)), dtype=np.float64)
        for col, times in enumerate(self.times):
            if not len(times):
                continue
            log_prefix = np.concatenate(
                [[-np.inf], np.logaddexp.accumulate((times - times[-1]) / self.tau_s)]
            )
            before = np.searchsorted(times, at, side="left")
            out[:, col] = np.exp(log_prefix[before] + (times[-1] - at) / self.tau_s)
        return out.astype(np.float32)


class ItemKNN:
    name = "item-knn"

    def __init__(self, item_ids: Sequence[str], neighbours: int = 100):
        self.items = {item: i for i, item in enumerate(item_ids)}
        self.neighbours = neighbours
        self.similarity = sp.csr_matrix((len(self.items), len(self.items)), dtype=np.float32)

    def fit(self, interactions: pd.DataFrame) -> None:
        users = {u: i for i, u in enumerate(interactions["user_id"].unique())}
        x = interaction_matrix(interactions, users, self.items).tocsc()
        norms = np.sqrt(np.asarray(x.power(2).sum(axis=0))).ravel()
        norms[norms == 0] = 1.0
        x = x @ sp.diags(1.0 / norms)
        sim = (x.T @ x).tocsr().astype(np.float32)
        sim.setdiag(0.0)
        sim.eliminate_zeros()
        self.similarity = _keep_top(sim, self.neighbours)

    def score(self, examples: Sequence[Example]) -> np.ndarray:
        rows = history_rows(examples, self.items)
        user_items = sp.csr_matrix(
            (
                np.ones(sum(map(len, rows)), np.float32),
                (
                    np.repeat(np.arange(len(rows)), [len(r) for r in rows]),
                    np.concatenate([np.asarray(r, np.int64) for r in rows]) if rows else [],
                ),
            ),
            shape=(len(rows), len(self.items)),
        )
        return np.asarray((user_items @ self.similarity).todense(), dtype=np.float32)


def _keep_top(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Each row's k largest entries."""
    rows, cols, vals = [], [], []
    for r in range(matrix.shape[0]):
        start, end = matrix.indptr[r], matrix.indptr[r + 1]
        data, idx = matrix.data[start:end], matrix.indices[start:end]
        if len(data) > k:
            keep = np.argpartition(-data, k - 1)[:k]
            data, idx = data[keep], idx[keep]
        rows.append(np.full(len(data), r))
        cols.append(idx)
        vals.append(data)
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=matrix.shape
    )


class MatrixFactorization:
    """``implicit``'s ALS or BPR. Users are the fitted ones; an unknown user scores 0."""

    def __init__(
        self, item_ids: Sequence[str], kind: str = "als", factors: int = 64, seed: int = 7
    ):
        self.items = {item: i for i, item in enumerate(item_ids)}
        self.kind = kind
        self.name = kind
        self.factors = factors
        self.seed = seed
        self.users: dict[str, int] = {}
        self.user_factors = np.zeros((0, factors), np.float32)
        self.item_factors = np.zeros((len(self.items), factors), np.float32)

    def fit(self, interactions: pd.DataFrame) -> None:
        from implicit.als import AlternatingLeastSquares
        from implicit.bpr import BayesianPersonalizedRanking
        from threadpoolctl import threadpool_limits

        self.users = {u: i for i, u in enumerate(interactions["user_id"].unique())}
        x = interaction_matrix(interactions, self.users, self.items)
        if self.kind == "als":
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=0.05,
                alpha=2.0,
                iterations=20,
                random_state=self.seed,
            )
        else:
            model = BayesianPersonalizedRanking(
                factors=self.factors,
                learning_rate=0.05,
                regularization=0.01,
                iterations=100,
                random_state=self.seed,
            )
        with threadpool_limits(1, "blas"):  # implicit's advice: BLAS threads fight its own
            model.fit(x, show_progress=False)
        self.user_factors = np.asarray(_to_numpy(model.user_factors), np.float32)
        self.item_factors = np.asarray(_to_numpy(model.item_factors), np.float32)

    def score(self, examples: Sequence[Example]) -> np.ndarray:
        out = np.zeros((len(examples), len(self.items)), dtype=np.float32)
        for row, e in enumerate(examples):
            u = self.users.get(e.user_id)
            if u is not None:
                out[row] = self.item_factors @ self.user_factors[u]
        return out


def _to_numpy(array: object) -> np.ndarray:
    return array.to_numpy() if hasattr(array, "to_numpy") else np.asarray(array)  # type: ignore[union-attr]


class MiniLMZeroShot:
    name = "minilm-zero-shot"

    def __init__(self, item_ids: Sequence[str], embeddings: np.ndarray):
        self.n_items = len(item_ids)
        self.embeddings = np.asarray(embeddings, dtype=np.float32)  # a float16 map too

    def fit(self, interactions: pd.DataFrame) -> None:
        """Nothing to fit: that is the point of this baseline."""

    def score(self, examples: Sequence[Example]) -> np.ndarray:
        out = np.zeros((len(examples), self.n_items), dtype=np.float32)
        for row, e in enumerate(examples):
            if e.features.interest is not None:
                out[row] = self.embeddings @ e.features.interest
        return out


class RecentlyViewed:
    name = "recently-viewed"

    def __init__(self, item_ids: Sequence[str]):
        self.item_ids = list(item_ids)

    def fit(self, interactions: pd.DataFrame) -> None:
        """Nothing to fit: the profile holds the row."""

    def score(self, examples: Sequence[Example]) -> np.ndarray:
        out = np.zeros((len(examples), len(self.item_ids)), np.float32)
        for row, e in enumerate(examples):
            out[row] = recency_scores(self.item_ids, e.features)
        return out


class StreamDefault:
    """What serving ranks with before any model is trained (``serving/stream_ranker.py``),
    from the same functions: co-visitation rows folded from the fitting events by the
    stream's own code (``covisit_edges``, ``CovisitRow``), the stream's 24 h popularity at
    each example's time, and the pretrained encoder's cosine."""

    name = "stream-default"

    def __init__(self, catalog: ItemLookup, item_ids: Sequence[str], embeddings: np.ndarray):
        self.catalog = catalog
        self.item_ids = list(item_ids)
        self.index = {item: row for row, item in enumerate(self.item_ids)}
        self.popular = RecentPopular(item_ids, tau_s=POPULARITY_WINDOWS["24h"])
        self.text = MiniLMZeroShot(item_ids, embeddings)
        self.rows: dict[str, CovisitRow] = {}

    def fit(self, interactions: pd.DataFrame) -> None:
        """Each user's events in time order through the stream's profile fold, every
        co-visitation edge it implies into the anchor's row (one partition: the sum over
        partitions serving reads is the same)."""
        self.popular.fit(interactions)
        self.rows = {}
        profile: UserProfile | None = None
        for event in iter_events(ordered_events(interactions)):
            if profile is None or profile.user_id != event.user_id:
                profile = UserProfile(event.user_id)
            for anchor, item, weight in covisit_edges(profile, event):
                row = self.rows.get(anchor) or self.rows.setdefault(anchor, CovisitRow(0, anchor))
                row.add(item, weight, event.epoch)
            apply_event(profile, event, self.catalog)

    def signals(self, examples: Sequence[Example]) -> list[StreamSignals]:
        """What serving would read from the stream for each example, at its time."""
        popular = self.popular.score(examples).astype(np.float64)
        index = self.index
        out = []
        for row, example in enumerate(examples):
            anchors = recent_items(example.features)
            neighbours = [  # as serving merges them: decayed to now, never grown
                Neighbours.of(merge_neighbours([self.rows[a]], example.ts), index)
                if a in self.rows
                else None
                for a in anchors
            ]
            top = float(popular[row].max())
            trending = popular[row] / top if top > 0 else popular[row]
            out.append(StreamSignals.of([index.get(a) for a in anchors], neighbours, trending))
        return out

    def score(self, examples: Sequence[Example]) -> np.ndarray:
        text = self.text.score(examples)
        out = np.zeros((len(examples), len(self.item_ids)), np.float32)
        every = np.arange(len(self.item_ids))
        for row, signals in enumerate(self.signals(examples)):
            out[row] = signals.scores(every, text[row])
        return out


def all_baselines(catalog: Catalog, seed: int = 7) -> list[Ranker]:
    item_ids, embeddings = catalog.ids, catalog.embeddings
    return [
        StreamDefault(catalog, item_ids, embeddings),
        Popular(item_ids),
        RecentPopular(item_ids),
        ItemKNN(item_ids),
        MatrixFactorization(item_ids, "als", seed=seed),
        MatrixFactorization(item_ids, "bpr", seed=seed),
        MiniLMZeroShot(item_ids, embeddings),
        RecentlyViewed(item_ids),
    ]
