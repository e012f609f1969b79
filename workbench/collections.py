"""Collection-level operations: create, rename, copy, export/import as one archive, and
rebuild with another embedding model or chunk size (into a shadow collection, then swap).

Archive format (a zip, ``FORMAT`` version ``FORMAT_VERSION``)::

    manifest.json    format, version, collection name and metadata (embedding model, dimension,
                     chunk size/overlap), record count, sha256 of the two files below
    records.jsonl    one {"id", "document", "metadata"} object per chunk, in vector order
    embeddings.npy   (count, dimension) float32, row i is the vector of line i

Rebuild writes ``<name>.rebuild`` while ``<name>`` stays searchable, then swaps: ``<name>`` is
renamed to ``<name>.previous``, the shadow to ``<name>``, and the previous one is deleted.
Renaming uses Chroma 1.x ``Collection.modify(name=...)`` (checked with chromadb 1.5.9); when a
server refuses it, rename falls back to copy + delete.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .config import Settings
from .documents import Chunk, DocumentInfo, IngestEvent, Page
from .errors import CancelledError, StoreError, WorkbenchError
from .store import SCHEMA_VERSION, CollectionInfo, Store, check_collection_name, now_iso

log = logging.getLogger(__name__)

FORMAT = "rag-workbench-collection"
FORMAT_VERSION = 1
MANIFEST, RECORDS, VECTORS = "manifest.json", "records.jsonl", "embeddings.npy"
REBUILD_SUFFIX, PREVIOUS_SUFFIX, IMPORT_SUFFIX = ".rebuild", ".previous", ".importing"
_COSINE = {"hnsw": {"space": "cosine"}}
_SCALARS = (str, int, float, bool)

ProgressCallback = Callable[[IngestEvent], None]


class ArchiveError(WorkbenchError):
    """A collection archive is not one this workbench wrote, or is damaged; the message names
    the file and what is wrong."""


# --- create / rename / copy ------------------------------------------------------------------
def create_collection(store: Store, name: str, *, model: str, dimensions: int, chunk_size: int, chunk_overlap: int) -> CollectionInfo:
    """Create an empty collection recording model and chunking. Raises StoreError when the name
    is invalid or taken."""
    check_collection_name(name)
    if store.has_collection(name):
        raise StoreError(f"collection {name!r} already exists")
    store.open_collection(name, model=model, dimensions=dimensions, chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    return store.collection_info(name)


def rename_collection(store: Store, old: str, new: str) -> CollectionInfo:
    """Rename ``old`` to ``new`` (Chroma ``modify(name=)``; copy + delete when that fails).
    Raises StoreError when ``old`` is missing, ``new`` is invalid or already exists."""
    check_collection_name(new)
    collection = store.get_collection(old)
    if old == new:
        return store.collection_info(old)
    if store.has_collection(new):
        raise StoreError(f"cannot rename {old!r}: a collection named {new!r} already exists")
    try:
        collection.modify(name=new)
    except Exception as exc:  # a server without rename: copy, then delete
        log.warning("rename %s -> %s via modify failed (%s); copying instead", old, new, exc)
        if store.has_collection(new):
            raise StoreError(f"renaming {old!r} to {new!r} failed half-way: {exc}") from exc
        copy_collection(store, old, new)
        store.client.delete_collection(old)
    return store.collection_info(new)


def _records(collection, batch: int) -> Iterator[tuple[list[str], list[str], list[dict], np.ndarray]]:
    """Every record of ``collection`` in pages of ``batch``: (ids, documents, metadatas,
    (k, d) float32 embeddings)."""
    offset = 0
    while True:
        got = collection.get(limit=batch, offset=offset, include=["documents", "metadatas", "embeddings"])
        ids = got["ids"]
        if not ids:
            return
        vectors = np.asarray(got["embeddings"], dtype=np.float32).reshape(len(ids), -1)
        yield ids, list(got["documents"]), [dict(m or {}) for m in got["metadatas"]], vectors
        offset += len(ids)


def _new_collection(store: Store, name: str, metadata: dict[str, Any]):
    clean = {k: v for k, v in metadata.items() if isinstance(v, _SCALARS)}
    return store.client.create_collection(name, configuration=_COSINE, metadata=clean or None, embedding_function=None)


def copy_collection(store: Store, source: str, target: str) -> CollectionInfo:
    """Copy every record (ids, texts, metadata, vectors) of ``source`` into a new collection
    ``target`` with the same metadata. Raises StoreError when ``target`` exists or the copy
    is incomplete (the partial target is deleted)."""
    check_collection_name(target)
    src = store.get_collection(source)
    if store.has_collection(target):
        raise StoreError(f"cannot copy to {target!r}: it already exists")
    expected = src.count()
    dst = _new_collection(store, target, dict(src.metadata or {}))
    try:
        for ids, docs, metas, vectors in _records(src, store.max_batch):
            dst.add(ids=ids, documents=docs, metadatas=metas, embeddings=vectors)
        if dst.count() != expected:
            raise StoreError(f"copy of {source!r} has {dst.count()} chunks, expected {expected}")
    except BaseException:
        store.client.delete_collection(target)
        raise
    return store.collection_info(target)


# --- export / import ----------------------------------------------------------------------------
class _HashingWriter:
    def __init__(self, raw):
        self.raw, self.sha = raw, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self.raw.write(data)


def export_collection(store: Store, name: str, path: Path | str) -> Path:
    """Write collection ``name`` to the zip archive ``path`` (see the module docstring) and
    return the path. Vectors are stored as float32. Raises StoreError when the collection is
    missing or changes while it is exported."""
    collection = store.get_collection(name)
    meta = dict(collection.metadata or {})
    count = collection.count()
    path = Path(path)
    batches = _records(collection, store.max_batch)
    first = next(batches, None)
    dim = int(first[3].shape[1]) if first else int(meta.get("embedding_dimensions", 0) or 0)
    written = 0
    tmp = path.with_name(path.name + ".part")
    vec_tmp = path.with_name(path.name + ".vectors.part")  # zip writes one member at a time
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            with zf.open(RECORDS, "w", force_zip64=True) as rec_raw, open(vec_tmp, "wb") as vec_raw:
                rec, vec = _HashingWriter(rec_raw), _HashingWriter(vec_raw)
                np.lib.format.write_array_header_1_0(vec, {"descr": "<f4", "fortran_order": False, "shape": (count, dim)})
                for ids, docs, metas, vectors in itertools.chain([first] if first else [], batches):
                    if vectors.shape[1] != dim:
                        raise StoreError(f"collection {name!r} mixes {dim}-d and {vectors.shape[1]}-d vectors")
                    for chunk_id, doc, m in zip(ids, docs, metas):
                        line = json.dumps({"id": chunk_id, "document": doc, "metadata": m}, ensure_ascii=False)
                        rec.write((line + "\n").encode("utf-8"))
                    vec.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
                    written += len(ids)
            if written != count:
                raise StoreError(f"collection {name!r} changed while it was exported ({written} of {count} chunks); export again")
            zf.write(vec_tmp, VECTORS)
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "name": name,
                "metadata": meta,
                "embedding_model": meta.get("embedding_model", ""),
                "embedding_dimensions": dim,
                "chunk_size": meta.get("chunk_size"),
                "chunk_overlap": meta.get("chunk_overlap"),
                "count": count,
                "documents": store.collection_info(name).documents,
                "distance": "cosine",
                "exported_at": now_iso(),
                "sha256": {RECORDS: rec.sha.hexdigest(), VECTORS: vec.sha.hexdigest()},
            }
            zf.writestr(MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False))
        tmp.replace(path)
    finally:
        vec_tmp.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return path


def read_manifest(path: Path | str) -> dict[str, Any]:
    """The validated manifest of archive ``path``. Raises ArchiveError naming the file when it
    is not a zip, lacks a member, or the manifest is not this format/version."""
    path = Path(path)
    label = path.name
    if not path.is_file():
        raise ArchiveError(f"{label}: archive not found")
    if not zipfile.is_zipfile(path):
        raise ArchiveError(f"{label}: not a collection archive (not a zip file)")
    try:
        with zipfile.ZipFile(path) as zf:
            missing = {MANIFEST, RECORDS, VECTORS} - set(zf.namelist())
            if missing:
                raise ArchiveError(f"{label}: not a collection archive (missing {', '.join(sorted(missing))})")
            manifest = json.loads(zf.read(MANIFEST).decode("utf-8"))
    except (zipfile.BadZipFile, UnicodeDecodeError, json.JSONDecodeError, OSError) as exc:
        raise ArchiveError(f"{label}: damaged archive ({type(exc).__name__}: {exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveError(f"{label}: manifest.json is not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArchiveError(f"{label}: archive format version {manifest.get('format_version')!r} is not supported (expected {FORMAT_VERSION})")
    for key, kind in (("name", str), ("count", int), ("embedding_dimensions", int), ("metadata", dict), ("sha256", dict)):
        if not isinstance(manifest.get(key), kind):
            raise ArchiveError(f"{label}: manifest.json field {key!r} is missing or not a {kind.__name__}")
    return manifest


def _check_member_hashes(zf: zipfile.ZipFile, manifest: dict, label: str) -> None:
    for member in (RECORDS, VECTORS):
        sha = hashlib.sha256()
        with zf.open(member) as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                sha.update(block)
        if sha.hexdigest() != manifest["sha256"].get(member):
            raise ArchiveError(f"{label}: {member} does not match its checksum in manifest.json (damaged archive)")


def _read_vector_header(fh, manifest: dict, label: str) -> None:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        reader = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        if reader is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, dtype = reader(fh)
    except ValueError as exc:
        raise ArchiveError(f"{label}: {VECTORS} is not a .npy array ({exc})") from exc
    want = (manifest["count"], manifest["embedding_dimensions"])
    if fortran or dtype != np.dtype("<f4") or tuple(shape) != want:
        raise ArchiveError(f"{label}: {VECTORS} holds {dtype} {tuple(shape)}, expected float32 {want}")


def _check_record(line: bytes, number: int, label: str) -> tuple[str, str, dict]:
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"{label}: {RECORDS} line {number} is not JSON ({exc})") from exc
    ok = isinstance(obj, dict) and isinstance(obj.get("id"), str) and obj["id"] and isinstance(obj.get("document"), str)
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if (
        not ok
        or not isinstance(meta, dict)
        or "document_id" not in meta
        or "chunk_index" not in meta
        or not all(isinstance(v, _SCALARS) for v in meta.values())
    ):
        raise ArchiveError(f"{label}: {RECORDS} line {number} is not a chunk record (id, document, flat metadata with document_id and chunk_index)")
    return obj["id"], obj["document"], meta


def import_collection(store: Store, path: Path | str, name: str | None = None) -> CollectionInfo:
    """Load archive ``path`` into a new collection ``name`` (default: the name in the manifest).

    Everything is validated (format, checksums, array shape, each record) while it is written
    into ``<name>.importing``, which is renamed to ``name`` only when complete, so a bad archive
    leaves no collection behind. Raises ArchiveError for a bad archive, StoreError when ``name``
    is invalid or exists.
    """
    path = Path(path)
    label = path.name
    manifest = read_manifest(path)
    name = check_collection_name(name or manifest["name"])
    if store.has_collection(name):
        raise StoreError(f"collection {name!r} already exists; import under another name")
    staging = check_collection_name(name + IMPORT_SUFFIX)
    if store.has_collection(staging):
        store.client.delete_collection(staging)
    count, dim = manifest["count"], manifest["embedding_dimensions"]
    metadata = dict(manifest["metadata"], imported_at=now_iso(), imported_from=label)
    with zipfile.ZipFile(path) as zf:
        _check_member_hashes(zf, manifest, label)
        target = _new_collection(store, staging, metadata)
        try:
            with zf.open(RECORDS) as records, zf.open(VECTORS) as vectors:
                _read_vector_header(vectors, manifest, label)
                done = 0
                while done < count:
                    k = min(store.max_batch, count - done)
                    rows = [_check_record(records.readline(), done + i + 1, label) for i in range(k)]
                    raw = vectors.read(k * dim * 4)
                    if len(raw) != k * dim * 4:
                        raise ArchiveError(f"{label}: {VECTORS} ends early")
                    block = np.frombuffer(raw, dtype="<f4").reshape(k, dim)
                    if not np.isfinite(block).all():
                        raise ArchiveError(f"{label}: {VECTORS} holds NaN or infinite values")
                    target.add(ids=[r[0] for r in rows], documents=[r[1] for r in rows], metadatas=[r[2] for r in rows], embeddings=block)
                    done += k
                if records.readline().strip():
                    raise ArchiveError(f"{label}: {RECORDS} has more records than the manifest's count {count}")
            if target.count() != count:
                raise ArchiveError(f"{label}: {count} records expected, {target.count()} distinct ids imported (duplicate ids?)")
            target.modify(name=name)
        except BaseException:
            if store.has_collection(staging):
                store.client.delete_collection(staging)
            raise
    return store.collection_info(name)


# --- rebuild ------------------------------------------------------------------------------
def settings_for_rebuild(settings: Settings, **changes: Any) -> Settings:
    """A validated copy of ``settings`` with ``changes`` (e.g. embedding_model, chunk_size,
    chunk_overlap). Raises ValueError (pydantic ValidationError) for invalid values."""
    return type(settings).model_validate({**settings.model_dump(), **changes})


def _doc_records(collection, doc: DocumentInfo) -> list[tuple[str, dict]]:
    got = collection.get(
        where={"$and": [{"document_id": doc.document_id}, {"ingest_key": doc.ingest_key}]},
        include=["documents", "metadatas"],
    )
    pairs = [(t or "", dict(m or {})) for t, m in zip(got["documents"], got["metadatas"])]
    return sorted(pairs, key=lambda p: int(p[1].get("chunk_index", 0)))


def embedded_token_counts(store: Store, name: str, document_id: str, count_tokens: Callable[[str], int]) -> dict[str, int]:
    """Model tokens each committed chunk of a document puts in the model's window: its stored
    ``token_count`` (text) plus its context header's tokens (``count_tokens``, e.g.
    ``Embedder.count_tokens``), special tokens excluded. ``{chunk_id: tokens}``; a chunk whose
    count + 2 reaches ``max_seq_length`` is at the model's limit."""
    doc = store.document(name, document_id)
    if doc is None:
        return {}
    got = store.get_collection(name).get(
        where={"$and": [{"document_id": document_id}, {"ingest_key": doc.ingest_key}]}, include=["metadatas"]
    )
    headers: dict[str, int] = {}
    out = {}
    for chunk_id, meta in zip(got["ids"], got["metadatas"]):
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
    from .chunking import SPECIAL_TOKENS
    from .loaders import file_hash, iter_pages

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
    from .chunking import Chunker
    from .embeddings import get_embedder
    from .ingest import ingest_key_for

    old = store.get_collection(name)
    embedder = embedder or get_embedder(settings)
    chunker = Chunker(
        embedder.backend_tokenizer, settings.chunk_size, settings.chunk_overlap, embedder.max_seq_length, context=settings.chunk_context
    )
    shadow_name = check_collection_name(name + REBUILD_SUFFIX)
    check_collection_name(name + PREVIOUS_SUFFIX)
    if store.has_collection(shadow_name):
        store.client.delete_collection(shadow_name)  # left over by an interrupted rebuild
    cancel = cancel or threading.Event()
    old_meta = dict(old.metadata or {})
    count_before = old.count()
    old_model, old_dim = str(old_meta.get("embedding_model", "")), int(old_meta.get("embedding_dimensions", 0) or 0)
    docs = store.documents(name)
    shadow = _new_collection(
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
            records = _doc_records(old, doc)
            # chunked under the same rules (size, overlap, chunker version, header) iff the old key
            # is what these settings give with the old model
            same_chunking = doc.ingest_key == ingest_key_for(doc.content_hash, settings, old_model, old_dim)
            chunks = _document_chunks(doc, records, settings, embedder, chunker, same_chunking)
            key = ingest_key_for(doc.content_hash, settings, embedder.name, embedder.dimension)
            head = records[0][1] if records else {}
            now = now_iso()
            for lo in range(0, len(chunks), store.max_batch):
                part = chunks[lo : lo + store.max_batch]
                vectors = embedder.encode([c.header + c.text for c in part])  # as workbench.ingest embeds
                metas = []
                for c in part:
                    meta = {
                        "document_id": c.document_id, "source": c.source, "source_path": doc.source_path,
                        "file_name": c.file_name, "page": c.page, "chunk_index": c.chunk_index,
                        "start": c.start, "end": c.end, "token_count": c.token_count,
                        "content_hash": c.content_hash, "section": c.section, "header": c.header, "ocr": c.ocr,
                        "doc_hash": doc.content_hash, "ingest_key": key, "ingested_at": now, "complete": True,
                    }
                    if c.chunk_index == 0:
                        meta.update(doc_pages=int(head.get("doc_pages", doc.pages) or doc.pages), doc_chunks=len(chunks), doc_ocr_pages=int(head.get("doc_ocr_pages", doc.ocr_pages) or 0))
                    metas.append(meta)
                # chunk id format of workbench.ingest: <document_id>-<ingest_key[:12]>-<index:06d>
                ids = [f"{c.document_id}-{key[:12]}-{c.chunk_index:06d}" for c in part]
                shadow.add(ids=ids, documents=[c.text for c in part], metadatas=metas, embeddings=vectors)
                chunks_done += len(part)
                emit("chunks", i, doc.source)
            emit("file_done", i + 1, doc.source, "rebuilt")
        if old.count() != count_before:
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


def swap(store: Store, name: str, shadow: str) -> None:
    """Put ``shadow`` in place of ``name``: ``name`` -> ``name.previous``, ``shadow`` -> ``name``,
    delete ``name.previous``. If the second rename fails the first is undone. Raises StoreError."""
    previous = check_collection_name(name + PREVIOUS_SUFFIX)
    if store.has_collection(previous):
        store.client.delete_collection(previous)
    rename_collection(store, name, previous)
    try:
        rename_collection(store, shadow, name)
    except Exception as exc:
        rename_collection(store, previous, name)
        raise StoreError(f"swapping {shadow!r} into {name!r} failed ({exc}); {name!r} is unchanged") from exc
    store.client.delete_collection(previous)

