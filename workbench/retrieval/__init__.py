"""The retrieval layer: vector, keyword (BM25) and hybrid search over committed chunks.

- :mod:`~workbench.retrieval.search`: :func:`search`, the one entry point of every mode.
- :mod:`~workbench.retrieval.bm25`: the per-collection BM25 index, kept in step with the store.
- :mod:`~workbench.retrieval.fusion`: reciprocal rank fusion, convex fusion, sentence rescoring.
"""

from __future__ import annotations

from workbench.ingest import attachments
from workbench.retrieval.bm25 import drop_index
from workbench.retrieval.search import MODES, search
from workbench.store import Store
from workbench.store import admin


def delete_collection(store: Store, name: str) -> None:
    """Delete collection ``name`` (holding its lock), drop its BM25 index and release the e-mail
    attachment files no other collection records (:mod:`workbench.ingest.attachments`). Raises
    StoreError when it does not exist, IngestBusyError while it is being written."""
    files = attachments.stored_files(store, name, store.settings)
    admin.delete_collection(store, name)
    drop_index(store.settings, name)
    attachments.release_unused(store, store.settings, files)


__all__ = ["MODES", "delete_collection", "search"]
