"""``streamrank train``: fine-tune the ranking model on the data set's behaviour.

Steps: fold the events into leave-last-out examples with the stream's profile function
(``training.examples``), cache MiniLM's frozen lower layers over the catalog text, train
with a catalog-wide softmax, keep the epoch with the best validation NDCG@10, and write a
versioned model directory (``training.artifact``) with the test metrics in it.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from serving.ranking import ShowAgain
from streamrank.catalog import Catalog
from training.artifact import RankingArtifact
from training.blend import choose_blend, log_counts
from training.config import DataShape, TrainConfig
from training.encoder import load_minilm, pick_device
from training.examples import Example, Split, build_examples, hidden_rows
from training.features import FeatureSpace, UserArrays
from training.losses import NegativeSampler, sampled_softmax_loss
from training.metrics import RankerFailed, ranking_report
from training.model import (
    ItemTextTower,
    ModelShape,
    RankingModel,
    TextCache,
    context_tensor,
)

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    space: FeatureSpace
    train_users: UserArrays
    train_targets: np.ndarray
    valid: list[Example]
    test: list[Example]
    fit_interactions: pd.DataFrame  # what baselines may learn from: all but the test targets
    data_hash: str
    config: TrainConfig  # every choice set, the size-dependent ones from these examples
    source: str = ""  # where the events came from (a file, a replay namespace, a log range)
    show_again: ShowAgain = ShowAgain.NONE  # the shop's rule the held-out rows are judged by


def data_hash(events: pd.DataFrame, catalog: Catalog) -> str:
    digest = hashlib.sha256()
    cols = [c for c in ("user_id", "item_id", "type", "ts") if c in events.columns]
    digest.update(pd.util.hash_pandas_object(events[cols], index=False).to_numpy().tobytes())
    digest.update("\x1e".join(catalog.texts()).encode())
    return digest.hexdigest()[:16]


def slice_users(events: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    if not limit:
        return events
    users = sorted(events["user_id"].unique())[:limit]
    return events[events["user_id"].isin(users)]


def prepare_training_data(
    events: pd.DataFrame,
    catalog: Catalog,
    config: TrainConfig,
    source: str = "",
    show_again: ShowAgain = ShowAgain.NONE,
) -> TrainingData:
    events = slice_users(events, config.limit_users)
    events = events[events["item_id"].isin(catalog.index) | (events["type"] == "search")]
    categories = catalog.all_categories
    train: list[Example] = []
    valid: list[Example] = []
    test: list[Example] = []
    by_split = {Split.TRAIN: train, Split.VALID: valid, Split.TEST: test}
    for example in build_examples(events, catalog):
        by_split[example.split].append(example)
    config = config.resolve(data_shape(train, len(catalog)))
    assert config.history_len is not None
    space = FeatureSpace(catalog.ids, categories, config.history_len, catalog.embeddings.shape[1])
    targets = np.array([space.item_index[e.item_id] for e in train], dtype=np.int64)
    users = space.encode([e.features for e in train])
    test_keys = {(e.user_id, e.ts, e.item_id) for e in test}
    keys = zip(events["user_id"], events["ts"], events["item_id"], strict=True)
    fit = events[[k not in test_keys for k in keys]]
    log.info("examples: %d train, %d valid, %d test", len(train), len(valid), len(test))
    hashed = data_hash(events, catalog)
    return TrainingData(space, users, targets, valid, test, fit, hashed, config, source, show_again)


def data_shape(train: list[Example], items: int) -> DataShape:
    """What the fast configuration's size-dependent choices are scaled from."""
    lengths = [len(e.features.history) for e in train]
    p90 = int(np.ceil(np.quantile(lengths, 0.9))) if lengths else 0
    return DataShape(len(train), items, p90)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Trains on ``TrainingData`` with the configuration it was prepared with."""

    def __init__(self, catalog: Catalog, encoder_path: Path, device: str | None = None):
        self.catalog = catalog
        self.encoder_path = encoder_path
        self.device = torch.device(device or pick_device())

    def fit(self, data: TrainingData, out_root: Path) -> Path:
        self.config = cfg = data.config  # every choice set, the size-dependent ones from data
        assert cfg.epochs and cfg.batch_size and cfg.lr and cfg.dim and cfg.history_len
        seed_everything(cfg.seed)
        started = time.monotonic()
        encoder, tokenizer = load_minilm(self.encoder_path)
        if cfg.text_layers:
            texts = self.catalog.texts()
            cache = TextCache.build(encoder, tokenizer, texts, cfg.text_layers, cfg.max_tokens)
            self.cache: TextCache | None = cache.to(self.device)
        else:  # all of MiniLM frozen: its output is the catalog's prepared embeddings
            self.cache = None
            embeddings = np.asarray(self.catalog.embeddings, dtype=np.float32)
            self.frozen_text = torch.from_numpy(embeddings).to(self.device)
        shape = ModelShape(
            n_items=data.space.n_items,
            n_categories=len(data.space.categories),
            history_len=cfg.history_len,
            text_dim=int(encoder.config.hidden_size),
            dim=cfg.dim,
            heads=cfg.heads,
            user_layers=cfg.user_layers,
            text_layers=cfg.text_layers,
            dropout=cfg.dropout,
        )
        for p in encoder.parameters():
            p.requires_grad_(False)
        model = RankingModel(shape, ItemTextTower(encoder, cfg.text_layers))
        for p in model.text.parameters():
            p.requires_grad_(True)
        model.to(self.device)
        encoder.to(self.device)
        text_params = list(model.text.parameters())
        text_ids = {id(p) for p in text_params}
        other = [p for p in model.parameters() if id(p) not in text_ids]
        optimizer = torch.optim.AdamW(
            [{"params": other, "lr": cfg.lr}, {"params": text_params, "lr": cfg.text_lr}],
            weight_decay=cfg.weight_decay,
        )
        version = f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{data.data_hash[:8]}"
        out_dir = out_root / version
        (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)

        users, targets = data.train_users, data.train_targets
        self.sampler = (
            NegativeSampler(targets, data.space.n_items, self.device) if cfg.negatives else None
        )
        if cfg.negatives:
            log.info("sampled softmax: %d negatives a step (logQ-corrected)", cfg.negatives)
        best: tuple[float, dict[str, torch.Tensor], int] | None = None
        history: list[dict[str, float]] = []
        stale = 0
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            text_cache = self._pooled_text(model)
            order = np.random.permutation(len(targets))
            losses = []
            steps = range(0, len(order), cfg.batch_size)
            bar = tqdm(steps, desc=f"epoch {epoch}/{cfg.epochs}", unit="step")
            for start in bar:
                rows = order[start : start + cfg.batch_size]
                loss = self._step(model, optimizer, users.take(rows), targets[rows], text_cache)
                losses.append(loss)
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
            artifact = self._artifact(model, encoder, tokenizer, data, shape, version)
            valid = evaluate_model(artifact, data.valid, data.show_again)
            history.append(
                {
                    "epoch": epoch,
                    "loss": float(np.mean(losses)),
                    **{f"valid_{k}": v for k, v in valid.items()},
                }
            )
            log.info(
                "epoch %d: loss %.4f, valid ndcg@10 %.4f recall@10 %.4f",
                epoch,
                np.mean(losses),
                valid["ndcg@10"],
                valid["recall@10"],
            )
            torch.save(
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch},
                out_dir / "checkpoints" / "last.pt",  # one file: bounded disk, enough to resume
            )
            if best is None or valid["ndcg@10"] > best[0]:
                best = (
                    valid["ndcg@10"],
                    {k: v.detach().clone() for k, v in model.state_dict().items()},
                    epoch,
                )
                stale = 0
            else:
                stale += 1
            out_of_time = cfg.max_minutes and time.monotonic() - started > cfg.max_minutes * 60
            if stale >= cfg.patience or out_of_time:
                break

        assert best is not None
        model.load_state_dict(best[1])
        artifact = self._artifact(model, encoder, tokenizer, data, shape, version)
        valid_stream = self._choose_blend(artifact, data)
        test_stream = no_model_scores(data.fit_interactions, data.test, self.catalog)
        default = stream_default_metrics(data, test_stream)
        artifact.meta["metrics"] = {
            "best_epoch": best[2],
            "valid": evaluate_model(artifact, data.valid, data.show_again, valid_stream),
            "test": evaluate_model(artifact, data.test, data.show_again, test_stream),
            "test_model_alone": evaluate_model(artifact, data.test, data.show_again),
            "history": history,
            "train_seconds": time.monotonic() - started,
            "stream_default": default,
        }
        model_ndcg = artifact.meta["metrics"]["test"]["ndcg@10"]
        artifact.meta["beats_stream_default"] = default is None or model_ndcg >= default["ndcg@10"]
        if not artifact.meta["beats_stream_default"]:
            log.warning(
                "model %s ranks below the no-model default on held-out data (ndcg@10 %.4f "
                "against %.4f): it stays a candidate and is not served unless promoted",
                version,
                model_ndcg,
                default["ndcg@10"],  # type: ignore[index]
            )
        artifact.save(out_dir)
        log.info(
            "model %s written to %s (test ndcg@10 %.4f)",
            version,
            out_dir,
            artifact.meta["metrics"]["test"]["ndcg@10"],
        )
        return out_dir

    def _choose_blend(self, artifact: RankingArtifact, data: TrainingData) -> np.ndarray:
        """The served blend's weights (``training/blend.py``), chosen on the validation
        examples with the no-model default fitted on everything but the held-out targets
        (the validation targets' own events would otherwise be in its co-visitation).
        Returns that default's validation scores."""
        artifact.log_counts = log_counts(data.train_targets, data.space.n_items)
        held_out = {(e.user_id, e.ts, e.item_id) for e in data.valid}
        fit = data.fit_interactions
        keys = zip(fit["user_id"], fit["ts"], fit["item_id"], strict=True)
        before_valid = fit[[k not in held_out for k in keys]]
        stream = no_model_scores(before_valid, data.valid, self.catalog)
        scores, targets, hidden = model_scores(artifact, data.valid, data.show_again)
        if len(targets):
            blend, tried = choose_blend(scores, stream, artifact.log_counts, targets, hidden)
            artifact.meta["blend"] = blend.to_json()
            artifact.meta["blend_grid"] = tried
        return stream

    # --- one optimisation step --------------------------------------------------------------
    def _step(
        self,
        model: RankingModel,
        optimizer: torch.optim.Optimizer,
        users: UserArrays,
        targets: np.ndarray,
        text_cache: torch.Tensor,
    ) -> float:
        """Two softmax terms, each over candidates computed the same way, so a target can
        never be told apart by how its vector was made:
        - over the whole catalog (above ``FULL_SOFTMAX_MAX_ITEMS``: over drawn negatives,
          ``training/losses.py``), text vectors from this epoch's cache (ids, projection
          and the user tower learn here);
        - over the batch's distinct targets, text run through the trainable MiniLM layers
          (in-batch negatives; the only term that reaches MiniLM).
        """
        device = self.device
        target = torch.from_numpy(targets).to(device)
        history = torch.from_numpy(users.history).to(device)
        types = torch.from_numpy(users.history_types).to(device)
        context = context_tensor(users.categories, users.numeric, users.interest, device)
        if self.sampler is None:  # every item scored: the full softmax
            items = model.item_vectors(text_cache)
            user = model.user_vectors(items, history, types, context)
            loss = F.cross_entropy(model.scale() * user @ items.T, target)
        else:
            user, loss = self._sampled_loss(model, text_cache, history, types, context, target)
        if self.cache is not None:
            hidden, mask = self.cache.hidden, self.cache.mask
            unique = torch.unique(target)  # sorted
            if len(unique) > self.config.text_batch_items:  # bound MiniLM's cost per step
                pick = torch.randperm(len(unique), device=device)[: self.config.text_batch_items]
                unique = unique[pick].sort().values
            member = torch.isin(target, unique)
            width = int(mask[unique].sum(1).max())  # trim the padding no text here needs
            fresh = model.text(hidden[unique, :width], mask[unique, :width])
            fresh_items = model.item_vectors(fresh, unique)
            position = torch.searchsorted(unique, target[member])
            logits = model.scale() * user[member] @ fresh_items.T
            loss = loss + self.config.text_loss_weight * F.cross_entropy(logits, position)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        return float(loss.item())

    def _sampled_loss(
        self,
        model: RankingModel,
        text_cache: torch.Tensor,
        history: torch.Tensor,
        types: torch.Tensor,
        context: torch.Tensor,
        target: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(user vectors, loss) over the targets and drawn negatives only: item vectors are
        made for the items the step reads (history, targets, negatives), not the catalog."""
        assert self.sampler is not None and self.config.negatives
        negatives = self.sampler.sample(self.config.negatives)
        engaged = history[history > 0] - 1
        needed = torch.unique(torch.cat([engaged, target, negatives]))  # sorted
        vectors = model.item_vectors(text_cache[needed], needed)
        position = torch.searchsorted(needed, (history - 1).clamp(min=0)) + 1
        user = model.user_vectors(vectors, torch.where(history > 0, position, 0), types, context)
        scale = model.scale()
        mine = vectors[torch.searchsorted(needed, target)]
        drawn = vectors[torch.searchsorted(needed, negatives)]
        loss = sampled_softmax_loss(
            scale * (user * mine).sum(-1),
            scale * user @ drawn.T,
            target,
            negatives,
            self.sampler.log_q,
        )
        return user, loss

    @torch.no_grad()
    def _pooled_text(self, model: RankingModel, batch: int = 256) -> torch.Tensor:
        """Every catalog item's pooled text vector under the current MiniLM weights."""
        if self.cache is None:
            return self.frozen_text
        hidden, mask = self.cache.hidden, self.cache.mask
        was_training = model.text.training
        model.text.eval()
        parts = [
            model.text(hidden[s : s + batch], mask[s : s + batch])
            for s in range(0, len(mask), batch)
        ]
        model.text.train(was_training)
        return torch.cat(parts)

    def _artifact(
        self,
        model: RankingModel,
        encoder: torch.nn.Module,
        tokenizer: object,
        data: TrainingData,
        shape: ModelShape,
        version: str,
    ) -> RankingArtifact:
        model.eval()
        with torch.no_grad():
            vectors = model.item_vectors(self._pooled_text(model))
        vectors = vectors.float().cpu().numpy()
        meta = {
            "version": version,
            "shape": shape.__dict__,
            "config": self.config.model_dump(),
            "data_hash": data.data_hash,
            "trained_on": data.source,
            "show_again": data.show_again.value,
            "max_tokens": self.config.max_tokens,
            "base_encoder": self.encoder_path.name,
        }
        return RankingArtifact(model, data.space, tokenizer, encoder, meta, vectors)


def no_model_scores(fit: pd.DataFrame, examples: list[Example], catalog: Catalog) -> np.ndarray:
    """The no-model default's scores [examples, catalog], fitted on ``fit``: what the
    stream would rank with, and the stream's term of a model's served blend."""
    from training.baselines import StreamDefault

    default = StreamDefault(catalog, catalog.ids, catalog.embeddings)
    default.fit(fit)
    return default.score(examples)


def stream_default_metrics(data: TrainingData, scores: np.ndarray) -> dict[str, float] | None:
    """The no-model default (what serves without a model) on the model's own test examples:
    a model that cannot beat it must not replace it by merely being newer
    (``training/registry.py``). None when it cannot be judged."""
    if not data.test:
        return None
    targets, hidden = target_rows(data.space, data.test, data.show_again)
    try:
        return ranking_report(scores.copy(), targets, hidden)
    except RankerFailed as exc:
        log.error("the no-model default failed on the test examples: %s", exc)
        return None


def evaluate_model(
    artifact: RankingArtifact,
    examples: list[Example],
    show_again: ShowAgain = ShowAgain.NONE,
    stream: np.ndarray | None = None,
    batch: int = 512,
) -> dict[str, float]:
    """Full-catalog ranking metrics of the model on evaluation examples: as served
    (blended with the no-model default's ``stream`` scores) when they are given, else the
    model alone."""
    scores, targets, hidden = model_scores(artifact, examples, show_again, batch)
    if stream is not None:
        scores = artifact.served(scores, stream)
    return ranking_report(scores, targets, hidden)


def model_scores(
    artifact: RankingArtifact,
    examples: list[Example],
    show_again: ShowAgain = ShowAgain.NONE,
    batch: int = 512,
) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    space = artifact.space
    parts = [
        artifact.score(space.encode([e.features for e in examples[s : s + batch]]))
        for s in range(0, len(examples), batch)
    ]
    scores = np.concatenate(parts) if parts else np.zeros((0, space.n_items), np.float32)
    return scores, *target_rows(space, examples, show_again)


def target_rows(
    space: FeatureSpace, examples: list[Example], show_again: ShowAgain = ShowAgain.NONE
) -> tuple[np.ndarray, list[list[int]]]:
    """Each example's target and the items the shop's rule hides, as catalog rows."""
    targets = np.array([space.item_index[e.item_id] for e in examples], dtype=np.int64)
    return targets, hidden_rows(examples, space.item_index, show_again)
