"""The Chroma store: embedded (``PersistentClient`` on CHROMA_PERSIST_PATH) or a Chroma server
(``HttpClient`` on CHROMA_HOST:CHROMA_PORT). Collections use cosine space, so
``score = 1 - distance`` is the cosine similarity.

Every chunk carries its document's metadata. Two fields make ingestion crash-safe:
``ingest_key`` (content hash + chunk settings + model) and ``complete``. Chunks are written with
``complete=False`` and flipped to True when the whole document is in; chunk 0 flips last, so a
document is *committed* exactly when its chunk 0 is complete. ``repair`` removes anything a
killed run left behind. Chunk 0 also carries the document summary (pages, chunks, OCR pages).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .config import Settings
from .documents import DocumentInfo, Hit
from .errors import CollectionMismatchError, StoreError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$")


@dataclass(frozen=True)
class CollectionInfo:
    """A collection and what it was built with. ``chunks`` counts committed and uncommitted
    records; ``documents`` counts committed documents."""

    name: str
    documents: int
    chunks: int
    embedding_model: str
    embedding_dimensions: int
    chunk_size: int
    chunk_overlap: int
    created_at: str


def check_collection_name(name: str) -> str:
    """Return ``name`` if Chroma accepts it (3-512 chars of [a-zA-Z0-9._-], starting and ending
    alphanumeric), else raise StoreError saying so."""
    if not _NAME_RE.match(name or "") or ".." in name:
        raise StoreError(
            f"invalid collection name {name!r}: use 3-512 characters of letters, digits, '.', '_' "
            "or '-', starting and ending with a letter or digit"
        )
    return name


def now_iso() -> str:
    """Current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


class Store:
    """A Chroma client plus the workbench's conventions for collections and documents."""

    def __init__(self, settings: Settings):
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        self.settings = settings
        chroma_settings = ChromaSettings(anonymized_telemetry=False)
        try:
            if settings.chroma_host:
                self.client = chromadb.HttpClient(
                    host=settings.chroma_host, port=settings.chroma_port, settings=chroma_settings
                )
                self.client.heartbeat()
            else:
                settings.chroma_persist_path.mkdir(parents=True, exist_ok=True)
                self.client = chromadb.PersistentClient(
                    path=str(settings.chroma_persist_path), settings=chroma_settings
                )
        except Exception as exc:
            raise StoreError(
                f"cannot open the Chroma store at {settings.chroma_location} ({exc}); "
                + (
                    "is the Chroma server running (`chroma run --path DIR --port N`)?"
                    if settings.chroma_host
                    else "check that CHROMA_PERSIST_PATH is writable"
                )
            ) from exc
        self.max_batch = int(self.client.get_max_batch_size())

    # --- collections ---------------------------------------------------------------
    @property
    def location(self) -> str:
        return self.settings.chroma_location

    def collection_names(self) -> list[str]:
        """Names of all collections, sorted."""
        return sorted(c.name for c in self.client.list_collections())

    def has_collection(self, name: str) -> bool:
        return name in self.collection_names()

    def get_collection(self, name: str):
        """The raw Chroma collection; raises StoreError when it does not exist."""
        try:
            return self.client.get_collection(name, embedding_function=None)
        except Exception as exc:
            raise StoreError(f"collection {name!r} does not exist in {self.location}") from exc

    def open_collection(self, name: str, *, model: str, dimensions: int, chunk_size: int, chunk_overlap: int):
        """Get or create ``name`` for writing with this model and chunking.

        A new collection records model, dimension and chunk settings in its metadata (cosine
        space). An existing one built with another model or dimension raises
        CollectionMismatchError naming both; other chunk settings are recorded (documents then
        re-chunk on ingest because their ingest key changes).
        """
        check_collection_name(name)
        if self.has_collection(name):
            collection = self.get_collection(name)
            meta = dict(collection.metadata or {})
            have_model = meta.get("embedding_model")
            have_dim = meta.get("embedding_dimensions")
            if have_model and (have_model != model or int(have_dim or dimensions) != dimensions):
                raise CollectionMismatchError(
                    f"collection {name!r} was built with {have_model} ({have_dim}-d) but the "
                    f"loaded model is {model} ({dimensions}-d); ingest into another collection, "
                    f"or rebuild {name!r} with the new model"
                )
            if (meta.get("chunk_size"), meta.get("chunk_overlap")) != (chunk_size, chunk_overlap):
                meta.update(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
                meta.update(embedding_model=model, embedding_dimensions=dimensions)
                collection.modify(metadata=meta)
            return collection
        return self.client.create_collection(
            name,
            configuration={"hnsw": {"space": "cosine"}},
            metadata={
                "embedding_model": model,
                "embedding_dimensions": dimensions,
                "chunk_size": chunk_size,
                "chunk_overlap": chunk_overlap,
                "created_at": now_iso(),
                "workbench_schema": SCHEMA_VERSION,
            },
            embedding_function=None,
        )

    def collection_info(self, name: str) -> CollectionInfo:
        collection = self.get_collection(name)
        meta = collection.metadata or {}
        return CollectionInfo(
            name=name,
            documents=len(self._committed_heads(collection)),
            chunks=collection.count(),
            embedding_model=str(meta.get("embedding_model", "")),
            embedding_dimensions=int(meta.get("embedding_dimensions", 0) or 0),
            chunk_size=int(meta.get("chunk_size", 0) or 0),
            chunk_overlap=int(meta.get("chunk_overlap", 0) or 0),
            created_at=str(meta.get("created_at", "")),
        )

    def list_collections(self) -> list[CollectionInfo]:
        """Every collection with its document and chunk counts, sorted by name."""
        return [self.collection_info(name) for name in self.collection_names()]

    def delete_collection(self, name: str) -> None:
        """Delete a collection and all its chunks; StoreError if it does not exist."""
        self.get_collection(name)
        self.client.delete_collection(name)
        from .keyword import drop_index

        drop_index(self.settings, name)  # its BM25 index folder goes too

    # --- documents -------------------------------------------------------------------
    @staticmethod
    def _committed_heads(collection, where: dict | None = None) -> list[dict]:
        clauses: list[dict] = [{"chunk_index": 0}, {"complete": True}]
        if where:
            clauses.append(where)
        return collection.get(where={"$and": clauses}, include=["metadatas"])["metadatas"] or []

    def documents(self, name: str) -> list[DocumentInfo]:
        """Committed documents of a collection, sorted by source."""
        heads = self._committed_heads(self.get_collection(name))
        docs = [_document_info(m) for m in heads]
        return sorted(docs, key=lambda d: d.source)

    def document(self, name: str, document_id: str) -> DocumentInfo | None:
        heads = self._committed_heads(self.get_collection(name), {"document_id": document_id})
        return _document_info(heads[0]) if heads else None

    def document_chunks(self, name: str, document_id: str) -> list[Hit]:
        """The committed chunks of one document in order (score 0: no query)."""
        info = self.document(name, document_id)
        if info is None:
            return []
        got = self.get_collection(name).get(
            where={"$and": [{"document_id": document_id}, {"ingest_key": info.ingest_key}]},
            include=["documents", "metadatas"],
        )
        hits = [hit_from_record(i, d, m, 0.0) for i, d, m in zip(got["ids"], got["documents"], got["metadatas"])]
        return sorted(hits, key=lambda h: h.chunk_index)

    def delete_document(self, name: str, document_id: str) -> int:
        """Delete every chunk of a document (all versions); returns how many were removed."""
        collection = self.get_collection(name)
        ids = collection.get(where={"document_id": document_id}, include=[])["ids"]
        for i in range(0, len(ids), self.max_batch):
            collection.delete(ids=ids[i : i + self.max_batch])
        return len(ids)

    def repair(self, name: str) -> int:
        """Remove what an interrupted ingest left: every (document, ingest_key) whose chunk 0
        is not committed, and older committed versions of a document that has a newer one.
        Returns the number of chunks removed. Idempotent."""
        collection = self.get_collection(name)
        removed = 0
        loose = collection.get(where={"complete": False}, include=["metadatas"])["metadatas"] or []
        for document_id, key in sorted({(m["document_id"], m["ingest_key"]) for m in loose}):
            removed += self._delete_version(collection, document_id, key)
        by_doc: dict[str, list[dict]] = {}
        for meta in self._committed_heads(collection):
            by_doc.setdefault(meta["document_id"], []).append(meta)
        for document_id, versions in by_doc.items():
            versions.sort(key=lambda m: (m.get("ingested_at", ""), m.get("ingest_key", "")))
            for stale in versions[:-1]:
                removed += self._delete_version(collection, document_id, stale["ingest_key"])
        if removed:
            log.warning("repaired collection %s: removed %d chunks of unfinished ingests", name, removed)
        return removed

    def _delete_version(self, collection, document_id: str, key: str) -> int:
        ids = collection.get(
            where={"$and": [{"document_id": document_id}, {"ingest_key": key}]}, include=[]
        )["ids"]
        for i in range(0, len(ids), self.max_batch):
            collection.delete(ids=ids[i : i + self.max_batch])
        return len(ids)


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


def _document_info(meta: dict[str, Any]) -> DocumentInfo:
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


def open_store(settings: Settings) -> Store:
    """Open the store these settings point at. Raises StoreError when it cannot be reached."""
    return Store(settings)
