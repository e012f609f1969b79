"""Hybrid search: vector and BM25 candidates, sentence-level scores, and their fusion.

1. Candidates: the ``HYBRID_DEPTH`` (50) nearest chunks by cosine (Chroma) and the 50 best by
   BM25 (:mod:`workbench.retrieval.bm25`).
2. First stage, reciprocal rank fusion (RRF; Cormack, Clarke & Büttcher, "Reciprocal Rank Fusion
   outperforms Condorcet and individual Rank Learning Methods", SIGIR 2009):
   ``rrf(d) = sum_m w_m / (k + rank_m(d))``, ranks 1-based, ``k = 60`` as in the paper.
3. Best-sentence cosine for the ``SENTENCE_RERANK`` (20) best candidates of that fusion: the
   largest cosine between the query and a sentence vector of the chunk ("max-sim" over
   sentences, in the spirit of ColBERT's late interaction; Khattab & Zaharia, SIGIR 2020): a
   whole chunk averages several sentences into one vector; a question usually paraphrases one
   sentence. A sentence vector is the mean of the chunk's output token vectors inside the
   sentence, from the encoder pass that embedded the chunk at ingest, stored beside the chunk
   (:mod:`workbench.store.sentences`); one missing there is computed now the same way (one
   encoder pass over the chunk), stored, and kept in a process-wide LRU cache.
4. Best-sentence keyword score for every candidate: the largest sum of BM25 idf of the distinct
   query words one sentence of the chunk contains (the BM25 index keeps each sentence's words).
5. ``fusion="convex"`` (default): ``0.15 * cos + 0.3 * sentence cos + 0.2 * bm25 + 0.35 *
   sentence keywords``, each min-max normalised over the candidates (convex combination; Bruch,
   Gai & Ingber, "An Analysis of Fusion Functions for Hybrid Retrieval", ACM TOIS 2023, who
   find it beats RRF when scores are normalised). ``fusion="rrf"`` returns the first stage
   (plain RRF of the vector and keyword lists).

Measured on all 5,696 SQuAD dev questions of the 24 articles (``benchmarks/search.py``): RRF k=60
of vector and BM25 gives recall@5 / MRR@10 0.951 / 0.843. The former rescoring (each sentence
embedded on its own at query time, weights 0.2/0.4/0.4 of cos, sentence cos, bm25) gave 0.974 /
0.906 and cost ~60 sentence encodes per search; pooled sentence vectors in that same fusion give
0.972 / 0.895 (the pooled vector sees the whole chunk); adding the best-sentence keyword score
recovers it: 0.975 / 0.912 (nDCG@10 0.930 vs 0.926). The weights were chosen on the
even-numbered questions over a 0.05 grid and checked on the odd ones (0.977 / 0.912 vs
0.973 / 0.912); neighbouring weights move MRR@10 by under 0.002.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from workbench.store.sentences import fingerprint, sentence_spans, sentences

__all__ = ["CONVEX_WEIGHTS", "FUSIONS", "HYBRID_DEPTH", "RRF_K", "SENTENCE_RERANK", "convex", "minmax", "rrf", "sentence_scores", "sentences"]

#: RRF constant k (Cormack et al. 2009 use 60).
RRF_K = 60
#: Candidates taken from each of the vector and the keyword lists.
HYBRID_DEPTH = 50
#: Candidates (best first-stage RRF) that get a sentence-level score.
SENTENCE_RERANK = 20
#: Convex weights of (chunk cosine, best-sentence cosine, BM25, best-sentence keyword score),
#: each min-max normalised.
CONVEX_WEIGHTS = (0.15, 0.3, 0.2, 0.35)
FUSIONS = ("convex", "rrf")
#: Chunks whose sentence vectors computed at query time are kept in memory (~6 sentences of
#: 384 float32 each: ~10 kB a chunk).
SENTENCE_CACHE_SIZE = 10_000


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


class _SentenceCache:
    """Process-wide LRU of the sentence vectors computed at query time, by fingerprint."""

    def __init__(self, size: int):
        self.size = size
        self.data: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        with self.lock:
            found = {k: self.data[k] for k in keys if k in self.data}
            for k in found:
                self.data.move_to_end(k)
        return found

    def put(self, items: dict[bytes, np.ndarray]) -> None:
        with self.lock:
            self.data.update(items)
            while len(self.data) > self.size:
                self.data.popitem(last=False)


_cache = _SentenceCache(SENTENCE_CACHE_SIZE)


def sentence_scores(embedder, store, collection, query_vector: np.ndarray, chunks: Sequence[tuple[str, str, str, float]]) -> list[float]:
    """Best sentence cosine per chunk. ``chunks``: ``(chunk id, header, text, chunk cosine)``;
    ``query_vector``: (d,) L2-normalised. A chunk of one sentence keeps its chunk cosine (the
    vector of its only sentence would be close to the chunk's). Sentence vectors come from the
    store's sidecar when it holds them for this very header, text and model; the others are
    computed (:meth:`Embedder.encode_with_spans` over ``header + text``, as ingest does, rounded
    to float16 as stored), then stored and cached, so both paths give the same scores."""
    scores = [float(c[3]) for c in chunks]
    spans = {i: sentence_spans(text) for i, (_, _, text, _) in enumerate(chunks)}
    several = [i for i, found in spans.items() if len(found) > 1]
    if not several:
        return scores
    keys = {i: fingerprint(embedder.name, chunks[i][1], chunks[i][2]) for i in several}
    vectors: dict[int, np.ndarray] = {}
    cached = _cache.get(list(keys.values()))
    stored = store.sentences.get(str(collection.id), [(chunks[i][0], keys[i]) for i in several if keys[i] not in cached], embedder.dimension)
    missing = []
    for i in several:
        found = cached.get(keys[i])
        found = stored.get(chunks[i][0]) if found is None else found
        if found is None or len(found) != len(spans[i]):
            missing.append(i)
        else:
            vectors[i] = found
    if missing:
        texts = [chunks[i][1] + chunks[i][2] for i in missing]
        shifted = [[(len(chunks[i][1]) + a, len(chunks[i][1]) + b) for a, b in spans[i]] for i in missing]
        _, computed = embedder.encode_with_spans(texts, shifted)
        for i, found in zip(missing, computed):
            vectors[i] = found.astype(np.float16).astype(np.float32)
        store.sentences.put(str(collection.id), [(chunks[i][0], keys[i], vectors[i]) for i in missing])
    _cache.put({keys[i]: vectors[i] for i in vectors if keys[i] not in cached})
    query = np.asarray(query_vector, dtype=np.float32).reshape(-1)
    for i, found in vectors.items():
        scores[i] = float((found @ query).max())
    return scores
