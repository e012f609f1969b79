"""CLI commands of document QA: ``qa FILE QUESTION``, ``ocr FILE`` and ``prefetch``."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from workbench.config import Settings


def register(sub) -> None:
    p = sub.add_parser("qa", help="answer a question from one PDF/image/text file (extractive QA)")
    p.add_argument("file", type=Path, help="the document")
    p.add_argument("question", help="the question")
    p.add_argument("--top-k", "-k", type=int, help="chunks read for a long document (default TOP_K)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_qa)

    p = sub.add_parser("ocr", help="OCR a PDF or image: text per page with boxes and confidences")
    p.add_argument("file", type=Path, help="PDF or image file")
    p.add_argument("--json", action="store_true", help="print pages, boxes and confidences as JSON")
    p.set_defaults(func=run_ocr)

    p = sub.add_parser("prefetch", help="put every model the app uses into MODEL_CACHE_DIR")
    p.add_argument("--skip-qa", action="store_true", help="do not fetch QA_MODEL (needs the Hugging Face Hub)")
    p.add_argument("--skip-openvino", action="store_true", help="do not write the OpenVINO export")
    p.add_argument("--json", action="store_true", help="print one status per model as JSON")
    p.set_defaults(func=run_prefetch)


def run_qa(args, settings: Settings) -> int:
    from workbench.answer.document_qa import ask_document

    result = ask_document(args.question, settings=settings, path=args.file, top_k=args.top_k)
    if args.json:
        data = {
            "question": result.question,
            "found": result.found,
            "answer": asdict(result.answer) if result.answer else None,
            "best_score": result.best_score,
            "min_score": result.min_score,
            "contexts": result.contexts,
            "windows": result.windows,
            "seconds": round(result.seconds, 3),
            "message": result.message,
        }
        if data["answer"]:
            data["answer"].pop("context")
        print(json.dumps(data, ensure_ascii=False, indent=2))
        return 0 if result.found else 3
    if not result.found:
        print(result.message)
        return 3
    a = result.answer
    before, span, after = a.excerpt(150)
    print(a.text)
    print(f"score {a.score:.3f} · page {a.page} · {a.source}{' · OCR' if a.ocr else ''}")
    print(" ".join(f"{before}[[{span}]]{after}".split()))
    return 0


def run_ocr(args, settings: Settings) -> int:
    from workbench.ingest.loaders import ocr_file

    pages = ocr_file(args.file, settings)
    if args.json:
        print(json.dumps({"file": str(args.file), "pages": [p.to_dict() for p in pages]}, ensure_ascii=False, indent=2))
        return 0
    for page in pages:
        how = f"OCR, {len(page.boxes)} lines, {page.width}x{page.height} px" if page.ocr else "text layer, OCR skipped"
        if page.rotation:
            how += f", turned {page.rotation} degrees"
        print(f"--- page {page.page} ({how}) ---")
        if not page.ocr:
            print(page.text.rstrip())
            continue
        for box in page.boxes:
            xs, ys = [p[0] for p in box.box], [p[1] for p in box.box]
            print(f"{box.confidence:5.2f}  [{min(xs):.0f},{min(ys):.0f},{max(xs):.0f},{max(ys):.0f}]  {box.text}")
    return 0


def run_prefetch(args, settings: Settings) -> int:
    from workbench.models.prefetch import prefetch

    print(f"model cache: {Path(settings.model_cache_dir).resolve()}", file=sys.stderr)
    results = prefetch(settings, skip_qa=args.skip_qa, skip_openvino=args.skip_openvino)
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        for r in results:
            size = f"{r.size_bytes / 1e6:7.1f} MB" if r.size_bytes else "      -   "
            print(f"{r.role:<19} {r.status:<10} {size}  {r.name}  {r.path}")
            if r.message:
                print(f"{'':<19} {r.message}")
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"error: {r.role} model {r.name!r}: {r.message}", file=sys.stderr)
    return 1 if failed else 0
