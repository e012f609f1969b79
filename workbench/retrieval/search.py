"""Search over a collection: the one function behind the Search page, the CLI, chat retrieval,
document QA and the evaluation.

Three modes:

- ``vector``: cosine similarity of the embeddings (Chroma, cosine space).
- ``keyword``: BM25 over the same chunks (:mod:`workbench.retrieval.bm25`).
- ``hybrid``: both, fused (:mod:`workbench.retrieval.fusion`): reciprocal rank fusion (Cormack, Clarke &
  Büttcher 2009, k=60) as the first stage, then a convex combination of chunk cosine,
  best-sentence cosine and BM25 (default), or plain RRF with ``fusion="rrf"``.
"""

from __future__ import annotations

import threading
import time
import weakref

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
        chroma = collection_handle(store, name)
        return _hybrid(query, vector, settings, store, embedder, chroma, name, k, file_name, document_id, where, min_score, fusion)
    hits: list[Hit] = []
    n = k
    while True:
        candidates = _vector_candidates(store, name, vector, n, where)
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


#: Seconds a collection handle is reused before it is looked up again, so a collection renamed
#: or deleted by another process is noticed within this time (a deleted one at once: its query fails).
HANDLE_TTL = 5.0
_handles: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_handles_lock = threading.Lock()


def collection_handle(store: Store, name: str, *, refresh: bool = False):
    """The raw Chroma collection ``name``, looked up at most every HANDLE_TTL seconds per store
    (a lookup costs about as much as a query). ``refresh`` looks it up now. Raises StoreError
    when it does not exist."""
    now = time.monotonic()
    with _handles_lock:
        handles = _handles.setdefault(store, {})
        cached = handles.get(name)
        if refresh or cached is None or now - cached[1] > HANDLE_TTL:
            cached = handles[name] = (store.get_collection(name), now)
        return cached[0]


class _Candidates(list):
    """``[(id, text, metadata, cosine)]`` plus how many records came back and were committed."""

    returned = 0
    committed = 0


def _vector_candidates(store: Store, name: str, vector: np.ndarray, n: int, where: dict | None) -> _Candidates:
    """Committed nearest chunks of collection ``name``: ``[(id, text, metadata, cosine)]`` best
    first, from one ``query`` for ``n`` results (at most n). A cached collection handle that has
    gone stale (the collection was deleted or re-created) is fetched again once."""
    for attempt in (0, 1):
        chroma = collection_handle(store, name, refresh=attempt == 1)
        try:
            result = chroma.query(query_embeddings=vector, n_results=n, where=where, include=["documents", "metadatas", "distances"])
            break
        except Exception:
            if attempt:
                raise
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


def _hybrid(query, vector, settings, store, embedder, chroma, name, k, file_name, document_id, where, min_score, fusion) -> list[Hit]:
    from workbench.retrieval.bm25 import get_index

    depth = max(HYBRID_DEPTH, k)
    dense = _vector_candidates(store, name, vector, depth + _MARGIN, where)[:depth]
    index = get_index(settings, store, name)
    sparse = index.top(query, depth, mask=index.mask(file_name=file_name, document_id=document_id))
    first = rrf([[c[0] for c in dense], [cid for cid, _ in sparse]], k=RRF_K)
    records = {cid: (text, meta, score) for cid, text, meta, score in dense}
    missing = [cid for cid, _ in first if cid not in records]
    for cid, (text, meta, emb) in store.fetch(chroma, missing, embeddings=True).items():
        records[cid] = (text, meta, float(np.dot(vector[0], emb)))
    first = [(cid, score) for cid, score in first if cid in records]  # drop ids deleted meanwhile
    keyword = dict(sparse)
    unknown = [cid for cid, _ in first if cid not in keyword]
    keyword.update(index.scores_for(query, unknown) if unknown else {})
    if fusion == "rrf" or not first:
        ranked = first
    else:
        ids = [cid for cid, _ in first]
        cosine = [records[cid][2] for cid in ids]
        top = ids[:SENTENCE_RERANK]
        best = sentence_scores(embedder, vector[0], [(records[c][1].get("header") or "", records[c][0], records[c][2]) for c in top])
        sentence = best + [min(best)] * (len(ids) - len(top))
        fused = convex([cosine, sentence, [keyword[c] for c in ids]], CONVEX_WEIGHTS)
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
