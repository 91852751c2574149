"""``streamrank`` command line: one subcommand per job. Configuration comes from the
settings object (``STREAMRANK_*`` variables), flags only say what to do."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from streamrank.failures import UsageError
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
        ensure_topics(broker.bootstrap, settings.topics(), compacted=settings.compacted_topics())
        print(f"broker ready: STREAMRANK_KAFKA_BOOTSTRAP={broker.bootstrap}  (Ctrl-C stops it)")
        try:
            while broker.process and broker.process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_grow_topics(settings: Settings, args: argparse.Namespace) -> int:
    """Raise the user-partitioned topics' partition count while everything runs, fenced so
    that each user's events stay in order (``streams/growth.py``)."""
    from streams.growth import grow_topics

    before = grow_topics(settings, args.partitions)
    for topic, count in before.items():
        print(f"{topic}: {count} -> {args.partitions} partitions")
    print("fenced; the new partitions are read once their parents pass the fences")
    return 0


def cmd_prepare(settings: Settings, args: argparse.Namespace) -> int:
    from streamrank.prepare import prepare

    catalog = prepare(settings)
    print(f"prepared {len(catalog)} items in {settings.home_dir}")
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from infra.broker import ensure_topics
    from streams.app import run_worker

    ensure_topics(
        settings.kafka_client_config(), settings.topics(), compacted=settings.compacted_topics()
    )
    sys.argv = [sys.argv[0]]  # Faust's worker parses argv itself
    run_worker(settings, loglevel=args.log_level)
    return 0


def cmd_experiment_worker(settings: Settings, args: argparse.Namespace) -> int:
    from infra.broker import ensure_topics
    from streams.experiment_app import run_experiment_worker

    ensure_topics(
        settings.kafka_client_config(), settings.topics(), compacted=settings.compacted_topics()
    )
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
    import time

    from infra.kafka_admin import read_topic
    from streams.experiments import join_in_time_order
    from streams.growth import partition_counts
    from streams.impressions import Impression, parse_impression
    from streams.messages import RawMessage, ValidationLimits
    from streams.privacy import PrivacyRegistry, kept_events

    kafka = settings.kafka_client_config()
    impressions = [  # bad ones are the experiment worker's to dead-letter
        parsed
        for r in read_topic(kafka, settings.impressions_topic, timeout=600, idle_s=args.idle_s)
        if isinstance(parsed := parse_impression(r.value), Impression)
    ]
    now = time.time()
    limits = ValidationLimits.from_settings(settings)  # as the workers judge events
    privacy = PrivacyRegistry.from_settings(settings)
    privacy.ensure_partitions(range(partition_counts(settings)[settings.events_topic]))
    events = []
    for r in read_topic(kafka, settings.events_topic, timeout=600, idle_s=args.idle_s):
        records = limits.decode(RawMessage(r.partition, r.offset, r.value, r.timestamp), now)
        events.extend(kept_events(privacy, r.partition, r.offset, records.records))
    # the impressions of users who opted out or were erased go too
    impressions = [i for i in impressions if not privacy.withholds_at(i.user_id, i.ts.timestamp())]
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

    if args.rayservice:
        from serving.kuberay import manifest_yaml, rayservice_manifest

        print("# KubeRay RayService derived from the settings by `streamrank serve-config")
        print("# --rayservice`. Settings come from the streamrank-settings ConfigMap and the")
        print("# streamrank-secrets Secret; the home (catalog, models) from the streamrank-home")
        print("# volume. Apply: kubectl apply -f <this file>")
        print(manifest_yaml(rayservice_manifest(settings, image=args.image)), end="")
        return 0
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

    return run_demo(
        settings,
        events=args.events,
        users=args.users,
        ui=args.ui,
        train=not args.no_train,
        train_users=args.train_users,
    )


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from training.artifact import models_root
    from training.config import TrainConfig
    from training.encoder import default_encoder_path, pick_device
    from training.train import Trainer, prepare_training_data

    flags = {
        "epochs": args.epochs,
        "limit_users": args.limit_users,
        "max_minutes": args.max_minutes,
        "negatives": args.negatives,
    }
    preset = "fast" if args.fast else args.preset
    if preset == "auto":
        preset = "full" if args.config or (args.device or pick_device()) != "cpu" else "fast"
    if preset == "fast":
        config = TrainConfig.fast(**{k: v for k, v in flags.items() if v is not None})
    else:
        config = TrainConfig.load(args.config, **flags)
    try:
        events, catalog, source = _training_events(settings, args)
    except ValueError as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 2
    data = prepare_training_data(events, catalog, config, source, _show_again(settings))
    encoder = settings.encoder_path or default_encoder_path()
    chosen = {
        k: getattr(data.config, k) for k in ("history_len", "dim", "batch_size", "lr", "negatives")
    }
    print(f"{preset} configuration: {chosen}, up to {data.config.epochs} epochs")
    out = Trainer(catalog, encoder, args.device).fit(data, models_root(settings.home_dir))
    meta = json.loads((out / "model.json").read_text())
    print(f"model written to {out} (a candidate: `streamrank promote {out.name}` serves it)")
    if not meta.get("beats_stream_default", True):
        model, default = meta["metrics"]["test"], meta["metrics"]["stream_default"]
        print(
            f"it ranks below the no-model default on held-out data (ndcg@10 "
            f"{model['ndcg@10']:.4f} against {default['ndcg@10']:.4f}): the stream keeps "
            "ranking until a backtest says otherwise"
        )
    return 0


def _show_again(settings: Settings) -> Any:
    """The shop's rule on a user's own items, by which offline rankings are judged."""
    from serving.ranking import ShowAgain

    return ShowAgain(settings.ranking_show_again)


def _training_events(settings: Settings, args: argparse.Namespace) -> tuple[Any, Any, str]:
    """The events to train on: what the topic holds (a replayed namespace's range, or a log
    time range read now, judged as the worker judges them) or the data set's file."""
    if args.namespace or args.start is not None or args.end is not None:
        from feature_repo.namespaces import Namespace
        from streamrank.catalog import Catalog
        from streams.replay import plan, read_events
        from training.backtest import events_frame

        if args.namespace:
            manifest = Namespace(settings, args.namespace).finished()
            if manifest is None:
                raise ValueError(f"namespace {args.namespace} is missing or incomplete")
            span, source = manifest.range, f"namespace {args.namespace}"
        else:
            span = plan(settings, args.start, args.end)
            source = f"topic {span.topic}, log time {args.start or 'start'} to {span.end_time:.0f}"
        events = events_frame(list(read_events(settings, span, progress=True)))
        if events.empty:
            raise ValueError(f"no valid events in {source}")
        return events, Catalog.load(settings.home_dir), source
    from streamrank.catalog import prepare_catalog
    from streamrank.datasets import load_dataset

    dataset = load_dataset(settings)
    catalog = prepare_catalog(dataset.catalog, settings.home_dir, settings.encoder_path)
    return dataset.events, catalog, f"file {dataset.name}"


def cmd_evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from streamrank.catalog import prepare_catalog
    from streamrank.datasets import load_dataset
    from training.artifact import RankingArtifact, latest_model_dir
    from training.encoder import default_encoder_path, pick_device
    from training.evaluate import evaluate, markdown

    model_dir = args.model or settings.model_dir or latest_model_dir(settings.home_dir)
    if model_dir is not None and not (Path(model_dir) / "model.json").is_file():
        raise UsageError(f"{model_dir} is not a model directory (`streamrank models` lists them)")
    if model_dir is None:
        print("no trained model: evaluating the baselines, the no-model default among them")
    dataset = load_dataset(settings)
    catalog = prepare_catalog(dataset.catalog, settings.home_dir, settings.encoder_path)
    encoder = settings.encoder_path or default_encoder_path()
    artifact = (
        RankingArtifact.load(Path(model_dir), encoder, args.device or pick_device())
        if model_dir
        else None
    )
    out = args.out or (Path(model_dir) if model_dir else settings.home_dir) / "evaluation"
    report = evaluate(
        artifact,
        catalog,
        dataset.events,
        out,
        baselines=not args.no_baselines,
        show_again=_show_again(settings),
    )
    print(markdown(report))
    print(f"written to {out}")
    return 0


def _time(text: str) -> float:
    """ISO 8601 (naive means UTC) or epoch seconds, for --from / --to / --cut."""
    from datetime import UTC, datetime

    try:
        return float(text)
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (ISO 8601 or epoch s)") from exc
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from feature_repo.namespaces import Namespace
    from streams.replay import ReplayError, plan, replay

    namespace = Namespace(settings, args.namespace)
    planned = plan(settings, args.start, args.end)
    print(f"topic {planned.topic}, log time {args.start or 'log start'} -> {planned.end_time:.3f}")
    print(f"{'partition':>9} {'first':>8} {'start':>8} {'stop':>8} {'messages':>9}  how found")
    for p in sorted(planned.start):
        print(
            f"{p:>9} {planned.first[p]:>8} {planned.start[p]:>8} {planned.stop[p]:>8} "
            f"{planned.stop[p] - planned.start[p]:>9}  {planned.methods[p]}"
        )
    if args.dry_run:
        from streams.replay import read_events

        events = sum(1 for _ in read_events(settings, planned, progress=True))
        print(f"{planned.messages} messages, {events} valid events; nothing written (--dry-run)")
        return 0
    try:
        manifest = replay(
            settings, namespace, planned, args.workers, profiles_only=args.profiles_only
        )
    except ReplayError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    rate = manifest.events / manifest.seconds if manifest.seconds else 0.0
    print(
        f"namespace {manifest.namespace}: {manifest.events} events, {manifest.dead_letters} "
        f"dead letters, {manifest.seconds:.1f}s ({rate:,.0f} events/s)"
    )
    return 0


def cmd_namespaces(settings: Settings, args: argparse.Namespace) -> int:
    from feature_repo.namespaces import Namespace, list_namespaces

    if args.delete:
        for name in args.delete:
            namespace = Namespace(settings, name)
            if not namespace.exists:
                print(f"no namespace {name}", file=sys.stderr)
                return 2
            namespace.delete()
            print(f"deleted {name}")
        return 0
    found = list_namespaces(settings)
    if not found:
        print("no namespaces")
    for m in found:
        state = "complete" if m.complete else "incomplete (run the replay again to resume)"
        print(
            f"{m.namespace:20} {m.range.messages:>8} messages {m.events:>9} events  "
            f"{m.created_at:%Y-%m-%d %H:%M}  {state}"
        )
    return 0


def cmd_backtest(settings: Settings, args: argparse.Namespace) -> int:
    from feature_repo.namespaces import Namespace
    from streamrank.catalog import Catalog
    from streams.replay import read_events
    from training.artifact import RankingArtifact, models_root
    from training.backtest import (
        ModelScorer,
        backtest,
        events_frame,
        markdown,
        prepare,
        write_report,
    )
    from training.baselines import StreamDefault
    from training.encoder import default_encoder_path, pick_device
    from training.registry import ModelRegistry

    namespace = Namespace(settings, args.namespace)
    manifest = namespace.finished()
    if manifest is None:
        print(
            f"namespace {args.namespace} is missing or incomplete: replay it first", file=sys.stderr
        )
        return 2
    catalog = Catalog.load(settings.home_dir)
    encoder = settings.encoder_path or default_encoder_path()
    directories = [m if m.is_dir() else models_root(settings.home_dir) / m for m in args.model]
    serving = settings.model_dir or ModelRegistry(settings.home_dir).serving_dir()
    if serving is not None and serving.resolve() not in {d.resolve() for d in directories}:
        directories.append(serving)  # a candidate is always measured against what serves
    events = events_frame(list(read_events(settings, manifest.range, progress=True)))
    data = prepare(events, catalog, args.cut, args.test_fraction, _show_again(settings))
    device = args.device or pick_device()
    scorers: list[Any] = [
        ModelScorer(RankingArtifact.load(d, encoder, device), catalog, data.fit)
        for d in directories
    ]
    if serving is None and not args.baselines:  # the no-model default serves: its row
        default = StreamDefault(catalog, catalog.ids, catalog.embeddings)
        default.fit(data.fit)
        scorers.append(default)
    report = backtest(data, catalog, scorers, baselines=args.baselines, k=args.k)
    report["namespace"] = namespace.name
    out = write_report(report, args.out or namespace.root / "backtest")
    print(markdown(report))
    print(f"written to {out}")
    return 0


def cmd_models(settings: Settings, args: argparse.Namespace) -> int:
    """Trained versions, newest last, with their held-out NDCG@10; the serving one marked."""
    from training.registry import ModelRegistry

    registry = ModelRegistry(settings.home_dir)
    serving = registry.serving()
    if serving is None:
        print("serving: the no-model default (the stream ranks)")
    for version in registry.versions():
        meta = json.loads((registry.path(version) / "model.json").read_text())
        ndcg = meta.get("metrics", {}).get("test", {}).get("ndcg@10")
        shown = f"{ndcg:.4f}" if isinstance(ndcg, float) else "   -  "
        mark = "*" if version == serving else " "
        print(f"{mark} {version}  test ndcg@10 {shown}  {meta.get('trained_on', '')}")
    for change in registry.history()[-args.history :] if args.history else []:
        print(f"  {change.action:8} {change.version or 'no model'} (was {change.previous})")
    return 0


def cmd_promote(settings: Settings, args: argparse.Namespace) -> int:
    """Serve VERSION once a backtest shows it at least as good as what serves (or --force);
    running replicas switch within ``model_poll_s``."""
    from training.registry import NO_MODEL, ModelRegistry, RegistryError, promotion_evidence

    registry = ModelRegistry(settings.home_dir)
    candidate = None if args.version == NO_MODEL else args.version
    try:
        if candidate is not None:
            registry.path(candidate)
        serving = registry.serving()
        if candidate == serving:
            if not registry.history():  # served as the newest trained: now it stays
                registry.promote(candidate, evidence="the newest trained version, pinned")
            print(f"{args.version} serves already")
            return 0
        evidence = promotion_evidence(settings.home_dir, candidate, serving)
        if not evidence.allowed and not args.force:
            print(f"promote: refused: {evidence.reason}", file=sys.stderr)
            return 3
        change = registry.promote(candidate, forced=not evidence.allowed, evidence=evidence.reason)
    except RegistryError as exc:
        print(f"promote: {exc}", file=sys.stderr)
        return 2
    forced = " (forced)" if change.forced else ""
    print(f"serving {args.version}{forced}, was {change.previous or NO_MODEL}: {evidence.reason}")
    return 0


def cmd_rollback(settings: Settings, args: argparse.Namespace) -> int:
    from training.registry import NO_MODEL, ModelRegistry, RegistryError

    try:
        change = ModelRegistry(settings.home_dir).rollback()
    except RegistryError as exc:
        print(f"rollback: {exc}", file=sys.stderr)
        return 2
    print(f"serving {change.version or NO_MODEL} again, was {change.previous}")
    return 0


def cmd_verify_consistency(settings: Settings, args: argparse.Namespace) -> int:
    from feature_repo.namespaces import Namespace
    from feature_repo.store import open_store
    from streams.consistency import compare, in_batches
    from streams.replay import read_events
    from streams.sink import FeastProfileStore

    namespace = Namespace(settings, args.namespace)
    manifest = namespace.finished()
    if manifest is None:
        print(
            f"namespace {args.namespace} is missing or incomplete: replay it first", file=sys.stderr
        )
        return 2
    replayed = manifest.range
    if not replayed.from_log_start:
        print(
            "note: the range does not start at the log's start; live profiles hold "
            "earlier events, so differences are expected"
        )
    users = dict.fromkeys(e.user_id for e in read_events(settings, replayed, progress=True))
    live = FeastProfileStore(open_store(settings))
    mine = FeastProfileStore(namespace.open_store())
    report = None
    for batch in in_batches(users, 1000):
        report = compare(
            live.read_profiles(batch), mine.read_profiles(batch), replayed.stop, report
        )
    if report is None:
        print("no users in the range")
        return 0
    for d in report.differences[: args.show]:
        print(f"{d.user_id:>12} {d.feature:24} live={d.live!r:.60} replayed={d.replayed!r:.60}")
    print(
        f"{report.users} users: {report.equal} equal, {len(report.moved_on)} moved on since "
        f"(live is past the range), {len({d.user_id for d in report.differences})} differ "
        f"({len(report.differences)} features)"
    )
    return 0 if report.consistent else 1


def cmd_privacy(settings: Settings, args: argparse.Namespace) -> int:
    """Send a user's privacy request (as the API does) and wait until a worker applied it."""
    import time

    from streams.events import PrivacyAction
    from streams.privacy import PrivacyLog, privacy_request, wait_applied
    from streams.producer import EventProducer
    from streams.pseudonyms import Pseudonymizer

    action = PrivacyAction(args.action.replace("-", "_"))
    pseudonyms = Pseudonymizer.from_settings(settings)
    request = privacy_request(args.user_id, action)
    started = time.perf_counter()
    with EventProducer(
        settings.kafka_client_config(), settings.events_topic, user_ids=pseudonyms, batch_events=1
    ) as producer:
        producer.send(request)
        producer.flush()
        [(partition, offset)] = producer.delivered_offsets.items()
    print(f"{action.value} for {args.user_id} sent (request {request.event_id})")
    if args.no_wait:
        return 0
    privacy = PrivacyLog.from_settings(settings)
    state = wait_applied(privacy, pseudonyms(args.user_id), partition, offset, args.timeout_s)
    if state is None:
        print(f"not applied within {args.timeout_s:g}s: is a profile worker running?")
        return 1
    print(f"applied in {time.perf_counter() - started:.2f}s: opted out={state.opted_out}")
    return 0


def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    """Print a user-bound token (what the shop's backend hands a signed-in visitor's page),
    signed with the settings' token secret."""
    from streamrank.failures import UsageError
    from streams.access import UserTokens

    if args.ttl_s is not None and not 60 <= args.ttl_s <= 7 * 86400:
        raise UsageError("--ttl-s: from 60 s to 7 days (604800 s)")
    print(UserTokens.from_settings(settings).issue(args.user_id, args.ttl_s))
    return 0


def cmd_download(settings: Settings, args: argparse.Namespace) -> int:
    from streamrank.datasets.movielens import download_movielens_100k

    print(f"MovieLens 100K in {download_movielens_100k(Path(args.directory))}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamrank", description=__doc__)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--debug", action="store_true", help="tracebacks instead of one line")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("broker", help="run the embedded Kafka-compatible broker (Tansu)")
    p.add_argument("--port", type=int, default=9092)
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser(
        "grow-topics",
        help="raise events, impressions and privacy to N partitions (a multiple) while running",
    )
    p.add_argument("partitions", type=int)
    p.set_defaults(func=cmd_grow_topics)

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
    p.add_argument("--rayservice", action="store_true", help="a KubeRay RayService manifest")
    p.add_argument("--image", default="streamrank:latest", help="the image (--rayservice)")
    p.set_defaults(func=cmd_serve_config)

    p = sub.add_parser("demo", help="the whole system on embedded defaults, end to end")
    p.add_argument("--events", type=int, default=20_000, help="events streamed")
    p.add_argument("--users", type=int, default=3, help="users shown")
    p.add_argument("--ui", action="store_true", help="stay up: the storefront and platform page")
    p.add_argument(
        "--no-train", action="store_true", help="serve the no-model default (stream co-visitation)"
    )
    p.add_argument("--train-users", type=int, help="train the demo's model on this many users")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="fine-tune the ranking model on the data set")
    p.add_argument("--config", type=Path, help="YAML/JSON file of training.config.TrainConfig")
    p.add_argument(
        "--preset",
        choices=["auto", "fast", "full"],
        default="auto",
        help="fast: the demo's, scaled with the data (~3 min on 2 cores); full: the 2-layer, "
        "128-wide tower (for a GPU); auto (default): full on a GPU, else fast",
    )
    p.add_argument("--fast", action="store_true", help="the same as --preset fast")
    p.add_argument("--epochs", type=int)
    p.add_argument("--limit-users", type=int, help="train on a slice of users (smoke runs)")
    p.add_argument("--max-minutes", type=float, help="stop after the epoch that passes this")
    p.add_argument(
        "--negatives",
        type=int,
        help="0: softmax over the whole catalog; K: K sampled negatives a step "
        "(default: the full softmax up to 50,000 items)",
    )
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    source = p.add_argument_group("events from the topic instead of the data set's file")
    source.add_argument("--namespace", help="the range a replay namespace covers")
    source.add_argument("--from", dest="start", type=_time, help="log time (default: log start)")
    source.add_argument("--to", dest="end", type=_time, help="log time, exclusive (default: now)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("models", help="trained versions; the serving one marked with *")
    p.add_argument("--history", type=int, default=10, help="promotions and rollbacks shown")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("promote", help="serve a trained version (after a backtest, or --force)")
    p.add_argument("version", help="a version under <home>/models, or stream-default")
    p.add_argument("--force", action="store_true", help="without a backtest that allows it")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("rollback", help="serve what served before the last promotion")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser(
        "evaluate", help="model vs baselines on held-out data (md, json, png); no model: baselines"
    )
    p.add_argument("--model", type=Path, help="model directory (default: the newest)")
    p.add_argument("--out", type=Path, help="report directory (default: <model>/evaluation)")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--device", help="device of the float model (default: cuda when present)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("replay", help="rebuild profiles for a time range of the topic")
    p.add_argument("--from", dest="start", type=_time, help="log time (default: log start)")
    p.add_argument("--to", dest="end", type=_time, help="log time, exclusive (default: now)")
    p.add_argument("--namespace", required=True, help="where the state goes (never live)")
    p.add_argument("--workers", type=int, help="processes (default: STREAMRANK_REPLAY_WORKERS)")
    p.add_argument("--dry-run", action="store_true", help="print partitions, offsets, counts")
    p.add_argument(
        "--profiles-only", action="store_true", help="no item rows: ~2x faster (for backtests)"
    )
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("namespaces", help="list replay namespaces (or --delete NAME)")
    p.add_argument("--delete", nargs="+", metavar="NAME")
    p.set_defaults(func=cmd_namespaces)

    p = sub.add_parser("backtest", help="models vs baselines on a replayed range, point in time")
    p.add_argument("--namespace", required=True)
    p.add_argument("--model", type=Path, action="append", default=[], help="directory or name")
    p.add_argument("--baselines", action="store_true", help="add every baseline ranker")
    p.add_argument("--cut", type=_time, help="test window start (event time)")
    p.add_argument("--test-fraction", type=float, default=0.1, help="else the last share")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--out", type=Path, help="report directory (default: <namespace>/backtest)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.set_defaults(func=cmd_backtest)

    p = sub.add_parser("verify-consistency", help="live profiles vs a namespace's replay")
    p.add_argument("--namespace", required=True)
    p.add_argument("--show", type=int, default=20, help="differences printed")
    p.set_defaults(func=cmd_verify_consistency)

    p = sub.add_parser("privacy", help="a user's opt-out, opt-in or erasure, applied live")
    p.add_argument("action", choices=["opt-out", "opt-in", "erase"])
    p.add_argument("user_id", help="the site's own user id (pseudonymized before sending)")
    p.add_argument("--no-wait", action="store_true", help="return once the broker has it")
    p.add_argument("--timeout-s", type=float, default=60.0)
    p.set_defaults(func=cmd_privacy)

    p = sub.add_parser("token", help="a short-lived token for one user's own calls")
    p.add_argument("user_id", help="the site's own user id")
    p.add_argument(
        "--ttl-s", type=int, help="seconds it stays valid, 60 to 604800 (STREAMRANK_TOKEN_TTL_S)"
    )
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("download-movielens", help="fetch MovieLens 100K (needs internet)")
    p.add_argument("directory")
    p.set_defaults(func=cmd_download)
    return parser


LONG_RUNNING = {"broker", "worker", "experiment-worker", "serve", "demo"}
"""Commands that run until stopped: librdkafka's log lines are theirs to show."""


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. An expected failure (a wrong argument, a missing file or
    namespace, a broker, store or Serve application that does not answer) is one line on
    stderr and exit 2 (usage) or 1 (``streamrank/failures.py``); ``--debug`` shows the
    traceback instead."""
    from streamrank.failures import explain, quiet_librdkafka

    args = build_parser().parse_args(argv)
    debug = args.debug or args.log_level.lower() == "debug"
    _logging("debug" if debug else args.log_level)
    if not debug and args.command not in LONG_RUNNING:
        quiet_librdkafka()
    settings = None
    try:
        settings = get_settings()
        return int(args.func(settings, args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if debug:
            raise
        failure = explain(exc, settings.bootstrap() if settings is not None else None)
        print(f"streamrank {args.command}: {failure.message}", file=sys.stderr)
        return failure.code


if __name__ == "__main__":
    sys.exit(main())
