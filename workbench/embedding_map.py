"""Project a collection's chunk embeddings to 2-D for the Embedding map page.

PCA (Pearson 1901; computed as the SVD of the centred matrix, as scikit-learn's ``PCA`` does,
which is used when installed) is linear, deterministic and places a new point (a query) exactly.
UMAP (McInnes, Healy & Melville, 2018) is offered when the ``umap`` package is importable; its
``transform`` places a query approximately. Neighbours of a query are always found by cosine
similarity in the full embedding space, not in the 2-D picture.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from workbench.errors import InvalidRequestError
from workbench.store.chroma import Store

METHODS = ("pca", "umap")


def umap_available() -> bool:
    """True when the optional ``umap`` package (umap-learn) can be imported."""
    try:
        import umap  # noqa: F401
    except Exception:  # ImportError, or numba failing to initialise
        return False
    return True


@dataclass
class EmbeddingMap:
    """Chunks of a collection and their 2-D coordinates.

    ``vectors``: (n, d) float32 L2-normalised embeddings; ``xy``: (n, 2) float64 projection;
    per-chunk lists ``ids``, ``texts``, ``sources``, ``file_names``, ``chunk_indexes``, ``pages``.
    ``total``: committed chunks in the collection (n may be a sample of them).
    ``explained``: PCA explained-variance ratio of the two axes (None for UMAP).
    """

    collection: str
    method: str
    ids: list[str]
    texts: list[str]
    sources: list[str]
    file_names: list[str]
    chunk_indexes: list[int]
    pages: list[int]
    vectors: np.ndarray
    xy: np.ndarray
    total: int
    explained: tuple[float, float] | None = None
    _model: object = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    def place(self, vectors: np.ndarray) -> np.ndarray:
        """2-D coordinates of new (m, d) vectors in this map: (m, 2)."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if self.method == "pca":
            mean, components = self._model
            return (vectors - mean) @ components.T
        return np.asarray(self._model.transform(vectors), dtype=np.float64)

    def neighbours(self, vector: np.ndarray, k: int = 10) -> list[tuple[int, float]]:
        """The ``k`` map points most similar to ``vector`` (d,) by cosine similarity in the full
        space: ``[(index into this map, cosine)]`` best first."""
        if not len(self):
            return []
        sims = self.vectors @ np.asarray(vector, dtype=np.float32).reshape(-1)
        k = min(k, len(sims))
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top], kind="stable")]
        return [(int(i), float(sims[i])) for i in top]


def load_vectors(store: Store, collection: str, *, limit: int = 5000, seed: int = 0) -> tuple[list[str], np.ndarray, list[str], list[dict], int]:
    """Committed chunks of ``collection`` with their embeddings: ``(ids, (n, d) vectors, texts,
    metadatas, total committed)``; a seeded random sample of ``limit`` when there are more.
    Raises StoreError when the collection does not exist."""
    chroma = store.get_collection(collection)
    ids = store.committed_ids(chroma)
    total = len(ids)
    if total > limit:
        ids = sorted(random.Random(seed).sample(ids, limit))
    if not ids:
        return [], np.zeros((0, 0), dtype=np.float32), [], [], 0
    vectors, texts, metas, kept = [], [], [], []
    for i in range(0, len(ids), store.max_batch):
        got = chroma.get(ids=ids[i : i + store.max_batch], include=["embeddings", "documents", "metadatas"])
        kept += got["ids"]
        vectors.append(np.asarray(got["embeddings"], dtype=np.float32))
        texts += got["documents"]
        metas += got["metadatas"]
    return kept, np.concatenate(vectors), texts, metas, total


def _pca(vectors: np.ndarray, seed: int) -> tuple[np.ndarray, tuple, tuple[float, float]]:
    from sklearn.decomposition import PCA

    mean = vectors.mean(axis=0)
    pca = PCA(n_components=2, random_state=seed).fit(vectors)
    components, ratio = pca.components_, pca.explained_variance_ratio_
    # Fix the sign of each axis (SVD signs are arbitrary) so maps are reproducible.
    signs = np.sign(components[np.arange(2), np.abs(components).argmax(axis=1)])
    components = components * signs[:, None]
    xy = (vectors - mean) @ components.T
    return xy.astype(np.float64), (mean, components), (float(ratio[0]), float(ratio[1]))


def project(vectors: np.ndarray, method: str = "pca", *, seed: int = 0) -> tuple[np.ndarray, object, tuple[float, float] | None]:
    """Fit a 2-D projection of (n, d) ``vectors``: returns ``(xy (n, 2), model, explained)``.
    ``method`` is "pca" or "umap" (needs n >= 3 and the umap package). Raises ValueError for an
    unknown method or UMAP without the package."""
    if method not in METHODS:
        raise InvalidRequestError(f"unknown projection {method!r}; use one of {', '.join(METHODS)}")
    if len(vectors) < 2:
        return np.zeros((len(vectors), 2)), (vectors.mean(axis=0) if len(vectors) else 0, np.zeros((2, vectors.shape[1] if vectors.ndim == 2 else 0))), None
    if method == "pca":
        return _pca(vectors, seed)
    if not umap_available():
        raise InvalidRequestError("UMAP needs the umap-learn package (pip install umap-learn); PCA works without it")
    import umap

    reducer = umap.UMAP(n_components=2, metric="cosine", random_state=seed, n_neighbors=min(15, len(vectors) - 1))
    xy = reducer.fit_transform(vectors)
    return np.asarray(xy, dtype=np.float64), reducer, None


def build_map(store: Store, collection: str, *, method: str = "pca", limit: int = 5000, seed: int = 0) -> EmbeddingMap:
    """Load (a sample of at most ``limit``) committed chunks of ``collection`` and project them.
    Raises StoreError when the collection does not exist, ValueError as :func:`project`."""
    ids, vectors, texts, metas, total = load_vectors(store, collection, limit=limit, seed=seed)
    xy, model, explained = project(vectors, method, seed=seed) if ids else (np.zeros((0, 2)), None, None)
    return EmbeddingMap(
        collection=collection,
        method=method,
        ids=ids,
        texts=[t or "" for t in texts],
        sources=[str(m.get("source", "")) for m in metas],
        file_names=[str(m.get("file_name", "")) for m in metas],
        chunk_indexes=[int(m.get("chunk_index", 0) or 0) for m in metas],
        pages=[int(m.get("page", 0) or 0) for m in metas],
        vectors=vectors,
        xy=xy,
        total=total,
        explained=explained,
        _model=model,
    )
