"""The replica profile's reading of py-spy's output: the right thread, each stack in its job."""

from __future__ import annotations

from pathlib import Path

from bench.replica_profile import SERVE, loop_jobs, read_samples

ASGI = [
    "Thread.run (threading.py:982)",
    "Replica._direct_ingress_asgi.<locals>.call_asgi (ray/serve/_private/replica.py:3309)",
]
RECOMMEND = [
    *ASGI,
    "LeanRoutes.__call__ (serving/lean_routes.py:102)",
    "Recommender.recommend (serving/recommender.py:291)",
]
USER_STATE = [*RECOMMEND, "Recommender.user_state (serving/recommender.py:238)"]


def sample(thread: int, frames: list[str], count: int) -> str:
    """One line of ``py-spy record --threads -f raw`` (a thread named where Python has
    its name)."""
    name = {101: ": AsyncIO Thread: default", 102: ": partition-count"}.get(thread, "")
    return f"thread ({thread}){name};{';'.join(frames)} {count}"


def test_the_loop_thread_and_its_jobs_are_read_from_py_spys_raw_output(tmp_path: Path) -> None:
    raw = tmp_path / "replica.txt"
    lines = [
        sample(101, [*USER_STATE, "Recommender._new_state (serving/recommender.py:250)"], 7),
        sample(101, [*USER_STATE, "_known (serving/recommender.py:490)"], 2),
        sample(101, [*USER_STATE, "Recommender._stored_profile (serving/recommender.py:178)"], 3),
        sample(
            101,
            [
                *RECOMMEND,
                "Recommender._page (serving/recommender.py:360)",
                "Recommender.covisits (serving/recommender.py:210)",
            ],
            5,
        ),
        sample(101, [*RECOMMEND, "rank (serving/ranking.py:40)"], 4),
        sample(101, [*RECOMMEND, "uuid4 (uuid.py:723)"], 1),
        sample(101, [*RECOMMEND[:3], "RequestResponseCycle.send (h.py:549)"], 2),
        sample(101, [*ASGI, "RequestResponseCycle.send (uvicorn/protocols/http/h.py:522)"], 6),
        sample(102, ["Thread.run (threading.py:982)", "PartitionCount._reread (g.py:285)"], 50),
        sample(103, ["<module> (default_worker.py:323)", "Worker.main_loop (worker.py:1069)"], 90),
        "not a sample line",
    ]
    raw.write_text("\n".join(lines))
    threads = read_samples(raw)
    assert set(threads) == {101, 102, 103}
    loop, jobs = loop_jobs(threads)
    assert loop == 101  # the busiest thread is not the one answering requests
    assert jobs == {
        "a user state built afresh": 9,
        "the page's candidates found and scored": 5,  # its co-visits are the page's
        "the profile row, read every request": 3,
        "ranking the kept shortlist": 4,
        "the rest of the call": 1,
        SERVE: 8,  # the writes, wherever they start from
    }
