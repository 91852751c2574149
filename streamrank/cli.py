"""``streamrank`` command line: one subcommand per job. Configuration comes from the
settings object (``STREAMRANK_*`` variables), flags only say what to do."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from streamrank.settings import Settings, get_settings


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    for noisy in ("feast", "urllib3", "filelock", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_broker(settings: Settings, args: argparse.Namespace) -> int:
    import time

    from infra.broker import EmbeddedBroker, ensure_topics
    from infra.processes import sigterm_as_interrupt

    with sigterm_as_interrupt(), EmbeddedBroker(port=args.port) as broker:
        ensure_topics(
            broker.bootstrap,
            settings.topics(),
        )
        print(f"broker ready: STREAMRANK_KAFKA_BOOTSTRAP={broker.bootstrap}  (Ctrl-C stops it)")
        try:
            while broker.process and broker.process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_prepare(settings: Settings, args: argparse.Namespace) -> int:
    from streamrank.prepare import prepare

    catalog = prepare(settings)
    print(f"prepared {len(catalog)} items in {settings.home_dir}")
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from infra.broker import ensure_topics
    from streams.app import run_worker

    ensure_topics(settings.bootstrap(), settings.topics())
    sys.argv = [sys.argv[0]]  # Faust's worker parses argv itself
    run_worker(settings, loglevel=args.log_level)
    return 0


def cmd_experiment_worker(settings: Settings, args: argparse.Namespace) -> int:
    from infra.broker import ensure_topics
    from streams.experiment_app import run_experiment_worker

    ensure_topics(settings.bootstrap(), settings.topics())
    sys.argv = [sys.argv[0]]
    run_experiment_worker(settings, loglevel=args.log_level)
    return 0


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    from streamrank.datasets import load_dataset
    from streamrank.demo import stream_events

    dataset = load_dataset(settings)
    events = dataset.events.tail(args.limit) if args.limit else dataset.events
    sent, _ = stream_events(settings, events, shift_to_now=args.shift_to_now)
    print(f"sent {sent} events to {settings.events_topic}")
    return 0


def cmd_experiments(settings: Settings, args: argparse.Namespace) -> int:
    """CTR and CVR per arm: the impressions topic joined with the events topic."""
    import json
    import time

    from infra.kafka_admin import read_topic
    from streams.events import decode_message
    from streams.experiments import join_in_time_order
    from streams.impressions import Impression

    bootstrap = settings.bootstrap()
    impressions = [
        Impression.model_validate_json(r.value or b"")
        for r in read_topic(bootstrap, settings.impressions_topic, timeout=600, idle_s=args.idle_s)
    ]
    now = time.time()
    events = [
        event
        for r in read_topic(bootstrap, settings.events_topic, timeout=600, idle_s=args.idle_s)
        for event in decode_message(r.value, now=now).events
    ]
    table = join_in_time_order(impressions, events, settings.experiment_window_s).table()
    if args.json:
        print(json.dumps({"experiment": settings.experiment_name, "arms": table}, indent=2))
        return 0
    print(
        f"experiment {settings.experiment_name}: {len(impressions)} impressions, "
        f"{len(events)} events, attribution window {settings.experiment_window_s:g}s"
    )
    print(f"{'arm':12} {'impressions':>11} {'CTR':>7} {'95% CI':>15} {'CVR':>7} {'95% CI':>15}")
    for arm, r in table.items():
        ctr_lo, ctr_hi = r["ctr_95"]  # type: ignore[misc]
        cvr_lo, cvr_hi = r["cvr_95"]  # type: ignore[misc]
        print(
            f"{arm:12} {r['impressions']:>11} {r['ctr']:>7.2%} {ctr_lo:>7.2%}-{ctr_hi:<7.2%}"
            f" {r['cvr']:>7.2%} {cvr_lo:>7.2%}-{cvr_hi:<7.2%}"
        )
    return 0


def cmd_serve_config(settings: Settings, args: argparse.Namespace) -> int:
    import yaml

    from serving.config import serve_config

    print("# Ray Serve config derived from the settings by `streamrank serve-config`.")
    print("# Run: serve run <this file>  (STREAMRANK_* variables configure the application)")
    print("# High-throughput mode, as `streamrank serve` runs it: also export")
    print("#   RAY_SERVE_ENABLE_HA_PROXY=1 RAY_SERVE_THROUGHPUT_OPTIMIZED=1")
    print(yaml.safe_dump(serve_config(settings), sort_keys=False), end="")
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from serving.app import run_forever

    run_forever(settings)
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from streamrank.demo import run_demo

    return run_demo(settings, events=args.events, users=args.users)


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from streamrank.catalog import prepare_catalog
    from streamrank.datasets import load_dataset
    from training.artifact import models_root
    from training.config import TrainConfig
    from training.encoder import default_encoder_path
    from training.train import Trainer, prepare_training_data

    config = TrainConfig.load(
        args.config, epochs=args.epochs, limit_users=args.limit_users, max_minutes=args.max_minutes
    )
    dataset = load_dataset(settings)
    catalog = prepare_catalog(dataset.catalog, settings.home_dir, settings.encoder_path)
    data = prepare_training_data(dataset.events, catalog, config)
    encoder = settings.encoder_path or default_encoder_path()
    out = Trainer(config, catalog, encoder, args.device).fit(data, models_root(settings.home_dir))
    print(f"model written to {out}")
    return 0


def cmd_evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from streamrank.catalog import prepare_catalog
    from streamrank.datasets import load_dataset
    from training.artifact import RankingArtifact, latest_model_dir
    from training.encoder import default_encoder_path, pick_device
    from training.evaluate import evaluate, markdown

    model_dir = args.model or settings.model_dir or latest_model_dir(settings.home_dir)
    if model_dir is None:
        print("no trained model: run `streamrank train` first", file=sys.stderr)
        return 2
    dataset = load_dataset(settings)
    catalog = prepare_catalog(dataset.catalog, settings.home_dir, settings.encoder_path)
    encoder = settings.encoder_path or default_encoder_path()
    artifact = RankingArtifact.load(Path(model_dir), encoder, args.device or pick_device())
    out = args.out or Path(model_dir) / "evaluation"
    report = evaluate(artifact, catalog, dataset.events, out, baselines=not args.no_baselines)
    print(markdown(report))
    print(f"written to {out}")
    return 0


def cmd_download(settings: Settings, args: argparse.Namespace) -> int:
    from streamrank.datasets.movielens import download_movielens_100k

    print(f"MovieLens 100K in {download_movielens_100k(Path(args.directory))}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamrank", description=__doc__)
    parser.add_argument("--log-level", default="info")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("broker", help="run the embedded Kafka-compatible broker (Tansu)")
    p.add_argument("--port", type=int, default=9092)
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("prepare", help="catalog embeddings, feast apply, item materialization")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("worker", help="run a Faust profile worker")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser(
        "experiment-worker", help="run the live experiment join (CTR/CVR per arm, /metrics)"
    )
    p.set_defaults(func=cmd_experiment_worker)

    p = sub.add_parser("produce", help="send the data set's events through the producer SDK")
    p.add_argument("--limit", type=int, default=0, help="only the last N events")
    p.add_argument("--shift-to-now", action="store_true", help="move event times to end now")
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser("serve", help="run the Ray Serve application in the foreground")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("experiments", help="CTR and CVR per experiment arm (impressions joined)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--idle-s", type=float, default=2.0, help="stop reading after this quiet")
    p.set_defaults(func=cmd_experiments)

    p = sub.add_parser("serve-config", help="print the Ray Serve config file the settings give")
    p.set_defaults(func=cmd_serve_config)

    p = sub.add_parser("demo", help="the whole system on embedded defaults, end to end")
    p.add_argument("--events", type=int, default=20_000, help="events streamed")
    p.add_argument("--users", type=int, default=3, help="users shown")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="fine-tune the ranking model on the data set")
    p.add_argument("--config", type=Path, help="YAML/JSON file of training.config.TrainConfig")
    p.add_argument("--epochs", type=int)
    p.add_argument("--limit-users", type=int, help="train on a slice of users (smoke runs)")
    p.add_argument("--max-minutes", type=float, help="stop after the epoch that passes this")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="model vs baselines on held-out data (md, json, png)")
    p.add_argument("--model", type=Path, help="model directory (default: the newest)")
    p.add_argument("--out", type=Path, help="report directory (default: <model>/evaluation)")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--device", help="device of the float model (default: cuda when present)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("download-movielens", help="fetch MovieLens 100K (needs internet)")
    p.add_argument("directory")
    p.set_defaults(func=cmd_download)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _logging(args.log_level)
    return int(args.func(get_settings(), args) or 0)


if __name__ == "__main__":
    sys.exit(main())
