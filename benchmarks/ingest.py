"""Ingestion benchmark (``make bench``): on the same corpus, in one run,

1. raw ``SentenceTransformer.encode`` of our chunks, with the same encoder we ingest with
   (OpenVINO by default) and with torch fp32, batch 32;
2. our full ingest (load, chunk, embed, write to Chroma, commit);
3. a LangChain pipeline doing the same job: RecursiveCharacterTextSplitter +
   HuggingFaceEmbeddings (the same local MiniLM, torch) + Chroma.from_documents;
4. re-ingest of the unchanged corpus;
5. peak RSS of a child process ingesting the corpus 1x and 3x (must stay flat), and a
   1,000-page generated PDF;
6. quality: recall@5 of vector search on SQuAD dev questions with torch vs OpenVINO vectors.

Targets (issue 3): ours >= 0.85 x raw encode of the same encoder; >= 2.5 x LangChain;
re-ingest <= 2 % of the first ingest; peak memory flat. Prints a table, writes
benchmarks/results/ingest.json. Usage: python benchmarks/ingest.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, require_corpus, write_result

from tests.conftest import make_settings


def our_ingest(files_dir: Path, tmp: Path, backend: str):
    from workbench.models.embeddings import get_embedder
    from workbench.ingest.pipeline import ingest_paths
    from workbench.store.chroma import open_store

    settings = make_settings(tmp, embedding_backend=backend)
    embedder = get_embedder(settings)
    store = open_store(settings)
    t = time.perf_counter()
    summary = ingest_paths([files_dir], settings=settings, store=store, embedder=embedder)
    first = time.perf_counter() - t
    t = time.perf_counter()
    again = ingest_paths([files_dir], settings=settings, store=store, embedder=embedder)
    second = time.perf_counter() - t
    texts = store.get_collection(settings.collection_name).get(include=["documents"])["documents"]
    assert again.count("unchanged") == len(summary.results) - summary.count("failed")
    return embedder, texts, first, second, summary.chunks_added


def raw_encode(model, texts: list[str]) -> float:
    t = time.perf_counter()
    model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    return time.perf_counter() - t


def langchain_pipeline(files_dir: Path, tmp: Path, model_path: str) -> tuple[float, int]:
    from langchain_chroma import Chroma
    from langchain_core.documents import Document
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    t = time.perf_counter()
    docs = [Document(page_content=p.read_text(encoding="utf-8", errors="replace"), metadata={"source": str(p)}) for p in sorted(files_dir.rglob("*")) if p.is_file()]
    # ~200 MiniLM tokens is ~800 characters of English: the same chunk size as ours.
    splits = RecursiveCharacterTextSplitter(chunk_size=800, chunk_overlap=128).split_documents(docs)
    embeddings = HuggingFaceEmbeddings(model_name=model_path, model_kwargs={"device": "cpu"}, encode_kwargs={"normalize_embeddings": True, "batch_size": 32})
    Chroma.from_documents(splits, embeddings, persist_directory=str(tmp / "lc"), collection_name="langchain")
    return time.perf_counter() - t, len(splits)


PEAK_CHILD = """
import os, resource, sys, threading
sys.path.insert(0, sys.argv[3])
from pathlib import Path
from tests.conftest import make_settings
from workbench.models.embeddings import get_embedder
from workbench.ingest.pipeline import ingest_paths
from workbench.store.chroma import open_store
s = make_settings(Path(sys.argv[2]))
store, embedder = open_store(s), get_embedder(s)
embedder.encode(["warm up"])
load_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
page = os.sysconf("SC_PAGE_SIZE")
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page // 2**20
before, peak, done = rss(), [0], threading.Event()
def sample():
    while not done.wait(0.05):
        peak[0] = max(peak[0], rss())
threading.Thread(target=sample, daemon=True).start()
ingest_paths([Path(sys.argv[1])], settings=s, store=store, embedder=embedder)
done.set()
print(load_peak, before, max(peak[0], rss()))
"""


def peak_mb(files_dir: Path, tmp: Path) -> dict:
    """A child process ingests ``files_dir``: ``{"load_peak", "before_ingest", "ingest_peak"}``
    in MB (the peak while loading the model, the RSS after loading, the sampled peak RSS during
    the ingest, every 50 ms)."""
    out = subprocess.run([sys.executable, "-c", PEAK_CHILD, str(files_dir), str(tmp), str(REPO)], capture_output=True, text=True, check=True)
    load_peak, before, during = map(int, out.stdout.strip().splitlines()[-1].split())
    return {"load_peak": load_peak, "before_ingest": before, "ingest_peak": during}


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


def squad_recall(backend: str, tmp: Path, corpus: Path, n: int = 300) -> float:
    from workbench.models.embeddings import get_embedder
    from workbench.ingest.pipeline import ingest_paths
    from workbench.retrieval.search import search
    from workbench.store.chroma import open_store

    settings = make_settings(tmp, embedding_backend=backend)
    embedder, store = get_embedder(settings), open_store(settings)
    ingest_paths([corpus / "squad" / "docs"], settings=settings, store=store, embedder=embedder)
    rows = [json.loads(line) for line in (corpus / "squad" / "dev.jsonl").read_text().splitlines()]
    rows = rows[:: max(1, len(rows) // n)][:n]
    found = 0
    for row in rows:
        hits = search(row["question"], settings=settings, store=store, embedder=embedder, top_k=5)
        found += any(h.file_name == f"{row['title']}.md" and row["answers"][0].lower() in h.text.lower() for h in hits)
    return found / len(rows)


def memory(files: Path, tmp: Path) -> dict:
    """Peak RSS of a child ingesting the corpus once, three times over (distinct copies), and a
    generated 1,000-page PDF."""
    one = peak_mb(files, tmp / "peak1")
    triple = tmp / "text3"
    for k in range(3):
        for p in files.rglob("*"):
            if p.is_file():
                target = triple / f"copy{k}" / p.relative_to(files)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(p.read_bytes() + f"\n\ncopy {k}\n".encode())
    three = peak_mb(triple, tmp / "peak3")
    big = tmp / "bigpdf"
    big.mkdir()
    make_long_pdf(big / "long.pdf", 1000)
    pdf = peak_mb(big, tmp / "peakpdf")
    print(f"RSS MB (load peak / before ingest / ingest peak): x1 {one}, x3 {three}, 1000-page PDF {pdf}", flush=True)
    return {"rss_mb_corpus_x1": one, "rss_mb_corpus_x3": three, "rss_mb_1000_page_pdf": pdf}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="skip the LangChain run, peak memory and quality")
    parser.add_argument("--memory", action="store_true", help="only the peak-memory runs")
    args = parser.parse_args()
    corpus = require_corpus()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    files = tmp / "text"
    shutil.copytree(corpus / "text", files, ignore=shutil.ignore_patterns("MANIFEST.md"))
    result: dict = {"corpus": "shared/corpus/text", "files": sum(1 for p in files.rglob("*") if p.is_file())}

    if args.memory:
        result.update(memory(files, tmp))
        print(result)
        write_result("ingest-memory", result)
        return
    embedder, texts, first, second, chunks = our_ingest(files, tmp / "ours", "openvino")
    from sentence_transformers import SentenceTransformer

    torch_model = SentenceTransformer(str(embedder.path), device="cpu")
    raw_same = raw_encode(embedder.model, texts)
    raw_torch = raw_encode(torch_model, texts)
    result.update(
        chunks=chunks,
        backend=embedder.backend,
        precision=embedder.precision,
        ours_s=first,
        ours_chunks_per_s=chunks / first,
        raw_encode_same_encoder_chunks_per_s=chunks / raw_same,
        raw_encode_torch_chunks_per_s=chunks / raw_torch,
        ratio_ours_over_raw_same_encoder=(chunks / first) / (chunks / raw_same),
        reingest_s=second,
        reingest_fraction=second / first,
    )
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}, flush=True)
    if not args.quick:
        lc_s, lc_chunks = langchain_pipeline(files, tmp, str(embedder.path))
        result.update(langchain_s=lc_s, langchain_chunks=lc_chunks, speedup_over_langchain=lc_s / first,
                      langchain_chunks_per_s=lc_chunks / lc_s, speedup_over_langchain_per_chunk=(chunks / first) / (lc_chunks / lc_s))
        print(f"langchain {lc_s:.1f} s for {lc_chunks} chunks", flush=True)
        result.update(memory(files, tmp))
        result.update(squad_recall5_torch=squad_recall("torch", tmp / "q-torch", corpus), squad_recall5_openvino=squad_recall("openvino", tmp / "q-ov", corpus))
    shutil.rmtree(tmp, ignore_errors=True)
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value:.3f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    write_result("ingest", result, embedder)


if __name__ == "__main__":
    main()
