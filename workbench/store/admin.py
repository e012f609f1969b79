"""Collection administration: create, rename, copy, delete, swap a rebuilt collection into
place, and recover at start-up from an operation a kill interrupted.

Every operation that writes a collection holds its lock
(:func:`workbench.store.locks.collection_lock`); if the lock cannot be taken it fails, it never
runs unlocked. Renaming uses Chroma 1.x ``Collection.modify(name=...)`` (checked with chromadb
1.5.9); when a server refuses it, rename falls back to copy + delete.

Work collections (hidden from every listing, see :data:`WORK_SUFFIXES`): a rebuild writes
``<name>.rebuild`` and swaps it in through ``<name>.previous``; an import writes
``<name>.importing``. :func:`recover` finishes or cleans up after any of them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from workbench.errors import IngestBusyError, StoreError
from workbench.store.chroma import (
    IMPORT_SUFFIX,
    PREVIOUS_SUFFIX,
    REBUILD_SUFFIX,
    WORK_SUFFIXES,
    CollectionInfo,
    Store,
    check_collection_name,
)
from workbench.store.locks import collection_lock

log = logging.getLogger(__name__)

_COSINE = {"hnsw": {"space": "cosine"}}
_SCALARS = (str, int, float, bool)


def is_work_collection(name: str) -> bool:
    """True for the work collections of a rebuild or an import (see the module docstring)."""
    return name.endswith(WORK_SUFFIXES)


@contextlib.contextmanager
def locked(store: Store, *names: str, what: str) -> Iterator[None]:
    """Hold the lock of every collection in ``names`` (in sorted order, so two operations never
    deadlock). Raises IngestBusyError when one is busy, StoreError for an invalid name."""
    with contextlib.ExitStack() as stack:
        for name in sorted(set(names)):
            stack.enter_context(collection_lock(store.settings, name, what=what))
        yield


# --- create / rename / copy / delete --------------------------------------------------------
def create_collection(store: Store, name: str, *, model: str, dimensions: int, chunk_size: int, chunk_overlap: int) -> CollectionInfo:
    """Create an empty collection recording model and chunking. Raises StoreError when the name
    is invalid, taken, or names a work collection."""
    check_collection_name(name)
    if is_work_collection(name):
        raise StoreError(f"collection names may not end in {', '.join(WORK_SUFFIXES)}: {name!r}")
    if store.has_collection(name):
        raise StoreError(f"collection {name!r} already exists")
    store.open_collection(name, model=model, dimensions=dimensions, chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    return store.collection_info(name)


def rename_collection(store: Store, old: str, new: str) -> CollectionInfo:
    """Rename ``old`` to ``new`` holding both locks. Raises StoreError when ``old`` is missing,
    ``new`` is invalid or already exists, IngestBusyError when either is being written."""
    check_collection_name(new)
    check_collection_name(old)
    if is_work_collection(new):
        raise StoreError(f"collection names may not end in {', '.join(WORK_SUFFIXES)}: {new!r}")
    with locked(store, old, new, what="a rename"):
        _rename(store, old, new)
    return store.collection_info(new)


def _rename(store: Store, old: str, new: str) -> None:
    """Rename without locking (the caller holds the locks): ``modify(name=)``, else copy +
    delete."""
    collection = store.get_collection(old)
    if old == new:
        return
    if store.has_collection(new):
        raise StoreError(f"cannot rename {old!r}: a collection named {new!r} already exists")
    try:
        collection.modify(name=new)
    except Exception as exc:  # a server without rename: copy, then delete
        log.warning("rename %s -> %s via modify failed (%s); copying instead", old, new, exc)
        if store.has_collection(new):
            raise StoreError(f"renaming {old!r} to {new!r} failed half-way: {exc}") from exc
        _copy(store, old, new)
        store.client.delete_collection(old)


def iter_records(collection, batch: int) -> Iterator[tuple[list[str], list[str], list[dict], np.ndarray]]:
    """Every record of a raw ``collection`` in pages of ``batch``: (ids, documents, metadatas,
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


def new_collection(store: Store, name: str, metadata: dict[str, Any]):
    """Create a raw cosine-space collection with the scalar items of ``metadata``."""
    clean = {k: v for k, v in metadata.items() if isinstance(v, _SCALARS)}
    return store.client.create_collection(name, configuration=_COSINE, metadata=clean or None, embedding_function=None)


def copy_collection(store: Store, source: str, target: str) -> CollectionInfo:
    """Copy every record (ids, texts, metadata, vectors) of ``source`` into a new collection
    ``target`` with the same metadata, holding both locks. Raises StoreError when ``target``
    exists or the copy is incomplete (the partial target is deleted)."""
    check_collection_name(target)
    with locked(store, source, target, what="a copy"):
        _copy(store, source, target)
    return store.collection_info(target)


def _copy(store: Store, source: str, target: str) -> None:
    src = store.get_collection(source)
    if store.has_collection(target):
        raise StoreError(f"cannot copy to {target!r}: it already exists")
    expected = src.count()
    dst = new_collection(store, target, dict(src.metadata or {}))
    try:
        for ids, docs, metas, vectors in iter_records(src, store.max_batch):
            dst.add(ids=ids, documents=docs, metadatas=metas, embeddings=vectors)
        if dst.count() != expected:
            raise StoreError(f"copy of {source!r} has {dst.count()} chunks, expected {expected}")
    except BaseException:
        store.client.delete_collection(target)
        raise


def delete_collection(store: Store, name: str) -> None:
    """Delete collection ``name`` holding its lock. Raises StoreError when it does not exist,
    IngestBusyError while it is being written. Derived indexes (BM25) are the caller's to drop:
    see :func:`workbench.retrieval.delete_collection`."""
    with locked(store, name, what="a delete"):
        store.delete_collection(name)


def delete_document(store: Store, name: str, document_id: str) -> int:
    """Delete every version of one document holding the collection's lock; returns how many
    chunks were removed. Raises StoreError / IngestBusyError as :func:`delete_collection`."""
    with locked(store, name, what="a document delete"):
        return store.delete_document(name, document_id)


# --- swap and recovery ------------------------------------------------------------------------
def swap(store: Store, name: str, shadow: str) -> None:
    """Put ``shadow`` in place of ``name``: ``name`` -> ``name.previous``, ``shadow`` -> ``name``,
    delete ``name.previous``. The caller holds the lock of ``name``. If the second rename fails
    the first is undone. A kill between the steps is finished by :func:`recover`. Raises
    StoreError."""
    previous = check_collection_name(name + PREVIOUS_SUFFIX)
    if store.has_collection(previous):
        store.client.delete_collection(previous)
    _rename(store, name, previous)
    try:
        _rename(store, shadow, name)
    except Exception as exc:
        _rename(store, previous, name)
        raise StoreError(f"swapping {shadow!r} into {name!r} failed ({exc}); {name!r} is unchanged") from exc
    store.client.delete_collection(previous)


def recover(store: Store, *, repair: bool = True) -> list[str]:
    """Finish or undo what a killed rebuild, import or ingest left, for every collection not
    being written right now (a busy one is skipped; its writer recovers it). Returns one line
    per action taken.

    - ``X.previous`` and ``X.rebuild`` without ``X``: the kill fell between the two renames of a
      swap; the shadow is complete (a swap starts only then), so it becomes ``X``.
    - ``X.previous`` beside ``X``: the swap finished; the previous collection is deleted.
    - ``X.previous`` alone: put back as ``X``.
    - ``X.rebuild`` or ``X.importing`` (no swap under way): an unfinished build; deleted.
    - with ``repair``, every other collection is repaired (:meth:`Store.repair`).
    """
    actions: list[str] = []
    names = set(store.collection_names(include_work=True))
    bases = sorted({n[: -len(s)] for n in names for s in WORK_SUFFIXES if n.endswith(s)})
    for base in bases:
        try:
            with locked(store, base, what="start-up recovery"):
                actions += _recover_one(store, base, names)
        except IngestBusyError:
            log.info("recovery of %s skipped: it is busy", base)
        except StoreError as exc:
            log.warning("recovery of %s failed: %s", base, exc)
    if repair:
        for name in store.collection_names():
            try:
                with locked(store, name, what="start-up repair"):
                    removed = store.repair(name)
                if removed:
                    actions.append(f"{name}: removed {removed} chunks an interrupted ingest or delete left")
            except IngestBusyError:
                log.info("repair of %s skipped: it is busy", name)
    for line in actions:
        log.warning("recovery: %s", line)
    return actions


def recover_collection(store: Store, name: str) -> list[str]:
    """:func:`recover` for one collection whose lock the caller already holds (an ingest about to
    open it): finish or undo an interrupted swap or import of ``name``. One line per action."""
    return _recover_one(store, name, set(store.collection_names(include_work=True)))


def _recover_one(store: Store, base: str, names: set[str]) -> list[str]:
    previous, shadow, importing = base + PREVIOUS_SUFFIX, base + REBUILD_SUFFIX, base + IMPORT_SUFFIX
    out = []
    if previous in names:
        if base not in names and shadow in names:
            _rename(store, shadow, base)
            store.client.delete_collection(previous)
            out.append(f"{base}: finished an interrupted swap (the rebuilt collection is in place)")
            names.discard(shadow)
        elif base in names and shadow in names:
            # A swap never leaves all three: base was created anew after a kill between the
            # swap's renames. previous and shadow hold the data; taking this for a finished swap
            # deleted both (tests/test_faults.py::test_an_ingest_after_a_swap_killed_midway_loses_nothing).
            log.error("recovery of %s: %s and %s kept beside a new %s", base, previous, shadow, base)
            kept = f"{base}: kept {previous} and {shadow} (the collection before and after an interrupted rebuild)"
            return [f"{kept}: {base} was created again meanwhile; rename or export them to keep their documents"]
        elif base in names:
            store.client.delete_collection(previous)
            out.append(f"{base}: deleted {previous} left by a finished swap")
        else:
            _rename(store, previous, base)
            out.append(f"{base}: restored from {previous}")
    if shadow in names:
        store.client.delete_collection(shadow)
        out.append(f"{base}: deleted the unfinished rebuild {shadow}")
    if importing in names:
        store.client.delete_collection(importing)
        out.append(f"{base}: deleted the unfinished import {importing}")
    return out
