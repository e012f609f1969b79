"""CLI command ``ask``: a question answered by Ollama from the retrieved chunks, with citations."""

from __future__ import annotations

import json
import sys

from workbench.answer.chat import DEFAULT_TEMPERATURE, ask_stream, citation_dict
from workbench.config import SEARCH_MODES, Settings
from workbench.errors import OllamaError


def register(sub) -> None:
    p = sub.add_parser("ask", help="ask a question: retrieve chunks, stream an Ollama answer with citations")
    p.add_argument("question", help="the question")
    p.add_argument("--model", "-m", help="Ollama model (default OLLAMA_MODEL)")
    p.add_argument("--collection", "-c", help="collection to retrieve from (default COLLECTION_NAME)")
    p.add_argument("--top-k", "-k", type=int, help="chunks to retrieve (default TOP_K)")
    p.add_argument("--search-mode", choices=SEARCH_MODES, help="retrieval mode (default SEARCH_MODE)")
    p.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, help="sampling temperature")
    p.add_argument("--retrieval-only", action="store_true", help="only show the retrieved passages (no LLM)")
    p.add_argument("--json", action="store_true", help="print {answer, model, citations[], timings} as JSON")
    p.set_defaults(func=run)


def _print_citations(citations) -> None:
    out = sys.stdout
    if not citations:
        print("\nNo passages retrieved.", file=out)
        return
    print("\nSources:", file=out)
    for n, hit in enumerate(citations, 1):
        preview = " ".join(hit.text.split())
        preview = preview[:200] + ("…" if len(preview) > 200 else "")
        print(f"[{n}] {hit.file_name}, page {hit.page} (score {hit.score:.3f})\n    {preview}", file=out)


def run(args, settings: Settings) -> int:
    from workbench.models.embeddings import get_embedder
    from workbench.store.chroma import open_store

    stream = ask_stream(
        args.question, settings=settings, store=open_store(settings), embedder=get_embedder(settings),
        collection=args.collection, top_k=args.top_k, model=args.model, temperature=args.temperature,
        mode="retrieval" if args.retrieval_only else "rag", search_mode=args.search_mode,
    )
    error: OllamaError | None = None
    try:
        for piece in stream:
            if not args.json:
                print(piece, end="", flush=True)
    except OllamaError as exc:
        error = exc
    if args.json:
        payload = {"answer": stream.text, "model": stream.model,
                   "citations": [citation_dict(n, h) for n, h in enumerate(stream.citations, 1)],
                   "timings": stream.timings.as_dict()}
        if error is not None:
            payload["error"] = str(error)
        print(json.dumps(payload, ensure_ascii=False, indent=2))
    else:
        if stream.text:
            print()
        _print_citations(stream.citations)
    if error is not None:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
