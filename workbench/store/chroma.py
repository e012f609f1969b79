"""The Chroma store: embedded (``PersistentClient`` on CHROMA_PERSIST_PATH) or a Chroma server
(``HttpClient`` on CHROMA_HOST:CHROMA_PORT). Collections use cosine space, so
``score = 1 - distance`` is the cosine similarity.

:class:`Store` is the only code that reads or writes chunk records; the record format (ids,
metadata, the commit flag, which version is current) is :mod:`workbench.store.records`. Writing
is two-phase: :meth:`Store.write_chunks` (uncommitted), then :meth:`Store.commit_versions` (the
other chunks first, the heads last, several documents' heads in one call), so a killed run
never leaves a partial document searchable; :meth:`Store.repair` removes what it left. Every
change of the committed chunks gives the collection a new :meth:`Store.revision`, and deleting
chunks deletes their sentence vectors (:mod:`workbench.store.sentences`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from workbench.config import Settings
from workbench.errors import CollectionMismatchError, StoreError
from workbench.store import records as rec
from workbench.store.records import SCHEMA_VERSION, now_iso
from workbench.store.sentences import SentenceVectors, sidecar_root
from workbench.documents import DocumentInfo, Hit

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$")
#: Suffixes of the work collections of a rebuild (shadow, swap) and an import
#: (:mod:`workbench.store.admin`): hidden from listings.
REBUILD_SUFFIX, PREVIOUS_SUFFIX, IMPORT_SUFFIX = ".rebuild", ".previous", ".importing"
WORK_SUFFIXES = (REBUILD_SUFFIX, PREVIOUS_SUFFIX, IMPORT_SUFFIX)
#: Records fetched from Chroma per request when scanning a collection.
PAGE = 5000
#: Seconds an HTTP request to a Chroma server may take before it fails (chromadb's own
#: default is no timeout, so a hung server would freeze every page).
HTTP_TIMEOUT_S = 30.0


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
    alphanumeric, no ``..``), else raise StoreError saying so."""
    if not isinstance(name, str) or not _NAME_RE.match(name or "") or ".." in name:
        raise StoreError(
            f"invalid collection name {name!r}: use 3-512 characters of letters, digits, '.', '_' "
            "or '-', starting and ending with a letter or digit"
        )
    return name


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
                _set_http_timeout(self.client, HTTP_TIMEOUT_S)
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
        #: Sentence vectors of the chunks, beside the store (:mod:`workbench.store.sentences`).
        self.sentences = SentenceVectors(sidecar_root(settings))
        #: collection id -> (revision, head ids of the current versions): see current_only.
        self._current: dict[str, tuple[str, set[str]]] = {}

    # --- collections ---------------------------------------------------------------
    @property
    def location(self) -> str:
        return self.settings.chroma_location

    def collection_names(self, *, include_work: bool = False) -> list[str]:
        """Names of the collections, sorted; the work collections of a rebuild or import
        (``WORK_SUFFIXES``) only with ``include_work``."""
        names = (c.name for c in self.client.list_collections())
        return sorted(n for n in names if include_work or not n.endswith(WORK_SUFFIXES))

    def has_collection(self, name: str) -> bool:
        return name in self.collection_names(include_work=True)

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
        re-chunk on ingest because their ingest key changes). A missing one is not created while
        an interrupted swap left ``<name>.previous``: StoreError says to run recover.
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
        if self.has_collection(name + PREVIOUS_SUFFIX):
            # A rebuild killed between its swap's two renames left <name>.previous and
            # <name>.rebuild but no <name>: a new empty <name> beside them is what recover took
            # for a finished swap, deleting both (tests/test_faults.py::
            # test_an_ingest_after_a_swap_killed_midway_loses_nothing). Recover first.
            raise StoreError(
                f"collection {name!r} is in the middle of a swap that an interrupted rebuild left; "
                "run `python -m workbench recover` (the app does it at start-up)"
            )
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
            documents=len(self.current_heads(collection)),
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
        """Delete a collection and all its chunks; StoreError if it does not exist. Indexes
        derived from it (BM25) are the retrieval layer's to drop."""
        collection_id = str(self.get_collection(name).id)
        self.client.delete_collection(name)
        self.sentences.drop(collection_id)

    # --- reading -----------------------------------------------------------------------------
    @staticmethod
    def committed_heads(collection, where: dict | None = None) -> list[dict]:
        """Metadata of every committed head (chunk 0) of a raw collection, narrowed by ``where``;
        superseded versions included (see :func:`workbench.store.records.current_heads`)."""
        metas = collection.get(where=rec.head_where(where), include=["metadatas"])["metadatas"] or []
        return [m for m in metas if rec.is_committed(m)]

    def current_heads(self, collection) -> dict[str, dict]:
        """``{document_id: head metadata}`` of the current version of every committed document."""
        return rec.current_heads(self.committed_heads(collection))

    @staticmethod
    def generation(collection) -> str:
        """sha256 hex of the collection's Chroma id and its committed head ids: equal
        generations mean the same committed chunks (every ingest, replace, delete, prune and
        repair changes the set; nothing else does). One query over the heads' metadata."""
        got = collection.get(where=rec.HEAD, include=["metadatas"])
        digest = hashlib.sha256(f"1|{collection.id}|".encode())
        for head in sorted(cid for cid, meta in zip(got["ids"], got["metadatas"]) if rec.is_committed(meta)):
            digest.update(head.encode())
            digest.update(b"\n")
        return digest.hexdigest()

    @staticmethod
    def revision(collection) -> str | None:
        """``"<collection id>:<token>"``, read from the collection's metadata (no query; pass a
        collection just fetched with :meth:`get_collection`). Every change of the committed
        chunks made through this class (commit, delete, repair) leaves a new token, so an equal
        revision means the same committed chunks, as an equal :meth:`generation` does. None
        while a change is under way, and after a kill interrupted one until :meth:`repair`
        runs: use :meth:`generation` then. Writers hold the collection lock, so changes do not
        overlap."""
        return rec.revision_of(str(collection.id), collection.metadata)

    @contextlib.contextmanager
    def _changing(self, collection) -> Iterator[None]:
        """Mark the revision "changing" around a change of the committed chunks, then give it a
        new token (also when the change raised: the chunks may have changed anyway)."""
        self._set_revision(collection, changing=True)
        try:
            yield
        finally:
            self._set_revision(collection, changing=False)

    def _set_revision(self, collection, *, changing: bool) -> None:
        fresh = self.client.get_collection(collection.name, embedding_function=None)  # the other keys as they are now
        fresh.modify(metadata={**(fresh.metadata or {}), rec.REVISION_KEY: rec.new_revision(changing=changing)})

    def committed_chunks(self, collection, *, include_embeddings: bool = False) -> Iterator[tuple[str, str, dict]]:
        """Every chunk of the current committed version of each document: ``(id, text,
        metadata)`` in pages of PAGE records (plus the (d,) float32 embedding with
        ``include_embeddings``)."""
        heads = {rec.head_id_of(m) for m in self.current_heads(collection).values()}
        include = ["documents", "metadatas"] + (["embeddings"] if include_embeddings else [])
        offset = 0
        while True:
            got = collection.get(include=include, limit=PAGE, offset=offset)  # a current head's chunks are all committed
            for i, (cid, text, meta) in enumerate(zip(got["ids"], got["documents"], got["metadatas"])):
                meta = meta or {}
                if rec.head_id_of(meta) in heads:
                    row = (cid, text or "", meta)
                    if include_embeddings:
                        row += (got["embeddings"][i],)
                    yield row
            if len(got["ids"]) < PAGE:
                return
            offset += PAGE

    def committed_ids(self, collection) -> list[str]:
        """Ids of every chunk of the current committed version of each document (metadata only
        is fetched), in store order."""
        heads = {rec.head_id_of(m) for m in self.current_heads(collection).values()}
        ids: list[str] = []
        offset = 0
        while True:
            got = collection.get(include=["metadatas"], limit=PAGE, offset=offset)
            ids += [cid for cid, meta in zip(got["ids"], got["metadatas"]) if rec.head_id_of(meta or {}) in heads]
            if len(got["ids"]) < PAGE:
                return ids
            offset += PAGE

    def current_only(self, collection, records: Sequence[tuple]) -> list[tuple]:
        """Keep the records (tuples whose third item is the chunk metadata, e.g. ``(id, text,
        metadata, score)``) that belong to the current committed version of their document, as
        it is now (after the records were read). A chunk's own flag is not trusted: its
        version's head decides. The current heads of the whole collection are read once per
        :meth:`revision` and kept, so this costs one collection lookup; while the revision is
        unknown, the heads of the records' documents are queried."""
        doc_ids = sorted({str((r[2] or {}).get("document_id", "")) for r in records})
        if not doc_ids:
            return []
        now = self.get_collection(collection.name)
        if now.id != collection.id:  # deleted (and made again) since the records were read
            return []
        revision = self.revision(now)
        cached = self._current.get(str(now.id))
        if revision is not None and cached is not None and cached[0] == revision:
            current = cached[1]
        elif revision is not None:
            current = {rec.head_id_of(m) for m in self.current_heads(now).values()}
            self._current[str(now.id)] = (revision, current)
        else:
            heads = self.committed_heads(now, {"document_id": {"$in": doc_ids}})
            current = {rec.head_id_of(m) for m in rec.current_heads(heads).values()}
        return [r for r in records if rec.head_id_of(r[2] or {}) in current]

    def fetch(self, collection, ids: Sequence[str], *, embeddings: bool = False) -> dict[str, tuple]:
        """``{id: (text, metadata[, (d,) float32 embedding])}`` for the ids still in the
        collection (one request)."""
        import numpy as np

        if not ids:
            return {}
        include = ["documents", "metadatas"] + (["embeddings"] if embeddings else [])
        got = collection.get(ids=list(ids), include=include)
        out = {}
        for i, cid in enumerate(got["ids"]):
            row = (got["documents"][i] or "", got["metadatas"][i] or {})
            if embeddings:
                row += (np.asarray(got["embeddings"][i], dtype=np.float32),)
            out[cid] = row
        return out

    def documents(self, name: str) -> list[DocumentInfo]:
        """Committed documents of a collection (current versions), sorted by source."""
        heads = self.current_heads(self.get_collection(name))
        return sorted((rec.document_info(m) for m in heads.values()), key=lambda d: d.source)

    def source_paths_in_use(self, paths: Sequence[str]) -> set[str]:
        """The paths among ``paths`` that a head (committed or not) of any collection, work
        collections (rebuild, import) included, records as its ``source_path``: a file still
        needed by some document. One query per collection; when one fails, all of ``paths``
        count as in use (nothing is deleted on a guess)."""
        wanted = {str(p) for p in paths}
        found: set[str] = set()
        if not wanted:
            return found
        for name in self.collection_names(include_work=True):
            try:
                collection = self.get_collection(name)
            except StoreError:  # deleted meanwhile: nothing there needs a file
                continue
            try:
                got = collection.get(where=rec.head_where(rec.source_path_where(wanted)), include=["metadatas"])
            except Exception as exc:  # cannot tell: every file counts as needed
                log.warning("cannot check which files collection %s still needs (%s); keeping them", name, exc)
                return wanted
            found |= {str((m or {}).get("source_path", "")) for m in got["metadatas"] or []}
        return found & wanted

    def document(self, name: str, document_id: str) -> DocumentInfo | None:
        """The current committed version of one document, or None."""
        heads = rec.current_heads(self.committed_heads(self.get_collection(name), {"document_id": document_id}))
        return rec.document_info(heads[document_id]) if document_id in heads else None

    def version_records(self, collection, document_id: str, ingest_key: str, *, embeddings: bool = False) -> list[tuple]:
        """``(id, text, metadata[, embedding])`` of every chunk of one version, in chunk order."""
        include = ["documents", "metadatas"] + (["embeddings"] if embeddings else [])
        got = collection.get(where=rec.version_where(document_id, ingest_key), include=include)
        rows = []
        for i, (cid, text, meta) in enumerate(zip(got["ids"], got["documents"], got["metadatas"])):
            row = (cid, text or "", dict(meta or {}))
            if embeddings:
                row += (got["embeddings"][i],)
            rows.append(row)
        return sorted(rows, key=lambda r: int(r[2].get("chunk_index", 0) or 0))

    def document_chunks(self, name: str, document_id: str) -> list[Hit]:
        """The committed chunks of one document in order (score 0: no query)."""
        info = self.document(name, document_id)
        if info is None:
            return []
        rows = self.version_records(self.get_collection(name), document_id, info.ingest_key)
        return [rec.hit_from_record(cid, text, meta, 0.0) for cid, text, meta in rows]

    # --- writing -----------------------------------------------------------------------------
    def write_chunks(self, collection, ids: Sequence[str], texts: Sequence[str], metadatas: Sequence[dict], embeddings, *, committed: bool = False) -> None:
        """Upsert chunk records (uncommitted, as :func:`records.chunk_metadata` makes them) in
        requests of at most ``max_batch`` records. ``committed=True`` says some are heads of
        one-chunk versions written committed (their metadata updated with
        :func:`records.head_summary`: one record, so the version appears whole or not at all,
        with no commit request): the revision then changes as for a commit."""
        step = self.max_batch
        with self._changing(collection) if committed else contextlib.nullcontext():
            for i in range(0, len(ids), step):
                collection.upsert(
                    ids=list(ids[i : i + step]), embeddings=embeddings[i : i + step],
                    documents=list(texts[i : i + step]), metadatas=list(metadatas[i : i + step]),
                )

    def commit_versions(self, collection, versions: Sequence[tuple[list[str], dict]]) -> None:
        """Commit several written versions at once: ``versions`` is ``[(chunk ids in order,
        head summary)]`` (:func:`records.head_summary`). Every non-head chunk of every version
        flips first, then all heads in one request: each document becomes visible atomically
        with its head."""
        step = self.max_batch
        rest = [cid for ids, _ in versions for cid in ids[1:]]
        for i in range(0, len(rest), step):
            part = rest[i : i + step]
            collection.update(ids=part, metadatas=[dict(rec.COMMITTED)] * len(part))
        heads = [(ids[0], summary) for ids, summary in versions if ids]
        with self._changing(collection):
            for i in range(0, len(heads), step):
                part = heads[i : i + step]
                collection.update(ids=[h for h, _ in part], metadatas=[s for _, s in part])

    def delete_ids(self, collection, ids: Sequence[str], *, committed: bool = True) -> int:
        """Delete records by id in requests of at most ``max_batch``, then their sentence
        vectors; returns how many. ``committed=False`` promises that no committed chunk is
        among them (the revision is then kept)."""
        ids = list(ids)
        with self._changing(collection) if committed and ids else contextlib.nullcontext():
            for i in range(0, len(ids), self.max_batch):
                collection.delete(ids=ids[i : i + self.max_batch])
        self.sentences.delete(str(collection.id), ids)
        return len(ids)

    def delete_version(self, collection, document_id: str, ingest_key: str) -> int:
        """Delete one version of a document, its head first (so a killed delete leaves only
        chunks without a committed head, which no search shows and repair removes)."""
        ids = collection.get(where=rec.version_where(document_id, ingest_key), include=[])["ids"]
        head = rec.head_id(document_id, ingest_key)
        ordered = ([head] if head in ids else []) + [i for i in ids if i != head]
        committed = head in ids and rec.is_committed((collection.get(ids=[head], include=["metadatas"])["metadatas"] or [None])[0])
        return self.delete_ids(collection, ordered, committed=committed)

    def delete_versions(self, collection, versions: Sequence[tuple[str, str, int]]) -> int:
        """Delete several versions at once, given as ``(document_id, ingest_key, chunks)`` with
        ``chunks`` as their head's ``doc_chunks`` says: every head first, in one request, then
        the other chunks (ids made, not queried). Returns how many ids were deleted or absent.
        A chunk the count missed has no head left: repair removes it."""
        heads = [rec.head_id(d, k) for d, k, _ in versions]
        rest = [rec.chunk_id(d, k, i) for d, k, n in versions for i in range(1, n)]
        return self.delete_ids(collection, heads + rest) if heads else 0

    def delete_document(self, name: str, document_id: str) -> int:
        """Delete every chunk of a document (all versions, heads first); returns how many were
        removed."""
        collection = self.get_collection(name)
        ids = collection.get(where={"document_id": document_id}, include=[])["ids"]
        heads = [i for i in ids if rec.is_head_id(i)]
        return self.delete_ids(collection, heads + [i for i in ids if not rec.is_head_id(i)])

    def repair(self, name: str) -> int:
        """Remove what an interrupted ingest or delete left: every version whose head is not
        committed, committed versions superseded by a newer one, and orphan chunks whose head
        is gone; then the sentence vectors of chunks no longer stored, and a revision a killed
        change left "changing" gets a new token. Returns the number of chunks removed. Idempotent. Call it only while holding
        the collection lock (:func:`workbench.store.locks.collection_lock`): it would delete
        another process's ingest in progress."""
        return self.repair_and_heads(name)[0]

    def repair_and_heads(self, name: str) -> tuple[int, dict[str, dict]]:
        """:meth:`repair`, returning ``(chunks removed, {document_id: head metadata})``: the
        current heads after it (as :meth:`current_heads` would read them). One query of the
        heads' metadata and a scan of the ids (a chunk's head is read from its id: a metadata
        scan costs ~0.08 ms a chunk, the ids ~0.002 ms), besides the uncommitted chunks."""
        collection = self.get_collection(name)
        removed = 0
        loose = collection.get(where=rec.UNCOMMITTED, include=["metadatas"])["metadatas"] or []
        for document_id, key in sorted({(m["document_id"], m["ingest_key"]) for m in loose}):
            removed += self.delete_version(collection, document_id, key)
        by_doc: dict[str, list[dict]] = {}
        for meta in self.committed_heads(collection):
            by_doc.setdefault(meta["document_id"], []).append(meta)
        current: dict[str, dict] = {}
        for document_id, versions in by_doc.items():
            versions.sort(key=rec.version_order)
            for stale in versions[:-1]:
                removed += self.delete_version(collection, document_id, stale["ingest_key"])
            current[document_id] = versions[-1]
        heads = {rec.head_id_of(m) for m in current.values()}
        orphans: list[str] = []
        kept: set[str] = set()
        unknown: list[str] = []  # ids chunk_id did not make: judged by their metadata
        offset = 0
        while True:
            got = collection.get(include=[], limit=PAGE, offset=offset)
            for cid in got["ids"]:
                head = rec.head_id_of_id(cid)
                if head is None:
                    unknown.append(cid)
                elif head in heads:
                    kept.add(cid)
                else:
                    orphans.append(cid)
            if len(got["ids"]) < PAGE:
                break
            offset += PAGE
        for lo in range(0, len(unknown), PAGE):
            got = collection.get(ids=unknown[lo : lo + PAGE], include=["metadatas"])
            for cid, m in zip(got["ids"], got["metadatas"]):
                if rec.head_id_of(m or {}) in heads:
                    kept.add(cid)
                else:
                    orphans.append(cid)
        removed += self.delete_ids(collection, orphans, committed=False)
        self.sentences.delete(str(collection.id), self.sentences.ids(str(collection.id)) - kept)
        if self.revision(self.get_collection(name)) is None:  # a change was killed midway
            self._set_revision(collection, changing=False)
        if removed:
            log.warning("repaired collection %s: removed %d chunks of unfinished ingests or deletes", name, removed)
        return removed, current


def _set_http_timeout(client, seconds: float) -> None:
    """Give chromadb's HTTP session a timeout (chromadb 1.x creates it with ``timeout=None``)."""
    import httpx

    session = getattr(getattr(client, "_server", None), "_session", None)
    if isinstance(session, httpx.Client):
        session.timeout = httpx.Timeout(seconds, connect=min(5.0, seconds))


def open_store(settings: Settings) -> Store:
    """Open the store these settings point at. Raises StoreError when it cannot be reached."""
    return Store(settings)
