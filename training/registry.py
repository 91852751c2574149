"""The model registry: which trained version serves, how it got there, and the way back.

    models/<version>/        a trained model (``training/artifact.py``)
    models/LATEST            the newest trained version
    models/promotions.jsonl  every promote and rollback, oldest first

Training never changes what serves once anything has been promoted: a new version is a
candidate until ``streamrank promote`` makes it the serving one, after a backtest against
what serves now (``promotion_evidence``). Until the first promotion the newest trained
version that ranked at least as well as the no-model default on its held-out examples
serves, so that ``streamrank train`` then ``streamrank serve`` works with no more steps,
and a model that learned less than the stream already knows never serves by default.

The serving version is the top of a stack that promotions push and rollbacks pop:
``rollback`` returns to what served before the last promotion, and again to the one before
that. ``None`` is a valid serving version: no model, the stream ranks (the no-model
default). Serving replicas poll ``serving()`` and switch in place
(``serving/model_switch.py``).

The file is rewritten whole and renamed into place, so a reader never sees half a line.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from training.artifact import META_FILE, latest_model_dir, models_root

PROMOTIONS_FILE = "promotions.jsonl"
NO_MODEL = "stream-default"  # how reports and the CLI name the no-model default


class RegistryError(ValueError):
    """A promotion or rollback that cannot be done (unknown version, nothing to roll back)."""


@dataclass(frozen=True)
class Promotion:
    """One change of the serving version."""

    action: Literal["promote", "rollback"]
    version: str | None  # now serving (None: no model)
    previous: str | None  # served before
    at: float  # epoch s
    forced: bool = False
    evidence: str = ""  # the backtest that allowed it, or why it was forced


class ModelRegistry:
    def __init__(self, home: Path):
        self.home = home
        self.root = models_root(home)

    @property
    def promotions_path(self) -> Path:
        return self.root / PROMOTIONS_FILE

    def versions(self) -> list[str]:
        """Every trained version on disk, oldest first (names start with their UTC time)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / META_FILE).exists())

    def path(self, version: str) -> Path:
        directory = self.root / version
        if "/" in version or version.startswith(".") or not (directory / META_FILE).exists():
            known = ", ".join(self.versions()[-5:]) or "none"
            raise RegistryError(f"no trained model {version!r} (newest: {known})")
        return directory

    def latest(self) -> str | None:
        directory = latest_model_dir(self.home)
        return None if directory is None else directory.name

    def history(self) -> list[Promotion]:
        if not self.promotions_path.exists():
            return []
        lines = self.promotions_path.read_text().splitlines()
        return [Promotion(**json.loads(line)) for line in lines if line.strip()]

    def _stack(self, history: list[Promotion]) -> list[Promotion]:
        stack: list[Promotion] = []
        for change in history:
            if change.action == "promote":
                stack.append(change)
            elif stack:
                stack.pop()
        return stack

    def newest_better_than_default(self) -> str | None:
        """The newest version whose held-out NDCG@10 was at least the no-model default's on
        the same examples (training records it); older models, without the record, count."""
        for version in reversed(self.versions()):
            meta = json.loads((self.root / version / META_FILE).read_text())
            if meta.get("beats_stream_default", True):
                return version
        return None

    def serving(self) -> str | None:
        """The version that serves now (None: no model, the stream ranks)."""
        history = self.history()
        if not history:
            return self.newest_better_than_default()
        stack = self._stack(history)
        return stack[-1].version if stack else history[0].previous

    def serving_dir(self) -> Path | None:
        version = self.serving()
        return None if version is None else self.root / version

    def promote(self, version: str | None, forced: bool = False, evidence: str = "") -> Promotion:
        """Make ``version`` (None: the no-model default) the serving one."""
        if version is not None:
            self.path(version)
        change = Promotion("promote", version, self.serving(), time.time(), forced, evidence)
        self._append(change)
        return change

    def rollback(self) -> Promotion:
        """Back to what served before the last promotion still in force."""
        stack = self._stack(self.history())
        if not stack:
            raise RegistryError("nothing to roll back: no promotion is in force")
        top = stack[-1]
        change = Promotion("rollback", top.previous, top.version, time.time())
        self._append(change)
        return change

    def _append(self, change: Promotion) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps(asdict(c)) for c in [*self.history(), change]]
        temporary = self.promotions_path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text("\n".join(lines) + "\n")
        os.replace(temporary, self.promotions_path)


def backtest_reports(home: Path) -> list[Path]:
    """Every replay namespace's ``backtest.json`` (``streamrank backtest``), oldest first."""
    found = (home / "namespaces").glob("*/backtest/backtest.json")
    return sorted(found, key=lambda p: p.stat().st_mtime)


def ranker_name(version: str | None) -> str:
    """The row a version has in a backtest report."""
    return NO_MODEL if version is None else f"model {version}"


@dataclass(frozen=True)
class Evidence:
    allowed: bool
    reason: str


def promotion_evidence(home: Path, candidate: str | None, serving: str | None) -> Evidence:
    """What the newest backtest holding both ``candidate`` and ``serving`` says: allowed when
    the candidate's NDCG@K is at least the serving one's. No such backtest, or a candidate
    that failed in it, is a refusal that names the command to run."""
    want, have = ranker_name(candidate), ranker_name(serving)
    if want == have:
        return Evidence(False, f"{want} already serves")
    for path in reversed(backtest_reports(home)):
        report = json.loads(path.read_text())
        results, failed = report.get("results", {}), report.get("failed", {})
        where = f"backtest of namespace {path.parent.parent.name} ({report.get('cut', '?')} on)"
        if want in failed and have in results:
            return Evidence(False, f"{want} failed in the {where}: {failed[want]}")
        if want not in results or have not in results:
            continue
        metric = f"ndcg@{report.get('k', 10)}"
        new, old = results[want]["overall"][metric], results[have]["overall"][metric]
        if not (isinstance(new, int | float) and isinstance(old, int | float)) or new != new:
            return Evidence(False, f"{metric} of {want} is not a number in the {where}")
        verdict = f"{metric} {new:.4f} against {old:.4f} for {have} in the {where}"
        return Evidence(new >= old, verdict)
    model_flags = " ".join(f"--model {v}" for v in (candidate, serving) if v is not None)
    return Evidence(
        False,
        f"no backtest compares {want} with {have}: run `streamrank backtest NAMESPACE "
        f"{model_flags}` first (or promote with --force)",
    )
