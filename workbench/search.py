"""Vector search over a collection: the one function behind the Search page, the CLI, chat
retrieval and document QA."""

from __future__ import annotations

from .config import Settings
from .documents import Hit
from .embeddings import Embedder
from .store import Store, hit_from_record

#: Extra candidates fetched so that uncommitted chunks (an ingest in progress) can be dropped
#: without returning fewer than top_k results.
_MARGIN = 10


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
) -> list[Hit]:
    """Return up to ``top_k`` (default TOP_K) committed chunks most similar to ``query``,
    best first. ``score`` is the cosine similarity in [-1, 1] (Chroma cosine distance
    ``d`` gives ``1 - d``). ``file_name``/``document_id`` restrict the search to one document;
    ``min_score`` drops weaker hits. Raises StoreError when the collection does not exist.
    """
    name = collection or settings.collection_name
    k = top_k or settings.top_k
    chroma = store.get_collection(name)
    where = None
    if document_id:
        where = {"document_id": document_id}
    elif file_name:
        where = {"file_name": file_name}
    if not query.strip() or chroma.count() == 0:
        return []
    vector = embedder.encode([query])
    result = chroma.query(
        query_embeddings=vector,
        n_results=min(k + _MARGIN, chroma.count()),
        where=where,
        include=["documents", "metadatas", "distances"],
    )
    hits: list[Hit] = []
    for chunk_id, text, meta, distance in zip(
        result["ids"][0], result["documents"][0], result["metadatas"][0], result["distances"][0]
    ):
        if not meta.get("complete"):
            continue
        score = 1.0 - float(distance)
        if min_score is not None and score < min_score:
            continue
        hits.append(hit_from_record(chunk_id, text, meta, score, rank=len(hits) + 1, vector_score=score))
        if len(hits) == k:
            break
    return hits
