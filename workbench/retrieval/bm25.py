"""Keyword search: a BM25 index per collection (bm25s), kept in step with the Chroma store.

BM25 is Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond" (2009);
bm25s implements its Lucene variant with k1=1.5, b=0.75 (Lù, "BM25S", 2024), the defaults used
here. Tokens: lower-cased words of 2+ characters, English stop words removed (bm25s defaults),
Snowball-stemmed (PyStemmer).
Each chunk is indexed as its context header (document title and section, see
:func:`workbench.ingest.chunking.context_header`) followed by its text: the same string that is embedded.

**Staying in step: the store's revision.** An index is a pure function of the collection's
*committed* chunks. Every keyword or hybrid search reads the collection's
:meth:`workbench.store.Store.revision` (a token in the collection's metadata that the store
renews on every commit and delete; it includes the collection's Chroma id, so a deleted and
re-created collection never matches an old index): one collection lookup, no query over the
chunks. When it differs from the index's, the index is rebuilt from the committed chunks and
saved. While a change is under way, or after a kill interrupted one (the revision is then
unknown until the store's repair), the index is keyed by :meth:`~workbench.store.Store.generation`
instead: the hash of the committed heads' ids, one ids-only query over them (273 ms at 100k chunks
in documents of 100, 11 ms at 10k: why it is no longer asked on every search). Both are right
across processes and for a shared Chroma server (each process/machine rebuilds its local copy
when it sees another key). A change costs a full rebuild on the next keyword search (bm25s indexes
100k chunks in seconds).

**Sentence words.** The index also keeps each chunk's sentences as sets of word ids (tokenised
once, at build: a chunk's words are its header's followed by its sentences'), for hybrid search's
best-sentence keyword score (:meth:`KeywordIndex.sentence_keyword_scores`).

**Where it lives.** ``<BM25_INDEX_PATH>/<collection>/<key hash[:16]>/`` with BM25_INDEX_PATH
defaulting to ``<CHROMA_PERSIST_PATH>/bm25`` (embedded store) and a per-server subfolder
``<host>_<port>`` in server mode. A build is written to a temporary folder and renamed into
place in one step, so readers never see half an index; older generations are then removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.config import Settings
from workbench.documents import Hit
from workbench.store import Store
from workbench.store.records import hit_from_record
from workbench.store.sentences import sentences

log = logging.getLogger(__name__)

#: bm25s defaults (Lucene BM25): term-frequency saturation k1 and length normalisation b.
BM25_K1 = 1.5
BM25_B = 0.75
_FORMAT = 2


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

    ``generation``: the key it was built for (the store's revision, or ``generation:<hash>``).
    ``ids``/``document_ids``/``file_names``: per indexed chunk, in index order (length n).
    ``sentence_words``: word ids of every chunk's sentences, each sentence's sorted and unique,
    all concatenated (int32); ``sentence_starts`` (s + 1,) where each sentence begins in it;
    ``chunk_sentences`` (n + 1,) where each chunk's sentences begin. ``retriever`` is None
    when the collection has no committed chunk.
    """

    collection: str
    generation: str
    ids: list[str]
    document_ids: np.ndarray
    file_names: np.ndarray
    retriever: object | None
    sentence_words: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    sentence_starts: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    chunk_sentences: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    position: dict[str, int] = field(default_factory=dict)
    idf: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))

    def __post_init__(self) -> None:
        self.position = {cid: i for i, cid in enumerate(self.ids)}
        if self.retriever is not None:
            df = np.diff(np.asarray(self.retriever.scores["indptr"], dtype=np.int64))
            n = len(self.ids)
            self.idf = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)  # Lucene's BM25 idf

    def __len__(self) -> int:
        return len(self.ids)

    def word_ids(self, query: str) -> np.ndarray:
        """Unique word ids of ``query`` in this index's vocabulary (its other words match nothing)."""
        if self.retriever is None:
            return np.zeros(0, dtype=np.int64)
        vocab = self.retriever.vocab_dict
        return np.unique(np.asarray([vocab[w] for w in tokenize([query])[0] if w in vocab and vocab[w] < len(self.idf)], dtype=np.int64))

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of ``query`` against every indexed chunk: (n,) float32, 0 where no query
        word occurs (and for a query of stop words only)."""
        if self.retriever is None:
            return np.zeros(0, dtype=np.float32)
        words = tokenize([query])[0]
        ids = self.retriever.get_tokens_ids(words) if words else []
        if not ids:
            return np.zeros(len(self.ids), dtype=np.float32)
        return np.asarray(self.retriever.get_scores_from_ids(ids), dtype=np.float32)

    def mask(self, *, file_name: str | None = None, document_id: str | None = None) -> np.ndarray | None:
        """Boolean (n,) array of the chunks a filter keeps, or None for no filter."""
        if document_id:
            return self.document_ids == document_id
        if file_name:
            return self.file_names == file_name
        return None

    def top(self, query: str, k: int, *, mask: np.ndarray | None = None, scores: np.ndarray | None = None) -> list[tuple[str, float]]:
        """Up to ``k`` (chunk id, BM25 score) pairs with a score > 0, best first. ``scores``:
        :meth:`scores` of this query when the caller has them already."""
        scores = self.scores(query) if scores is None else scores
        if mask is not None and len(scores):
            scores = np.where(mask, scores, 0.0)
        positive = np.flatnonzero(scores > 0)
        if not len(positive):
            return []
        if len(positive) > k:
            positive = positive[np.argpartition(-scores[positive], k - 1)[:k]]
        order = positive[np.argsort(-scores[positive], kind="stable")]
        return [(self.ids[i], float(scores[i])) for i in order]

    def scores_for(self, query: str, chunk_ids: list[str], *, scores: np.ndarray | None = None) -> dict[str, float]:
        """BM25 score of ``query`` for the given chunk ids (0.0 for ids not in the index)."""
        scores = self.scores(query) if scores is None else scores
        position = self.position
        return {cid: float(scores[position[cid]]) if cid in position else 0.0 for cid in chunk_ids}

    def sentence_keyword_scores(self, words: np.ndarray, chunk_ids: list[str]) -> list[float]:
        """Best-sentence keyword score of each chunk: the largest, over its sentences, sum of the
        BM25 idf of the distinct query words (``words``: :meth:`word_ids`) the sentence contains.
        0 for a chunk not in the index or without such a sentence."""
        out = [0.0] * len(chunk_ids)
        if not len(words) or not len(self.sentence_words):
            return out
        rows = [(j, self.position[c]) for j, c in enumerate(chunk_ids) if c in self.position]
        if not rows:
            return out
        first = self.chunk_sentences[[p for _, p in rows]]
        last = self.chunk_sentences[[p + 1 for _, p in rows]]
        counts = last - first
        sentence = np.repeat(first, counts) + (np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts))
        lo, hi = self.sentence_starts[sentence], self.sentence_starts[sentence + 1]
        lengths = hi - lo
        owner_sentence = np.repeat(np.arange(len(sentence)), lengths)
        word_at = np.repeat(lo, lengths) + (np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths))
        found = self.sentence_words[word_at]
        hit = np.isin(found, words)
        per_sentence = np.bincount(owner_sentence[hit], weights=self.idf[found[hit]], minlength=len(sentence))
        owner_chunk = np.repeat(np.arange(len(rows)), counts)
        best = np.zeros(len(rows))
        np.maximum.at(best, owner_chunk, per_sentence)
        for (j, _), value in zip(rows, best):
            out[j] = float(value)
        return out


_cache: dict[tuple[str, str], KeywordIndex] = {}
_lock = threading.Lock()


def index_key(store: Store, chroma) -> str:
    """What an index of the raw collection ``chroma`` (fetched just now, so its metadata is
    current) must have been built for: the store's revision, or ``generation:<hash>`` while
    the revision is unknown (see module docstring)."""
    return store.revision(chroma) or f"generation:{store.generation(chroma)}"


def get_index(settings: Settings, store: Store, collection: str, *, chroma=None) -> KeywordIndex:
    """The collection's BM25 index at its current key (:func:`index_key`): from memory, else
    from disk, else rebuilt from the committed chunks and saved. ``chroma``: the raw collection
    when the caller has just fetched it (:meth:`Store.get_collection`). Raises StoreError when
    the collection does not exist."""
    chroma = store.get_collection(collection) if chroma is None else chroma
    generation = index_key(store, chroma)
    key = (str(index_root(settings)), collection)
    cached = _cache.get(key)
    if cached is not None and cached.generation == generation:
        return cached
    with _lock:
        cached = _cache.get(key)
        if cached is not None and cached.generation == generation:
            return cached
        folder = index_root(settings) / collection
        index = _load(folder / _folder_name(generation), collection, generation)
        if index is None:
            index = _build(store, chroma, collection, generation)
            _save(index, folder)
        _cache[key] = index
        return index


def _folder_name(generation: str) -> str:
    return hashlib.sha256(generation.encode()).hexdigest()[:16]


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
    chroma = store.get_collection(name)
    index = get_index(settings, store, name, chroma=chroma)
    ranked = index.top(query, k, mask=index.mask(file_name=file_name, document_id=document_id))
    records = store.fetch(chroma, [cid for cid, _ in ranked])
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
    metas: list[dict] = []
    pieces: list[str] = []  # per chunk: its header, then its sentences
    counts: list[int] = []
    for cid, text, meta in store.committed_chunks(chroma):
        ids.append(cid)
        metas.append(meta)
        header = meta.get("header") or ""
        if header and not header[-1].isspace():  # a word could run from header into text
            parts = [indexed_text(text, meta)]
            header = ""
        else:
            parts = sentences(text)
        pieces += [header, *parts]
        counts.append(len(parts))
    retriever, words, starts, chunk_sentences = None, np.zeros(0, dtype=np.int32), np.zeros(1, dtype=np.int64), np.zeros(len(ids) + 1, dtype=np.int64)
    if ids:
        tokens = tokenize(pieces)
        corpus, sentence_tokens, at = [], [], 0
        for count in counts:
            chunk = tokens[at : at + 1 + count]
            corpus.append([w for part in chunk for w in part])
            sentence_tokens += chunk[1:]
            at += 1 + count
        retriever = bm25s.BM25(k1=BM25_K1, b=BM25_B)
        retriever.index(corpus, show_progress=False)
        vocab = retriever.vocab_dict
        unique = [np.unique(np.asarray([vocab[w] for w in part if w in vocab], dtype=np.int32)) for part in sentence_tokens]
        words = np.concatenate(unique) if unique else words
        starts = np.concatenate([[0], np.cumsum([len(u) for u in unique])]).astype(np.int64)
        chunk_sentences = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    log.info("BM25 index for %s rebuilt: %d chunks", collection, len(ids))
    return KeywordIndex(
        collection=collection,
        generation=generation,
        ids=ids,
        document_ids=np.array([str(m.get("document_id", "")) for m in metas], dtype=object),
        file_names=np.array([str(m.get("file_name", "")) for m in metas], dtype=object),
        retriever=retriever,
        sentence_words=words,
        sentence_starts=starts,
        chunk_sentences=chunk_sentences,
    )


def _save(index: KeywordIndex, folder: Path) -> None:
    """Write ``index`` to ``folder/<generation[:16]>`` atomically; remove older generations.
    A failure to write is logged, not raised: the index in memory still answers."""
    target = folder / _folder_name(index.generation)
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
        with open(tmp / "sentences.npz", "wb") as handle:
            np.savez(handle, words=index.sentence_words, starts=index.sentence_starts, chunks=index.chunk_sentences)
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
        with np.load(folder / "sentences.npz") as saved:
            words, starts, chunks = saved["words"], saved["starts"], saved["chunks"]
        if len(chunks) != len(meta["ids"]) + 1 or starts[-1] != len(words) or len(starts) != chunks[-1] + 1:
            raise ValueError("the sentence words do not match the index")
        return KeywordIndex(
            collection=collection,
            generation=generation,
            ids=list(meta["ids"]),
            document_ids=np.array(meta["document_ids"], dtype=object),
            file_names=np.array(meta["file_names"], dtype=object),
            retriever=retriever,
            sentence_words=words,
            sentence_starts=starts,
            chunk_sentences=chunks,
        )
    except Exception as exc:  # any damage (truncated npz, empty json, power loss): rebuild from the store
        log.warning("BM25 index in %s is unreadable (%s: %s); rebuilding", folder, type(exc).__name__, exc)
        return None



def collection_generation(store: Store, collection: str) -> str:
    """A key of a collection's committed chunks (:func:`index_key`: cheap while its revision is
    known): changes on every ingest, replace or delete. Raises StoreError when the collection
    does not exist."""
    return index_key(store, store.get_collection(collection))
