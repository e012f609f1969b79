"""Ingestion benchmark (``make bench``): our ingest against raw encoding and LangChain, per
corpus shape, in one run on one machine.

Shapes (generated into a temp folder at run time; nothing is committed):

- ``text``: ``shared/corpus/text`` (27 prose/markdown/rst files, 1.4 MB);
- ``small``: one file per paragraph of that corpus (>= 5,000 files of 40+ characters);
- ``one-line``: one 10 MB text file on a single line (the corpus, whitespace collapsed);
- ``pdf`` (``--pdf``): a generated 1,000-page text-layer PDF.

For each shape a child process loads the embedder (EMBEDDING_BACKEND/PRECISION as configured),
chunks the files (untimed), encodes those chunks raw (``SentenceTransformer.encode`` of
``header + text``, one call, batch EMBEDDING_BATCH_SIZE, the same model object; a seeded
random sample of RAW_SAMPLE chunks when there are more), ingests the
shape with :func:`workbench.ingest.pipeline.ingest_paths` into a fresh Chroma while sampling RSS
every 50 ms, then encodes raw again: raw chunks/s is from the mean of the two raw runs around the
ingest, so load drift on the shared machine cancels. Another child runs LangChain's default
pipeline on the same files (RecursiveCharacterTextSplitter at ~200 tokens, HuggingFaceEmbeddings
of the same local MiniLM on torch, Chroma.from_documents).

Goals (issue 13): ours >= 0.9x raw encode of the same encoder on every shape; ours >= 2.5x
LangChain's wall time on ``text`` and ``small``. Prints one table with the CPU flags and writes
benchmarks/results/ingest.json; with ``--shapes`` the other shapes' rows of the previous file are
kept (each row is one shape's own run: ours, raw and LangChain together, with its time and load).
Usage: python benchmarks/ingest.py [--quick] [--pdf] [--shapes text,small,...] [--no-langchain]
[--langchain-all]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, RESULTS, require_corpus, write_result

SHAPES = ("text", "small", "one-line", "pdf")
#: Shapes LangChain runs on by default (goal 4); ``--langchain-all`` adds one-line (never the
#: PDF: its default loader, langchain-community, is not installed).
LANGCHAIN_SHAPES = ("text", "small")
MIN_SMALL_FILES = 5000
#: Chunks the raw-encode anchor encodes (a seeded random sample; all when fewer).
RAW_SAMPLE = 1500


# --- corpus shapes ----------------------------------------------------------------------------
def corpus_files(corpus: Path) -> list[Path]:
    return [p for p in sorted((corpus / "text").rglob("*")) if p.is_file() and p.suffix in (".txt", ".md", ".rst")]


def make_shape(shape: str, corpus: Path, dest: Path, *, quick: bool) -> Path:
    """Write one corpus shape under ``dest``; returns the folder to ingest."""
    folder = dest / shape
    folder.mkdir(parents=True)
    if shape == "text":
        shutil.copytree(corpus / "text", folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("MANIFEST.md"))
    elif shape == "small":
        paragraphs = []
        for path in corpus_files(corpus):
            text = path.read_text(encoding="utf-8-sig", errors="replace").replace("\r\n", "\n")
            paragraphs += [p.strip() for p in re.split(r"\n\s*\n", text) if len(p.strip()) >= 40]
        if quick:
            paragraphs = paragraphs[:1000]
        elif len(paragraphs) < MIN_SMALL_FILES:
            sys.exit(f"only {len(paragraphs)} paragraphs in the corpus, fewer than {MIN_SMALL_FILES}")
        for i, paragraph in enumerate(paragraphs):
            (folder / f"p{i:05d}.txt").write_text(paragraph + "\n", encoding="utf-8")
    elif shape == "one-line":
        words = " ".join(p.read_text(encoding="utf-8-sig", errors="replace") for p in corpus_files(corpus)).split()
        size = 1_000_000 if quick else 10_000_000
        line = " ".join(words)
        line = (line + " ") * (size // len(line) + 1)
        (folder / "one-line.txt").write_text(line[:size].strip() + "\n", encoding="utf-8")
    elif shape == "pdf":
        make_long_pdf(folder / "long.pdf", 200 if quick else 1000)
    return folder


def make_long_pdf(path: Path, pages: int) -> None:
    """A text-layer PDF of ``pages`` pages written with pypdf (one paragraph a page)."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    font = DictionaryObject({NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"), NameObject("/BaseFont"): NameObject("/Helvetica")})
    font_ref = writer._add_object(font)
    for i in range(pages):
        page = writer.add_blank_page(612, 792)
        lines = [f"Page {i + 1}: report section {i % 37} about river {i % 11} and its delta." for _ in range(20)]
        ops = "BT /F1 10 Tf 50 750 Td 12 TL " + " ".join(f"({line}) '" for line in lines) + " ET"
        stream = DecodedStreamObject()
        stream.set_data(ops.encode())
        page[NameObject("/Contents")] = writer._add_object(stream)
        page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): DictionaryObject({NameObject("/F1"): font_ref})})
    with open(path, "wb") as fh:
        writer.write(fh)


# --- children -------------------------------------------------------------------------------
def child_ours(folder: Path, tmp: Path) -> dict:
    """Raw encode, our ingest (RSS sampled), raw encode again, re-ingest; one JSON-able dict."""
    import resource
    import threading

    from tests.conftest import make_settings
    from workbench.ingest.chunking import Chunker
    from workbench.ingest.loaders import iter_pages
    from workbench.ingest.pipeline import discover, ingest_paths
    from workbench.models.embeddings import get_embedder
    from workbench.store.chroma import open_store

    settings = make_settings(tmp)
    embedder, store = get_embedder(settings), open_store(settings)
    chunker = Chunker(embedder.backend_tokenizer, settings.chunk_size, settings.chunk_overlap, embedder.max_seq_length, context=settings.chunk_context)
    t = time.perf_counter()
    texts = []
    for item in discover([folder]):
        for chunk in chunker.chunk_pages(iter_pages(item.path, settings), document_id="d", source=item.source, file_name=item.path.name):
            texts.append(chunk.header + chunk.text)
    chunk_s = time.perf_counter() - t
    warm = sorted(texts, key=len)
    embedder.model.encode(warm[:: max(1, len(warm) // 96)][:96], batch_size=embedder.batch_size, show_progress_bar=False)

    # The raw anchor encodes a seeded random sample of at most RAW_SAMPLE chunks (all of them
    # when fewer): a rate, in chunks/s, that costs minutes less on the 10 MB line.
    sample_texts = random.Random(0).sample(texts, RAW_SAMPLE) if len(texts) > RAW_SAMPLE else texts

    def raw() -> float:
        """Seconds per chunk of a raw encode of the sample."""
        started = time.perf_counter()
        embedder.model.encode(sample_texts, batch_size=embedder.batch_size, normalize_embeddings=True, show_progress_bar=False)
        return (time.perf_counter() - started) / len(sample_texts)

    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * page // 2**20

    raw_before = raw()
    before, peak, done = rss(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    summary = ingest_paths([folder], settings=settings, store=store, embedder=embedder)
    ours = time.perf_counter() - t
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    done.set()
    sampler.join()
    raw_after = raw()
    t = time.perf_counter()
    again = ingest_paths([folder], settings=settings, store=store, embedder=embedder)
    reingest = time.perf_counter() - t
    assert not summary.failures, summary.failures
    assert summary.chunks_added == len(texts), (summary.chunks_added, len(texts))
    assert again.count("unchanged") == len(summary.results)
    return {
        "files": len(summary.results),
        "chunks": len(texts),
        "backend": embedder.backend,
        "precision": getattr(embedder, "precision", ""),
        "chunk_only_s": chunk_s,
        "ours_s": ours,
        "ours_cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        "raw_sample": len(sample_texts),
        "raw_s_per_chunk": [raw_before, raw_after],
        "reingest_s": reingest,
        "rss_mb_before_ingest": before,
        "rss_mb_ingest_peak": max(peak[0], rss()),
    }


def child_langchain(folder: Path, tmp: Path) -> dict:
    """LangChain's default pipeline over the same files (see module docstring)."""
    from tests.conftest import make_settings
    from workbench.models.embeddings import resolve_embedding_model

    model_path = str(resolve_embedding_model(make_settings(tmp)))
    from langchain_chroma import Chroma
    from langchain_core.documents import Document
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    t = time.perf_counter()
    docs = [Document(page_content=p.read_text(encoding="utf-8", errors="replace"), metadata={"source": str(p)}) for p in files]
    # ~200 MiniLM tokens is ~800 characters of English: the same chunk size as ours.
    splits = RecursiveCharacterTextSplitter(chunk_size=800, chunk_overlap=128).split_documents(docs)
    embeddings = HuggingFaceEmbeddings(model_name=model_path, model_kwargs={"device": "cpu"}, encode_kwargs={"normalize_embeddings": True, "batch_size": 32})
    Chroma.from_documents(splits, embeddings, persist_directory=str(tmp / "lc"), collection_name="langchain")
    return {"langchain_s": time.perf_counter() - t, "langchain_chunks": len(splits)}


def run_child(kind: str, folder: Path, tmp: Path) -> dict:
    tmp.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(folder), str(tmp)], capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} child failed on {folder.name}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the table ---------------------------------------------------------------------------------
def row(shape: str, ours: dict, lc: dict | None) -> dict:
    raw_s = ours["chunks"] * sum(ours["raw_s_per_chunk"]) / len(ours["raw_s_per_chunk"])
    result = {
        "shape": shape,
        **ours,
        "ours_chunks_per_s": ours["chunks"] / ours["ours_s"],
        "raw_chunks_per_s": ours["chunks"] / raw_s,
        "ratio_ours_over_raw": raw_s / ours["ours_s"],
    }
    if lc:
        result.update(lc, speedup_over_langchain=lc["langchain_s"] / ours["ours_s"],
                      speedup_over_langchain_per_chunk=(ours["chunks"] / ours["ours_s"]) / (lc["langchain_chunks"] / lc["langchain_s"]))
    return result


def print_table(rows: list[dict], header: dict) -> None:
    print()
    print(f"CPU: {header['cpu']}; {header['cores']} cores; flags: {header['cpu_flags'] or '(none reported)'}")
    print(f"encoder: {header['backend']} {header['precision']}, batch {header['batch_size']}; load average at start {header['load_start']}, end {header['load_end']}")
    cols = ["shape", "files", "chunks", "ours s", "ours ch/s", "raw ch/s", "ours/raw", "LangChain s (chunks)", "speed-up", "RSS peak MB"]
    lines = []
    for r in rows:
        lc = f"{r['langchain_s']:.1f} ({r['langchain_chunks']})" if "langchain_s" in r else "-"
        speed = f"{r['speedup_over_langchain']:.2f}x" if "langchain_s" in r else "-"
        lines.append([r["shape"], str(r["files"]), str(r["chunks"]), f"{r['ours_s']:.1f}", f"{r['ours_chunks_per_s']:.1f}", f"{r['raw_chunks_per_s']:.1f}",
                      f"{r['ratio_ours_over_raw']:.2f}", lc, speed, f"{r['rss_mb_ingest_peak']} ({r['rss_mb_before_ingest']} before)"])
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(cols)]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lines:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(line, widths)) + " |")
    print("goals: ours/raw >= 0.9 on every shape; speed-up >= 2.5x on text and small")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller shapes (1,000 small files, 1 MB line, 200-page PDF), no LangChain")
    parser.add_argument("--pdf", action="store_true", help="add the 1,000-page PDF shape")
    parser.add_argument("--shapes", default="", help=f"comma-separated subset of {','.join(SHAPES)}")
    parser.add_argument("--no-langchain", action="store_true")
    parser.add_argument("--langchain-all", action="store_true", help="run LangChain on every shape, not only text and small")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "FOLDER", "TMP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, folder, tmp = args.child
        print(json.dumps((child_ours if kind == "ours" else child_langchain)(Path(folder), Path(tmp))))
        return

    from workbench.models import cpu

    corpus = require_corpus()
    shapes = [s for s in (args.shapes.split(",") if args.shapes else SHAPES) if s]
    if not args.shapes and not args.pdf:
        shapes.remove("pdf")
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    header = {"cpu": cpu.cpu_model_name(), "cores": os.cpu_count(), "cpu_flags": " ".join(cpu.reported_flags()), "load_start": round(os.getloadavg()[0], 2)}
    rows = []
    try:
        for shape in shapes:
            folder = make_shape(shape, corpus, tmp / "corpus", quick=args.quick)
            ours = run_child("ours", folder, tmp / f"ours-{shape}")
            header.update(backend=ours["backend"], precision=ours["precision"])
            print(f"{shape}: ours {ours['ours_s']:.1f} s for {ours['chunks']} chunks, raw {1 / ours['raw_s_per_chunk'][0]:.1f} / {1 / ours['raw_s_per_chunk'][1]:.1f} chunks/s", flush=True)
            lc = None
            if not (args.quick or args.no_langchain) and shape != "pdf" and (args.langchain_all or shape in LANGCHAIN_SHAPES):
                lc = run_child("langchain", folder, tmp / f"lc-{shape}")
                print(f"{shape}: LangChain {lc['langchain_s']:.1f} s for {lc['langchain_chunks']} chunks", flush=True)
            rows.append(row(shape, ours, lc))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    from workbench.config import Settings

    header.update(load_end=round(os.getloadavg()[0], 2), batch_size=Settings(_env_file=None).embedding_batch_size)
    print_table(rows, header)
    measured_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for r in rows:
        r.update(measured_at=measured_at, load_average=header["load_end"])
    previous = RESULTS / "ingest.json"
    if args.shapes and previous.exists() and not args.quick:  # keep the shapes not re-run
        done = {r["shape"] for r in rows}
        kept = [r for r in json.loads(previous.read_text()).get("shapes", []) if r["shape"] not in done]
        rows = sorted(rows + kept, key=lambda r: SHAPES.index(r["shape"]))
    write_result("ingest", {**header, "quick": args.quick, "shapes": rows})


if __name__ == "__main__":
    main()
