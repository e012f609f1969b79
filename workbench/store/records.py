"""The stored record format: the one place that knows how a chunk is kept in Chroma.

A chunk is one Chroma record: id, text (``documents``), embedding and a flat metadata dict.

- **Chunk id**: ``<document_id>-<ingest_key[:12]>-<chunk_index:06d>`` (:func:`chunk_id`). A
  document's id is the first 16 hex digits of sha256(source) (:func:`document_id_for`); its
  *ingest key* names one version of it (content + chunking + model), so two versions of a
  document never share a chunk id.
- **Metadata** (:func:`chunk_metadata`): the chunk's place (document_id, source, source_path,
  file_name, page, chunk_index, start/end characters, token_count, content_hash, section,
  header, ocr), its version (doc_hash, ingest_key, ingested_at) and the commit flag.
- **Commit flag** ``complete``: chunks are written with ``complete=False`` and flipped to True
  when the whole document is in; chunk 0 (the *head*) flips last and then carries the document
  summary (doc_pages, doc_chunks, doc_ocr_pages). The head is the authority: a version of a
  document is *committed* exactly when its head is complete. A version of one chunk may be
  written committed at once (its head is all of it: there is nothing to flip first).
- **Current version**: of several committed versions of one document (a run killed between
  committing a new version and deleting the old one), only the newest (by ``ingested_at``, then
  ingest key) is current. Search, BM25 and the document list show current versions only;
  :meth:`workbench.store.Store.repair` deletes the rest.
- **Revision**: collection metadata ``workbench_revision`` (:data:`REVISION_KEY`), a random token
  the store renews on every change of the committed chunks, prefixed ``changing-`` while one
  runs (:meth:`workbench.store.Store.revision`).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from workbench.documents import Chunk, DocumentInfo, Hit

#: Version of this record format, stored in each collection's metadata (``workbench_schema``).
SCHEMA_VERSION = 1
#: The commit flag's metadata key.
COMMIT_FLAG = "complete"
#: ``where`` filter of committed heads (Chroma metadata filter syntax).
COMMITTED_HEAD = {"$and": [{"chunk_index": 0}, {COMMIT_FLAG: True}]}
#: ``where`` filter of uncommitted chunks.
UNCOMMITTED = {COMMIT_FLAG: False}
#: ``where`` filter of heads (chunk 0), committed or not. Readers on the search path filter on
#: this and check the flag in Python (:func:`is_committed`): Chroma answers a filter on the
#: boolean flag by scanning every record's metadata (~0.3 s at 100k chunks, against ~35 ms for
#: this one; chromadb 1.5.9).
HEAD = {"chunk_index": 0}


def now_iso() -> str:
    """Current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def version_time() -> str:
    """Current UTC time, ISO 8601 to the microsecond: a version's ``ingested_at``, which orders
    versions of one document (to the second, two versions in one second would tie; a shorter
    string sorts first, so older second-resolution stamps stay older)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def document_id_for(source: str) -> str:
    """16 hex digits of sha256(source): the stable id of a document across versions."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]


def chunk_id(document_id: str, ingest_key: str, chunk_index: int) -> str:
    """The id of chunk ``chunk_index`` of one version: ``<document_id>-<key[:12]>-<index:06d>``."""
    return f"{document_id}-{ingest_key[:12]}-{chunk_index:06d}"


def head_id(document_id: str, ingest_key: str) -> str:
    """The id of a version's head (chunk 0)."""
    return chunk_id(document_id, ingest_key, 0)


def is_head_id(cid: str) -> bool:
    """True for the id of a head (chunk 0)."""
    return cid.endswith("-000000")


def head_id_of(meta: dict[str, Any]) -> str:
    """The head id of the version a stored chunk (its metadata) belongs to."""
    return head_id(str(meta.get("document_id", "")), str(meta.get("ingest_key", "")))


_CHUNK_ID = re.compile(r"([0-9a-f]{16}-[0-9a-f]{12})-[0-9]{6,}")


def head_id_of_id(cid: str) -> str | None:
    """The head id of the version a chunk belongs to, from its id alone (no metadata read:
    scanning ids is ~40x cheaper than scanning metadata); None for an id :func:`chunk_id`
    did not make."""
    match = _CHUNK_ID.fullmatch(cid)
    return f"{match.group(1)}-{0:06d}" if match else None


def version_where(document_id: str, ingest_key: str) -> dict:
    """``where`` filter of every chunk of one version of a document."""
    return {"$and": [{"document_id": document_id}, {"ingest_key": ingest_key}]}


def source_path_where(paths: Iterable[str]) -> dict:
    """``where`` filter of the chunks whose ``source_path`` is one of ``paths`` (non-empty)."""
    return {"source_path": {"$in": sorted(set(paths))}}


def head_where(where: dict | None = None) -> dict:
    """``where`` filter of heads (committed or not), narrowed by ``where`` when given."""
    return {"$and": [HEAD, where]} if where else HEAD


def is_committed(meta: dict[str, Any] | None) -> bool:
    """True when a record's metadata carries the commit flag (for a head: its version is committed)."""
    return bool(meta) and meta.get(COMMIT_FLAG) is True


def committed_head_where(where: dict | None = None) -> dict:
    """``where`` filter of committed heads, narrowed by ``where`` when given."""
    if not where:
        return COMMITTED_HEAD
    return {"$and": [*COMMITTED_HEAD["$and"], where]}


def chunk_metadata(
    chunk: Chunk, *, source_path: str, doc_hash: str, ingest_key: str, ingested_at: str, complete: bool = False
) -> dict[str, Any]:
    """The metadata stored with ``chunk`` (all values scalars, as Chroma requires)."""
    return {
        "document_id": chunk.document_id,
        "source": chunk.source,
        "source_path": source_path,
        "file_name": chunk.file_name,
        "page": chunk.page,
        "chunk_index": chunk.chunk_index,
        "start": chunk.start,
        "end": chunk.end,
        "token_count": chunk.token_count,
        "content_hash": chunk.content_hash,
        "section": chunk.section,
        "header": chunk.header,
        "ocr": chunk.ocr,
        "doc_hash": doc_hash,
        "ingest_key": ingest_key,
        "ingested_at": ingested_at,
        COMMIT_FLAG: complete,
    }


def head_summary(*, pages: int, chunks: int, ocr_pages: int) -> dict[str, Any]:
    """Metadata that commits a head: the flag and the document summary."""
    return {COMMIT_FLAG: True, "doc_pages": pages, "doc_chunks": chunks, "doc_ocr_pages": ocr_pages}


COMMITTED = {COMMIT_FLAG: True}

#: Collection metadata key of the revision token (:meth:`workbench.store.Store.revision`).
REVISION_KEY = "workbench_revision"
#: Prefix of a revision token written before a change and replaced after it: while it stands
#: (a change under way, or one a kill interrupted) the revision is unknown.
_CHANGING = "changing-"


def new_revision(*, changing: bool = False) -> str:
    """A fresh revision token (random, never reused); marked as a change under way with ``changing``."""
    return (_CHANGING if changing else "") + uuid.uuid4().hex


def revision_of(collection_id: str, metadata: dict[str, Any] | None) -> str | None:
    """``"<collection id>:<token>"`` from a collection's id and metadata, or None while the
    token marks a change under way. A collection that never had a token has revision
    ``"<collection id>:"``."""
    token = str((metadata or {}).get(REVISION_KEY, ""))
    return None if token.startswith(_CHANGING) else f"{collection_id}:{token}"


def version_order(meta: dict[str, Any]) -> tuple[str, str]:
    """Sort key of versions of one document: older first (ingested_at, then ingest key)."""
    return (str(meta.get("ingested_at", "")), str(meta.get("ingest_key", "")))


def current_heads(heads: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{document_id: head metadata}`` of the newest committed version of each document,
    from the metadata of committed heads."""
    current: dict[str, dict[str, Any]] = {}
    for meta in heads:
        doc = str(meta.get("document_id", ""))
        if doc not in current or version_order(meta) > version_order(current[doc]):
            current[doc] = meta
    return current


def hit_from_record(chunk_id: str, text: str, meta: dict[str, Any], score: float, **extra) -> Hit:
    """Build a Hit from one Chroma record (id, document text, metadata)."""
    return Hit(
        chunk_id=chunk_id,
        score=float(score),
        text=text or "",
        document_id=str(meta.get("document_id", "")),
        source=str(meta.get("source", "")),
        file_name=str(meta.get("file_name", "")),
        page=int(meta.get("page", 0) or 0),
        chunk_index=int(meta.get("chunk_index", 0) or 0),
        start=int(meta.get("start", 0) or 0),
        end=int(meta.get("end", 0) or 0),
        token_count=int(meta.get("token_count", 0) or 0),
        section=str(meta.get("section", "")),
        **extra,
    )


def document_info(meta: dict[str, Any]) -> DocumentInfo:
    """A DocumentInfo from a committed head's metadata."""
    return DocumentInfo(
        document_id=str(meta["document_id"]),
        source=str(meta.get("source", "")),
        file_name=str(meta.get("file_name", "")),
        source_path=str(meta.get("source_path", "")),
        pages=int(meta.get("doc_pages", 0) or 0),
        chunks=int(meta.get("doc_chunks", 0) or 0),
        ocr_pages=int(meta.get("doc_ocr_pages", 0) or 0),
        content_hash=str(meta.get("doc_hash", "")),
        ingested_at=str(meta.get("ingested_at", "")),
        ingest_key=str(meta.get("ingest_key", "")),
    )
