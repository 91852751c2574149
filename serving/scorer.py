"""The scorer: the fine-tuned ranking model when one is trained, else the pretrained encoder.

Trained (``streamrank train`` wrote a model directory): the user tower reads the live
profile's features and the item vectors come precomputed from the model directory. Catalog
items the model never saw get a vector from their text through the model's text path. So a
request costs one small forward pass (batched across concurrent requests by
``@serve.batch`` in the GPU scorer deployment), plus dot products. Besides the
recommender's candidates, the scorer scores the model's own nearest items to the user
vector (two-tower retrieval: the stream's candidate sources miss half of the model's own
top 20 on MovieLens). The served score blends in the no-model default's score of each
item, from the stream's signals that the recommender sends with the task, with the
weights the model chose on its validation examples (``training/blend.py``).

Untrained: the cosine between the profile's interest vector (mean pretrained MiniLM
embedding of engaged items) and the items' embeddings. Users with history are then ranked
by the no-model default (``serving/stream_ranker.py``), these scores its text term, and
search queries by these scores alone: on its own this ranks far below popularity.

Either way a search query is encoded in the same space and added to the user vector. The
deployment asks for a GPU when ``scorer_num_gpus`` > 0; on CPU the model runs inside the
ingress replica by default (``scorer_placement``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ray import serve

from serving.stream_ranker import StreamSignals
from serving.user_cache import SummaryCache
from streamrank.catalog import IN_MEMORY_MAX_ITEMS, Catalog, catalog_fingerprint
from streamrank.item_index import ItemIndex
from streamrank.settings import Settings
from streams.profile import ProfileFeatures
from training.blend import Blend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreTask:
    """One request's scoring work: the user's profile and/or a query, and candidate rows."""

    item_rows: np.ndarray
    profile: ProfileFeatures | None = None
    query: str | None = None
    signals: StreamSignals | None = None
    """What the stream keeps for this user: a trained model's served score blends in the
    no-model default's score from them (``training/blend.py``), and a scorer without a
    model ranks by that default, its own cosine the text term. None: the model alone."""
    retrieve: int = 0
    """How many of the trained model's own nearest items (by the user vector, over the
    whole catalog) to score besides ``item_rows``: the two-tower retrieval that the
    stream's candidate sources cannot stand in for (a profile without a query only)."""
    user_vector: np.ndarray | None = None
    """This model's user vector for ``profile``, from an earlier task on the same profile
    (``Scored.user_vector``): the user tower is then skipped (``serving/user_state.py``)."""


@dataclass(frozen=True)
class Scored:
    """A task's scores: ``rows`` are its ``item_rows``, then the retrieved rows not among
    them; ``scores`` are aligned with ``rows``. ``user_vector``: the profile's user vector
    these were scored with (None without a profile), for the next task on that profile."""

    rows: np.ndarray
    scores: np.ndarray
    user_vector: np.ndarray | None = None


def combine(user_vector: np.ndarray | None, query_vector: np.ndarray | None) -> np.ndarray | None:
    """The user's standing interest and what they are searching for now, equally weighted."""
    parts = [v for v in (user_vector, query_vector) if v is not None]
    if not parts:
        return None
    vector = np.sum(parts, axis=0)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else None


def model_directory(settings: Settings, override: Path | None = None) -> Path | None:
    """The model an arm serves: its own directory (an experiment arm's), else the settings'
    ``model_dir``, else the registry's serving version (``training/registry.py``); None when
    none is (the no-model default)."""
    from training.registry import ModelRegistry

    return override or settings.model_dir or ModelRegistry(settings.home_dir).serving_dir()


def follows_registry(settings: Settings, override: Path | None = None) -> bool:
    """Whether an arm switches when a version is promoted (not pinned to a directory)."""
    return override is None and settings.model_dir is None


def model_version(settings: Settings, directory: Path | None) -> str:
    """The version responses name: the model directory's name, or the no-model default's
    (with the catalog's fingerprint: its text vectors are what it scores with)."""
    if directory is not None:
        return directory.name + ("+int8" if settings.scorer_int8 else "")
    # no model: the stream ranks (serving/stream_ranker.py), the pretrained encoder searches
    return f"stream-default+minilm-l6-v2-pretrained+{catalog_fingerprint(settings.home_dir)}"


class ScorerModel:
    """Framework-free core of the scorer (unit-testable, used by the deployment)."""

    def __init__(
        self,
        settings: Settings,
        directory: Path | None,
        device: str | None = None,
        catalog: Catalog | None = None,
    ):
        """``directory``: the trained model to load (``model_directory``); None: no model.
        ``catalog``: the replica's, when it has one loaded already."""
        from training.encoder import default_encoder_path

        self.catalog = catalog if catalog is not None else Catalog.load(settings.home_dir)
        self.home = settings.home_dir
        encoder_path = settings.encoder_path or default_encoder_path()
        self.version = model_version(settings, directory)
        self.trained = directory is not None
        self.blend = Blend()
        self.log_counts = np.zeros(len(self.catalog), np.float32)  # catalog row order
        if directory is not None:
            self._load_trained(directory, encoder_path, device)
            self.catalog.row_vectors  # noqa: B018 - the blend's text term: built now, not in a request
            self.device: str = self.ranking.device.type  # where the model runs: "cpu", "cuda"
            if settings.scorer_int8:
                self.ranking = self.ranking.quantized()
            self.users = SummaryCache(self.ranking, settings.scorer_summary_cache)
        else:
            from training.encoder import TextEncoder

            self.ranking = None
            self.encoder = TextEncoder(encoder_path, device)
            self.device = str(self.encoder.device).split(":")[0]
            self.item_vectors = self.catalog.row_vectors  # as the text index reads them
            self.index = self.catalog.text_index

    def warm_up(self) -> None:
        """Score one made-up visitor (a view and a search): the first pass of a fresh model
        allocates and plans its kernels, tens of milliseconds that a promotion pays here,
        before the model takes requests (``serving/model_switch.py``)."""
        import time
        from datetime import UTC, datetime

        from streams.events import Event
        from streams.profile import UserProfile, apply_event, derive_features

        if not len(self.catalog):
            return
        now = time.time()
        profile = UserProfile("warm-up")
        view = Event(
            event_id="warm-up",
            user_id="warm-up",
            type="view",
            item_id=self.catalog.ids[0],
            ts=datetime.fromtimestamp(now, UTC),
        )
        apply_event(profile, view, self.catalog)
        rows = np.arange(min(len(self.catalog), 200))
        self.score_batch([ScoreTask(rows, derive_features(profile, now), "warm up")])
        self.search("warm up", 10)

    def _load_trained(self, directory: Path, encoder_path: Path, device: str | None) -> None:
        from training.artifact import RankingArtifact
        from training.encoder import pick_device

        self.ranking = RankingArtifact.load(directory, encoder_path, device or pick_device())
        self.blend = self.ranking.blend
        space = self.ranking.space
        shared = space.item_ids == self.catalog.ids  # trained on this very catalog
        if shared:  # one copy of the ids, their index and the vectors
            space.item_ids, space.item_index = self.catalog.ids, self.catalog.index
            vectors, self.log_counts = self.ranking.item_vectors, self.ranking.log_counts
        else:
            vectors = self._in_catalog_order()
        if len(vectors) > IN_MEMORY_MAX_ITEMS:  # half the memory; rows are cast when scored
            vectors = vectors.astype(np.float16)
            if shared:
                self.ranking.item_vectors = vectors  # the user tower reads the same rows
        self.item_vectors = vectors
        # over these vectors in catalog order: one index per model and catalog
        name = f"item_index-{len(self.catalog)}-{catalog_fingerprint(self.home)}.faiss"
        self.index = ItemIndex.load(vectors, directory / name, "hnsw")

    def _in_catalog_order(self) -> np.ndarray:
        """The model's item vectors and target counts in catalog row order; items added
        since training get a vector from their text (all the model has of them)."""
        assert self.ranking is not None
        space = self.ranking.space
        vectors = np.zeros((len(self.catalog), self.ranking.item_vectors.shape[1]), np.float32)
        unknown = []
        for row, item in enumerate(self.catalog.ids):
            known = space.item_index.get(item)
            if known is None:
                unknown.append(row)  # no training targets: a count of 0
            else:
                vectors[row] = self.ranking.item_vectors[known]
                self.log_counts[row] = self.ranking.log_counts[known]
        if unknown:
            vectors[unknown] = self.ranking.encode_text(self.catalog.texts(unknown))
            log.info(
                "%d catalog items unknown to model %s: scored by text", len(unknown), self.version
            )
        return vectors

    def user_vectors(self, profiles: list[ProfileFeatures]) -> np.ndarray:
        if self.ranking is not None:
            return self.users.user_vectors(self.ranking.space.encode(profiles))
        dim = self.item_vectors.shape[1]
        return np.stack(
            [p.interest if p.interest is not None else np.zeros(dim, np.float32) for p in profiles]
        )

    def query_vectors(self, queries: list[str]) -> np.ndarray:
        if self.ranking is not None:
            return self.ranking.encode_text(queries)
        return self.encoder.encode(queries)

    def search(self, query: str, n: int) -> np.ndarray:
        """Rows of the ``n`` items nearest to a search query in the model's item space:
        candidates for a query, which popularity and history alone would not bring."""
        return self.nearest(self.query_vectors([query])[0], n)

    def score_batch(self, tasks: list[ScoreTask]) -> list[Scored | None]:
        """One user-tower pass (for the profiles without a user vector yet) and one
        query-encoder pass for the whole batch."""
        to_encode = [t.profile for t in tasks if t.profile is not None and t.user_vector is None]
        users = iter(self.user_vectors(to_encode)) if to_encode else iter(())
        queries = [t.query for t in tasks if t.query]
        encoded = iter(self.query_vectors(queries)) if queries else iter(())
        out: list[Scored | None] = []
        for task in tasks:
            user = None
            if task.profile is not None:
                user = next(users) if task.user_vector is None else task.user_vector
            if user is not None and not np.any(user):
                user = None  # untrained scorer, profile without interest vector
            vector = combine(user, next(encoded) if task.query else None)
            if vector is None:
                out.append(None)
                continue
            rows = np.asarray(task.item_rows, dtype=np.int64)
            if self.trained and task.retrieve and user is not None and not task.query:
                found = self.nearest(vector, task.retrieve)
                rows = np.concatenate([rows, found[~np.isin(found, rows)]])
            scores = self.item_vectors[rows] @ vector.astype(np.float32)
            if task.signals is not None and task.profile is not None and not task.query:
                scores = self._served(rows, scores, task.profile, task.signals)
            out.append(Scored(rows, scores, user))
        return out

    def nearest(self, vector: np.ndarray, n: int) -> np.ndarray:
        """Rows of the ``n`` catalog items nearest to ``vector`` in this scorer's space."""
        return self.index.search(vector, n)[0]

    def _served(
        self, rows: np.ndarray, scores: np.ndarray, profile: ProfileFeatures, signals: StreamSignals
    ) -> np.ndarray:
        """What a recommendation row ranks by: a trained model's blend with the no-model
        default (``training/blend.py``); without a model, that default itself, whose text
        term is this scorer's own cosine (the pretrained encoder's)."""
        if not self.trained:
            return signals.scores(rows, scores)
        interest = profile.interest
        text = None if interest is None else self.catalog.vectors(rows) @ interest
        return self.blend.apply(scores, signals.scores(rows, text), self.log_counts[rows])


class BatchedScorer:
    """``ScorerModel`` behind ``@serve.batch``: concurrent requests share one forward pass.

    The body of the scorer deployment, and also usable inside the ingress replica
    (``scorer_placement``), where it saves the handle call. The batch queue is made per
    instance: a class-level ``@serve.batch`` shares one queue between all instances of a
    process and runs a batch on its first request's instance, which would mix arms. A GPU
    model, or a query's text pass, runs on a thread so the replica's event loop keeps
    parsing requests meanwhile (torch releases the GIL); a CPU pass over profiles runs on
    the loop (``_score_batch``). With ``max_batch_size`` 1 (the ingress's default on CPU)
    requests skip the batch queue.

    ``model`` is replaced in place when another version is promoted
    (``serving/model_switch.py``); a request names the model it started with (``score``'s
    ``model``), so a batch that straddles a switch scores each request with its own, and
    one queue serves every version (a queue per version would live on with its task)."""

    def __init__(self, model: ScorerModel, max_batch_size: int, batch_wait_s: float):
        self.model = model
        self.max_batch_size = max_batch_size
        self._batched = serve.batch(
            max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_s
        )(self._score_batch)

    def configure(self, max_batch_size: int, batch_wait_s: float) -> None:
        self.max_batch_size = int(max_batch_size)
        self._batched.set_max_batch_size(int(max_batch_size))  # type: ignore[attr-defined]
        self._batched.set_batch_wait_timeout_s(float(batch_wait_s))  # type: ignore[attr-defined]

    async def score(self, task: ScoreTask, model: ScorerModel | None = None) -> Scored | None:
        """Through ``@serve.batch``; with batches of one, straight to the model: the batch
        queue's own bookkeeping (a task, a timer and Ray metrics per batch) is then all cost."""
        request = (model or self.model, task)
        if self.max_batch_size == 1:
            return (await self._score_batch([request]))[0]
        return await self._batched(request)

    async def _score_batch(
        self, requests: list[tuple[ScorerModel, ScoreTask]]
    ) -> list[Scored | None]:
        """On a thread when the batch encodes a query (a MiniLM pass: milliseconds during
        which torch lets the loop go on) or runs on a GPU; otherwise here: a CPU pass over
        profiles costs a fraction of a millisecond, less than the hop to a thread and back."""
        if any(task.query for _, task in requests) or any(m.device != "cpu" for m, _ in requests):
            return await asyncio.to_thread(score_by_model, requests)
        return score_by_model(requests)

    async def search(self, query: str, n: int, model: ScorerModel | None = None) -> np.ndarray:
        return await asyncio.to_thread((model or self.model).search, query, n)


def freeze_loaded() -> None:
    """Move everything a replica has loaded (catalog, model, index: millions of objects at
    a million items) out of the cyclic collector's sight. Its full collections would
    otherwise walk all of them every few thousand requests: a pause of tens of
    milliseconds in some request's latency. They are freed by reference counts as ever;
    called again after a model switch loads a new one."""
    import gc

    gc.collect()
    gc.freeze()


def use_scorer_threads(settings: Settings) -> None:
    """Torch's and BLAS's threads in a process that scores requests: one each by default.
    A request's arrays are small (one user, a few hundred items), where splitting an op
    across threads costs more than it saves (the user tower's pass took 0.27 ms on one
    thread and 0.97 ms on two; a request's numpy products cost twice the CPU on two
    BLAS threads); throughput comes from batching and replicas instead."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(settings.scorer_threads)
    threadpool_limits(settings.scorer_threads, user_api="blas")


def score_by_model(requests: list[tuple[ScorerModel, ScoreTask]]) -> list[Scored | None]:
    """One ``score_batch`` per model in the batch (one, except during a switch)."""
    out: list[Scored | None] = [None] * len(requests)
    models = {id(m): m for m, _ in requests}
    for key, model in models.items():
        rows = [i for i, (m, _) in enumerate(requests) if id(m) == key]
        for i, scores in zip(rows, model.score_batch([requests[i][1] for i in rows]), strict=True):
            out[i] = scores
    return out


@serve.deployment(name="scorer")
class Scorer(BatchedScorer):
    """One per experiment arm (``serving/config.py`` names them), each with its model,
    which follows the registry unless the arm is pinned to a directory."""

    def __init__(self, settings: Settings, model_dir: Path | None = None):
        from serving.model_switch import RegistryFollower

        use_scorer_threads(settings)
        directory = model_directory(settings, model_dir)
        catalog = Catalog.load(settings.home_dir)
        super().__init__(
            ScorerModel(settings, directory, catalog=catalog),
            settings.scorer_max_batch_size,
            settings.scorer_batch_wait_s,
        )
        self.follower = None
        if follows_registry(settings, model_dir):

            def switch(new: Path | None) -> None:
                model = ScorerModel(settings, new, catalog=catalog)
                model.warm_up()
                self.model = model
                freeze_loaded()

            self.follower = RegistryFollower(settings, directory, switch).start()
        freeze_loaded()

    def reconfigure(self, user_config: dict[str, float]) -> None:
        """Batch knobs from the Serve config's ``user_config``: changeable live."""
        self.configure(int(user_config["max_batch_size"]), user_config["batch_wait_timeout_s"])

    def __del__(self) -> None:
        if getattr(self, "follower", None) is not None:
            self.follower.close()  # type: ignore[union-attr]
