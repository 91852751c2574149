"""Closed-loop load from a client host: ``concurrency`` clients asking for recommendations
for ``seconds``, each request's start, latency, outcome and strategy written as JSON lines.

Run on a host of the test bed (``python -m tests.cluster.load ...``), so that the clients
reach the service through the network as a shop's backend would. A 503 with Retry-After
(shed) is recorded as such, not as an error; the client waits what it says."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path

import httpx


async def run(url: str, key: str, seconds: float, concurrency: int, users: int, out: Path) -> None:
    records: list[dict[str, object]] = []
    started = time.monotonic()
    deadline = started + seconds
    (out.with_suffix(".started")).write_text(str(time.time()))

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=url, timeout=10, headers=headers) as http:
            while time.monotonic() < deadline:
                sent = time.monotonic()
                body = {"user_id": f"u{rng.randrange(users)}", "k": 10}
                strategy = None
                try:
                    reply = await http.post("/v1/recommendations", json=body)
                    outcome = str(reply.status_code)
                    retry_after = reply.headers.get("retry-after")
                    if reply.status_code == 200:
                        strategy = reply.json()["strategy"]
                except httpx.HTTPError as exc:
                    outcome, retry_after = type(exc).__name__, None
                records.append(
                    {
                        "t": sent - started,
                        "ms": 1000 * (time.monotonic() - sent),
                        "outcome": outcome,
                        "strategy": strategy,
                    }
                )
                if outcome == "503" and retry_after:
                    await asyncio.sleep(float(retry_after))

    await asyncio.gather(*(client(i) for i in range(concurrency)))
    out.write_text("".join(json.dumps(r) + "\n" for r in records))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--users", type=int, default=300, help="asks for u0 ... u<users-1>")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(run(args.url, args.key, args.seconds, args.concurrency, args.users, args.out))


if __name__ == "__main__":
    main()
