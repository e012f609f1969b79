"""CLI commands of the spine: ingest, search, collections, verify, delete."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from workbench.config import SEARCH_MODES, Settings
from workbench.documents import IngestEvent


def register(sub) -> None:
    p = sub.add_parser("ingest", help="ingest files/folders (default KNOWLEDGE_BASE_PATH)")
    p.add_argument("paths", nargs="*", type=Path, help="files or folders")
    p.add_argument("--collection", "-c", help="target collection (default COLLECTION_NAME)")
    p.add_argument("--prune", action="store_true", help="delete documents whose file is gone")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--if-empty", action="store_true", help="do nothing when the collection already has documents")
    p.set_defaults(func=run_ingest)

    p = sub.add_parser("search", help="search a collection")
    p.add_argument("query", nargs="?", help="the query text")
    p.add_argument("--top-k", "-k", type=int, help="number of results (default TOP_K)")
    p.add_argument("--collection", "-c")
    p.add_argument("--file", help="only chunks of this file name")
    p.add_argument("--mode", choices=SEARCH_MODES, help="vector (cosine), keyword (BM25) or hybrid (fused); default SEARCH_MODE")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--queries-file", type=Path, help="one query a line; one JSON line of results each")
    p.set_defaults(func=run_search)

    p = sub.add_parser("collections", help="list collections with document and chunk counts")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_collections)

    p = sub.add_parser("verify", help="check store, model, dimensions, counts and a sample query")
    p.add_argument("--collection", "-c")
    p.add_argument("--query", default="What is this collection about?")
    p.set_defaults(func=run_verify)

    p = sub.add_parser("delete", help="delete a collection, or one document of it")
    p.add_argument("--collection", "-c", required=True)
    p.add_argument("--document", help="document id (see `collections`/`documents`) or source name")
    p.set_defaults(func=run_delete)

    p = sub.add_parser("documents", help="list the documents of a collection")
    p.add_argument("--collection", "-c")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_documents)


class _Bar:
    """A tqdm progress bar fed by IngestEvents (to stderr)."""

    def __init__(self):
        from tqdm import tqdm

        self.tqdm = tqdm
        self.bar = None

    def __call__(self, event: IngestEvent) -> None:
        if event.kind == "start":
            self.bar = self.tqdm(total=event.files_total, unit="file", file=sys.stderr, dynamic_ncols=True)
        if self.bar is None:
            return
        self.bar.n = event.files_done
        self.bar.set_postfix_str(f"{event.chunks_done} chunks, {event.errors} failed {event.current_file[-40:]}")
        if event.kind == "done":
            self.bar.close()


def run_ingest(args, settings: Settings) -> int:
    from workbench.ingest.pipeline import ingest_paths
    from workbench.models.embeddings import get_embedder
    from workbench.store import open_store

    store = open_store(settings)
    name = args.collection or settings.collection_name
    if args.if_empty and store.has_collection(name) and store.collection_info(name).documents:
        print(f"{name}: already has documents in {settings.chroma_location}; not ingesting (--if-empty)")
        return 0
    embedder = get_embedder(settings)
    paths = args.paths or [settings.knowledge_base_path]
    summary = ingest_paths(
        paths, settings=settings, store=store, embedder=embedder, collection=args.collection, progress=_Bar(), prune=args.prune
    )
    if args.json:
        print(json.dumps({**asdict(summary), "failures": len(summary.failures)}, indent=2))
    else:
        for r in summary.results:
            if r.status == "failed":
                print(f"FAILED  {r.source}: {r.message}")
        counts = ", ".join(f"{s} {summary.count(s)}" for s in ("added", "replaced", "unchanged", "failed", "pruned"))
        print(f"{summary.collection}: {counts}; {summary.chunks_added} chunks written in {summary.seconds:.1f} s")
    return 1 if summary.cancelled else 0


def _hit_dict(hit) -> dict:
    return {k: v for k, v in asdict(hit).items() if v is not None}


def run_search(args, settings: Settings) -> int:
    from workbench.models.embeddings import get_embedder
    from workbench.retrieval import search
    from workbench.store import open_store

    store = open_store(settings)
    embedder = get_embedder(settings)
    queries = [args.query] if args.query else []
    if args.queries_file:
        queries = [q.strip() for q in args.queries_file.read_text(encoding="utf-8").splitlines() if q.strip()]
    if not queries:
        print("error: give a QUERY or --queries-file", file=sys.stderr)
        return 2
    for query in queries:
        hits = search(query, settings=settings, store=store, embedder=embedder, collection=args.collection, top_k=args.top_k, file_name=args.file, mode=args.mode or settings.search_mode)
        if args.json or args.queries_file:
            print(json.dumps({"query": query, "results": [_hit_dict(h) for h in hits]}, ensure_ascii=False))
            continue
        if not hits:
            print("no results")
        for h in hits:
            print(f"{h.rank:>2}. {h.score:.3f}  {h.source}  p.{h.page}  #{h.chunk_index}")
            print("    " + " ".join(h.text.split())[:300])
    return 0


def run_collections(args, settings: Settings) -> int:
    from workbench.store import open_store

    infos = open_store(settings).list_collections()
    if args.json:
        print(json.dumps([asdict(i) for i in infos], indent=2))
        return 0
    if not infos:
        print(f"no collections in {settings.chroma_location}")
    for i in infos:
        print(f"{i.name}\t{i.documents} documents\t{i.chunks} chunks\t{i.embedding_model} ({i.embedding_dimensions}-d)")
    return 0


def run_documents(args, settings: Settings) -> int:
    from workbench.store import open_store

    docs = open_store(settings).documents(args.collection or settings.collection_name)
    if args.json:
        print(json.dumps([asdict(d) for d in docs], indent=2))
        return 0
    for d in docs:
        print(f"{d.document_id}\t{d.source}\t{d.pages} pages\t{d.chunks} chunks\t{d.ingested_at}")
    return 0


def run_verify(args, settings: Settings) -> int:
    from workbench.diagnostics import verify

    report = verify(settings, collection=args.collection, query=args.query)
    for check in report.checks:
        print(f"[{'OK' if check.ok else 'FAIL'}] {check.name}: {check.detail}")
    return 0 if report.ok else 1


def run_delete(args, settings: Settings) -> int:
    from workbench.ingest import attachments
    from workbench.retrieval import delete_collection
    from workbench.store import open_store

    store = open_store(settings)
    if not args.document:
        delete_collection(store, args.collection)
        print(f"deleted collection {args.collection}")
        return 0
    wanted = args.document
    match = [d for d in store.documents(args.collection) if wanted in (d.document_id, d.source, d.file_name)]
    if not match:
        print(f"error: no document {wanted!r} in {args.collection}", file=sys.stderr)
        return 1
    for d in match:
        n = attachments.delete_document(store, settings, args.collection, d.document_id)
        print(f"deleted {d.source} ({n} chunks)")
    return 0
