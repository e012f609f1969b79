"""Search benchmark (``make bench``), in one run:

1. Latency at 10k and 100k chunks for each mode, as p50/p95 in a warm process, *query embedding
   included* (the real model embeds each query, as a search does). The modes run interleaved:
   each query goes through every mode in turn (rotating the order), so load changes on the
   machine hit all modes alike. Beside them, the anchors on the same queries: the raw Chroma
   ``collection.query`` (n_results=top_k, default include), the query embedding alone, and
   bm25s's own ``retrieve`` (top-k, query tokens given) plus a Chroma ``get`` of its hits.
   Chunks are random unit vectors (latency does not depend on what they mean) whose texts are
   sampled SQuAD sentences (real words for BM25), with sentence vectors in the store's sidecar
   (random too) as ingest leaves them.
2. Retrieval quality on the SQuAD dev questions of ``../shared/corpus/squad`` (24 articles):
   recall@1/5/10, MRR@10, nDCG@10 of vector, keyword, hybrid (convex, default) and hybrid with
   plain RRF, and of a LangChain default pipeline: RecursiveCharacterTextSplitter(1000, 200) (the
   LangChain RAG tutorial's values) + HuggingFaceEmbeddings (the same local MiniLM, library
   defaults) + Chroma, top 10 by ``similarity_search``. Same relevance rule for all.

Goals (issue 13): p50 <= 50 ms in every mode at 10k and 100k chunks, hybrid <= 3x vector,
keyword <= 2x (bm25s retrieve + get of the hits); hybrid recall@5 >= 0.97 and MRR@10 >= 0.90.
Prints one table (with the CPU's AVX-512/AMX flags) and writes benchmarks/results/search.json.
Usage: python benchmarks/search.py [--sizes 10000,100000] [--queries 200] [--questions N] [--skip-langchain]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, cpu_flags, require_corpus, write_result

from tests.conftest import make_settings

TOP_K = 5
MODES = (("vector", {}), ("keyword", {"mode": "keyword"}), ("hybrid", {"mode": "hybrid"}), ("hybrid_rrf", {"mode": "hybrid", "fusion": "rrf"}))


def squad_sentences(corpus: Path) -> list[str]:
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted((corpus / "squad" / "docs").glob("*.md")))
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if 5 <= len(s.split()) <= 60]


def build_collection(store, name: str, n: int, sentences: list[str], rng: np.random.Generator, model: str = "all-MiniLM-L6-v2"):
    """``n`` committed chunks in documents of 100 chunks, metadata as ingest writes it, and the
    sentence vectors of each chunk (random) in the store's sidecar."""
    from workbench.store.sentences import fingerprint, sentence_spans

    chroma = store.open_collection(name, model="all-MiniLM-L6-v2", dimensions=384, chunk_size=200, chunk_overlap=32)
    pick = random.Random(0)
    for lo in range(0, n, store.max_batch):
        ids, metas, docs = [], [], []
        for i in range(lo, min(n, lo + store.max_batch)):
            doc, index = f"doc{i // 100:05d}", i % 100
            ids.append(f"{doc}-{'k' * 12}-{index:06d}")
            docs.append(" ".join(pick.choice(sentences) for _ in range(3)))
            metas.append({"document_id": doc, "source": f"{doc}.md", "file_name": f"{doc}.md", "page": 1, "chunk_index": index,
                          "ingest_key": "k" * 64, "complete": True, "header": f"Document {doc}\n", "section": ""})
        vectors = rng.standard_normal((len(ids), 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        rows = []
        for cid, text, meta in zip(ids, docs, metas):
            count = len(sentence_spans(text))
            found = rng.standard_normal((count, 384)).astype(np.float32)
            rows.append((cid, fingerprint(model, meta["header"], text), found / np.linalg.norm(found, axis=1, keepdims=True)))
        store.sentences.put(str(chroma.id), rows)
        chroma.add(ids=ids, embeddings=vectors, documents=docs, metadatas=metas)
    return chroma


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    return {"p50_ms": round(statistics.median(ms), 2), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2)}


def latency(size: int, queries: int, corpus: Path, embedder, tmp: Path) -> dict:
    from workbench.retrieval.bm25 import get_index, tokenize
    from workbench.retrieval.search import search
    from workbench.store.chroma import open_store

    settings = make_settings(tmp / f"lat{size}", collection_name="bench")
    store = open_store(settings)
    rng = np.random.default_rng(size)
    t = time.perf_counter()
    chroma = build_collection(store, "bench", size, squad_sentences(corpus), rng, embedder.name)
    build_s = time.perf_counter() - t
    questions = [json.loads(line)["question"] for line in (corpus / "squad" / "dev.jsonl").read_text().splitlines()]
    texts = random.Random(1).sample(questions, queries + 5)
    t = time.perf_counter()
    index = get_index(settings, store, "bench")
    bm25_build_s = time.perf_counter() - t
    tokens = {text: tokenize([text])[0] for text in texts}
    vectors = {text: embedder.encode([text]) for text in texts}

    def bm25s_alone(text):
        found = index.retriever.retrieve([tokens[text]], k=TOP_K, show_progress=False, n_threads=1)[0][0]
        chroma.get(ids=[index.ids[i] for i in found], include=["documents", "metadatas"])

    timed = {
        "raw_query": lambda text: chroma.query(query_embeddings=vectors[text], n_results=TOP_K),
        "query_embed": lambda text: embedder.encode([text]),
        "bm25s_retrieve_get": bm25s_alone,
    }
    for label, kwargs in MODES:
        timed[label] = lambda text, kw=kwargs: search(text, settings=settings, store=store, embedder=embedder, collection="bench", top_k=TOP_K, **kw)
    samples: dict[str, list[float]] = {label: [] for label in timed}
    labels = list(timed)
    for n, text in enumerate(texts):
        for label in labels[n % len(labels):] + labels[: n % len(labels)]:  # rotate the order
            t0 = time.perf_counter()
            timed[label](text)
            if n >= 5:  # the first 5 queries warm up
                samples[label].append(time.perf_counter() - t0)
    result = {"chunks": size, "add_s": round(build_s, 1), "bm25_build_s": round(bm25_build_s, 2), "queries": queries}
    for label in labels:
        result[label] = percentiles(samples[label])
    raw, vector, anchor = result["raw_query"]["p50_ms"], result["vector"]["p50_ms"], result["bm25s_retrieve_get"]["p50_ms"]
    for label, _ in MODES:
        result[label]["x_raw_p50"] = round(result[label]["p50_ms"] / raw, 2)
        result[label]["x_vector_p50"] = round(result[label]["p50_ms"] / vector, 2)
    result["keyword"]["x_bm25s_p50"] = round(result["keyword"]["p50_ms"] / anchor, 2)
    return result


def quality(corpus: Path, embedder, tmp: Path, n_questions: int | None) -> tuple[dict, list]:
    from workbench.evaluate import evaluate, squad_questions
    from workbench.ingest.pipeline import ingest_paths
    from workbench.store.chroma import open_store

    settings = make_settings(tmp / "quality", collection_name="squad")
    store = open_store(settings)
    t = time.perf_counter()
    summary = ingest_paths([corpus / "squad" / "docs"], settings=settings, store=store, embedder=embedder)
    ingest_s = time.perf_counter() - t
    questions = squad_questions(corpus, n_questions)
    out = {"questions": len(questions), "chunks": summary.chunks_added, "ingest_s": round(ingest_s, 1)}
    report = evaluate(questions, settings=settings, store=store, embedder=embedder, collection="squad")
    for mode in report.modes:
        out[mode] = {k: round(v, 4) for k, v in report.metrics(mode).items()}
    rrf = evaluate(questions, settings=settings, store=store, embedder=embedder, collection="squad", modes=["hybrid"], fusion="rrf")
    out["hybrid_rrf"] = {k: round(v, 4) for k, v in rrf.metrics("hybrid").items()}
    return out, questions


def langchain_quality(corpus: Path, embedder, questions, tmp: Path) -> dict:
    from langchain_chroma import Chroma
    from langchain_core.documents import Document
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from workbench.documents import Hit
    from workbench.evaluate import found_rank, metrics_from_ranks

    t = time.perf_counter()
    docs = [Document(page_content=p.read_text(encoding="utf-8"), metadata={"source": p.name}) for p in sorted((corpus / "squad" / "docs").glob("*.md"))]
    splits = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200).split_documents(docs)
    db = Chroma.from_documents(splits, HuggingFaceEmbeddings(model_name=str(embedder.path)), persist_directory=str(tmp / "langchain"), collection_name="langchain")
    build_s = time.perf_counter() - t
    ranks = []
    for q in questions:
        found = db.similarity_search(q.question, k=10)
        hits = [Hit(str(i), 0.0, d.page_content, "", d.metadata["source"], d.metadata["source"], 1, 0, rank=i + 1) for i, d in enumerate(found)]
        ranks.append(found_rank(hits, q))
    out = {k: round(v, 4) for k, v in metrics_from_ranks(ranks).items()}
    out.update(chunks=len(splits), build_s=round(build_s, 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=200, help="timed queries per mode and size")
    parser.add_argument("--questions", type=int, default=None, help="SQuAD questions (default: all 5,696)")
    parser.add_argument("--skip-langchain", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    corpus = require_corpus()
    from workbench.models.embeddings import get_embedder

    embedder = get_embedder(make_settings(Path(tempfile.gettempdir())))
    result: dict = {"top_k": TOP_K, "cpu": cpu_flags(), "embedding_backend": embedder.backend, "latency": [], "quality": {}}
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp_name:
        tmp = Path(tmp_name)
        for size in () if args.skip_latency else (int(s) for s in args.sizes.split(",") if s):
            result["latency"].append(latency(size, args.queries, corpus, embedder, tmp))
            print(json.dumps(result["latency"][-1]), flush=True)
        if not args.skip_quality:
            result["quality"], questions = quality(corpus, embedder, tmp, args.questions)
            print(json.dumps(result["quality"]), flush=True)
            if not args.skip_langchain:
                result["quality"]["langchain_default"] = langchain_quality(corpus, embedder, questions, tmp)
    previous = RESULTS / "search.json"
    if previous.exists() and (args.skip_latency or args.skip_quality):  # keep the part not re-run
        old = json.loads(previous.read_text())
        result["latency"] = result["latency"] or old.get("latency", [])
        result["quality"] = result["quality"] or old.get("quality", {})
    write_result("search", result, embedder)

    print_table(result)


def _p50_p95(stats: dict | None) -> str:
    return f"{stats['p50_ms']:.1f} / {stats['p95_ms']:.1f}" if stats else ""


def print_table(result: dict) -> None:
    """One table: latency per size (p50/p95 ms), p50 ratios at the largest size, quality."""
    rows = result["latency"]
    q = result["quality"]
    print(f"\nCPU flags: {result.get('cpu') or 'none of avx512*/amx*'}; embedding backend {result.get('embedding_backend', '?')}; "
          f"top_k {result['top_k']}; quality on {q.get('questions', 0)} SQuAD dev questions")
    head = f"{'':<24}" + "".join(f"{str(r['chunks']) + ' p50/p95 ms':>19}" for r in rows)
    print(head + f"{'x vector':>9}{'x anchor':>9}{'recall@5':>9}{'MRR@10':>8}{'nDCG@10':>8}")
    labels = [("query_embed", "query embedding alone"), ("raw_query", "raw Chroma query"), ("bm25s_retrieve_get", "bm25s retrieve + get")]
    labels += [(label, f"{label} search") for label, _ in MODES] + [("langchain_default", "LangChain default")]
    for label, name in labels:
        line = f"{name:<24}"
        line += "".join(f"{_p50_p95(r.get(label)):>19}" for r in rows)
        last = rows[-1].get(label, {}) if rows else {}
        ratio = last.get("x_bm25s_p50", last.get("x_raw_p50", "")) if label in ("keyword", "vector", "hybrid", "hybrid_rrf") else ""
        line += f"{last.get('x_vector_p50', ''):>9}{ratio:>9}"
        m = q.get(label)
        if m:
            line += f"{m['recall@5']:>9.3f}{m['mrr@10']:>8.3f}{m['ndcg@10']:>8.3f}"
        print(line.rstrip())
    print("x vector: p50 over vector search's; x anchor: keyword over bm25s retrieve + get, other modes over the raw query "
          f"(at {rows[-1]['chunks'] if rows else '-'} chunks). BM25 index build: " + ", ".join(f"{r['bm25_build_s']} s at {r['chunks']}" for r in rows))


if __name__ == "__main__":
    main()
