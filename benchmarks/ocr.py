"""OCR benchmark over ../shared/corpus/ocr (16 real scans with ground truth).

Per image, in one process with one EasyOCR reader (canvas OCR_CANVAS_SIZE, default 1280):
- raw: ``reader.readtext(array, canvas_size=...)`` on the decoded RGB array;
- ours: ``workbench.ingest.loaders.ocr_file(path)`` with an empty cache (one per image): decode, pixel hash, the same
  readtext call, reading order, cache write (the target is ours/raw <= 1.1). The time spent
  inside readtext during that call is measured too, so ``overhead_s`` (ours minus its own
  readtext) is known exactly, and ``ratio_overhead`` = (raw + overhead) / raw is a ratio that
  does not depend on how busy a shared machine was during either readtext call;
- cached: ``ocr_file(path)`` again (served from the page-hash cache, no OCR);
- CER: character error rate against the ground truth (whitespace collapsed), for our text
  (reading order) and for the raw result joined in EasyOCR's order.
Also views/s over the set. The machine may be shared: the load average before and after is
recorded with the numbers. Writes benchmarks/results/ocr.json.

Run: ``.venv/bin/python benchmarks/ocr.py [--only SUBSTRING ...] [--canvas N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from _common import require_corpus, write_result

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from workbench.config import Settings  # noqa: E402
from workbench.ingest.loaders import ocr_file  # noqa: E402
from workbench.ingest.ocr import character_error_rate  # noqa: E402
from workbench.models.ocr_reader import get_reader  # noqa: E402


def ground_truth(image: Path) -> Path:
    """The reference text of a corpus image (see corpus/ocr/MANIFEST.md)."""
    if image.name.startswith("phototest"):
        return image.with_name("phototest.txt")
    stem = image.name.split(".bin.png")[0] if image.name.endswith(".bin.png") else image.stem
    gt = image.with_name(stem + ".gt.txt")
    return gt if gt.exists() else image.with_name(stem + ".txt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=[], help="keep images whose path contains one of these")
    parser.add_argument("--canvas", type=int, help="OCR_CANVAS_SIZE override")
    args = parser.parse_args()

    corpus = require_corpus() / "ocr"
    images = sorted(p for p in corpus.rglob("*") if p.suffix.lower() in {".png", ".tif"})
    if args.only:
        images = [p for p in images if any(o in str(p) for o in args.only)]
    cache = Path(tempfile.mkdtemp(prefix="ocr-bench-"))
    overrides = {"ocr_cache_dir": cache, "_env_file": None}
    if args.canvas:
        overrides["ocr_canvas_size"] = args.canvas
    settings = Settings(**overrides)
    load_before = os.getloadavg()
    started = time.perf_counter()
    reader = get_reader(settings)
    reader_seconds = time.perf_counter() - started
    inner = {"s": 0.0}
    readtext = reader.readtext

    def timed_readtext(*a, **kw):  # the pipeline's own readtext time, to isolate its overhead
        t = time.perf_counter()
        try:
            return readtext(*a, **kw)
        finally:
            inner["s"] += time.perf_counter() - t

    reader.readtext = timed_readtext

    rows = []
    for number, image in enumerate(images):
        # A fresh cache per image: phototestrot.tif has the same pixels as a rotated copy and
        # would otherwise be a cache hit.
        settings = settings.model_copy(update={"ocr_cache_dir": cache / str(number)})
        with Image.open(image) as img:
            array = np.asarray(img.convert("RGB"))
        reference = ground_truth(image).read_text(encoding="utf-8")
        t0 = time.perf_counter()
        raw = readtext(array, canvas_size=settings.ocr_canvas_size)
        raw_s = time.perf_counter() - t0
        inner["s"] = 0.0
        t0 = time.perf_counter()
        (page,) = ocr_file(image, settings)
        ours_s = time.perf_counter() - t0
        overhead_s = ours_s - inner["s"]
        t0 = time.perf_counter()
        ocr_file(image, settings)
        cached_s = time.perf_counter() - t0
        row = {
            "image": str(image.relative_to(corpus)),
            "size": list(array.shape[1::-1]),
            "raw_s": round(raw_s, 3),
            "ours_s": round(ours_s, 3),
            "cached_s": round(cached_s, 4),
            "ratio": round(ours_s / raw_s, 3),
            "overhead_s": round(overhead_s, 4),
            "ratio_overhead": round((raw_s + overhead_s) / raw_s, 4),
            "cer": round(character_error_rate(page.text, reference), 4),
            "cer_raw_order": round(character_error_rate(" ".join(r[1] for r in raw), reference), 4),
            "ref_chars": len(" ".join(reference.split())),
            "lines": len(page.boxes),
        }
        rows.append(row)
        print(f"{row['image']:<45} raw {raw_s:7.2f}s  ours {ours_s:7.2f}s  x{row['ratio']:.3f} (overhead {overhead_s:.3f}s, x{row['ratio_overhead']:.3f})  cached {cached_s:.3f}s  CER {row['cer']:.3f} (raw order {row['cer_raw_order']:.3f})", flush=True)

    total_raw = sum(r["raw_s"] for r in rows)
    total_ours = sum(r["ours_s"] for r in rows)
    chars = sum(r["ref_chars"] for r in rows)
    result = {
        "canvas_size": settings.ocr_canvas_size,
        "cpus": os.cpu_count(),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "reader_start_s": round(reader_seconds, 2),
        "images": len(rows),
        "pages_per_s": round(len(rows) / total_ours, 4) if total_ours else None,
        "raw_total_s": round(total_raw, 2),
        "ours_total_s": round(total_ours, 2),
        "ratio_total": round(total_ours / total_raw, 3) if total_raw else None,
        "ratio_median": round(statistics.median(r["ratio"] for r in rows), 3) if rows else None,
        "overhead_total_s": round(sum(r["overhead_s"] for r in rows), 3),
        "ratio_overhead_total": round((total_raw + sum(r["overhead_s"] for r in rows)) / total_raw, 4) if total_raw else None,
        "ratio_overhead_max": max(r["ratio_overhead"] for r in rows) if rows else None,
        "cached_total_s": round(sum(r["cached_s"] for r in rows), 3),
        "cer_overall": round(sum(r["cer"] * r["ref_chars"] for r in rows) / chars, 4) if chars else None,
        "cer_overall_raw_order": round(sum(r["cer_raw_order"] * r["ref_chars"] for r in rows) / chars, 4) if chars else None,
        "rows": rows,
    }
    print(
        f"{len(rows)} images: {result['pages_per_s']} views/s, ours/raw {result['ratio_total']} (median {result['ratio_median']}; "
        f"from overhead {result['ratio_overhead_total']}, worst image {result['ratio_overhead_max']}), "
        f"cached {result['cached_total_s']} s total, CER {result['cer_overall']} (raw order {result['cer_overall_raw_order']})"
    )
    write_result("ocr", result)


if __name__ == "__main__":
    main()
