"""Rebuild a collection with another embedding model or chunk size, into a shadow collection
``<name>.rebuild`` while ``<name>`` stays searchable, then swap it in
(:func:`workbench.store.admin.swap`). The whole rebuild holds the collection's lock, and a change
made meanwhile anyway is detected by the store's generation (not by a count, which a
same-size replacement would not change).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.config import Settings
from workbench.errors import CancelledError, StoreError, WorkbenchError
from workbench.ingest.chunking import SPECIAL_TOKENS, Chunker
from workbench.ingest.loaders import file_hash, iter_pages
from workbench.ingest.pipeline import ingest_key_for
from workbench.models.embeddings import get_embedder
from workbench.store import Store
from workbench.store import records as rec
from workbench.store.admin import locked, new_collection, swap
from workbench.store.chroma import PREVIOUS_SUFFIX, REBUILD_SUFFIX, CollectionInfo, check_collection_name
from workbench.store.records import SCHEMA_VERSION, now_iso
from workbench.documents import Chunk, DocumentInfo, IngestEvent, Page

log = logging.getLogger(__name__)

ProgressCallback = Callable[[IngestEvent], None]


def settings_for_rebuild(settings: Settings, **changes: Any) -> Settings:
    """A validated copy of ``settings`` with ``changes`` (e.g. embedding_model, chunk_size,
    chunk_overlap). Raises ValueError (pydantic ValidationError) for invalid values."""
    return type(settings).model_validate({**settings.model_dump(), **changes})


def _doc_records(store: Store, collection, doc: DocumentInfo) -> list[tuple[str, dict]]:
    return [(text, meta) for _, text, meta in store.version_records(collection, doc.document_id, doc.ingest_key)]


def embedded_token_counts(store: Store, name: str, document_id: str, count_tokens: Callable[[str], int]) -> dict[str, int]:
    """Model tokens each committed chunk of a document puts in the model's window: its stored
    ``token_count`` (text) plus its context header's tokens (``count_tokens``, e.g.
    ``Embedder.count_tokens``), special tokens excluded. ``{chunk_id: tokens}``; a chunk whose
    count + 2 reaches ``max_seq_length`` is at the model's limit."""
    doc = store.document(name, document_id)
    if doc is None:
        return {}
    rows = store.version_records(store.get_collection(name), document_id, doc.ingest_key)
    headers: dict[str, int] = {}
    out = {}
    for chunk_id, _, meta in rows:
        header = str((meta or {}).get("header", ""))
        if header not in headers:
            headers[header] = count_tokens(header) if header else 0
        out[chunk_id] = int((meta or {}).get("token_count", 0) or 0) + headers[header]
    return out


def reconstruct_pages(records: list[tuple[str, dict]]) -> list[Page]:
    """Page texts rebuilt from a document's chunks and their character spans. Overlaps are
    merged; the whitespace that chunking trimmed between chunks comes back as one space
    (gap of 1) or newlines (longer gaps), so paragraph breaks survive. Pages that had no
    chunks (blank pages) are absent."""
    by_page: dict[int, list[tuple[str, dict]]] = {}
    for text, meta in records:
        by_page.setdefault(int(meta.get("page", 1) or 1), []).append((text, meta))
    pages = []
    for number in sorted(by_page):
        parts = sorted(by_page[number], key=lambda p: (int(p[1].get("start", 0)), int(p[1].get("chunk_index", 0))))
        buf = ""
        for text, meta in parts:
            start = int(meta.get("start", 0))
            if start > len(buf):
                gap = start - len(buf)
                buf += " " if gap == 1 else "\n" * gap
            if start + len(text) > len(buf):
                buf += text[len(buf) - start :]
        first = parts[0][1]
        pages.append(Page(text=buf, page=number, ocr=bool(first.get("ocr", False)), section=str(first.get("section", ""))))
    return pages


def _document_chunks(doc: DocumentInfo, records, settings: Settings, embedder, chunker, same_chunking: bool) -> list[Chunk]:
    """The chunks of ``doc`` under the new settings. When ``same_chunking`` (the document was
    chunked under the rules these settings give, see :func:`rebuild`) and every chunk with its
    context header fits the new model, the stored chunk texts and headers are kept (only the
    vectors change); else the document is re-chunked from its source file (when it still exists
    with the same hash) or from the page texts reconstructed from its chunks."""
    if same_chunking and records:
        counts = [embedder.count_tokens(t) for t, _ in records]
        windows = [c + embedder.count_tokens(str(m.get("header", ""))) for c, (_, m) in zip(counts, records)]
        if all(w + SPECIAL_TOKENS <= embedder.max_seq_length for w in windows):
            return [
                Chunk(
                    document_id=doc.document_id, source=doc.source, file_name=doc.file_name,
                    page=int(m.get("page", 1)), chunk_index=i, start=int(m.get("start", 0)), end=int(m.get("end", 0)),
                    token_count=c, content_hash=hashlib.sha256(t.encode("utf-8")).hexdigest(), text=t,
                    section=str(m.get("section", "")), ocr=bool(m.get("ocr", False)), header=str(m.get("header", "")),
                )
                for i, ((t, m), c) in enumerate(zip(records, counts))
            ]
    source_path = Path(doc.source_path) if doc.source_path else None
    pages: Any = None
    if source_path and source_path.is_file():
        try:
            if file_hash(source_path) == doc.content_hash:
                pages = list(iter_pages(source_path, settings))
        except (OSError, WorkbenchError) as exc:
            log.warning("rebuild: %s unreadable (%s); using the stored chunk texts", source_path, exc)
    if pages is None:
        pages = reconstruct_pages(records)
    return list(chunker.chunk_pages(iter(pages), document_id=doc.document_id, source=doc.source, file_name=doc.file_name))


def rebuild(
    store: Store,
    name: str,
    settings: Settings,
    progress: ProgressCallback | None = None,
    *,
    embedder=None,
    cancel: threading.Event | None = None,
) -> CollectionInfo:
    """Rebuild collection ``name`` with ``settings``' embedding model and chunk size/overlap.

    Committed documents are re-chunked when the chunk rules change (see
    :func:`_document_chunks`) and re-embedded (context header + text, as ingest does) into
    ``<name>.rebuild``; ``name`` stays searchable meanwhile. Then the two are swapped and the old
    one deleted. ``embedder`` defaults to ``get_embedder(settings)``. Progress goes to
    ``progress`` as IngestEvents (one "file" per document). Returns the new CollectionInfo.

    Raises CancelledError when ``cancel`` is set (the shadow is deleted, ``name`` untouched),
    StoreError when ``name`` changed during the rebuild (e.g. an ingest), ConfigError when the
    chunk size does not fit the new model, ModelMissingError when the model is not on disk.
    """
    embedder = embedder or get_embedder(settings)
    with locked(store, name, what="a rebuild"):
        return _rebuild(store, name, settings, progress, embedder, cancel)


def _rebuild(store: Store, name: str, settings: Settings, progress, embedder, cancel) -> CollectionInfo:
    old = store.get_collection(name)
    chunker = Chunker(
        embedder.backend_tokenizer, settings.chunk_size, settings.chunk_overlap, embedder.max_seq_length, context=settings.chunk_context
    )
    shadow_name = check_collection_name(name + REBUILD_SUFFIX)
    check_collection_name(name + PREVIOUS_SUFFIX)
    if store.has_collection(shadow_name):
        store.client.delete_collection(shadow_name)  # left over by an interrupted rebuild
    cancel = cancel or threading.Event()
    old_meta = dict(old.metadata or {})
    generation_before = store.generation(old)
    old_model, old_dim = str(old_meta.get("embedding_model", "")), int(old_meta.get("embedding_dimensions", 0) or 0)
    docs = store.documents(name)
    shadow = new_collection(
        store,
        shadow_name,
        {
            "embedding_model": embedder.name,
            "embedding_dimensions": embedder.dimension,
            "chunk_size": settings.chunk_size,
            "chunk_overlap": settings.chunk_overlap,
            "created_at": old_meta.get("created_at", now_iso()),
            "rebuilt_at": now_iso(),
            "rebuilt_from": f"{old_meta.get('embedding_model', '?')} chunk {old_meta.get('chunk_size', '?')}/{old_meta.get('chunk_overlap', '?')}",
            "workbench_schema": SCHEMA_VERSION,
        },
    )
    t0 = time.perf_counter()
    chunks_done = 0

    def emit(kind: str, done: int, current: str = "", status: str = "") -> None:
        if progress:
            elapsed = time.perf_counter() - t0
            eta = elapsed * (len(docs) - done) / done if done else None
            progress(IngestEvent(kind, len(docs), done, chunks_done, current, status, elapsed_s=elapsed, eta_s=eta))

    try:
        emit("start", 0)
        for i, doc in enumerate(docs):
            if cancel.is_set():
                raise CancelledError(f"rebuild of {name!r} cancelled; the collection is unchanged")
            emit("file_start", i, doc.source)
            records = _doc_records(store, old, doc)
            # chunked under the same rules (size, overlap, chunker version, header) iff the old key
            # is what these settings give with the old model
            same_chunking = doc.ingest_key == ingest_key_for(doc.content_hash, settings, old_model, old_dim)
            chunks = _document_chunks(doc, records, settings, embedder, chunker, same_chunking)
            key = ingest_key_for(doc.content_hash, settings, embedder.name, embedder.dimension)
            head = records[0][1] if records else {}
            now = now_iso()
            for lo in range(0, len(chunks), store.max_batch):
                part = chunks[lo : lo + store.max_batch]
                vectors = embedder.encode([c.header + c.text for c in part])  # as workbench.ingest.pipeline embeds
                metas = []
                for c in part:
                    meta = rec.chunk_metadata(
                        c, source_path=doc.source_path, doc_hash=doc.content_hash, ingest_key=key, ingested_at=now, complete=True
                    )
                    if c.chunk_index == 0:
                        pages = int(head.get("doc_pages", doc.pages) or doc.pages)
                        meta.update(rec.head_summary(pages=pages, chunks=len(chunks), ocr_pages=int(head.get("doc_ocr_pages", doc.ocr_pages) or 0)))
                    metas.append(meta)
                ids = [rec.chunk_id(c.document_id, key, c.chunk_index) for c in part]
                shadow.add(ids=ids, documents=[c.text for c in part], metadatas=metas, embeddings=vectors)
                chunks_done += len(part)
                emit("chunks", i, doc.source)
            emit("file_done", i + 1, doc.source, "rebuilt")
        if store.generation(old) != generation_before:
            raise StoreError(f"collection {name!r} changed during the rebuild (an ingest or delete ran); rebuild again")
        if cancel.is_set():
            raise CancelledError(f"rebuild of {name!r} cancelled; the collection is unchanged")
        swap(store, name, shadow_name)
    except BaseException:
        if store.has_collection(shadow_name):
            store.client.delete_collection(shadow_name)
        raise
    emit("done", len(docs), status="swapped")
    return store.collection_info(name)
