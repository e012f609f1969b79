"""Pre-flight checks, like the seed pipeline's verify step: the store opens, the model loads
with the configured dimension, each collection agrees with the model, and a sample query
returns results."""

from __future__ import annotations

from dataclasses import dataclass, field

from workbench.config import Settings
from workbench.errors import WorkbenchError


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class VerifyReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def verify(settings: Settings, *, collection: str | None = None, query: str = "What is this about?") -> VerifyReport:
    """Run the checks; never raises for a failed check (it is recorded as not ok)."""
    from workbench.models.embeddings import get_embedder
    from workbench.retrieval.search import search
    from workbench.store.chroma import open_store

    report = VerifyReport()
    add = report.checks.append
    try:
        store = open_store(settings)
        add(Check("store", True, f"{settings.chroma_mode} Chroma at {settings.chroma_location}"))
    except WorkbenchError as exc:
        add(Check("store", False, str(exc)))
        return report
    try:
        embedder = get_embedder(settings)
        add(Check("model", True, f"{embedder.name} ({embedder.backend}, {embedder.dimension}-d, max {embedder.max_seq_length} tokens)"))
    except WorkbenchError as exc:
        add(Check("model", False, str(exc)))
        return report
    name = collection or settings.collection_name
    if not store.has_collection(name):
        add(Check("collection", False, f"collection {name!r} does not exist; run `python -m workbench ingest`"))
        return report
    info = store.collection_info(name)
    agrees = info.embedding_model == embedder.name and info.embedding_dimensions == embedder.dimension
    add(Check("dimensions", agrees, f"{name}: built with {info.embedding_model} ({info.embedding_dimensions}-d), loaded {embedder.name} ({embedder.dimension}-d)"))
    add(Check("counts", info.chunks > 0, f"{name}: {info.documents} documents, {info.chunks} chunks"))
    try:
        hits = search(query, settings=settings, store=store, embedder=embedder, collection=name, top_k=3)
        add(Check("query", bool(hits), f"{len(hits)} results for {query!r}" + (f", best {hits[0].score:.3f} from {hits[0].source}" if hits else "")))
    except WorkbenchError as exc:
        add(Check("query", False, str(exc)))
    return report
