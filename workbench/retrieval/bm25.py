"""Keyword search: a BM25 index per collection (bm25s), kept in step with the Chroma store.

BM25 is Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond" (2009);
bm25s implements its Lucene variant with k1=1.5, b=0.75 (Lù, "BM25S", 2024), the defaults used
here. Tokens: lower-cased words of 2+ characters, English stop words removed (bm25s defaults),
Snowball-stemmed (PyStemmer).
Each chunk is indexed as its context header (document title and section, see
:func:`workbench.ingest.chunking.context_header`) followed by its text: the same string that is embedded.

**Staying in step: a generation derived from the store, no hooks.** An index is a pure function of
the collection's *committed* chunks, and the committed set is named exactly by the ids of the
committed heads (:meth:`workbench.store.Store.generation`): ingest, replace, delete, prune and
repair all change that set, and nothing else does. The generation hashes the collection's
Chroma id too, so a deleted and re-created collection never matches an old index. Every keyword or
hybrid search asks the store for the head ids (one metadata query, ids only); when the generation
differs from the index's, the index is rebuilt from the committed chunks and saved. We chose this
over a counter bumped in collection metadata because it needs no hook in ingest or delete, cannot
be forgotten by a future writer, and is right across processes and for a shared Chroma server
(each process/machine rebuilds its local copy when it sees another generation). Its costs: one
ids-only query per search (measured in ``benchmarks/search.py``) and a full rebuild after each
change (bm25s indexes 100k chunks in seconds; the rebuild runs on the next keyword search).
``Store.delete_collection`` removes the folder too, but only to free the disk.

**Where it lives.** ``<BM25_INDEX_PATH>/<collection>/<generation[:16]>/`` with BM25_INDEX_PATH
defaulting to ``<CHROMA_PERSIST_PATH>/bm25`` (embedded store) and a per-server subfolder
``<host>_<port>`` in server mode. A build is written to a temporary folder and renamed into
place in one step, so readers never see half an index; older generations are then removed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.config import Settings
from workbench.documents import Hit
from workbench.store import Store
from workbench.store.records import hit_from_record

log = logging.getLogger(__name__)

#: bm25s defaults (Lucene BM25): term-frequency saturation k1 and length normalisation b.
BM25_K1 = 1.5
BM25_B = 0.75
_FORMAT = 1


def index_root(settings: Settings) -> Path:
    """Folder holding every collection's BM25 index for this store (see module docstring)."""
    root = settings.bm25_index_path or (Path(settings.chroma_persist_path) / "bm25")
    if settings.chroma_host:
        root = Path(root) / f"{settings.chroma_host}_{settings.chroma_port}"
    return Path(root)


_local = threading.local()


def _stemmer():
    """This thread's English Snowball stemmer (PyStemmer; its objects are not thread-safe)."""
    if not hasattr(_local, "stemmer"):
        import Stemmer

        _local.stemmer = Stemmer.Stemmer("english")
    return _local.stemmer


def tokenize(texts: list[str]) -> list[list[str]]:
    """Words of each text as BM25 sees them: lower-cased, ``\\b\\w\\w+\\b``, English stop
    words removed (bm25s defaults), then Snowball-stemmed (English). Stemming raised BM25
    recall@5 on the SQuAD dev articles from 0.920 to 0.941 (paragraph chunks; see
    ``benchmarks/search.py``)."""
    import bm25s

    return bm25s.tokenize(list(texts), stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False)


def indexed_text(text: str, meta: dict) -> str:
    """The string indexed for one stored chunk: its context header (metadata ``header``,
    written at ingest) followed by its text; just the text for chunks stored without one."""
    return f"{meta.get('header') or ''}{text or ''}"


@dataclass
class KeywordIndex:
    """A loaded BM25 index over the committed chunks of one collection.

    ``ids``/``document_ids``/``file_names``: per indexed chunk, in index order (length n).
    ``retriever`` is None when the collection has no committed chunk.
    """

    collection: str
    generation: str
    ids: list[str]
    document_ids: np.ndarray
    file_names: np.ndarray
    retriever: object | None
    _position: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of ``query`` against every indexed chunk: (n,) float32, 0 where no query
        word occurs (and for a query of stop words only)."""
        if self.retriever is None:
            return np.zeros(0, dtype=np.float32)
        words = tokenize([query])[0]
        if not words:
            return np.zeros(len(self.ids), dtype=np.float32)
        return np.asarray(self.retriever.get_scores(words), dtype=np.float32)

    def mask(self, *, file_name: str | None = None, document_id: str | None = None) -> np.ndarray | None:
        """Boolean (n,) array of the chunks a filter keeps, or None for no filter."""
        if document_id:
            return self.document_ids == document_id
        if file_name:
            return self.file_names == file_name
        return None

    def top(self, query: str, k: int, *, mask: np.ndarray | None = None) -> list[tuple[str, float]]:
        """Up to ``k`` (chunk id, BM25 score) pairs with a score > 0, best first."""
        scores = self.scores(query)
        if mask is not None and len(scores):
            scores = np.where(mask, scores, 0.0)
        positive = np.flatnonzero(scores > 0)
        if not len(positive):
            return []
        if len(positive) > k:
            positive = positive[np.argpartition(-scores[positive], k - 1)[:k]]
        order = positive[np.argsort(-scores[positive], kind="stable")]
        return [(self.ids[i], float(scores[i])) for i in order]

    def scores_for(self, query: str, chunk_ids: list[str]) -> dict[str, float]:
        """BM25 score of ``query`` for the given chunk ids (0.0 for ids not in the index)."""
        scores = self.scores(query)
        if self._position is None:
            self._position = {cid: i for i, cid in enumerate(self.ids)}
        position = self._position
        return {cid: float(scores[position[cid]]) if cid in position else 0.0 for cid in chunk_ids}


_cache: dict[tuple[str, str], KeywordIndex] = {}
_lock = threading.Lock()


def get_index(settings: Settings, store: Store, collection: str) -> KeywordIndex:
    """The collection's BM25 index at the store's current generation: from memory, else from
    disk, else rebuilt from the committed chunks and saved. Raises StoreError when the
    collection does not exist."""
    chroma = store.get_collection(collection)
    generation = store.generation(chroma)
    key = (str(index_root(settings)), collection)
    with _lock:
        cached = _cache.get(key)
        if cached is not None and cached.generation == generation:
            return cached
        folder = index_root(settings) / collection
        index = _load(folder / generation[:16], collection, generation)
        if index is None:
            index = _build(store, chroma, collection, generation)
            _save(index, folder)
        _cache[key] = index
        return index


def drop_index(settings: Settings, collection: str) -> None:
    """Forget a collection's index (memory and disk); called when the collection is deleted."""
    with _lock:
        _cache.pop((str(index_root(settings)), collection), None)
        shutil.rmtree(index_root(settings) / collection, ignore_errors=True)


def keyword_search(
    query: str,
    *,
    settings: Settings,
    store: Store,
    collection: str | None = None,
    top_k: int | None = None,
    file_name: str | None = None,
    document_id: str | None = None,
) -> list[Hit]:
    """Up to ``top_k`` committed chunks ranked by BM25 score (> 0), best first.
    ``score`` = ``keyword_score`` = the BM25 score (unbounded, >= 0). Raises StoreError when
    the collection does not exist."""
    name = collection or settings.collection_name
    k = top_k or settings.top_k
    if not query.strip():
        return []
    index = get_index(settings, store, name)
    ranked = index.top(query, k, mask=index.mask(file_name=file_name, document_id=document_id))
    records = store.fetch(store.get_collection(name), [cid for cid, _ in ranked])
    hits = []
    for cid, score in ranked:
        if cid in records:
            text, meta = records[cid][:2]
            hits.append(hit_from_record(cid, text, meta, score, rank=len(hits) + 1, keyword_score=score, mode="keyword"))
    return hits


# --- building, saving, loading ----------------------------------------------------------------
def _build(store: Store, chroma, collection: str, generation: str) -> KeywordIndex:
    import bm25s

    ids: list[str] = []
    texts: list[str] = []
    metas: list[dict] = []
    for cid, text, meta in store.committed_chunks(chroma):
        ids.append(cid)
        texts.append(indexed_text(text, meta))
        metas.append(meta)
    retriever = None
    if ids:
        retriever = bm25s.BM25(k1=BM25_K1, b=BM25_B)
        retriever.index(tokenize(texts), show_progress=False)
    log.info("BM25 index for %s rebuilt: %d chunks", collection, len(ids))
    return KeywordIndex(
        collection=collection,
        generation=generation,
        ids=ids,
        document_ids=np.array([str(m.get("document_id", "")) for m in metas], dtype=object),
        file_names=np.array([str(m.get("file_name", "")) for m in metas], dtype=object),
        retriever=retriever,
    )


def _save(index: KeywordIndex, folder: Path) -> None:
    """Write ``index`` to ``folder/<generation[:16]>`` atomically; remove older generations.
    A failure to write is logged, not raised: the index in memory still answers."""
    target = folder / index.generation[:16]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=folder))
        if index.retriever is not None:
            index.retriever.save(str(tmp), show_progress=False)
        meta = {
            "format": _FORMAT,
            "generation": index.generation,
            "collection": index.collection,
            "ids": index.ids,
            "document_ids": index.document_ids.tolist(),
            "file_names": index.file_names.tolist(),
            "k1": BM25_K1,
            "b": BM25_B,
        }
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        _fsync_tree(tmp)  # the rename below must never publish files still in the page cache
        try:
            os.replace(tmp, target)
            _fsync_dir(folder)
        except OSError:  # another process saved this generation first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        for old in folder.iterdir():
            if old.name != target.name and (not old.name.startswith(".build-")):
                shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        log.warning("cannot save the BM25 index in %s (%s); it is kept in memory only", folder, exc)


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load(folder: Path, collection: str, generation: str) -> KeywordIndex | None:
    meta_file = folder / "meta.json"
    if not meta_file.exists():
        return None
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("generation") != generation or meta.get("format") != _FORMAT:
            return None
        retriever = None
        if meta["ids"]:
            import bm25s

            retriever = bm25s.BM25.load(str(folder), show_progress=False)
            indexed = int(retriever.scores.get("num_docs", len(meta["ids"])))
            if indexed != len(meta["ids"]):
                raise ValueError(f"the index holds {indexed} chunks, its ids {len(meta['ids'])}")
        return KeywordIndex(
            collection=collection,
            generation=generation,
            ids=list(meta["ids"]),
            document_ids=np.array(meta["document_ids"], dtype=object),
            file_names=np.array(meta["file_names"], dtype=object),
            retriever=retriever,
        )
    except Exception as exc:  # any damage (truncated npz, empty json, power loss): rebuild from the store
        log.warning("BM25 index in %s is unreadable (%s: %s); rebuilding", folder, type(exc).__name__, exc)
        return None



def collection_generation(store: Store, collection: str) -> str:
    """The generation (see module docstring) of a collection's committed chunks: changes on every
    ingest, replace or delete. Raises StoreError when the collection does not exist."""
    return store.generation(store.get_collection(collection))
