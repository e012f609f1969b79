"""Incremental, crash-safe ingestion: files -> pages -> chunks -> embeddings -> Chroma.

A document's identity is its ``source`` (path relative to the folder being ingested, or the
file name); its ``document_id`` and chunk ids are the store's
(:mod:`workbench.store.records`). Its *ingest key* is sha256 of (content hash, chunk size,
chunk overlap, model, dimension, schema, chunker version, chunk context header on/off): an equal
key means "unchanged, skip"; another key means "changed, replace".

Two threads: a reader (:class:`_Reader`) hashes, loads and chunks the files in order, ahead of
the encoder, into a bounded queue; the calling thread embeds and writes (the encoder releases the
GIL, so reading and chunking run while it computes). Chunks of many files share one *window*
(one encode call at first, so the encoder starts at once, doubling up to FLUSH_WINDOW encode
batches): it is sorted by length and embedded in calls of ENCODE_CALL batches (little padding,
as in one call over everything; progress and cancellation between calls), written uncommitted
(Chroma's upsert holds the GIL: writing from a third thread while the next call encodes
measured no faster on 2 cores), and then every document complete after the window is committed
together (:meth:`workbench.store.Store.commit_versions`), each still atomically, so a killed run
never leaves a partial document searchable; the next run (or start-up) repairs what it left.
When the reader falls behind (OCR, a slow disk), what is buffered is embedded meanwhile. Every
run holds the collection lock; the reader never touches the store.

After an e-mail is read, the reader writes its supported attachments to the store's data area and
reads each as a file of its own, ``"<e-mail source>/<name>"``; the end of the run prunes the
attachments an e-mail no longer has and releases files no document needs
(:mod:`workbench.ingest.attachments`).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from workbench.ingest import attachments
from workbench.ingest.chunking import CHUNKER_VERSION, Chunker
from workbench.config import Settings
from workbench.documents import Chunk, FileResult, IngestEvent, IngestSummary, Page
from workbench.models.embeddings import Embedder
from workbench.errors import CancelledError, DocumentError
from workbench.ingest.loaders import file_hash, is_supported, iter_pages
from workbench.store import Store, admin, collection_lock
from workbench.store import records as rec
from workbench.store.records import SCHEMA_VERSION, document_id_for
from workbench.store.sentences import fingerprint, sentence_spans

log = logging.getLogger(__name__)

ProgressCallback = Callable[[IngestEvent], None]

#: Encode batches (EMBEDDING_BATCH_SIZE chunks each) per encode call: the progress and
#: cancellation step (256 chunks at batch 32: ~2-10 s on 2 cores).
ENCODE_CALL = 8
#: Encode batches buffered, sorted by length and embedded together (2,048 chunks at batch 32).
#: Padding, in tokens over the real ones: 1.13x in unsorted calls of 512 short chunks of
#: one-paragraph files, 1.03x in windows of 2,048, 1.01x for one call over everything.
FLUSH_WINDOW = 64
#: Chunks per message from the reader, and messages it may hold ahead of the encoder.
READ_GROUP, READ_AHEAD = 64, 64
#: Seconds without a message from the reader after which buffered chunks are embedded anyway.
READER_STALL_S = 0.2


@dataclass(frozen=True)
class SourceFile:
    """A file to ingest and the ``source`` name it is known by in the collection."""

    path: Path
    source: str


def ingest_key_for(content_hash: str, settings: Settings, model: str, dimensions: int) -> str:
    """sha256 hex of everything that decides a document's chunks and vectors.

    The encoder's backend and precision (OpenVINO fp32/bf16, torch) are deliberately not part
    of it, nor of the collection's model name: they give the same vectors (cosine >= 0.99996
    to torch fp32 on 512 corpus chunks, identical SQuAD recall@5; ``benchmarks/encoder.py``),
    so a store built on an AVX2 machine (fp32) stays valid on an AMX one (bf16) and vice versa.
    Keying on them would re-embed every document when a store moves between machines for no
    change in retrieval."""
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


@dataclass(eq=False)
class _Doc:
    file: SourceFile
    size: int
    document_id: str
    key: str
    content_hash: str
    ingested_at: str
    replaces: str | None
    started: float
    source_path: str
    replaces_chunks: int = 0
    ids: list[str] = field(default_factory=list)
    pages: int = 0
    ocr_pages: int = 0
    flushed: int = 0
    chunked: bool = False


class _Stopped(Exception):
    """The reader was told to stop (cancel, or the run ended early)."""


class _Reader:
    """Hash, load and chunk ``items`` in a thread, in order, ahead of the encoder.

    It sends lists of messages on ``queue`` (bounded: READ_AHEAD lists of about READ_GROUP
    chunks or messages; a list also goes when 0.1 s passed since the last): per file,
    ``("unchanged", file, size, head)``, or ``("chunks", doc, [Chunk], done)`` one or more times
    (``done`` on the last), possibly followed by ``("failed", file, size, doc | None, message)``;
    after an e-mail, ``("attachments", file, [Attachment], error)`` and then the messages of each
    attachment as a file; at the end ``("end",)``, or ``("error", exc)`` for an unexpected
    exception. Cancel is checked per page; :meth:`close` stops and joins the thread.
    """

    def __init__(self, run: _Run, items: list[tuple[SourceFile, int]], heads: dict[str, dict]):
        self.run, self.items, self.heads = run, items, heads
        self.queue: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._work, name="ingest-reader", daemon=True)
        self.folders: dict[Path, str] = {}
        self.pending: list[tuple] = []
        self.pending_chunks = 0
        self.sent_at = time.perf_counter()

    def start(self) -> _Reader:
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join()

    def _stopped(self) -> bool:
        return self.stop.is_set() or self.run.cancel.is_set()

    def _send(self, message: tuple, chunks: int = 0, *, now: bool = False) -> None:
        self.pending.append(message)
        self.pending_chunks += chunks
        if not (now or self.pending_chunks >= READ_GROUP or len(self.pending) >= READ_GROUP or time.perf_counter() - self.sent_at > 0.1):
            return
        batch, self.pending, self.pending_chunks = self.pending, [], 0
        while True:
            if self._stopped():
                raise _Stopped
            try:
                self.queue.put(batch, timeout=0.1)
                self.sent_at = time.perf_counter()
                return
            except queue.Full:
                continue

    def _work(self) -> None:
        try:
            for file, size in self.items:
                self._file(file, size)
            self._send(("end",), now=True)
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread, raised there
            try:
                self._send(("error", exc), now=True)
            except _Stopped:
                pass

    def _file(self, file: SourceFile, size: int) -> None:
        run = self.run
        started = time.perf_counter()
        document_id = document_id_for(file.source)
        try:
            content_hash = file_hash(file.path)
        except OSError as exc:
            self._send(("failed", file, size, None, f"{file.path.name}: {exc.strerror or exc}"))
            return
        key = ingest_key_for(content_hash, run.settings, run.embedder.name, run.embedder.dimension)
        head = self.heads.get(document_id)
        if head and head.get("ingest_key") == key:
            self._send(("unchanged", file, size, head))
            self._attachments(file)
            return
        doc = _Doc(file, size, document_id, key, content_hash, rec.version_time(), head.get("ingest_key") if head else None, started, self._resolved(file.path),
                   replaces_chunks=int(head.get("doc_chunks", 0) or 0) if head else 0)
        group: list[Chunk] = []
        try:
            for chunk in run.chunker.chunk_pages(
                self._pages(iter_pages(file.path, run.settings), doc),
                document_id=document_id,
                source=file.source,
                file_name=file.path.name,
            ):
                group.append(chunk)
                if len(group) >= READ_GROUP:
                    self._send(("chunks", doc, group, False), len(group))
                    group = []
        except (OSError, DocumentError) as exc:
            message = str(exc) if isinstance(exc, DocumentError) else f"{file.path.name}: {exc.strerror or exc}"
            self._send(("failed", file, size, doc, attachments.failure_message(file.source, file.path, message, run.settings)))
            return
        self._send(("chunks", doc, group, True), len(group))
        self._attachments(file)

    def _attachments(self, file: SourceFile) -> None:
        """After e-mail ``file`` was read: its supported attachments, each read as a file of its
        own (:mod:`workbench.ingest.attachments`); nothing for other files."""
        if not attachments.expands(file.path, self.run.settings):
            return
        try:
            found = attachments.extract(file.path, file.source, self.run.settings)
        except (OSError, DocumentError) as exc:
            self._send(("attachments", file, [], f"attachments not read: {exc}"))
            return
        self._send(("attachments", file, found, ""))
        for attachment in found:
            if attachment.error:
                self._send(("failed", SourceFile(file.path, attachment.source), attachment.size, None, attachment.error))
            else:
                self._file(SourceFile(attachment.path, attachment.source), attachment.size)

    def _resolved(self, path: Path) -> str:
        """``str(path.resolve())``, resolving each folder once (one lstat a file, not one per
        path component)."""
        if path.is_symlink():
            return str(path.resolve())
        parent = self.folders.get(path.parent)
        if parent is None:
            parent = self.folders[path.parent] = str(path.parent.resolve())
        return os.path.join(parent, path.name)

    def _pages(self, pages: Iterator[Page], doc: _Doc) -> Iterator[Page]:
        for page in pages:
            if self._stopped():  # per page: a long PDF or OCR run stops within one page
                raise _Stopped
            doc.pages += 1
            doc.ocr_pages += int(page.ocr)
            yield page


class _Run:
    """State of one ingestion run (the calling thread's side); see :func:`ingest_paths`."""

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
        self.encode_size = max(embedder.batch_size * ENCODE_CALL, 32)
        self.flush_size = max(embedder.batch_size * FLUSH_WINDOW, self.encode_size)
        #: The current window: one encode call at first (the encoder starts while the reader
        #: fills the next), doubling after each flush up to flush_size.
        self.window = self.encode_size
        #: Writes chunks while the next ones are encoded (one write in flight, in order).
        self.writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="chunk-writer")
        self.buffer: list[tuple[Chunk, _Doc]] = []
        self.open_docs: dict[int, _Doc] = {}
        self.summary = IngestSummary(collection=name)
        self.attached = attachments.Tracker(settings)
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

    # --- the reader's messages -------------------------------------------------------------
    def consume(self, reader: _Reader) -> None:
        """Handle the reader's messages until its end; embed and write as chunks arrive."""
        while True:
            self.check_cancel()
            try:
                messages = reader.queue.get(timeout=READER_STALL_S)
            except queue.Empty:
                if len(self.buffer) >= self.encode_size:  # the reader is slow: keep the encoder busy
                    self.flush(self.encode_size)
                continue
            for message in messages:
                if message[0] == "end":
                    return
                self.handle(message)
            if len(self.buffer) >= self.window:
                self.window = min(self.window * 2, self.flush_size)
                self.flush()

    def handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "error":
            raise message[1]
        file = message[1].file if kind == "chunks" else message[1]
        if file.source != self.current:
            self.current = file.source
            self.emit("file_start")
        if kind == "chunks":
            _, doc, chunks, done = message
            self.open_docs.setdefault(id(doc), doc)
            for chunk in chunks:
                doc.ids.append(rec.chunk_id(doc.document_id, doc.key, chunk.chunk_index))
                self.buffer.append((chunk, doc))
            doc.chunked = done
        elif kind == "unchanged":
            _, file, size, head = message
            self.bytes_done += size
            self.finish_file(FileResult(file.source, "unchanged", int(head.get("doc_chunks", 0)), int(head.get("doc_pages", 0)), int(head.get("doc_ocr_pages", 0))))
        elif kind == "attachments":
            _, file, found, error = message
            if error:  # the e-mail itself was read: say so beside its own result
                self.files_total += 1
                self.finish_file(FileResult(file.source, "failed", message=error))
                return
            self.attached.found(file.source, found)
            self.files_total += len(found)
            self.bytes_total += sum(a.size for a in found)
        elif kind == "failed":
            _, file, size, doc, text = message
            if doc is not None and id(doc) in self.open_docs:
                self.rollback(doc)
            else:
                self.bytes_done += size
            self.finish_file(FileResult(file.source, "failed", message=text, seconds=time.perf_counter() - doc.started if doc else 0.0))

    def finish_file(self, result: FileResult) -> None:
        self.summary.results.append(result)
        if result.status != "pruned":
            self.files_done += 1
        log.info("%s: %s %s", result.source, result.status, result.message)
        self.emit("file_done", result.status, result.message)

    # --- writing -------------------------------------------------------------------------
    def flush(self, limit: int | None = None) -> None:
        """Embed and write buffered chunks (uncommitted), longest first, in encode calls of
        ``encode_size``: all of them, or the ``limit`` longest; then commit what is complete.
        Each call's chunks are written on ``writer`` while the next call encodes (Chroma's
        upsert took ~4% of the time of a 1 MB single-line file on the encoder's thread;
        overlapped, that file ingests 5% faster on 2 cores). Cancellation is checked after each
        write."""
        if not self.buffer:
            return
        self.buffer.sort(key=lambda item: len(item[0].header) + len(item[0].text), reverse=True)
        if limit is None:
            batch, self.buffer = self.buffer, []
        else:
            batch, self.buffer = self.buffer[:limit], self.buffer[limit:]
        pending = None  # the write in flight: (future, part, one-chunk documents in it)
        try:
            for lo in range(0, len(batch), self.encode_size):
                part = batch[lo : lo + self.encode_size]
                ids = [doc.ids[chunk.chunk_index] for chunk, doc in part]
                vectors = embed_chunks(self.store, self.collection, self.embedder, [(cid, chunk) for cid, (chunk, _) in zip(ids, part)])
                texts = [chunk.text for chunk, _ in part]
                metas, whole = [], []
                for chunk, doc in part:
                    meta = rec.chunk_metadata(chunk, source_path=doc.source_path, doc_hash=doc.content_hash, ingest_key=doc.key, ingested_at=doc.ingested_at)
                    if doc.chunked and len(doc.ids) == 1:  # a one-chunk document: written committed
                        meta.update(rec.head_summary(pages=doc.pages, chunks=1, ocr_pages=doc.ocr_pages))
                        whole.append(doc)
                    metas.append(meta)
                if pending is not None:
                    pending, done = None, pending
                    self.written(*done)
                future = self.writer.submit(self.store.write_chunks, self.collection, ids, texts, metas, vectors, committed=bool(whole))
                pending = (future, part, whole)
        except BaseException:
            if pending is not None:  # let the write in flight land and count it, so a rollback sees it
                concurrent.futures.wait([pending[0]])
                if pending[0].exception() is None:
                    for _, doc in pending[1]:
                        doc.flushed += 1
                    self.finish_committed(pending[2])  # one-chunk documents it wrote committed stay
            raise
        if pending is not None:
            self.written(*pending)
        self.commit_ready()

    def written(self, future: concurrent.futures.Future, part: list[tuple[Chunk, _Doc]], whole: list[_Doc]) -> None:
        """After the write of ``part`` (raises what it raised): count it, commit-report its
        one-chunk documents, report progress, check cancellation."""
        future.result()
        for _, doc in part:
            doc.flushed += 1
        self.finish_committed(whole)
        self.chunks_done += len(part)
        self.emit("chunks")
        self.check_cancel()

    def commit_ready(self) -> None:
        """Commit every fully chunked document whose chunks are all written, together (see
        :meth:`Store.commit_versions`)."""
        ready = [d for d in self.open_docs.values() if d.chunked and d.flushed == len(d.ids)]
        if not ready:
            return
        self.store.commit_versions(
            self.collection,
            [(d.ids, rec.head_summary(pages=d.pages, chunks=len(d.ids), ocr_pages=d.ocr_pages)) for d in ready],
        )
        self.finish_committed(ready)

    def finish_committed(self, docs: list[_Doc]) -> None:
        """After ``docs`` were committed: delete the versions they replace (one request for
        all), report them."""
        replaced = [(d.document_id, d.replaces, d.replaces_chunks) for d in docs if d.replaces]
        if replaced:
            self.store.delete_versions(self.collection, replaced)
        for doc in docs:
            del self.open_docs[id(doc)]
            self.bytes_done += doc.size
            self.finish_file(
                FileResult(doc.file.source, "replaced" if doc.replaces else "added", len(doc.ids), doc.pages, doc.ocr_pages, seconds=time.perf_counter() - doc.started)
            )

    def rollback(self, doc: _Doc) -> None:
        """Forget an uncommitted document: drop its buffered chunks, delete written ones."""
        self.buffer = [(c, d) for c, d in self.buffer if d is not doc]
        if doc.flushed:
            self.store.delete_version(self.collection, doc.document_id, doc.key)
        if self.open_docs.pop(id(doc), None) is not None:
            self.bytes_done += doc.size


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
    ``cancel`` stops within one page being read or one encode call; unfinished documents are
    rolled back and ``summary.cancelled`` is True. Progress goes to ``progress`` as
    IngestEvents, always from the calling thread.

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
    _, heads = store.repair_and_heads(name)
    items = [(item, _size(item.path)) for item in discover(paths)]
    run.files_total = len(items)
    run.bytes_total = sum(size for _, size in items)
    run.emit("start")
    reader = _Reader(run, items, heads).start()
    try:
        try:
            run.consume(reader)
            run.current = ""
            run.flush()
            run.commit_ready()
        finally:
            reader.close()
        if prune:
            _prune(run, paths, heads)
        for result in run.attached.finish(store, run.collection, name, heads):
            run.finish_file(result)
    except CancelledError:
        for doc in list(run.open_docs.values()):
            run.rollback(doc)
        run.summary.cancelled = True
    finally:
        run.writer.shutdown(wait=True)
        run.attached.release(store)
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
    spans = [s if len(s) > 1 else [] for s in spans]  # one sentence: nothing to store, no pooling
    vectors, sentence_vectors = embedder.encode_with_spans(texts, spans)
    store.sentences.put(str(collection.id), [
        (cid, fingerprint(embedder.name, c.header, c.text), found)
        for (cid, c), found in zip(chunks, sentence_vectors) if len(found) > 1
    ])
    return vectors
