"""Hybrid search: vector and BM25 candidates, a sentence-level vector score, and their fusion.

1. Candidates: the ``HYBRID_DEPTH`` (50) nearest chunks by cosine (Chroma) and the 50 best by
   BM25 (:mod:`workbench.retrieval.bm25`).
2. First stage, reciprocal rank fusion (RRF; Cormack, Clarke & Büttcher, "Reciprocal Rank Fusion
   outperforms Condorcet and individual Rank Learning Methods", SIGIR 2009):
   ``rrf(d) = sum_m w_m / (k + rank_m(d))``, ranks 1-based, ``k = 60`` as in the paper.
3. Sentence score for the ``SENTENCE_RERANK`` (20) best candidates of that fusion: the largest
   cosine between the query and any sentence of the chunk, each sentence embedded after the
   chunk's context header ("max-sim" over sentences, in the spirit of ColBERT's late
   interaction; Khattab & Zaharia, SIGIR 2020). A whole chunk averages several sentences into
   one vector; a question usually paraphrases one sentence. Sentence vectors are computed on
   demand and kept in a process-wide LRU cache, so the ingest path is unchanged.
4. ``fusion="convex"`` (default): ``0.2 * cos + 0.4 * sentence + 0.4 * bm25``, each min-max
   normalised over the candidates (convex combination; Bruch, Gai & Ingber, "An Analysis of
   Fusion Functions for Hybrid Retrieval", ACM TOIS 2023, who find it beats RRF when scores are
   normalised). ``fusion="rrf"`` returns the first stage (plain RRF of vector and keyword lists,
   no sentence scores).

Measured on all 5,696 SQuAD dev questions of the 24 articles (``benchmarks/search.py``):
RRF k=60 of vector and BM25 gives recall@5 / MRR@10 0.955 / 0.849; the convex fusion with sentence
scores 0.974 / 0.907. The weights were chosen on the even-numbered questions and checked on the
odd ones (0.972/0.907 vs 0.976/0.907); neighbouring weights move MRR@10 by under 0.005.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

#: RRF constant k (Cormack et al. 2009 use 60).
RRF_K = 60
#: Candidates taken from each of the vector and the keyword lists.
HYBRID_DEPTH = 50
#: Candidates (best first-stage RRF) that get a sentence-level score.
SENTENCE_RERANK = 20
#: Convex weights of (chunk cosine, best-sentence cosine, BM25), min-max normalised.
CONVEX_WEIGHTS = (0.2, 0.4, 0.4)
FUSIONS = ("convex", "rrf")
#: Sentence vectors kept in memory (384 float32 each: ~1.5 kB).
SENTENCE_CACHE_SIZE = 100_000

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n\s*\n|\n(?=\s*[-*#>|]|\s*\d+[.)]\s)")


def rrf(rankings: Sequence[Sequence[str]], *, k: int = RRF_K, weights: Sequence[float] | None = None) -> list[tuple[str, float]]:
    """Reciprocal rank fusion of ranked id lists (best first, ranks 1-based).

    Returns ``[(id, fused score)]`` sorted by fused score descending; ties keep the order of
    first appearance (list 0 first). ``weights`` default to 1 per list. Raises ValueError when
    ``k`` < 0 or the number of weights differs from the number of lists."""
    if k < 0:
        raise ValueError(f"RRF k must be >= 0, got {k}")
    weights = list(weights) if weights is not None else [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    fused: dict[str, float] = {}
    for weight, ranking in zip(weights, rankings):
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + weight / (k + rank)
    return sorted(fused.items(), key=lambda pair: -pair[1])


def minmax(values: Sequence[float]) -> np.ndarray:
    """Min-max normalise to [0, 1]; all zeros when every value is equal."""
    x = np.asarray(values, dtype=np.float64)
    if not len(x):
        return x
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def convex(columns: Sequence[Sequence[float]], weights: Sequence[float]) -> np.ndarray:
    """``sum_j weights[j] * minmax(columns[j])``: one fused score per row (candidate)."""
    if len(columns) != len(weights):
        raise ValueError(f"{len(weights)} weights for {len(columns)} score columns")
    total = np.zeros(len(columns[0]) if columns else 0)
    for column, weight in zip(columns, weights):
        total += weight * minmax(column)
    return total


def sentences(text: str) -> list[str]:
    """The sentences of a chunk (split after . ! ? before a capital or digit, at blank lines and
    at list items), whitespace collapsed, empty ones dropped."""
    out = []
    for part in _SENTENCE_END.split(text or ""):
        part = " ".join(part.split())
        if part:
            out.append(part)
    return out


class _SentenceCache:
    """Process-wide LRU of sentence vectors keyed by (model, header + sentence)."""

    def __init__(self, size: int):
        self.size = size
        self.data: OrderedDict[str, np.ndarray] = OrderedDict()
        self.lock = threading.Lock()

    def vectors(self, embedder, texts: list[str]) -> np.ndarray:
        keys = [hashlib.sha1(f"{getattr(embedder, 'name', '')}\x00{t}".encode()).hexdigest() for t in texts]
        with self.lock:
            found = {k: self.data[k] for k in keys if k in self.data}
            for k in found:
                self.data.move_to_end(k)
        missing = list(dict.fromkeys(t for k, t in zip(keys, texts) if k not in found))
        if missing:
            fresh = embedder.encode(missing)
            by_text = dict(zip(missing, fresh))
            with self.lock:
                for k, t in zip(keys, texts):
                    if k not in found and t in by_text:
                        found[k] = by_text[t]
                        self.data[k] = by_text[t]
                while len(self.data) > self.size:
                    self.data.popitem(last=False)
        return np.stack([found[k] for k in keys])


_cache = _SentenceCache(SENTENCE_CACHE_SIZE)


def sentence_scores(embedder, query_vector: np.ndarray, chunks: Sequence[tuple[str, str, float]]) -> list[float]:
    """Best sentence cosine per chunk. ``chunks``: ``(header, text, chunk cosine)``; a chunk of
    one sentence keeps its chunk cosine (same text, same vector). ``query_vector``: (d,)."""
    texts: list[str] = []
    owners: list[int] = []
    scores = [float(c[2]) for c in chunks]
    for i, (header, text, _) in enumerate(chunks):
        parts = sentences(text)
        if len(parts) > 1:
            texts += [header + s for s in parts]
            owners += [i] * len(parts)
    if texts:
        sims = _cache.vectors(embedder, texts) @ np.asarray(query_vector, dtype=np.float32).reshape(-1)
        best: dict[int, float] = {}
        for owner, sim in zip(owners, sims):
            best[owner] = max(best.get(owner, -1.0), float(sim))
        for owner, sim in best.items():
            scores[owner] = sim
    return scores
