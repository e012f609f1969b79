"""OCR benchmark over ../shared/corpus/ocr (16 real scans with ground truth, four of them the
phototest page lying sideways or upside down), for the engine OCR_ENGINE picks (``--engine``;
auto: Tesseract where installed) -> ``results/ocr.json``, or for EasyOCR -> ``results/ocr-easyocr.json``.

Per image, in one process (EasyOCR: one reader, canvas OCR_CANVAS_SIZE, default 1280):
- raw: the engine as it lies: EasyOCR's ``reader.readtext(array, canvas_size=...)`` on the
  decoded RGB array; Tesseract's ``image_to_string`` (``--psm 3``: its own layout and order);
- ours: ``workbench.ingest.loaders.ocr_file(path)`` with an empty cache (one per image) and
  orientation detection on (OCR_DETECT_ORIENTATION, the default): decode, pixel hash,
  ``orientation.detect_rotation`` (timed alone as ``orient_s``), readtext of the page turned
  upright, reading order, cache write. A text-line image (``text_line``) is read by
  ``orientation.read_text_line`` instead, whose whole time (the read included) is its
  ``orient_s``; its overhead is what lies outside that call. The time spent inside readtext during that call is
  measured too, so ``overhead_s`` (ours minus its own readtext: orientation included) is known
  exactly, and ``ratio_overhead`` = (raw + overhead) / raw. With Tesseract: ``orient_s`` is
  its orientation detection (``tesseract.osd_rotation``), the reads are ``tesseract._read``;
- off: the same with orientation detection off (the page read as it lies);
- cached: ``ocr_file(path)`` again (served from the page-hash cache, no OCR; wall seconds);
- CER: character error rate against the ground truth (whitespace collapsed), for ours, off,
  and the raw result in the engine's own order; for the two UNLV magazine pages also
  ``cer_zone_order``: our lines in the order of the reference's Text zones (``.uzn``), the
  recognition's error without our reading order;
- ratio_vs_upright: ours over the time of the upright page read without orientation detection
  (``upright``: phototest.tif for its rotated copies, else the image itself);
  ratio_vs_upright_pipeline: ours over the upright page's own ``ours`` (read the same way,
  orientation pass included, as any page is). The goal of issue 14 is CER <= 0.05 on every
  upright and rotated scan at <= 1.5x the time of an upright page.
Times are CPU seconds of this process and its children (``os.times``: both torch threads,
the tesseract processes; not the waiting), which other jobs on a shared machine change far
less than wall time (the wall seconds are kept too, as ``*_wall_s``; under a load average of 6 on 2 cores the same readtext took 4.4 to
25 s of wall time). With ``--repeat N`` each timed read is made N times (fresh caches) and the
fastest kept; the load average before and after is recorded with the numbers.

Run: ``.venv/bin/python benchmarks/ocr.py [--engine auto|tesseract|easyocr] [--only SUBSTRING ...] [--canvas N] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from _common import cpu_flags, require_corpus, write_result

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from workbench.config import Settings  # noqa: E402
from workbench.ingest import ocr as ocr_module  # noqa: E402
from workbench.ingest import tesseract as tesseract_module  # noqa: E402
from workbench.ingest.loaders import ocr_file  # noqa: E402
from workbench.ingest.ocr import character_error_rate  # noqa: E402
from workbench.models.ocr_reader import get_reader  # noqa: E402
from workbench.models.tesseract import ocr_engine, tesseract_info, tesseract_languages  # noqa: E402

#: The upright page of a rotated copy (corpus/ocr/MANIFEST.md); others are their own.
UPRIGHT = {
    "tesseract-ocr-test/phototest-rotated-180.png": "tesseract-ocr-test/phototest.tif",
    "tesseract-ocr-test/phototest-rotated-L.png": "tesseract-ocr-test/phototest.tif",
    "tesseract-ocr-test/phototest-rotated-R.png": "tesseract-ocr-test/phototest.tif",
    "tesseract-ocr-test/phototestrot.tif": "tesseract-ocr-test/phototest.tif",
}


def ground_truth(image: Path) -> Path:
    """The reference text of a corpus image (see corpus/ocr/MANIFEST.md)."""
    if image.name.startswith("phototest"):
        return image.with_name("phototest.txt")
    stem = image.name.split(".bin.png")[0] if image.name.endswith(".bin.png") else image.stem
    gt = image.with_name(stem + ".gt.txt")
    return gt if gt.exists() else image.with_name(stem + ".txt")


def zone_order_text(image: Path, page) -> str | None:
    """The page's OCR lines put in the reference's order: each box goes to the UNLV ``Text``
    zone (``<stem>.uzn``: x y w h type per line) holding its centre, zones in file order, boxes
    in our reading order within a zone. The reference text of those pages holds only the Text
    zones in that order, so this CER is the recognition's alone, without our reading order.
    None for images without a zone file (or read turned)."""
    zones_file = image.with_suffix(".uzn")
    if not zones_file.exists() or page.rotation:
        return None
    parts = []
    for line in zones_file.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[4] != "Text":
            continue
        x, y, w, h = (int(v) for v in fields[:4])
        inside = []
        for box in page.boxes:
            cx = sum(p[0] for p in box.box) / len(box.box)
            cy = sum(p[1] for p in box.box) / len(box.box)
            if x <= cx <= x + w and y <= cy <= y + h:
                inside.append(box.text)
        parts.append("\n".join(inside))
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=[], help="keep images whose path contains one of these")
    parser.add_argument("--canvas", type=int, help="OCR_CANVAS_SIZE override")
    parser.add_argument("--repeat", type=int, default=1, help="time each read N times, keep the fastest")
    parser.add_argument("--engine", choices=["auto", "tesseract", "easyocr"], default="auto", help="OCR_ENGINE (default auto)")
    args = parser.parse_args()

    corpus = require_corpus() / "ocr"
    images = sorted(p for p in corpus.rglob("*") if p.suffix.lower() in {".png", ".tif"})
    if args.only:
        images = [p for p in images if any(o in str(p) for o in args.only)]
    names = {str(p.relative_to(corpus)) for p in images}
    images += [corpus / u for u in sorted(set(UPRIGHT.values())) if u not in names and any(k in names for k in UPRIGHT)]
    images.sort(key=lambda p: (str(p.relative_to(corpus)) in UPRIGHT, str(p)))  # upright pages first
    cache = Path(tempfile.mkdtemp(prefix="ocr-bench-"))
    overrides = {"ocr_cache_dir": cache, "_env_file": None, "ocr_engine": args.engine}
    if args.canvas:
        overrides["ocr_canvas_size"] = args.canvas
    settings = Settings(**overrides)
    engine = ocr_engine(settings)
    load_before = os.getloadavg()
    started = time.perf_counter()
    reader = get_reader(settings)  # EasyOCR's; with Tesseract only its start-up time is used
    reader_seconds = time.perf_counter() - started
    inner = {"s": 0.0, "orient_s": 0.0, "found": None}

    def clock() -> float:  # CPU seconds of this process and of its finished children (tesseract)
        times = os.times()
        return times.user + times.system + times.children_user + times.children_system

    readtext = reader.readtext
    detect_rotation = ocr_module.detect_rotation
    osd_rotation, tesseract_read = tesseract_module.osd_rotation, tesseract_module._read

    def timed_osd(*a, **kw):
        t = clock()
        try:
            inner["found"] = osd_rotation(*a, **kw)
            return inner["found"]
        finally:
            inner["orient_s"] += clock() - t

    def timed_tesseract_read(*a, **kw):
        t = clock()
        try:
            return tesseract_read(*a, **kw)
        finally:
            inner["s"] += clock() - t

    def raw_read(array):
        """The engine's own read as the page lies: (text in its own order, results)."""
        if engine == "tesseract":
            import pytesseract

            tesseract_module._pytesseract(settings)
            text = pytesseract.image_to_string(array, lang=tesseract_languages(settings), config="--psm 3")
            return text, None
        results = readtext(array, canvas_size=settings.ocr_canvas_size)
        return " ".join(r[1] for r in results), results

    def timed_readtext(*a, **kw):  # the pipeline's own readtext time, to isolate its overhead
        t = clock()
        try:
            return readtext(*a, **kw)
        finally:
            inner["s"] += clock() - t

    def timed_detect_rotation(*a, **kw):
        t = clock()
        try:
            inner["found"] = detect_rotation(*a, **kw)
            return inner["found"]
        finally:
            inner["orient_s"] += clock() - t

    read_text_line = ocr_module.read_text_line

    def timed_read_text_line(*a, **kw):  # a text line's read, orientation included
        t = clock()
        try:
            rotation, results, inner["found"] = read_text_line(*a, **kw)
            return rotation, results, inner["found"]
        finally:
            inner["orient_s"] += clock() - t

    reader.readtext = timed_readtext
    ocr_module.detect_rotation = timed_detect_rotation
    ocr_module.read_text_line = timed_read_text_line
    tesseract_module.osd_rotation = timed_osd
    tesseract_module._read = timed_tesseract_read

    runs = iter(range(1_000_000))

    def read(image: Path, detect: bool):
        """Fastest of --repeat reads with fresh caches: (page, CPU s, readtext CPU s, orient CPU
        s, settings, wall s). A fresh cache per read: phototestrot.tif has the same pixels as a
        rotated copy."""
        best = None
        for _ in range(args.repeat):
            fresh = settings.model_copy(update={"ocr_cache_dir": cache / str(next(runs)), "ocr_detect_orientation": detect})
            inner.update(s=0.0, orient_s=0.0, found=None)
            t0, w0 = clock(), time.perf_counter()
            (page,) = ocr_file(image, fresh)
            seconds, wall = clock() - t0, time.perf_counter() - w0
            if best is None or seconds < best[1]:
                best = (page, seconds, inner["s"], inner["orient_s"], fresh, wall)
        return best

    rows, off_time, ours_time = [], {}, {}
    for image in images:
        name = str(image.relative_to(corpus))
        with Image.open(image) as img:
            array = np.asarray(img.convert("RGB"))
        reference = ground_truth(image).read_text(encoding="utf-8")
        raw_s = raw_wall_s = float("inf")
        for _ in range(args.repeat):
            t0, w0 = clock(), time.perf_counter()
            raw_text, _ = raw_read(array)
            raw_s, raw_wall_s = min(raw_s, clock() - t0), min(raw_wall_s, time.perf_counter() - w0)
        page, ours_s, ours_readtext_s, orient_s, fresh, ours_wall_s = read(image, True)
        found = inner["found"]
        line = ocr_module.is_text_line(array)
        off_page, off_s, _, _, _, off_wall_s = read(image, False)
        off_time[name], ours_time[name] = off_s, ours_s
        if engine == "tesseract":  # reads (a line's too) are timed apart from the orientation pass
            scores = {"osd_rotation": found[0], "osd_confidence": found[1]} if found else {}
            overhead_s = ours_s - ours_readtext_s  # the orientation pass included, as for EasyOCR
        else:
            scores = {str(k): v for k, v in found.scores.items()}
            overhead_s = ours_s - ours_readtext_s - (orient_s if line else 0.0)  # a line's read is its orient_s
        t0 = time.perf_counter()
        ocr_file(image, fresh)
        cached_s = time.perf_counter() - t0
        upright = UPRIGHT.get(name, name)
        zoned = zone_order_text(image, page)
        row = {
            "image": name,
            "size": list(array.shape[1::-1]),
            "rotation": page.rotation,
            "orientation_scores": scores,
            "text_line": line,
            "raw_s": round(raw_s, 3),
            "ours_s": round(ours_s, 3),
            "orient_s": round(orient_s, 3),
            "off_s": round(off_s, 3),
            "cached_s": round(cached_s, 4),
            "raw_wall_s": round(raw_wall_s, 3),
            "ours_wall_s": round(ours_wall_s, 3),
            "off_wall_s": round(off_wall_s, 3),
            "ratio": round(ours_s / raw_s, 3),
            "ratio_off": round(off_s / raw_s, 3),
            "upright": upright,
            "ratio_vs_upright": round(ours_s / off_time[upright], 3),
            "ratio_vs_upright_pipeline": round(ours_s / ours_time[upright], 3),
            "overhead_s": round(overhead_s, 4),
            "ratio_overhead": round((raw_s + overhead_s) / raw_s, 4),
            "cer": round(character_error_rate(page.text, reference), 4),
            "cer_off": round(character_error_rate(off_page.text, reference), 4),
            "cer_raw_order": round(character_error_rate(raw_text, reference), 4),
            "ref_chars": len(" ".join(reference.split())),
            "cer_zone_order": None if zoned is None else round(character_error_rate(zoned, reference), 4),
            "lines": len(page.boxes),
        }
        rows.append(row)
        print(
            f"{name:<45} turned {page.rotation:>3}  CER {row['cer']:.3f} (off {row['cer_off']:.3f}, raw order {row['cer_raw_order']:.3f})  "
            f"CPU s: ours {ours_s:6.2f} (orient {orient_s:5.2f})  off {off_s:6.2f}  raw {raw_s:6.2f}  "
            f"x{row['ratio_vs_upright']:.3f} of upright  cached {cached_s:.3f}s",
            flush=True,
        )

    def weighted(key: str, subset: list[dict]) -> float | None:
        chars = sum(r["ref_chars"] for r in subset)
        return round(sum(r[key] * r["ref_chars"] for r in subset) / chars, 4) if chars else None

    rotated = [r for r in rows if r["image"] in UPRIGHT]
    total_raw = sum(r["raw_s"] for r in rows)
    total_ours = sum(r["ours_s"] for r in rows)
    result = {
        "engine": engine,
        "engine_version": tesseract_info(settings).version if engine == "tesseract" else ocr_module._easyocr_version(),
        "canvas_size": settings.ocr_canvas_size if engine == "easyocr" else None,
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "reader_start_s": round(reader_seconds, 2),
        "images": len(rows),
        "pages_per_s": round(len(rows) / total_ours, 4) if total_ours else None,
        "raw_total_s": round(total_raw, 2),
        "ours_total_s": round(total_ours, 2),
        "off_total_s": round(sum(r["off_s"] for r in rows), 2),
        "orient_total_s": round(sum(r["orient_s"] for r in rows), 2),
        "ratio_total": round(total_ours / total_raw, 3) if total_raw else None,
        "ratio_median": round(statistics.median(r["ratio"] for r in rows), 3) if rows else None,
        "ratio_vs_upright_max_rotated": max((r["ratio_vs_upright"] for r in rotated), default=None),
        "ratio_vs_upright_max": max((r["ratio_vs_upright"] for r in rows), default=None),
        # a rotated copy against its upright page read the same way (orientation pass included)
        "ratio_vs_upright_pipeline_max_rotated": max((r["ratio_vs_upright_pipeline"] for r in rotated), default=None),
        # the pages of a real scan's size (over 1500 px a side): the pass against a full read
        "ratio_vs_upright_max_full_pages": max((r["ratio_vs_upright"] for r in rows if max(r["size"]) > 1500 and not r["text_line"]), default=None),
        "overhead_total_s": round(sum(r["overhead_s"] for r in rows), 3),
        "cached_total_s": round(sum(r["cached_s"] for r in rows), 3),
        "cer_max": max((r["cer"] for r in rows), default=None),
        "cer_overall": weighted("cer", rows),
        "cer_overall_off": weighted("cer_off", rows),
        "cer_overall_raw_order": weighted("cer_raw_order", rows),
        # every scan, the UNLV pages in their reference's zone order (recognition only)
        "cer_overall_zone_order": weighted("cer", [r if r["cer_zone_order"] is None else dict(r, cer=r["cer_zone_order"]) for r in rows]),
        "cer_rotated": weighted("cer", rotated),
        "cer_rotated_off": weighted("cer_off", rotated),
        "rows": rows,
    }
    print(
        f"{len(rows)} images: CER {result['cer_overall']} (off {result['cer_overall_off']}, raw order {result['cer_overall_raw_order']}); "
        f"rotated CER {result['cer_rotated']} (off {result['cer_rotated_off']}) at <= x{result['ratio_vs_upright_max_rotated']} of the upright page; "
        f"ours/raw {result['ratio_total']} (median {result['ratio_median']}), orientation {result['orient_total_s']} s in all, "
        f"cached {result['cached_total_s']} s total"
    )
    write_result("ocr" if args.engine != "easyocr" else "ocr-easyocr", result)


if __name__ == "__main__":
    main()
