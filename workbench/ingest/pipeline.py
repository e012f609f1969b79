"""Incremental, crash-safe ingestion: files -> pages -> chunks -> embeddings -> Chroma.

A document's identity is its ``source`` (path relative to the folder being ingested, or the
file name); its ``document_id`` and chunk ids are the store's
(:mod:`workbench.store.records`). Its *ingest key* is sha256 of (content hash, chunk size,
chunk overlap, model, dimension, schema, chunker version, chunk context header on/off): an equal
key means "unchanged, skip"; another key means "changed, replace".

Chunks of several small files share one encode batch (throughput), and the documents that are
complete after a batch are committed together (:meth:`workbench.store.Store.commit_versions`),
each still atomically, so a killed run never leaves a partial document searchable; the next
run (or start-up) repairs what it left. Every run holds the collection lock.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from workbench.ingest.chunking import CHUNKER_VERSION, Chunker
from workbench.config import Settings
from workbench.documents import Chunk, FileResult, IngestEvent, IngestSummary, Page
from workbench.models.embeddings import Embedder
from workbench.errors import CancelledError, DocumentError
from workbench.ingest.loaders import file_hash, is_supported, iter_pages
from workbench.store import Store, admin, collection_lock
from workbench.store import records as rec
from workbench.store.records import SCHEMA_VERSION, document_id_for, now_iso
from workbench.store.sentences import fingerprint, sentence_spans

log = logging.getLogger(__name__)

ProgressCallback = Callable[[IngestEvent], None]


@dataclass(frozen=True)
class SourceFile:
    """A file to ingest and the ``source`` name it is known by in the collection."""

    path: Path
    source: str


def ingest_key_for(content_hash: str, settings: Settings, model: str, dimensions: int) -> str:
    """sha256 hex of everything that decides a document's chunks and vectors."""
    parts = [content_hash, str(settings.chunk_size), str(settings.chunk_overlap), model, str(dimensions), str(SCHEMA_VERSION), CHUNKER_VERSION, str(settings.chunk_context)]
    return hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()


def discover(paths: Iterable[Path | SourceFile]) -> list[SourceFile]:
    """Expand folders (recursively, supported extensions only, hidden entries skipped) and
    keep named files as given. Sources of files found in a folder are relative posix paths;
    a file named directly is known by its file name."""
    found: list[SourceFile] = []
    for item in paths:
        if isinstance(item, SourceFile):
            found.append(item)
            continue
        path = Path(item)
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                rel = file.relative_to(path)
                if file.is_file() and is_supported(file) and not any(p.startswith(".") for p in rel.parts):
                    found.append(SourceFile(file, rel.as_posix()))
        else:
            found.append(SourceFile(path, path.name))
    return found


@dataclass
class _Doc:
    file: SourceFile
    document_id: str
    key: str
    content_hash: str
    ingested_at: str
    replaces: str | None
    started: float
    ids: list[str] = field(default_factory=list)
    pages: int = 0
    ocr_pages: int = 0
    flushed: int = 0
    chunked: bool = False


class _Run:
    """State of one ingestion run; see :func:`ingest_paths`."""

    def __init__(self, settings, store, embedder, name, progress, cancel):
        self.settings, self.store, self.embedder, self.name = settings, store, embedder, name
        self.progress = progress
        self.cancel = cancel or threading.Event()
        self.collection = store.open_collection(
            name,
            model=embedder.name,
            dimensions=embedder.dimension,
            chunk_size=settings.chunk_size,
            chunk_overlap=settings.chunk_overlap,
        )
        self.chunker = Chunker(
            embedder.backend_tokenizer, settings.chunk_size, settings.chunk_overlap, embedder.max_seq_length, context=settings.chunk_context
        )
        # Chunks per encode call. sentence-transformers sorts one call's texts by length before
        # batching, so a bigger call pads less: on shared/corpus/text (2,660 chunks) padded
        # tokens are 1.19x the real ones in calls of 128, 1.06x in calls of 512 (1.01x for one
        # call over everything). One call of 512 takes ~5-25 s on 2 cores, the progress step.
        self.flush_size = max(embedder.batch_size * 16, 64)
        self.buffer: list[tuple[Chunk, _Doc]] = []
        self.open_docs: list[_Doc] = []
        self.summary = IngestSummary(collection=name)
        self.t0 = time.perf_counter()
        self.chunks_done = 0
        self.files_total = 0
        self.files_done = 0
        self.bytes_total = 0
        self.bytes_done = 0
        self.current = ""

    # --- progress ------------------------------------------------------------------
    def emit(self, kind: str, status: str = "", message: str = "") -> None:
        if self.progress is None:
            return
        elapsed = time.perf_counter() - self.t0
        eta = None
        if self.bytes_done and self.bytes_total:
            eta = max(0.0, elapsed * (self.bytes_total - self.bytes_done) / self.bytes_done)
        self.progress(
            IngestEvent(
                kind=kind,
                files_total=self.files_total,
                files_done=self.files_done,
                chunks_done=self.chunks_done,
                current_file=self.current,
                status=status,
                message=message,
                errors=len(self.summary.failures),
                elapsed_s=elapsed,
                eta_s=eta,
            )
        )

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise CancelledError("ingestion cancelled")

    # --- one file --------------------------------------------------------------------
    def ingest_file(self, file: SourceFile, heads: dict[str, dict]) -> None:
        started = time.perf_counter()
        document_id = document_id_for(file.source)
        content_hash = file_hash(file.path)
        key = ingest_key_for(content_hash, self.settings, self.embedder.name, self.embedder.dimension)
        head = heads.get(document_id)
        if head and head.get("ingest_key") == key:
            self.bytes_done += _size(file.path)
            self.finish_file(FileResult(file.source, "unchanged", int(head.get("doc_chunks", 0)), int(head.get("doc_pages", 0)), int(head.get("doc_ocr_pages", 0)), seconds=time.perf_counter() - started))
            return
        doc = _Doc(file, document_id, key, content_hash, now_iso(), head.get("ingest_key") if head else None, started)
        self.open_docs.append(doc)
        try:
            for chunk in self.chunker.chunk_pages(
                self._count_pages(iter_pages(file.path, self.settings), doc),
                document_id=document_id,
                source=file.source,
                file_name=file.path.name,
            ):
                doc.ids.append(rec.chunk_id(document_id, key, chunk.chunk_index))
                self.buffer.append((chunk, doc))
                if len(self.buffer) >= self.flush_size:
                    self.flush()
                    self.check_cancel()
        except DocumentError as exc:
            self.rollback(doc)
            self.finish_file(FileResult(file.source, "failed", message=str(exc), seconds=time.perf_counter() - started))
            return
        doc.chunked = True
        self.commit_ready()

    def _count_pages(self, pages: Iterator[Page], doc: _Doc) -> Iterator[Page]:
        for page in pages:
            self.check_cancel()  # per page: a long PDF or OCR run stops within one page
            doc.pages += 1
            doc.ocr_pages += int(page.ocr)
            yield page

    def finish_file(self, result: FileResult) -> None:
        self.summary.results.append(result)
        if result.status != "pruned":
            self.files_done += 1
        log.info("%s: %s %s", result.source, result.status, result.message)
        self.emit("file_done", result.status, result.message)

    # --- writing -------------------------------------------------------------------------
    def flush(self) -> None:
        """Embed and write the buffered chunks (uncommitted: complete=False)."""
        if not self.buffer:
            return
        batch, self.buffer = self.buffer, []
        vectors = embed_chunks(self.store, self.collection, self.embedder, [(doc.ids[chunk.chunk_index], chunk) for chunk, doc in batch])
        ids = [doc.ids[chunk.chunk_index] for chunk, doc in batch]
        texts = [chunk.text for chunk, _ in batch]
        metas = [
            rec.chunk_metadata(
                chunk, source_path=str(doc.file.path.resolve()), doc_hash=doc.content_hash,
                ingest_key=doc.key, ingested_at=doc.ingested_at,
            )
            for chunk, doc in batch
        ]
        self.store.write_chunks(self.collection, ids, texts, metas, vectors)
        for _, doc in batch:
            doc.flushed += 1
        self.chunks_done += len(batch)
        self.emit("chunks")

    def commit_ready(self, force: bool = False) -> None:
        """Commit every fully chunked document whose chunks are all written, together (see
        :meth:`Store.commit_versions`); with ``force`` flush the buffer first."""
        if force:
            self.flush()
        ready = [d for d in self.open_docs if d.chunked and d.flushed == len(d.ids)]
        if not ready:
            return
        self.store.commit_versions(
            self.collection,
            [(d.ids, rec.head_summary(pages=d.pages, chunks=len(d.ids), ocr_pages=d.ocr_pages)) for d in ready],
        )
        for doc in ready:
            if doc.replaces:
                self.store.delete_version(self.collection, doc.document_id, doc.replaces)
            self.open_docs.remove(doc)
            self.bytes_done += _size(doc.file.path)
            self.finish_file(
                FileResult(doc.file.source, "replaced" if doc.replaces else "added", len(doc.ids), doc.pages, doc.ocr_pages, seconds=time.perf_counter() - doc.started)
            )

    def rollback(self, doc: _Doc) -> None:
        """Forget an uncommitted document: drop its buffered chunks, delete written ones."""
        self.buffer = [(c, d) for c, d in self.buffer if d is not doc]
        if doc.flushed:
            self.store.delete_version(self.collection, doc.document_id, doc.key)
        if doc in self.open_docs:
            self.open_docs.remove(doc)
        self.bytes_done += _size(doc.file.path)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def ingest_paths(
    paths: Iterable[Path | SourceFile],
    *,
    settings: Settings,
    store: Store,
    embedder: Embedder,
    collection: str | None = None,
    progress: ProgressCallback | None = None,
    prune: bool = False,
    cancel: threading.Event | None = None,
) -> IngestSummary:
    """Ingest files and folders into ``collection`` (default COLLECTION_NAME).

    Each file ends as added / unchanged / replaced / failed (with a message naming it);
    one bad file never stops the batch. With ``prune``, documents that were ingested from a
    folder given here and whose file no longer exists are deleted ("pruned"). Setting
    ``cancel`` stops after the current batch; unfinished documents are rolled back and
    ``summary.cancelled`` is True. Progress goes to ``progress`` as IngestEvents.

    Raises CollectionMismatchError when the collection was built with another model,
    IngestBusyError when another process is writing the same collection (see
    :func:`workbench.store.collection_lock`), and StoreError when the store cannot be written.
    """
    name = collection or settings.collection_name
    with collection_lock(settings, name):
        return _ingest_locked(paths, settings, store, embedder, name, progress, prune, cancel)


def _ingest_locked(paths, settings, store, embedder, name, progress, prune, cancel) -> IngestSummary:
    # A rebuild killed between its swap's two renames leaves only <name>.previous and
    # <name>.rebuild; opening <name> would create an empty one beside them, and recover then
    # deleted both as a finished swap (tests/test_faults.py::
    # test_an_ingest_after_a_swap_killed_midway_loses_nothing). Finish it first: we hold the lock.
    admin.recover_collection(store, name)
    run = _Run(settings, store, embedder, name, progress, cancel)
    store.repair(name)
    items = discover(paths)
    run.files_total = len(items)
    run.bytes_total = sum(_size(i.path) for i in items)
    heads = store.current_heads(run.collection)
    run.emit("start")
    try:
        for item in items:
            run.check_cancel()
            run.current = item.source
            run.emit("file_start")
            try:
                run.ingest_file(item, heads)
            except CancelledError:
                raise
            except (OSError, DocumentError) as exc:
                run.bytes_done += _size(item.path)
                message = str(exc) if isinstance(exc, DocumentError) else f"{item.path.name}: {exc.strerror or exc}"
                run.finish_file(FileResult(item.source, "failed", message=message))
        run.current = ""
        run.commit_ready(force=True)
        if prune:
            _prune(run, paths, heads)
    except CancelledError:
        for doc in list(run.open_docs):
            run.rollback(doc)
        run.summary.cancelled = True
    run.summary.seconds = time.perf_counter() - run.t0
    run.emit("done", "cancelled" if run.summary.cancelled else "")
    return run.summary


def _prune(run: _Run, paths: Iterable[Path | SourceFile], heads: dict[str, dict]) -> None:
    roots = [str(Path(p).resolve()) + os.sep for p in paths if not isinstance(p, SourceFile) and Path(p).is_dir()]
    for meta in heads.values():
        source_path = str(meta.get("source_path", ""))
        if any(source_path.startswith(root) for root in roots) and not Path(source_path).exists():
            run.store.delete_document(run.name, meta["document_id"])
            run.finish_file(FileResult(str(meta.get("source", "")), "pruned", message="file no longer exists"))


def embed_chunks(store: Store, collection, embedder: Embedder, chunks: list[tuple[str, Chunk]]):
    """Vectors of ``header + text`` of each ``(chunk id, chunk)``: (n, d) float32, L2-normalised,
    as :meth:`Embedder.encode`. The same encoder pass gives the sentence vectors of every chunk
    of two or more sentences (:mod:`workbench.store.sentences`), stored now, before the chunks
    are written and committed; hybrid search computes any that are missing at query time."""
    texts = [chunk.header + chunk.text for _, chunk in chunks]
    if not hasattr(embedder, "encode_with_spans"):
        return embedder.encode(texts)
    spans = [[(len(c.header) + a, len(c.header) + b) for a, b in sentence_spans(c.text)] for _, c in chunks]
    vectors, sentence_vectors = embedder.encode_with_spans(texts, spans)
    store.sentences.put(str(collection.id), [
        (cid, fingerprint(embedder.name, c.header, c.text), found)
        for (cid, c), found in zip(chunks, sentence_vectors) if len(found) > 1
    ])
    return vectors
