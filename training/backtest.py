"""``streamrank backtest``: models and baselines, event by event, on a replayed range.

Every item event of the test window (event time at or after ``cut``) is a target. It is
scored with the user's profile just before it: the range's events folded with the stream's
own ``apply_event`` in event time, up to but not including the target
(``training.examples.build_examples``, the same code that builds training examples), so no
ranker ever sees the target or anything after it. Rankers rank the whole catalog; what the
shop's rule keeps out of the user's row is masked, as in ``training/evaluate.py``
(``training.examples.hidden_rows``).

Metrics per ranker: Recall@K and NDCG@K per target (with one target per example, Recall@K
is the per-target hit rate), and HitRate@K per user (the share of test users with at least
one target in their top K). Each overall, over time (equal slices of the test window) and
per segment: new users (no event before the window) vs returning, and the target's
category. Baselines are fitted on the events before the window only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from serving.ranking import ShowAgain
from streamrank.catalog import Catalog
from streams.events import Event, EventType
from training.baselines import StreamDefault, all_baselines
from training.examples import (
    Example,
    Split,
    build_examples,
    hidden_rows,
    time_cut,
    time_cut_labels,
)
from training.markdown import table
from training.metrics import (
    RankerFailed,
    check_scores,
    mask_hidden,
    ndcg_at_k,
    recall_at_k,
    target_ranks,
)

log = logging.getLogger(__name__)

CHUNK = 2048  # examples scored at once: [CHUNK, items] floats stay small


class Scorer(Protocol):
    name: str

    def score(self, examples: Sequence[Example]) -> np.ndarray: ...


class ModelScorer:
    """A trained ranking model as a backtest scorer (catalog-ordered columns), as served:
    blended with the no-model default fitted on ``fit``, the events before the window
    (``training/blend.py``); without ``fit``, the model alone."""

    def __init__(self, artifact: Any, catalog: Catalog, fit: pd.DataFrame | None = None):
        if list(artifact.space.item_ids) != list(catalog.ids):
            raise ValueError(f"model {artifact.version} was trained on another catalog")
        self.artifact = artifact
        self.name = f"model {artifact.version}"
        self.stream: StreamDefault | None = None
        if fit is not None:
            self.stream = StreamDefault(catalog, catalog.ids, catalog.embeddings)
            self.stream.fit(fit)

    def score(self, examples: Sequence[Example]) -> np.ndarray:
        space = self.artifact.space
        alone = self.artifact.score(space.encode([e.features for e in examples]))
        if self.stream is None:
            return alone
        return self.artifact.served(alone, self.stream.score(examples))


@dataclass
class BacktestData:
    examples: list[Example]  # the test targets, each with its point-in-time profile
    fit: pd.DataFrame  # what baselines may learn from: events before the window
    cut: float
    returning: set[str]  # users with events before the window
    show_again: ShowAgain = ShowAgain.NONE  # the shop's rule the rows are judged by


def events_frame(events: Sequence[Event]) -> pd.DataFrame:
    """Events as the table ``build_examples`` folds (log order kept for ties)."""
    return pd.DataFrame(
        {
            "event_id": [e.event_id for e in events],
            "user_id": [e.user_id for e in events],
            "item_id": [e.item_id for e in events],
            "type": [e.type.value for e in events],
            "ts": [e.epoch for e in events],
            "query": [e.query for e in events],
        }
    )


def prepare(
    events: pd.DataFrame,
    catalog: Catalog,
    cut: float | None = None,
    test_fraction: float = 0.1,
    show_again: ShowAgain = ShowAgain.NONE,
) -> BacktestData:
    if events.empty:
        raise ValueError("no events in the range")
    cut = time_cut(events, test_fraction) if cut is None else cut
    known = events["item_id"].isin(catalog.index) | (events["type"] == EventType.SEARCH.value)
    events = events[known]
    labels = time_cut_labels(events, cut)
    labels[labels == Split.TRAIN.value] = ""  # folded, never a target
    examples = [e for e in build_examples(events, catalog, labels) if e.split is Split.TEST]
    before = events[events["ts"] < cut]
    log.info("backtest: %d targets after %s", len(examples), _iso(cut))
    return BacktestData(examples, before, cut, set(before["user_id"]), show_again)


def ranks(scorer: Scorer, data: BacktestData, catalog: Catalog) -> np.ndarray:
    """0-based rank of every target among the unmasked catalog, chunk by chunk."""
    out = []
    for start in range(0, len(data.examples), CHUNK):
        chunk = data.examples[start : start + CHUNK]
        scores = np.asarray(scorer.score(chunk), dtype=np.float32)
        check_scores(scores)  # a NaN would rank its target first
        targets = np.array([catalog.index[e.item_id] for e in chunk], dtype=np.int64)
        mask_hidden(scores, hidden_rows(chunk, catalog.index, data.show_again))
        out.append(target_ranks(scores, targets))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def metrics(ranked: np.ndarray, users: np.ndarray, k: int) -> dict[str, float]:
    if not len(ranked):
        return {
            f"recall@{k}": float("nan"),
            f"ndcg@{k}": float("nan"),
            f"hit_rate@{k}": float("nan"),
            "targets": 0,
        }
    per_user = pd.Series(ranked < k).groupby(users).any()
    return {
        f"recall@{k}": recall_at_k(ranked, k),
        f"ndcg@{k}": ndcg_at_k(ranked, k),
        f"hit_rate@{k}": float(per_user.mean()),
        "targets": len(ranked),
    }


def backtest(
    data: BacktestData,
    catalog: Catalog,
    scorers: Sequence[Scorer],
    baselines: bool = True,
    k: int = 10,
    slices: int = 6,
    top_categories: int = 8,
) -> dict[str, Any]:
    rankers: list[Scorer] = list(scorers)
    if baselines:
        for baseline in all_baselines(catalog):
            baseline.fit(data.fit)
            rankers.append(baseline)
    examples = data.examples
    users = np.array([e.user_id for e in examples])
    times = np.array([e.ts for e in examples])
    segment = np.array(["returning" if u in data.returning else "new" for u in users])
    category = np.array([(catalog.categories(e.item_id) or ["(none)"])[0] for e in examples])
    common = pd.Series(category).value_counts().index[:top_categories]
    category = np.where(np.isin(category, common), category, "other")
    edges = np.linspace(data.cut, times.max() + 1e-6, slices + 1) if len(times) else np.array([])
    slice_of = np.clip(np.searchsorted(edges, times, side="right") - 1, 0, max(slices - 1, 0))

    results: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for ranker in rankers:
        try:
            ranked = ranks(ranker, data, catalog)
        except RankerFailed as exc:
            log.error("%s failed: %s", ranker.name, exc)
            failed[ranker.name] = str(exc)
            continue
        results[ranker.name] = {
            "overall": metrics(ranked, users, k),
            "segments": {
                s: metrics(ranked[segment == s], users[segment == s], k)
                for s in ("new", "returning")
            },
            "categories": {
                c: metrics(ranked[category == c], users[category == c], k)
                for c in sorted(set(category))
            },
            "over_time": [
                {"from": _iso(edges[i]), **metrics(ranked[slice_of == i], users[slice_of == i], k)}
                for i in range(slices)
            ],
        }
        log.info("%s: ndcg@%d %.4f", ranker.name, k, results[ranker.name]["overall"][f"ndcg@{k}"])
    return {
        "protocol": (
            "every item event at or after the cut, scored with the profile folded from the "
            "range's earlier events (event time); full catalog, masked as serving hides "
            f"the user's own items (show again: {data.show_again.value})"
        ),
        "show_again": data.show_again.value,
        "cut": _iso(data.cut),
        "k": k,
        "targets": len(examples),
        "users": len(set(users)),
        "new_users": len(set(users[segment == "new"])),
        "results": results,
        "failed": failed,
    }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


# --- report ------------------------------------------------------------------------------------
def write_report(report: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "backtest.json").write_text(json.dumps(report, indent=2))
    (out_dir / "backtest.md").write_text(markdown(report))
    plot(report, out_dir / "backtest.png")
    return out_dir


def markdown(report: dict[str, Any]) -> str:
    k = report["k"]
    head = f"ndcg@{k}"
    results: dict[str, Any] = report["results"]
    order = sorted(results, key=lambda n: -_nan_low(results[n]["overall"][head]))
    cols = [f"recall@{k}", f"ndcg@{k}", f"hit_rate@{k}"]
    lines = [
        f"# Backtest of namespace {report.get('namespace', '?')}",
        "",
        f"{report['protocol']}. Cut {report['cut']}; {report['targets']} targets from "
        f"{report['users']} users ({report['new_users']} new).",
        "",
        *table(["ranker", *cols], [[n, *(results[n]["overall"][c] for c in cols)] for n in order]),
    ]
    for name, reason in report.get("failed", {}).items():
        lines += ["", f"**{name} failed** and is not ranked: {reason}."]
    first = results[order[0]]
    for title, key in (("Segments", "segments"), ("Target category", "categories")):
        groups = list(first[key])
        header = ["ranker", *(f"{g} ({first[key][g]['targets']})" for g in groups)]
        rows = [[n, *(results[n][key][g][head] for g in groups)] for n in order]
        lines += ["", f"## {title} ({head})", "", *table(header, rows)]
    rows = [
        [
            f"{piece['from']} ({piece['targets']})",
            *(results[n]["over_time"][i][head] for n in order),
        ]
        for i, piece in enumerate(first["over_time"])
    ]
    lines += ["", f"## Over time ({head})", "", *table(["slice from", *order], rows)]
    return "\n".join(lines) + "\n"


def _nan_low(value: float) -> float:
    return -1.0 if value != value else value


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    head = f"ndcg@{report['k']}"
    results: dict[str, Any] = report["results"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    for name, result in results.items():
        values = [piece[head] for piece in result["over_time"]]
        style = "-o" if name.startswith("model") else "--"
        left.plot(
            range(len(values)),
            values,
            style,
            label=name,
            linewidth=2 if name.startswith("model") else 1,
        )
    labels = [p["from"][5:16] for p in next(iter(results.values()))["over_time"]]
    left.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
    left.set_ylabel(head)
    left.set_title("over the test window")
    left.legend(fontsize=7)
    names = list(results)
    width = 0.8 / 2
    for j, seg in enumerate(("new", "returning")):
        right.bar(
            np.arange(len(names)) + j * width,
            [results[n]["segments"][seg][head] for n in names],
            width,
            label=seg,
        )
    right.set_xticks(np.arange(len(names)) + width / 2, names, rotation=30, fontsize=7, ha="right")
    right.set_title("new vs returning users")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
