"""``streamrank evaluate``: the model against every baseline, on the same held-out targets.

Rebuilds the examples the model was trained with (same config, same profile function),
scores the test targets over the full catalog with the float model as served (blended with
the no-model default, ``training/blend.py``), the model alone, its int8 version and every
baseline, and writes ``evaluation.json``, ``evaluation.md`` and ``evaluation.png``.
Scoring speed is measured for float and int8 in the same run: per request (one user, 100
candidates) and per batch (64 users, whole catalog).
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from serving.ranking import ShowAgain
from streamrank.catalog import Catalog
from training.artifact import RankingArtifact
from training.baselines import all_baselines
from training.config import TrainConfig
from training.examples import Example
from training.markdown import table
from training.metrics import HEADLINE, RankerFailed, ranking_report
from training.train import (
    TrainingData,
    model_scores,
    no_model_scores,
    prepare_training_data,
    target_rows,
)

log = logging.getLogger(__name__)


def evaluate(
    artifact: RankingArtifact | None,
    catalog: Catalog,
    events: Any,
    out_dir: Path,
    baselines: bool = True,
    show_again: ShowAgain = ShowAgain.NONE,
) -> dict[str, Any]:
    """The model (if any) and every baseline on the same held-out targets. Without a model
    the baselines alone, the no-model default among them (what serving ranks with until a
    model is trained), on the default configuration's split."""
    config = TrainConfig.model_validate(artifact.meta["config"]) if artifact else TrainConfig()
    data = prepare_training_data(events, catalog, config, show_again=show_again)
    if artifact is not None and data.data_hash != artifact.meta.get("data_hash"):
        log.warning(
            "data hash %s differs from the model's training data (%s)",
            data.data_hash,
            artifact.meta.get("data_hash"),
        )
    results: dict[str, dict[str, float]] = {}
    failed: dict[str, str] = {}
    speed: dict[str, dict[str, float]] = {}
    if artifact is not None:
        if list(artifact.space.item_ids) != list(catalog.ids):
            raise ValueError(f"model {artifact.version} was trained on another catalog")
        stream = no_model_scores(data.fit_interactions, data.test, catalog)
        int8 = artifact.quantized()
        for name, model in (("model", artifact), ("model-int8", int8)):
            alone, targets, hidden = model_scores(model, data.test, show_again)
            served = model.served(alone, stream)
            report_of = lambda s=served, t=targets, u=hidden: ranking_report(s, t, u)  # noqa: E731
            judge(name, report_of, results, failed)
            if name == "model":
                report_of = lambda s=alone, t=targets, u=hidden: ranking_report(s, t, u)  # noqa: E731
                judge("model-alone", report_of, results, failed)
        speed = scoring_speed(artifact, int8, data.test)
    if baselines or artifact is None:
        baseline_results(data, catalog, config.seed, results, failed)
    best_baseline = max(
        (k for k in results if not k.startswith("model")),
        key=lambda k: results[k][HEADLINE],
        default=None,
    )
    report: dict[str, Any] = {
        "model_version": artifact.version if artifact else None,
        "protocol": (
            "per-user leave-last-out, full ranking over the catalog, masked as serving "
            f"hides the user's own items (show again: {show_again.value})"
        ),
        "show_again": show_again.value,
        "hidden_targets": hidden_share(data),
        "examples": {
            "train": len(data.train_targets),
            "valid": len(data.valid),
            "test": len(data.test),
        },
        "items": data.space.n_items,
        "results": results,
        "failed": failed,
        "speed_ms": speed,
    }
    if best_baseline:
        report["best_baseline"] = best_baseline
    if best_baseline and "model" in results:
        lift = results["model"][HEADLINE] / max(results[best_baseline][HEADLINE], 1e-12) - 1
        report["lift_over_best_baseline"] = lift
    write_report(report, out_dir)
    return report


def baseline_results(
    data: TrainingData,
    catalog: Catalog,
    seed: int,
    results: dict[str, dict[str, float]],
    failed: dict[str, str],
) -> None:
    """Every baseline fitted and judged into ``results`` (or ``failed``, with the reason)."""
    targets, hidden = target_rows(data.space, data.test, data.show_again)
    for ranker in all_baselines(catalog, seed):
        started = time.perf_counter()

        def run(r: Any = ranker) -> dict[str, float]:
            r.fit(data.fit_interactions)
            return ranking_report(r.score(data.test), targets, hidden)

        if judge(ranker.name, run, results, failed):
            took = time.perf_counter() - started
            log.info("%s: ndcg@10 %.4f (%.1fs)", ranker.name, results[ranker.name][HEADLINE], took)


def hidden_share(data: TrainingData) -> float:
    """Share of the held-out targets that the shop's rule hides: a miss for every ranker,
    the ceiling every row of the report shares."""
    targets, hidden = target_rows(data.space, data.test, data.show_again)
    if not len(targets):
        return 0.0
    return float(np.mean([t in set(h) for t, h in zip(targets, hidden, strict=True)]))


def judge(
    name: str,
    run: Callable[[], dict[str, float]],
    results: dict[str, dict[str, float]],
    failed: dict[str, str],
) -> bool:
    """One ranker's metrics into ``results``, or its failure into ``failed``, loudly."""
    try:
        results[name] = run()
    except RankerFailed as exc:
        log.error("%s failed: %s", name, exc)
        failed[name] = str(exc)
        return False
    return True


def scoring_speed(
    float_model: RankingArtifact,
    int8_model: RankingArtifact,
    examples: list[Example],
    repeats: int = 50,
) -> dict[str, dict[str, float]]:
    """Median milliseconds: one user with 100 candidates, and 64 users over the catalog."""
    space = float_model.space
    one = space.encode([examples[0].features])
    many = space.encode([e.features for e in examples[:64]])
    rows = np.arange(min(100, space.n_items))
    out = {}
    models = ((f"float32 ({float_model.device.type})", float_model), ("int8 (cpu)", int8_model))
    for name, model in models:
        single = _median_ms(lambda m=model: m.score(one, rows), repeats)
        batch = _median_ms(lambda m=model: m.score(many), max(5, repeats // 5))
        out[name] = {"one_user_100_items": single, "64_users_full_catalog": batch}
    return out


def _median_ms(action: Any, repeats: int) -> float:
    action()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "evaluation.json").write_text(json.dumps(report, indent=2))
    (out_dir / "evaluation.md").write_text(markdown(report))
    plot(report, out_dir / "evaluation.png")
    log.info("evaluation written to %s", out_dir)


def markdown(report: dict[str, Any]) -> str:
    results: dict[str, dict[str, float]] = report["results"]
    metrics = list(next(iter(results.values())))
    title = report["model_version"] or "the baselines (no model)"
    lines = [
        f"# Evaluation of {title}",
        "",
        f"Protocol: {report['protocol']}. Test examples: {report['examples']['test']}, "
        f"items: {report['items']}; targets the rule hides (a miss for every ranker): "
        f"{report.get('hidden_targets', 0.0):.1%}.",
        "",
    ]
    ordered = sorted(results, key=lambda k: -results[k][HEADLINE])
    lines += table(["ranker", *metrics], [[n, *(results[n][m] for m in metrics)] for n in ordered])
    for name, reason in report.get("failed", {}).items():
        lines += ["", f"**{name} failed** and is not ranked: {reason}."]
    if "lift_over_best_baseline" in report:
        lines += [
            "",
            f"Model vs best baseline ({report['best_baseline']}) on {HEADLINE}: "
            f"{report['lift_over_best_baseline']:+.1%}.",
        ]
    speed = report["speed_ms"]
    if not speed:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "Scoring speed, median ms (user tower + dot products, this machine):",
        "",
    ]
    lines += table(
        ["precision", "one user, 100 items", "64 users, full catalog"],
        [[n, v["one_user_100_items"], v["64_users_full_catalog"]] for n, v in speed.items()],
        digits=2,
    )
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results: dict[str, dict[str, float]] = report["results"]
    names = sorted(results, key=lambda k: results[k][HEADLINE])
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(names) + 1.5))
    for ax, metric in zip(axes, ("ndcg@10", "recall@10"), strict=True):
        values = [results[n][metric] for n in names]
        colours = ["tab:orange" if n.startswith("model") else "tab:blue" for n in names]
        ax.barh(names, values, color=colours)
        ax.set_xlabel(metric)
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.3f}", va="center", fontsize=8)
    fig.suptitle(f"Full-ranking test metrics, {report['model_version'] or 'baselines'}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
