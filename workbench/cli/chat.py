"""CLI command ``ask``: a question answered by Ollama from the retrieved chunks, with citations."""

from __future__ import annotations

import json
import sys

from workbench.answer.conversations import ConversationStore, check_question
from workbench.answer.ollama import ensure_reachable
from workbench.answer.prompt import DEFAULT_TEMPERATURE
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
    p.add_argument("--conversation", metavar="ID|new",
                   help="continue this kept conversation (its answered turns are sent as history) and append "
                   "the turn to it; `new` starts one and prints its id on stderr")
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
    from workbench.answer.chat import ask_stream, citation_dict  # loads retrieval: after the Ollama check
    from workbench.models.embeddings import get_embedder
    from workbench.store.chroma import open_store

    if not args.retrieval_only:
        ensure_reachable(settings)  # before any model loads: "Ollama is down" within 3 s
    conversations = conversation = None
    if args.conversation:  # check it first: no model call for a wrong id
        check_question(args.question)
        conversations = ConversationStore.open(settings)
        if args.conversation != "new":
            conversation = conversations.get(args.conversation)
    collection = args.collection or settings.collection_name
    model = args.model or settings.ollama_model
    search_mode = args.search_mode or settings.search_mode
    stream = ask_stream(
        args.question, settings=settings, store=open_store(settings), embedder=get_embedder(settings),
        collection=collection, top_k=args.top_k, model=model, temperature=args.temperature,
        mode="retrieval" if args.retrieval_only else "rag", search_mode=search_mode,
        history=conversation.messages() if conversation else (),
    )
    error: OllamaError | None = None
    try:
        for piece in stream:
            if not args.json:
                print(piece, end="", flush=True)
    except OllamaError as exc:
        error = exc
    if conversations is not None:
        if conversation is None:
            conversation = conversations.create(title=args.question, collection=collection, model=model,
                                                search_mode=search_mode)
            print(f"conversation: {conversation.id}", file=sys.stderr)
        conversations.append_turn(conversation.id, args.question, stream, collection=collection,
                                  search_mode=search_mode)
    if args.json:
        payload = {"answer": stream.text, "model": stream.model,
                   "citations": [citation_dict(n, h) for n, h in enumerate(stream.citations, 1)],
                   "timings": stream.timings.as_dict()}
        if error is not None:
            payload["error"] = str(error)
        if conversation is not None:
            payload["conversation"] = conversation.id
        print(json.dumps(payload, ensure_ascii=False, indent=2))
    else:
        if stream.text:
            print()
        _print_citations(stream.citations)
    if error is not None:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
