"""CLI: ``eval FILE`` — recall@k, MRR@10 and nDCG@10 of each search mode on a question set."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from workbench.config import Settings
from workbench.config import SEARCH_MODES as MODES


def register(sub) -> None:
    p = sub.add_parser("eval", help="measure retrieval on a JSONL question set (recall@k, MRR@10, nDCG@10)")
    p.add_argument("file", type=Path, help="JSONL: question + expected_source and/or expected_text (or SQuAD lines)")
    p.add_argument("--collection", "-c", help="collection to search (default COLLECTION_NAME)")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated: vector,keyword,hybrid (default all)")
    p.add_argument("--top-k", "-k", type=int, default=10, help="chunks retrieved per question (default 10)")
    p.add_argument("--json", action="store_true", help='print {"vector": {...}, ..., "questions": N}')
    p.add_argument("--per-question", type=Path, help="also write per-question ranks as JSONL to this file")
    p.set_defaults(func=run_eval)


def run_eval(args, settings: Settings) -> int:
    from workbench.models.embeddings import get_embedder
    from workbench.evaluate import evaluate, load_questions
    from workbench.store.chroma import open_store

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        print(f"error: --modes takes {','.join(MODES)} (got {args.modes!r})", file=sys.stderr)
        return 2
    if args.top_k < 1:
        print("error: --top-k must be at least 1", file=sys.stderr)
        return 2
    questions = load_questions(args.file)
    store = open_store(settings)
    embedder = get_embedder(settings) if set(modes) - {"keyword"} else None
    report = evaluate(
        questions, settings=settings, store=store, embedder=embedder, collection=args.collection,
        modes=modes, top_k=args.top_k, progress=None if args.json else _progress,
    )
    if args.per_question:
        with open(args.per_question, "w", encoding="utf-8") as out:
            for i, q in enumerate(report.questions):
                row = {"question": q.question, "expected_source": q.expected_source, "expected_text": q.expected_text}
                row.update({f"rank_{m}": report.ranks[m][i] for m in modes})
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    print(f"{len(report.questions)} questions, collection {report.collection}, top {report.top_k}")
    print(f"{'mode':<8} {'recall@1':>9} {'recall@5':>9} {'recall@10':>10} {'mrr@10':>7} {'ndcg@10':>8} {'seconds':>8}")
    for m in modes:
        x = report.metrics(m)
        print(f"{m:<8} {x['recall@1']:>9.3f} {x['recall@5']:>9.3f} {x['recall@10']:>10.3f} {x['mrr@10']:>7.3f} {x['ndcg@10']:>8.3f} {report.seconds[m]:>8.1f}")
    return 0


def _progress(mode: str, done: int, total: int) -> None:
    print(f"\r{mode}: {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)
