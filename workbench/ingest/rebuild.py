"""Rebuild a collection with another embedding model or chunk size, into a shadow collection
``<name>.rebuild`` while ``<name>`` stays searchable, then swap it in
(:func:`workbench.store.admin.swap`). The whole rebuild holds the collection's lock, and a change
made meanwhile anyway is detected by the store's generation (not by a count, which a
same-size replacement would not change).

The views start a rebuild with :func:`start_rebuild` (a background job), re-ingest one document
from its file with :func:`start_reingest`, and mark chunks at the model's window with
:func:`chunk_windows`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from workbench.config import Settings
from workbench.errors import CancelledError, ConfigError, DocumentError, StoreError, WorkbenchError
from workbench.ingest.chunking import SPECIAL_TOKENS, Chunker
from workbench.ingest.loaders import file_hash, iter_pages
from workbench.ingest.pipeline import ingest_key_for
from workbench.ingest.uploads import stored_source
from workbench.models.embeddings import get_embedder
from workbench.store import Store
from workbench.store import records as rec
from workbench.store.admin import locked, new_collection, swap
from workbench.store.chroma import PREVIOUS_SUFFIX, REBUILD_SUFFIX, CollectionInfo, check_collection_name
from workbench.store.records import SCHEMA_VERSION, now_iso
from workbench.documents import Chunk, DocumentInfo, IngestEvent, Page

if TYPE_CHECKING:
    from workbench.ingest.jobs import IngestJob, JobRegistry

log = logging.getLogger(__name__)

ProgressCallback = Callable[[IngestEvent], None]


def settings_for_rebuild(settings: Settings, **changes: Any) -> Settings:
    """A validated copy of ``settings`` with ``changes`` (e.g. embedding_model, chunk_size,
    chunk_overlap). Raises ConfigError naming the field and the reason for an invalid value."""
    try:
        return type(settings).model_validate({**settings.model_dump(), **changes})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first.get("loc", ())) or "settings"
        reason = str(first.get("msg", exc)).removeprefix("Value error, ")
        raise ConfigError(f"invalid rebuild settings: {field}: {reason}") from exc


def max_chunk_size(embedder) -> int:
    """The largest chunk size (model tokens) ``embedder`` embeds whole: its ``max_seq_length``
    minus the special tokens (254 for MiniLM's 256)."""
    return int(embedder.max_seq_length) - SPECIAL_TOKENS


def start_rebuild(
    jobs: JobRegistry,
    store: Store,
    name: str,
    settings: Settings,
    embedder,
    *,
    model: str,
    chunk_size: int,
    chunk_overlap: int,
) -> IngestJob:
    """Start :func:`rebuild` of collection ``name`` with embedding ``model`` and chunks of
    ``chunk_size`` / ``chunk_overlap`` model tokens as a background job of ``jobs`` and return
    it. ``embedder`` (the loaded model) is reused when ``model`` is the model of ``settings``;
    another model is loaded by the job. The job's result is one line: "Rebuilt NAME: D
    documents, C chunks, MODEL, chunks of S/O."

    Raises ConfigError for invalid settings (the field and the reason) or a chunk size the loaded
    model cannot embed whole, StoreError when ``name`` does not exist, JobConflictError when a job
    on ``name`` is running.
    """
    new_settings = settings_for_rebuild(settings, embedding_model=model, chunk_size=int(chunk_size), chunk_overlap=int(chunk_overlap))
    same_model = new_settings.embedding_model == settings.embedding_model
    if same_model and new_settings.chunk_size > max_chunk_size(embedder):
        raise ConfigError(
            f"invalid rebuild settings: chunk_size: {new_settings.chunk_size} tokens do not fit "
            f"{embedder.name} (at most {max_chunk_size(embedder)})"
        )
    if not store.has_collection(name):
        raise StoreError(f"collection {name!r} does not exist")
    reuse = embedder if same_model else None

    def work(progress, cancel) -> str:
        new = rebuild(store, name, new_settings, progress, embedder=reuse, cancel=cancel)
        return (
            f"Rebuilt {name}: {new.documents} documents, {new.chunks} chunks, {new.embedding_model}, "
            f"chunks of {new.chunk_size}/{new.chunk_overlap}."
        )

    description = f"rebuild ({new_settings.embedding_model}, {new_settings.chunk_size}/{new_settings.chunk_overlap})"
    return jobs.start_task(work, collection=name, description=description)


def start_reingest(jobs: JobRegistry, store: Store, name: str, document: DocumentInfo, settings: Settings, embedder) -> IngestJob:
    """Start re-ingesting one ``document`` of collection ``name`` from the file it was ingested
    from (:func:`workbench.ingest.uploads.stored_source`: only a file under the knowledge base or
    the upload area is read) as a background job; the same ``source`` replaces the document.

    Raises DocumentError when the stored path is outside those folders or the file is gone
    (nothing is read), JobConflictError when a job on ``name`` is running, StoreError.
    """
    source = stored_source(document, settings)
    return jobs.start_ingest(
        [source], settings=settings, store=store, embedder=embedder, collection=name, description=f"re-ingest {document.source}"
    )


@dataclass(frozen=True)
class ChunkWindow:
    """What one chunk puts into the embedding model's window, in model tokens (special tokens
    excluded): ``tokens`` = text + context header, ``header_tokens`` the header's share.
    ``at_limit``: tokens + 2 special tokens reach ``max_seq_length`` (the model saw all of it,
    but nothing more would fit)."""

    tokens: int
    header_tokens: int
    at_limit: bool


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


def chunk_windows(store: Store, name: str, document_id: str, embedder) -> dict[str, ChunkWindow]:
    """``{chunk_id: ChunkWindow}`` for every committed chunk of one document, against
    ``embedder`` (its ``count_tokens`` and ``max_seq_length``, e.g. 256 for MiniLM). Empty when
    the document does not exist."""
    limit = int(embedder.max_seq_length)
    doc = store.document(name, document_id)
    if doc is None:
        return {}
    headers: dict[str, int] = {}
    out = {}
    for chunk_id, _, meta in store.version_records(store.get_collection(name), document_id, doc.ingest_key):
        meta = meta or {}
        header = str(meta.get("header", ""))
        if header not in headers:
            headers[header] = embedder.count_tokens(header) if header else 0
        tokens = int(meta.get("token_count", 0) or 0) + headers[header]
        out[chunk_id] = ChunkWindow(tokens=tokens, header_tokens=headers[header], at_limit=tokens + SPECIAL_TOKENS >= limit)
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
    with the same hash, under the knowledge base, the upload area or the attachment area:
    :func:`workbench.ingest.uploads.stored_source`) or from the page texts reconstructed from
    its chunks."""
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
    pages: Any = None
    try:  # only a file under the allowed folders: an imported archive can name any path and hash
        source = stored_source(doc, settings)
    except DocumentError as exc:
        log.info("rebuild: %s is re-chunked from its stored texts (%s)", doc.source, exc)
        source = None
    if source is not None:
        try:
            if file_hash(source.path) == doc.content_hash:
                pages = list(iter_pages(source.path, settings))
        except (OSError, WorkbenchError) as exc:
            log.warning("rebuild: %s unreadable (%s); using the stored chunk texts", source.path, exc)
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
            now = rec.version_time()
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
