"""Catalog scale: the personalization call and its processes at a million items.

    python -m bench.catalog_scale --model DIR [--items 1000000] [--seconds 20]

MovieLens has 1,682 items; a shop has 10^5 to 10^7. A catalog of ``--items`` items is
derived from it: every film copied under new ids (copy 0 keeps the real id, so the real
events still apply), each copy's text vector perturbed and renormalised, and the trained
model's item vectors copied the same way (a derived model directory). The real catalog
runs beside it in the same run, so every figure has its 1.7k-item counterpart:

- build time of the nearest-item indexes (the text index, built by ``streamrank
  prepare``; the model's, at the scorer's first load), and their files' sizes;
- ``/v1/recommendations`` through the real Ray Serve application at one client, each
  request finding its own candidates (stream sources, text neighbours, the model's own
  nearest items): requests/s, p50 and p99;
- the ingress replica's RSS after those requests (the model runs inside it);
- the profile worker's RSS (with its item process) after folding the last 20,000 real
  events of MovieLens from the embedded broker.

Writes a table and ``bench/results/catalog-scale.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import platform
import random
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from bench.ingest import recent, worker_rate
from bench.serving import closed_loop, load_profiles
from feature_repo.store import apply_repo
from infra.broker import EmbeddedBroker, ensure_topics
from infra.processes import free_port
from streamrank.catalog import (
    CATALOG_FILE,
    EMBEDDINGS_FILE,
    MANIFEST_FILE,
    TEXT_INDEX_FILE,
    Catalog,
)
from streamrank.datasets import load_dataset
from streamrank.prepare import prepare
from streamrank.settings import Settings
from training.artifact import ITEM_VECTORS_FILE, LOG_COUNTS_FILE, META_FILE

RESULTS = Path(__file__).parent / "results"
NOISE = 0.05  # the perturbation of a copy's vectors (a copy stays near its film)
REPLICA = "ServeReplica:streamrank:api"


def copy_id(item: str, k: int) -> str:
    return item if k == 0 else f"{item}~{k}"


def derive_catalog(real: Path, home: Path, items: int, seed: int = 0) -> float:
    """A catalog of ``items`` items in ``home`` from the prepared one in ``real``; returns
    the seconds its text index took to build (as ``streamrank prepare`` builds it)."""
    base = pd.read_parquet(real / CATALOG_FILE)
    vectors = np.load(real / EMBEDDINGS_FILE).astype(np.float32)
    copies = -(-items // len(base))
    table = pd.concat(
        [base.assign(item_id=[copy_id(i, k) for i in base["item_id"]]) for k in range(copies)],
        ignore_index=True,
    ).iloc[:items]
    home.mkdir(parents=True, exist_ok=True)
    table.to_parquet(home / CATALOG_FILE, index=False)
    np.save(home / EMBEDDINGS_FILE, perturbed(vectors, copies, items, seed).astype(np.float16))
    fingerprint = hashlib.sha256(f"derived:{items}:{seed}".encode()).hexdigest()[:16]
    (home / MANIFEST_FILE).write_text(
        json.dumps({"fingerprint": fingerprint, "items": items, "dim": vectors.shape[1]})
    )
    started = time.perf_counter()
    Catalog.load(home).saved_text_index()  # what prepare builds
    return time.perf_counter() - started


def perturbed(vectors: np.ndarray, copies: int, items: int, seed: int) -> np.ndarray:
    """``copies`` copies of ``vectors`` (the first exact), each row moved by Gaussian noise
    and renormalised, cut to ``items`` rows; built a copy at a time (bounded memory)."""
    rng = np.random.default_rng(seed)
    out = np.empty((items, vectors.shape[1]), dtype=np.float32)
    for k in range(copies):
        start = k * len(vectors)
        part = vectors[: min(len(vectors), items - start)].copy()
        if k:
            part += rng.normal(0, NOISE, part.shape).astype(np.float32)
            part /= np.linalg.norm(part, axis=1, keepdims=True)
        out[start : start + len(part)] = part
    return out


def derive_model(model: Path, home: Path, items: int) -> Path:
    """The trained ``model`` over the derived catalog: its item vectors copied and
    perturbed as the text vectors were, its feature space's items the derived ids."""
    out = home / "models" / f"{model.name}-x{items}"
    out.mkdir(parents=True, exist_ok=True)
    for path in model.iterdir():
        if path.is_file() and path.name not in (META_FILE, ITEM_VECTORS_FILE, LOG_COUNTS_FILE):
            shutil.copy(path, out / path.name)
    meta = json.loads((model / META_FILE).read_text())
    real_ids = meta["space"]["item_ids"]
    copies = -(-items // len(real_ids))
    meta["space"]["item_ids"] = [copy_id(i, k) for k in range(copies) for i in real_ids][:items]
    (out / META_FILE).write_text(json.dumps(meta))
    vectors = np.load(model / ITEM_VECTORS_FILE).astype(np.float32)
    np.save(out / ITEM_VECTORS_FILE, perturbed(vectors, copies, items, seed=1))
    counts = np.load(model / LOG_COUNTS_FILE)
    np.save(out / LOG_COUNTS_FILE, np.tile(counts, copies)[:items])
    return out


def replica_memory_mb() -> dict[str, float]:
    """The ingress replica's (its process title names it) RSS, and its USS: what is its
    own, without the pages of the catalog's mapped file that every process shares."""
    for proc in psutil.process_iter(["cmdline"]):
        if any(REPLICA in part for part in proc.info["cmdline"] or []):
            memory = proc.memory_full_info()
            return {"replica_rss_mb": memory.rss / 2**20, "replica_uss_mb": memory.uss / 2**20}
    return {"replica_rss_mb": float("nan"), "replica_uss_mb": float("nan")}


def serve_run(settings: Settings, users: list[str], seconds: float) -> dict[str, float]:
    """One client asking for users' recommendations (candidates found by the service);
    the first requests load the model and its index, then the timed run."""
    from serving import app as serve_app

    rng = random.Random(7)
    bodies = [{"user_id": u, "k": 10} for u in rng.sample(users, min(300, len(users)))]
    started = time.perf_counter()
    url = serve_app.start(settings)
    try:
        ready_s = time.perf_counter() - started
        asyncio.run(closed_loop(url, bodies, 1, 3.0))  # warm-up
        row = asyncio.run(closed_loop(url, bodies, 1, seconds))
        return {**row, "start_s": ready_s, **replica_memory_mb()}
    finally:
        serve_app.stop()


def measure(settings: Settings, model: Path, broker: EmbeddedBroker, seconds: float) -> dict:
    """Index build (the model's), requests, replica and worker RSS for one home."""
    from serving.scorer import ScorerModel

    catalog = Catalog.load(settings.home_dir)
    started = time.perf_counter()
    ScorerModel(settings, model, device="cpu", catalog=catalog)  # builds and saves its index
    model_index_s = time.perf_counter() - started
    users = load_profiles(settings, catalog, 20_000)
    serving = serve_run(settings.model_copy(update={"serve_port": free_port()}), users, seconds)
    worker_home = settings.home_dir / "worker"  # its own store: the profiles above are done
    worker_home.mkdir()
    for name in (CATALOG_FILE, EMBEDDINGS_FILE, MANIFEST_FILE):
        (worker_home / name).symlink_to((settings.home_dir / name).resolve())
    worker_settings = settings.model_copy(
        update={
            "home": worker_home,
            "kafka_bootstrap": broker.bootstrap,
            "events_topic": f"events-{settings.home_dir.name}",
            "consumer_group": f"profiles-{settings.home_dir.name}",
            "worker_web_port": free_port(),
        }
    )
    apply_repo(worker_settings)
    ensure_topics(broker.bootstrap, {worker_settings.events_topic: 4})
    events = recent(load_dataset(settings).events.tail(20_000))
    worker = worker_rate(worker_settings, events)
    found = [*settings.home_dir.glob("*.faiss"), *model.glob("*.faiss")]
    indexes = {p.name: p.stat().st_size / 2**20 for p in found}
    return {
        "items": len(catalog),
        "model_load_and_index_s": model_index_s,
        "index_files_mb": indexes,
        "serving": serving,
        "worker_rss_mb": worker["rss_mb"],
        "worker_events_per_s": worker["events_per_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a trained model directory")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "catalog-scale.json")
    args = parser.parse_args()

    root = Path(".streamrank") / "bench-catalog-scale"
    shutil.rmtree(root, ignore_errors=True)
    real = Settings(home=root / "real", model_dir=args.model.resolve())
    prepare(real)
    big_home = root / f"x{args.items}"
    text_index_s = derive_catalog(real.home_dir, big_home, args.items)
    big_model = derive_model(args.model, big_home, args.items)
    big = Settings(home=big_home, model_dir=big_model.resolve())
    apply_repo(big)  # the item view is not loaded online: nothing on the request path reads it
    results: dict = {
        "machine": f"{psutil.cpu_count()} cpus, {platform.processor() or platform.machine()}",
        "model": str(args.model),
        "text_index_build_s": text_index_s,
        "text_index_mb": (big_home / TEXT_INDEX_FILE).stat().st_size / 2**20,
        "runs": {},
    }
    with EmbeddedBroker(log_path=root / "tansu.log") as broker:
        for name, settings, model in (
            ("MovieLens (1,682 items)", real, args.model),
            (f"derived ({args.items:,} items)", big, big_model),
        ):
            results["runs"][name] = measure(settings, model, broker, args.seconds)
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written to {args.out}")


def print_table(results: dict) -> None:
    print(
        f"\ntext index over the derived catalog: {results['text_index_build_s']:.0f} s to "
        f"build, {results['text_index_mb']:.0f} MB"
    )
    print(
        f"\n{'catalog':28} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'replica RSS':>11} "
        f"{'(own)':>6} {'worker RSS':>10} {'model load+index s':>18}"
    )
    for name, run in results["runs"].items():
        s = run["serving"]
        print(
            f"{name:28} {s['rps']:7.1f} {s['p50_ms']:7.1f} {s['p99_ms']:7.1f} "
            f"{s['replica_rss_mb']:11.0f} {s['replica_uss_mb']:6.0f} {run['worker_rss_mb']:10.0f} "
            f"{run['model_load_and_index_s']:18.1f}"
        )


if __name__ == "__main__":
    main()
