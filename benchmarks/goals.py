"""The speed goals of issue 13 (and the OCR goal of issue 14 part 5) in one table, from ``benchmarks/results/*.json`` (``make bench`` runs
this last). Each goal is shown with what it was measured against in the same run, the target,
and whether it holds; a goal whose benchmark has not run says so. The CPU (model, flags) and
the encoder precision of each result are printed, since machines differ.

``--readme`` also rewrites the part of README.md between ``<!-- goals:start -->`` and
``<!-- goals:end -->`` with the same table. Usage: python benchmarks/goals.py [--readme]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from _common import REPO, RESULTS

START, END = "<!-- goals:start -->", "<!-- goals:end -->"


@dataclass
class Goal:
    goal: str
    measured: str
    anchor: str
    target: str
    met: bool | None  # None: not measured


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _missing(goal: str, target: str, what: str) -> Goal:
    return Goal(goal, f"not measured ({what})", "", target, None)


def search_goals(data: dict | None) -> list[Goal]:
    """Goals 1 and 2 from ``search.json`` (benchmarks/search.py)."""
    if not data or not data.get("latency"):
        return [_missing("1-2. search latency", "p50 <= 50 ms", "run benchmarks/search.py")]
    goals = []
    for size in data["latency"]:
        n = f"{size['chunks']:,}"
        for mode in ("vector", "keyword", "hybrid", "hybrid_rrf"):
            p50 = size[mode]["p50_ms"]
            goals.append(Goal(f"1. {mode} search p50, {n} chunks", f"{p50:.1f} ms", f"raw Chroma query {size['raw_query']['p50_ms']:.1f} ms, "
                              f"query embedding {size['query_embed']['p50_ms']:.1f} ms", "<= 50 ms", p50 <= 50))
        ratio = size["hybrid"]["x_vector_p50"]
        goals.append(Goal(f"1. hybrid / vector p50, {n} chunks", f"{ratio:.2f}x", f"vector {size['vector']['p50_ms']:.1f} ms", "<= 3x", ratio <= 3))
        ratio = size["keyword"]["x_bm25s_p50"]
        goals.append(Goal(f"2. keyword / (bm25s retrieve + get), {n} chunks", f"{ratio:.2f}x", f"bm25s + get {size['bm25s_retrieve_get']['p50_ms']:.1f} ms", "<= 2x", ratio <= 2))
    quality = data.get("quality") or {}
    if "hybrid" in quality:
        h = quality["hybrid"]
        lc = quality.get("langchain_default")
        anchor = f"vector {quality['vector']['recall@5']:.3f} / {quality['vector']['mrr@10']:.3f}" + (
            f"; LangChain {lc['recall@5']:.3f} / {lc['mrr@10']:.3f}" if lc else "")
        goals.append(Goal(f"1. hybrid recall@5 / MRR@10, {quality['questions']:,} SQuAD questions", f"{h['recall@5']:.3f} / {h['mrr@10']:.3f}",
                          anchor, ">= 0.97 / 0.90", h["recall@5"] >= 0.97 and h["mrr@10"] >= 0.90))
    else:
        goals.append(_missing("1. hybrid quality", ">= 0.97 / 0.90", "benchmarks/search.py without --skip-quality"))
    return goals


def ingest_goals(data: dict | None) -> list[Goal]:
    """Goals 3 and 4 from ``ingest.json`` (benchmarks/ingest.py)."""
    if not data or not data.get("shapes"):
        return [_missing("3-4. ingest", ">= 0.9x raw, >= 2.5x LangChain", "run benchmarks/ingest.py")]
    goals = []
    for row in data["shapes"]:
        shape = f"{row['shape']} ({row['files']:,} file{'s' if row['files'] != 1 else ''}, {row['chunks']:,} chunks)"
        goals.append(Goal(f"3. ingest / raw encode, {shape}", f"{row['ratio_ours_over_raw']:.2f}x ({row['ours_chunks_per_s']:.1f} chunks/s)",
                          f"raw encode {row['raw_chunks_per_s']:.1f} chunks/s", ">= 0.9x", row["ratio_ours_over_raw"] >= 0.9))
        if "langchain_s" in row:
            goals.append(Goal(f"4. ingest vs LangChain, {row['shape']}", f"{row['speedup_over_langchain']:.2f}x ({row['ours_s']:.1f} s)",
                              f"LangChain {row['langchain_s']:.1f} s for {row['langchain_chunks']:,} chunks", ">= 2.5x", row["speedup_over_langchain"] >= 2.5))
    if data.get("quick"):
        goals.append(Goal("3-4. ingest", "--quick run: smaller shapes, no LangChain", "", "full run", None))
    return goals


def ollama_goals(data: dict | None) -> list[Goal]:
    """Goal 5 from ``chat.json`` (benchmarks/chat.py, its Ollama-down part)."""
    down = (data or {}).get("ollama_down")
    if not down:
        return [_missing("5. Ollama down reported", "<= 3 s", "run benchmarks/chat.py")]
    return [Goal(f"5. `ask` with Ollama {case['case']}: error after", f"{case['seconds']:.2f} s", "process start included", "<= 3 s", case["seconds"] <= 3 and case["reported"])
            for case in down]


def ocr_goals(data: dict | None, easyocr: dict | None = None) -> list[Goal]:
    """Issue 14 part 5 (scans the right way up) from ``ocr.json`` (benchmarks/ocr.py, the
    default engine) and, as an anchor, ``ocr-easyocr.json`` (``--engine easyocr``)."""
    if not data or "cer_rotated" not in data:
        return [_missing("14.5 OCR of rotated scans", "CER <= 0.05 at <= 1.5x", "run benchmarks/ocr.py")]
    engine = data.get("engine", "easyocr")
    fallback = f"; EasyOCR: {easyocr['cer_overall']:.3f}" if easyocr and engine != "easyocr" else ""
    goals = [
        Goal(f"14.5 CER of the rotated scans, read turned upright ({engine})", f"{data['cer_rotated']:.3f}", f"not turned: {data['cer_rotated_off']:.3f}",
             "<= 0.05", data["cer_rotated"] <= 0.05),
        Goal(f"14.5 CER over every scan of ../shared/corpus/ocr ({engine})", f"{data['cer_overall']:.3f}",
             f"not turned: {data['cer_overall_off']:.3f}{fallback}", "<= 0.05", data["cer_overall"] <= 0.05),
    ]
    if data.get("ratio_vs_upright_pipeline_max_rotated") is not None:
        goals.append(Goal("14.5 time of a rotated scan / its upright page read the same way (worst)",
                          f"{data['ratio_vs_upright_pipeline_max_rotated']:.2f}x", "orientation pass in both, CPU seconds", "<= 1.5x",
                          data["ratio_vs_upright_pipeline_max_rotated"] <= 1.5))
    goals.append(Goal("14.5 time of a rotated scan / its upright page's bare read (worst)", f"{data['ratio_vs_upright_max_rotated']:.2f}x",
                      "the read without orientation pass, CPU seconds", "<= 1.5x", data["ratio_vs_upright_max_rotated"] <= 1.5))
    if data.get("ratio_vs_upright_max_full_pages") is not None:
        goals.append(Goal("14.5 time of a full-size scan / its bare read (worst)", f"{data['ratio_vs_upright_max_full_pages']:.2f}x",
                          "pages over 1500 px a side, CPU seconds", "<= 1.5x", data["ratio_vs_upright_max_full_pages"] <= 1.5))
    return goals


def machines(results: dict[str, dict | None]) -> list[str]:
    lines = []
    for name, data in results.items():
        if data and not data.get("machine") and "cpu_flags" in data:  # written before results named the machine
            lines.append(f"{name}: flags {data['cpu_flags'] or '(none reported)'}, load {data.get('load_avg_after', ['?'])[0]} at the end")
        if data and data.get("machine"):
            m = data["machine"]
            enc = f", encoder {m['backend']} {m['precision']}" if m.get("backend") else ""
            lines.append(f"{name}: {m['model']}, {m['cores']} cores, flags {m['flags'] or '(no avx2/avx512/amx)'}{enc}, "
                         f"load {m['load_average']} at the end, {data.get('measured_at', '')}")
    return lines


def table(goals: list[Goal]) -> str:
    mark = {True: "yes", False: "**no**", None: "-"}
    rows = ["| goal | measured | anchor, same run | target | met |", "|---|---|---|---|---|"]
    rows += [f"| {g.goal} | {g.measured} | {g.anchor} | {g.target} | {mark[g.met]} |" for g in goals]
    return "\n".join(rows)


def render() -> str:
    results = {name: _load(name) for name in ("search", "ingest", "chat", "ocr", "ocr-easyocr")}
    goals = (search_goals(results["search"]) + ingest_goals(results["ingest"]) + ollama_goals(results["chat"])
             + ocr_goals(results["ocr"], results["ocr-easyocr"]))
    held = sum(g.met is True for g in goals)
    failed = sum(g.met is False for g in goals)
    lines = [table(goals), "", f"{held} held, {failed} not held, {sum(g.met is None for g in goals)} not measured. Measured on:", ""]
    lines += [f"- {line}" for line in machines(results)]
    return "\n".join(lines)


def write_readme(text: str, readme: Path = REPO / "README.md") -> None:
    body = readme.read_text(encoding="utf-8")
    if START not in body or END not in body:
        raise SystemExit(f"{readme} has no {START} ... {END} block")
    head, rest = body.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{text}\n{END}{tail}", encoding="utf-8")
    print(f"rewrote the goals table in {readme}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", action="store_true", help="also rewrite the table in README.md")
    args = parser.parse_args()
    text = render()
    print(text)
    if args.readme:
        write_readme(text)


if __name__ == "__main__":
    main()
