"""Where an ingress replica's time goes under load: a sampling profile, grouped by job.

    python -m bench.replica_profile --model DIR [--requests own|product] [--clients 8]

The serving benchmark says how far the real call is from the framework's ceiling; this one
says why. It starts the application as ``bench.serving`` does (the model in the ingress,
unbatched, the default queue bound) and sends it closed-loop page requests at the knee's
number of clients (the no-op ingress first, for what Serve's path costs alone), sampling
the replica with py-spy (which ``ray[serve]`` installs) while they run. The replica
answers on one event-loop thread, which does nearly all of its CPU (each thread's CPU is
read with psutil), so a job's share of that thread's samples, times the thread's CPU a
request, is what the job costs a request:

- Serve's own path (uvicorn's HTTP, the direct-ingress bookkeeping, Starlette's
  middleware, the socket writes), which the no-op ingress pays as well;
- a user state built afresh (``serving/user_state.py``): the row decoded, features,
  co-visits, stream signals, the summary. Paid by the requests whose user's stored profile
  changed since its state was kept, or whose state aged out (``user_state_hit_share``
  says how many did not), and by every request when no state is kept;
- the page's candidates found and scored by the model: for the user's own page, once per
  state (kept with it); for a product page, every request;
- the user's profile row, read at every request (a kept state is only used while that row
  is the one it was made from);
- the co-visits of the item in view (product pages only);
- ranking the kept shortlist (``k``, exclusions, diversity, exploration, reasons);
- the request and the response as JSON;
- the impression published for the experiment's CTR;
- the rest of the call: authorization, the pseudonym, ids, metrics, the state's look-up.

Samples are wall-clock: a thread preempted inside a call counts there (on a 2-core box the
socket writes, which wake HAProxy and the client, take more than their CPU). The profiler
itself takes CPU from the box, so the rates while sampling are lower than without it; both
are reported. Prints a table and writes ``bench/results/replica-profile.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

from bench.serving import (
    RESULTS,
    closed_loop,
    ingress_replicas,
    measured,
    measured_closed_loop,
    own_pages,
    product_pages,
    workload,
)

SERVE = "Serve's path (as the no-op's)"
"""HTTP, Serve's bookkeeping, middleware, the socket writes: every sample of the loop
thread that no other job claims, and the response's writes wherever they start from."""

JOBS: list[tuple[str, tuple[str, ...]]] = [
    # first match wins: a stack is put in the first job one of whose frames it holds
    (SERVE, ("RequestResponseCycle.send",)),  # the lean route's writes are uvicorn's too
    ("a user state built afresh", ("Recommender._new_state", "_known (")),
    ("the page's candidates found and scored", ("Recommender._page",)),
    ("the profile row, read every request", ("Recommender._stored_profile",)),
    ("the item in view's co-visits", ("Recommender.covisits",)),
    ("ranking the kept shortlist", ("serving/ranking.py",)),
    ("request and response JSON", ("model_validate_json", "model_dump_json")),
    ("the impression published", ("ImpressionLog.publish",)),
    ("the rest of the call", ("Recommender.recommend", "Api._recommend", "LeanRoutes.__call__")),
]


def job_of(stack: str) -> str:
    for job, frames in JOBS:
        if any(frame in stack for frame in frames):
            return job
    return SERVE


def thread_cpu_s(process: psutil.Process) -> dict[int, float]:
    """Each thread's CPU seconds so far (user and system), by thread id."""
    return {thread.id: thread.user_time + thread.system_time for thread in process.threads()}


def read_samples(path: Path) -> dict[int, Counter[str]]:
    """py-spy's raw output (``thread (tid)[: name];frame;...;frame count``), as stacks by
    thread."""
    threads: dict[int, Counter[str]] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        found = re.match(r"thread \((\d+)\)[^;]*;", stack)
        if found and count.isdigit():
            threads.setdefault(int(found[1]), Counter())[stack] += int(count)
    return threads


def loop_jobs(threads: dict[int, Counter[str]]) -> tuple[int, Counter[str]]:
    """The thread that answers requests (the one whose samples run Serve's ``call_asgi``
    most), and its samples counted by job."""
    loop = max(threads, key=lambda t: sum(n for s, n in threads[t].items() if "call_asgi" in s))
    jobs: Counter[str] = Counter()
    for stack, count in threads[loop].items():
        jobs[job_of(stack)] += count
    return loop, jobs


def profile(
    url: str, bodies: list[dict], clients: int, seconds: float, rate: int, raw: Path | None
) -> dict:
    """The closed loop run twice: bare (the rates undisturbed), then under py-spy: each
    job's share of the loop thread's samples, times that thread's CPU a request in the same
    run (``raw`` keeps py-spy's output, for a flame graph). The profiler takes CPU from the
    box, so the second run may answer fewer requests, and then a larger share of them
    build their user's state afresh (states age out with time, not with requests): each
    run's share of states kept is reported."""
    bare = measured_closed_loop(url, bodies, clients, seconds)
    replica = ingress_replicas()[0]  # one: the settings ask for one
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "replica.txt"
        command = [py_spy, "record", "--threads", "--nonblocking", "-f", "raw", "-r", str(rate)]
        command += ["-d", str(round(seconds)), "-p", str(replica.pid), "-o", str(out)]
        recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            time.sleep(0.5)  # attached before the clients start
            before = thread_cpu_s(replica)
            sampled = measured_closed_loop(url, bodies, clients, seconds)
            after = thread_cpu_s(replica)
            _, err = recorder.communicate(timeout=seconds + 60)
        finally:
            if recorder.poll() is None:
                recorder.kill()
                recorder.wait()
        if recorder.returncode != 0 or not out.exists():
            raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-2000:]}")
        if raw is not None:
            shutil.copyfile(out, raw)
        threads = read_samples(out)
    loop_tid, jobs = loop_jobs(threads)
    total = sum(jobs.values())
    cpu = {t: after[t] - before.get(t, 0.0) for t in after}
    loop_share = cpu.get(loop_tid, 0.0) / max(1e-9, sum(cpu.values()))
    loop_ms = sampled["replica_cpu_ms"] * loop_share
    return {
        "clients": clients,
        "bare": bare,
        "sampled": sampled,
        "loop_thread_share_of_replica_cpu": loop_share,
        "loop_cpu_ms_per_request": loop_ms,
        "samples": total,
        "jobs": {
            job: {"share": count / total, "ms_per_request": loop_ms * count / total}
            for job, count in jobs.most_common()
        },
    }


def print_table(name: str, row: dict) -> None:
    bare, sampled = row["bare"], row["sampled"]
    kept = "user states kept {:.0%}".format
    print(
        f"\n{name}, {row['clients']} clients: {bare['rps']:.0f} req/s bare "
        f"({bare['replica_cpu_ms']:.2f} ms of replica CPU a request, "
        f"{kept(bare.get('user_state_hit_share', 0))}); sampled: {sampled['rps']:.0f} req/s, "
        f"{sampled['replica_cpu_ms']:.2f} ms, {kept(sampled.get('user_state_hit_share', 0))}, "
        f"{row['loop_thread_share_of_replica_cpu']:.0%} of it on the loop thread"
    )
    print(f"{'job':<42} {'share':>6} {'ms/request':>11}")
    for job, cost in row["jobs"].items():
        print(f"{job:<42} {cost['share']:>6.1%} {cost['ms_per_request']:>11.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="trained model directory (default: none)")
    parser.add_argument("--requests", nargs="+", choices=["own", "product"], default=["own"])
    parser.add_argument("--clients", type=int, default=8, help="the knee's, in bench.serving")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples a second")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=RESULTS / "replica-profile.json")
    parser.add_argument("--raw", type=Path, help="keep py-spy's samples as RAW-<requests>.txt")
    args = parser.parse_args()

    from bench.noop_app import noop_app
    from serving import app as serve_app

    base, _, bodies = workload("bench-replica-profile", args.model, 0.0, args.events)
    unbatched = {"scorer_placement": "ingress", "api_scorer_max_batch_size": 1}
    kinds = {  # as bench.serving's rows of the same names
        "own": ("page requests", own_pages, {}),
        "product": ("product pages, no state kept", product_pages, {"user_state_cache": 0}),
    }
    results: dict = {"model": str(args.model) if args.model else "pretrained MiniLM cosine"}
    results["rate_hz"] = args.rate
    url = serve_app.start(base, app=noop_app(base.serve_num_cpus))
    pages = own_pages(bodies)
    try:  # what Serve's path costs a request with nothing behind it, in the same run
        asyncio.run(closed_loop(url, pages, 4, 3.0))
        results["no-op"] = measured(closed_loop(url, pages, args.clients, args.seconds))
    finally:
        serve_app.stop()
    noop = results["no-op"]
    print(
        f"no-op ingress, {args.clients} clients: {noop['rps']:.0f} req/s, "
        f"{noop['replica_cpu_ms']:.2f} ms of replica CPU a request"
    )
    for kind in args.requests:
        name, shaped, update = kinds[kind]
        requests = shaped(bodies)
        url = serve_app.start(base.model_copy(update={**unbatched, **update}))
        try:
            asyncio.run(closed_loop(url, requests, 4, 3.0))  # warm-up: replica, caches
            raw = args.raw.with_name(f"{args.raw.name}-{kind}.txt") if args.raw else None
            results[name] = profile(url, requests, args.clients, args.seconds, args.rate, raw)
        finally:
            serve_app.stop()
        print_table(name, results[name])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
