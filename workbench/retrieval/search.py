"""Search over a collection: the one function behind the Search page, the CLI, chat retrieval,
document QA and the evaluation.

Three modes:

- ``vector``: cosine similarity of the embeddings (Chroma, cosine space).
- ``keyword``: BM25 over the same chunks (:mod:`workbench.retrieval.bm25`).
- ``hybrid``: both, fused (:mod:`workbench.retrieval.fusion`): reciprocal rank fusion (Cormack, Clarke &
  Büttcher 2009, k=60) as the first stage, then a convex combination of chunk cosine,
  best-sentence cosine, BM25 and best-sentence keyword score (default), or plain RRF with
  ``fusion="rrf"``.

A hybrid search costs the query embedding, one Chroma query (nearest chunks with text and
metadata), one metadata query (which versions are current), one Chroma get (text and vectors of
keyword-only candidates), one collection lookup (the BM25 index's revision), one BM25 scoring and
one SQLite read of stored sentence vectors: no encoder pass beyond the query's while the
sentence vectors are stored (``benchmarks/search.py``).
"""

from __future__ import annotations

import numpy as np

from workbench.config import SEARCH_MODES, Settings
from workbench.errors import InvalidRequestError
from workbench.documents import Hit
from workbench.models.embeddings import Embedder
from workbench.retrieval.fusion import CONVEX_WEIGHTS, FUSIONS, HYBRID_DEPTH, RRF_K, SENTENCE_RERANK, convex, rrf, sentence_scores
from workbench.store import Store
from workbench.store.records import hit_from_record

#: Extra candidates fetched so that uncommitted chunks (an ingest in progress) can be dropped
#: without returning fewer than top_k results.
_MARGIN = 10
MODES = SEARCH_MODES
__all__ = ["MODES", "FUSIONS", "rrf", "search"]


def search(
    query: str,
    *,
    settings: Settings,
    store: Store,
    embedder: Embedder,
    collection: str | None = None,
    top_k: int | None = None,
    file_name: str | None = None,
    document_id: str | None = None,
    min_score: float | None = None,
    mode: str = "vector",
    fusion: str = "convex",
) -> list[Hit]:
    """Return up to ``top_k`` (default TOP_K) committed chunks for ``query``, best first,
    ``rank`` 1-based.

    ``mode="vector"`` (default): ``score`` = ``vector_score`` = cosine similarity in [-1, 1]
    (Chroma cosine distance ``d`` gives ``1 - d``). ``mode="keyword"``: ``score`` =
    ``keyword_score`` = BM25 score (>= 0, unbounded). ``mode="hybrid"``: ``score`` = the fused
    score (``fusion="convex"``: in [0, 1]; ``fusion="rrf"``: RRF score), and every hit carries
    both ``vector_score`` (chunk cosine) and ``keyword_score`` (BM25, 0 when no query word
    occurs in it).
    ``file_name``/``document_id`` restrict the search to one document; ``min_score`` drops hits
    whose cosine similarity is below it (vector and hybrid modes). Raises StoreError when the
    collection does not exist, InvalidRequestError (a ValueError) for an unknown mode or fusion.
    """
    if mode not in MODES:
        raise InvalidRequestError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
    name = collection or settings.collection_name
    k = top_k or settings.top_k
    if mode == "keyword":
        from workbench.retrieval.bm25 import keyword_search

        return keyword_search(query, settings=settings, store=store, collection=name, top_k=k, file_name=file_name, document_id=document_id)
    where = None
    if document_id:
        where = {"document_id": document_id}
    elif file_name:
        where = {"file_name": file_name}
    if not query.strip():
        store.get_collection(name)  # still raise StoreError for a missing collection
        return []
    vector = embedder.encode([query])
    if mode == "hybrid":
        if fusion not in FUSIONS:
            raise InvalidRequestError(f"unknown fusion {fusion!r}; use one of {', '.join(FUSIONS)}")
        return _hybrid(query, vector, settings, store, embedder, name, k, file_name, document_id, where, min_score, fusion)
    chroma = store.get_collection(name)
    hits: list[Hit] = []
    n = k
    while True:
        candidates = _vector_candidates(store, chroma, vector, n, where)
        if candidates.committed >= k or candidates.returned < n:
            break
        n *= 4  # uncommitted chunks (an ingest in progress) took places: ask for more
    for chunk_id, text, meta, score in candidates:
        if min_score is not None and score < min_score:
            continue
        hits.append(hit_from_record(chunk_id, text, meta, score, rank=len(hits) + 1, vector_score=score))
        if len(hits) == k:
            break
    return hits


class _Candidates(list):
    """``[(id, text, metadata, cosine)]`` plus how many records came back and were committed."""

    returned = 0
    committed = 0


def _vector_candidates(store: Store, chroma, vector: np.ndarray, n: int, where: dict | None) -> _Candidates:
    """Committed nearest chunks of the raw collection ``chroma``: ``[(id, text, metadata,
    cosine)]`` best first, from one ``query`` for ``n`` results (at most n)."""
    result = chroma.query(query_embeddings=vector, n_results=n, where=where, include=["documents", "metadatas", "distances"])
    out = _Candidates()
    out.returned = len(result["ids"][0])
    rows = [
        (chunk_id, text, meta or {}, 1.0 - float(distance))
        for chunk_id, text, meta, distance in zip(
            result["ids"][0], result["documents"][0], result["metadatas"][0], result["distances"][0]
        )
    ]
    out.extend(store.current_only(chroma, rows))
    out.committed = len(out)
    return out


def _hybrid(query, vector, settings, store, embedder, name, k, file_name, document_id, where, min_score, fusion) -> list[Hit]:
    from workbench.retrieval.bm25 import get_index

    chroma = store.get_collection(name)  # just fetched: its metadata carries the current revision
    index = get_index(settings, store, name, chroma=chroma)
    depth = max(HYBRID_DEPTH, k)
    dense = _vector_candidates(store, chroma, vector, depth + _MARGIN, where)[:depth]
    bm25 = index.scores(query)
    sparse = index.top(query, depth, mask=index.mask(file_name=file_name, document_id=document_id), scores=bm25)
    first = rrf([[c[0] for c in dense], [cid for cid, _ in sparse]], k=RRF_K)
    records = {cid: (text, meta, score) for cid, text, meta, score in dense}
    missing = [cid for cid, _ in first if cid not in records]
    for cid, (text, meta, emb) in store.fetch(chroma, missing, embeddings=True).items():
        records[cid] = (text, meta, float(np.dot(vector[0], emb)))
    first = [(cid, score) for cid, score in first if cid in records]  # drop ids deleted meanwhile
    ids = [cid for cid, _ in first]
    keyword = index.scores_for(query, ids, scores=bm25)
    if fusion == "rrf" or not first:
        ranked = first
    else:
        cosine = [records[cid][2] for cid in ids]
        top = ids[:SENTENCE_RERANK]
        best = sentence_scores(embedder, store, chroma, vector[0], [(c, records[c][1].get("header") or "", records[c][0], records[c][2]) for c in top])
        sentence = best + [min(best)] * (len(ids) - len(top))
        words = index.sentence_keyword_scores(index.word_ids(query), ids)
        fused = convex([cosine, sentence, [keyword[c] for c in ids], words], CONVEX_WEIGHTS)
        ranked = sorted(zip(ids, fused.tolist()), key=lambda pair: -pair[1])
    hits: list[Hit] = []
    for cid, fused_score in ranked:
        text, meta, cosine = records[cid]
        if min_score is not None and cosine < min_score:
            continue
        hits.append(
            hit_from_record(
                cid, text, meta, fused_score, rank=len(hits) + 1, vector_score=cosine,
                keyword_score=keyword.get(cid, 0.0), mode="hybrid",
            )
        )
        if len(hits) == k:
            break
    return hits
