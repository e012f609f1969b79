"""Per-collection OS locks: one writer (ingest, rebuild, import, rename, delete, repair) per
collection across the processes of this machine."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from workbench.config import Settings
from workbench.errors import IngestBusyError, StoreError
from workbench.store.chroma import check_collection_name

log = logging.getLogger(__name__)


def lock_path(settings: Settings, collection: str) -> Path:
    """The lock file of ``collection``: ``<CHROMA_PERSIST_PATH>/locks/<collection>.lock``
    (``.../locks/<host>_<port>/...`` for a Chroma server: it guards the processes of this
    machine). Raises StoreError for an invalid collection name, before any path is built, so a
    name like ``../../x`` never reaches the file system."""
    check_collection_name(collection)
    root = Path(settings.chroma_persist_path) / "locks"
    if settings.chroma_host:
        root = root / f"{settings.chroma_host}_{settings.chroma_port}"
    return root / f"{collection}.lock"


@contextlib.contextmanager
def collection_lock(settings: Settings, collection: str, *, what: str = "an ingest") -> Iterator[None]:
    """Hold an exclusive OS lock (``fcntl.flock``) on ``collection`` while it is written.

    Every ingest starts by repairing what a killed run left (uncommitted chunks), which would
    delete the chunks of another process's ingest still in progress; rebuild, import, rename and
    delete would race the same way. The lock makes a second writer fail at once instead. The
    kernel releases it when its holder dies, even by kill -9, so a crash never leaves the
    collection locked.

    Raises IngestBusyError naming the process that holds the lock, and StoreError when the
    lock file cannot be created (a read-only folder): a collection is never written unlocked.
    """
    path = lock_path(settings, collection)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", encoding="utf-8")
    except OSError as exc:
        raise StoreError(
            f"cannot create the lock {path} for collection {collection!r} ({exc.strerror or exc}); "
            "CHROMA_PERSIST_PATH must be writable"
        ) from exc
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise IngestBusyError(
                f"collection {collection!r} is busy: {holder}; wait for it to finish"
            ) from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} is running {what}")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
