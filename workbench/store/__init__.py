"""The store layer: Chroma access and the only owner of the stored record format.

- :mod:`~workbench.store.records`: chunk ids, chunk metadata, the commit flag, current versions.
- :mod:`~workbench.store.chroma`: :class:`Store` (embedded or server Chroma), reading and
  two-phase writing of chunks, repair.
- :mod:`~workbench.store.locks`: one writer per collection across processes.
- :mod:`~workbench.store.admin`: create, rename, copy, swap, start-up recovery.
- :mod:`~workbench.store.archive`: export and import of a collection as one zip.
"""

from workbench.store.chroma import CollectionInfo, Store, check_collection_name, open_store
from workbench.store.locks import collection_lock

__all__ = ["CollectionInfo", "Store", "check_collection_name", "collection_lock", "open_store"]
