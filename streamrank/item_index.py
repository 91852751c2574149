"""The catalog items nearest to a vector, at any catalog size.

Serving looks items up by vector at every request: the model's own nearest items to the
user vector (two-tower retrieval), items whose text is close to the user's interest or to
a recent item, items matching a search query. Up to ``EXACT_MAX_ITEMS`` items a look-up is
one matrix product over every item: exact, and well under a millisecond. Past that, an
approximate index from faiss (``faiss-cpu``) answers in about a millisecond whatever the
size, from vectors kept 8-bit quantized (a quarter of float32's memory):

- ``hnsw``: a graph over the items (HNSW, 16 links a node, scalar-quantized vectors), for
  the model's narrow item space (64 or 128 wide), where recall matters most: these items
  are ranked as they come;
- ``ivf``: inverted lists over k-means cells with product-quantized codes (a byte per
  8 dimensions: 48 bytes for a 384-wide text embedding, an eighth of even 8-bit codes),
  for the text embeddings, which only bring candidates in. The codes only shortlist
  ``REFINE`` times the items asked for; those are scored from the vectors themselves
  (in serving, the catalog's 8-bit codes of them: ``streamrank/row_codes.py``).

Vectors are unit length and compared by inner product (cosine). An index is built once
(``streamrank prepare`` for the text, the model's first load for its items) and saved
beside what it indexes; ``bench/catalog_scale.py`` measures build time, recall, latency and
memory at a million items.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from streamrank.row_codes import RowCodes

log = logging.getLogger(__name__)

EXACT_MAX_ITEMS = 50_000
HNSW_LINKS = 16
HNSW_BUILD_DEPTH = 64  # efConstruction
HNSW_SEARCH_DEPTH = 256  # efSearch, raised to k when k is larger
IVF_PROBES = 16
REFINE = 3

Kind = Literal["exact", "hnsw", "ivf"]


class ItemIndex:
    """Nearest rows of a vector matrix by inner product: exact below ``EXACT_MAX_ITEMS``
    rows, else through a faiss index of ``kind``."""

    def __init__(self, vectors: np.ndarray, index: object | None = None, kind: Kind = "exact"):
        self.vectors = vectors
        self.index = index
        self.kind: Kind = kind if index is not None else "exact"

    def __len__(self) -> int:
        return len(self.vectors)

    @classmethod
    def build(cls, vectors: np.ndarray, kind: Kind = "hnsw") -> ItemIndex:
        """An index over ``vectors`` [items, dim]: exact below ``EXACT_MAX_ITEMS`` rows,
        whatever ``kind`` says (nothing to build)."""
        if len(vectors) <= EXACT_MAX_ITEMS or kind == "exact":
            return cls(vectors)
        import faiss

        started = time.monotonic()
        data = np.ascontiguousarray(vectors, dtype=np.float32)
        dim = data.shape[1]
        sample = data[np.random.default_rng(0).choice(len(data), min(len(data), 200_000), False)]
        if kind == "hnsw":
            index = faiss.IndexHNSWSQ(
                dim, faiss.ScalarQuantizer.QT_8bit, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT
            )
            index.hnsw.efConstruction = HNSW_BUILD_DEPTH
        else:
            cells = int(4 * np.sqrt(len(data)))
            codes = max(m for m in range(1, dim // 8 + 1) if dim % m == 0)
            index = faiss.IndexIVFPQ(
                faiss.IndexFlatIP(dim), dim, cells, codes, 8, faiss.METRIC_INNER_PRODUCT
            )
            index.nprobe = IVF_PROBES
        index.train(sample)
        for start in range(0, len(data), 100_000):  # bounded extra memory while adding
            index.add(data[start : start + 100_000])
        log.info(
            "%s index over %d items built in %.0f s", kind, len(data), time.monotonic() - started
        )
        return cls(vectors, index, kind)

    def search(self, queries: np.ndarray, k: int) -> list[np.ndarray]:
        """For each query (a vector, or rows of them), the rows of its ``k`` nearest items
        (unordered when exact; fewer when an approximate index finds fewer)."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        k = min(k, len(self.vectors))
        if self.index is None:
            scores = queries @ self.vectors.T
            return list(np.argpartition(-scores, k - 1, axis=1)[:, :k])
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(HNSW_SEARCH_DEPTH, k)  # type: ignore[attr-defined]
            _, found = self.index.search(queries, k)  # type: ignore[attr-defined]
            return [rows[rows >= 0] for rows in found]
        self.index.nprobe = IVF_PROBES  # type: ignore[attr-defined]
        _, shortlists = self.index.search(queries, REFINE * k)  # type: ignore[attr-defined]
        out = []
        for query, shortlist in zip(queries, shortlists, strict=True):
            rows = np.sort(shortlist[shortlist >= 0])  # in file order: fewer pages read
            exact = np.asarray(self.vectors[rows], dtype=np.float32) @ query
            out.append(rows[np.argsort(-exact, kind="stable")[:k]])
        return out

    def refined_from(self, vectors: np.ndarray | RowCodes) -> ItemIndex:
        """This index, its shortlists scored from ``vectors`` (the same rows, kept
        another way: the catalog's 8-bit codes rather than its mapped file)."""
        if self.index is None:
            return self
        return ItemIndex(vectors, self.index, self.kind)  # type: ignore[arg-type]

    def save(self, path: Path) -> None:
        """The faiss index to ``path`` (nothing for an exact index: the vectors are it)."""
        if self.index is not None:
            import faiss

            faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, vectors: np.ndarray, path: Path, kind: Kind) -> ItemIndex:
        """The index saved at ``path`` over ``vectors``, or built (and saved) when there is
        none or it does not match them."""
        if len(vectors) <= EXACT_MAX_ITEMS:
            return cls(vectors)
        if path.exists():
            import faiss

            index = faiss.read_index(str(path))
            if index.ntotal == len(vectors) and index.d == vectors.shape[1]:
                return cls(vectors, index, kind)
            log.warning("index %s is over other items: building it again", path)
        built = cls.build(vectors, kind)
        try:
            built.save(path)
        except (OSError, RuntimeError) as exc:  # a read-only model store: build it each time
            log.warning("index not saved to %s (%s): it is built again at every load", path, exc)
        return built
