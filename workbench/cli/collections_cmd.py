"""CLI commands for whole collections: ``export``, ``import``, ``rebuild``, ``rename`` and
``recover``, each one call into :mod:`workbench.store.admin`, :mod:`workbench.store.archive` or
:mod:`workbench.ingest.rebuild` (which hold the collection locks and make every step
kill-safe)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from workbench.config import Settings
from workbench.documents import IngestEvent
from workbench.errors import ConfigError


def register(sub) -> None:
    p = sub.add_parser("export", help="write a collection to one zip archive (chunks, float32 vectors, metadata, manifest)")
    p.add_argument("collection", help="collection to export")
    p.add_argument("file", type=Path, help="archive to write (.zip); replaced when it exists")
    p.set_defaults(func=run_export)

    p = sub.add_parser("import", help="load an archive written by `export` into a new collection")
    p.add_argument("file", type=Path, help="the archive (.zip)")
    p.add_argument("--collection", "-c", help="name of the new collection (default: the name in the archive)")
    p.set_defaults(func=run_import)

    p = sub.add_parser("rebuild", help="re-chunk and re-embed a collection into a shadow copy, then swap it in")
    p.add_argument("collection", help="collection to rebuild")
    p.add_argument("--model", help="embedding model (default: the collection's)")
    p.add_argument("--chunk-size", type=int, help="chunk size in model tokens (default: the collection's)")
    p.add_argument("--chunk-overlap", type=int, help="chunk overlap in model tokens (default: the collection's)")
    p.set_defaults(func=run_rebuild)

    p = sub.add_parser("rename", help="rename a collection")
    p.add_argument("collection", help="current name")
    p.add_argument("new", help="new name")
    p.set_defaults(func=run_rename)

    p = sub.add_parser("recover", help="finish or undo what a killed rebuild, import or ingest left; print each action")
    p.set_defaults(func=run_recover)


def _size(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n:,} bytes"


def run_export(args, settings: Settings) -> int:
    from workbench.store import archive, open_store

    store = open_store(settings)
    path = archive.export_collection(store, args.collection, args.file)
    info = store.collection_info(args.collection)
    print(f"exported {args.collection}: {info.documents} documents, {info.chunks} chunks to {path} ({_size(path.stat().st_size)})")
    return 0


def run_import(args, settings: Settings) -> int:
    from workbench.store import archive, open_store

    info = archive.import_collection(open_store(settings), args.file, args.collection)
    print(f"imported {info.name}: {info.documents} documents, {info.chunks} chunks, {info.embedding_model} ({info.embedding_dimensions}-d)")
    return 0


class _ProgressLines:
    """Rebuild progress as plain lines on stderr: the start, then at most one line a second,
    then the end."""

    def __init__(self, name: str, every_s: float = 1.0):
        self.name, self.every_s, self.last = name, every_s, 0.0

    def __call__(self, event: IngestEvent) -> None:
        now = time.monotonic()
        if event.kind not in ("start", "done") and now - self.last < self.every_s:
            return
        self.last = now
        eta = f", ETA {event.eta_s:.0f} s" if event.eta_s is not None and event.kind != "done" else ""
        status = f" ({event.status})" if event.kind == "done" and event.status else ""
        print(
            f"rebuild {self.name}: {event.files_done}/{event.files_total} documents, {event.chunks_done} chunks, "
            f"{event.elapsed_s:.0f} s{eta}{status}",
            file=sys.stderr,
            flush=True,
        )


def run_rebuild(args, settings: Settings) -> int:
    from workbench.ingest import rebuild
    from workbench.models.embeddings import get_embedder
    from workbench.store import open_store

    store = open_store(settings)
    info = store.collection_info(args.collection)  # StoreError when it does not exist
    changes = {
        "embedding_model": args.model or info.embedding_model or settings.embedding_model,
        "chunk_size": args.chunk_size if args.chunk_size is not None else (info.chunk_size or settings.chunk_size),
        "chunk_overlap": args.chunk_overlap if args.chunk_overlap is not None else info.chunk_overlap,
    }
    try:
        new_settings = rebuild.settings_for_rebuild(settings, **changes)
    except ValueError as exc:  # a pydantic ValidationError: one line, exit 1 like other errors
        errors = exc.errors() if hasattr(exc, "errors") else []
        detail = "; ".join(f"{'.'.join(map(str, e.get('loc', ()))) or 'settings'}: {e.get('msg', '')}" for e in errors)
        raise ConfigError(f"invalid rebuild settings: {' '.join((detail or str(exc)).split())}") from exc
    new = rebuild.rebuild(store, args.collection, new_settings, _ProgressLines(args.collection), embedder=get_embedder(new_settings))
    print(
        f"rebuilt {new.name}: {new.documents} documents, {new.chunks} chunks, {new.embedding_model} "
        f"({new.embedding_dimensions}-d), chunks of {new.chunk_size}/{new.chunk_overlap} tokens"
    )
    return 0


def run_rename(args, settings: Settings) -> int:
    from workbench.retrieval.bm25 import drop_index
    from workbench.store import admin, open_store

    info = admin.rename_collection(open_store(settings), args.collection, args.new)
    drop_index(settings, args.collection)  # the old name's keyword index; the new name builds its own
    print(f"renamed {args.collection} to {info.name}: {info.documents} documents, {info.chunks} chunks")
    return 0


def run_recover(args, settings: Settings) -> int:
    from workbench.store import admin, open_store

    actions = admin.recover(open_store(settings))
    for line in actions:
        print(line)
    if not actions:
        print(f"nothing to recover in {settings.chroma_location}")
    return 0
