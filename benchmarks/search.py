"""Search benchmark (``make bench``), in one run:

1. Latency at 10k and 100k chunks for each mode, as p50/p95 and as a ratio over raw
   ``collection.query`` (n_results=top_k, default include) on the same query vectors in the same
   run. Chunks are random unit vectors (latency does not depend on what they mean) whose texts
   are sampled SQuAD sentences (real words for BM25); query vectors are precomputed so the
   numbers are search overhead, not model time (the query embedding is timed on its own).
   Hybrid's sentence scores embed sentences with the real model on a cold cache, as the first
   query on a new collection would.
2. Retrieval quality on the SQuAD dev questions of ``../shared/corpus/squad`` (24 articles):
   recall@1/5/10, MRR@10, nDCG@10 of vector, keyword, hybrid (convex, default) and hybrid with
   plain RRF, and of a LangChain default pipeline: RecursiveCharacterTextSplitter(1000, 200) (the
   LangChain RAG tutorial's values) + HuggingFaceEmbeddings (the same local MiniLM, library
   defaults) + Chroma, top 10 by ``similarity_search``. Same relevance rule for all.

Goals (issue 8): vector p50 <= 30 ms at 100k chunks and <= 1.2x raw query; hybrid recall@5 >= 0.97
and MRR@10 >= 0.90. Writes benchmarks/results/search.json and prints a table.
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
from _common import RESULTS, require_corpus, write_result

from tests.conftest import make_settings

TOP_K = 5


class QueryVectors:
    """An embedder stand-in for latency runs: precomputed query vectors by text; anything else
    (hybrid's sentences) goes to the real model."""

    def __init__(self, embedder, vectors: dict[str, np.ndarray]):
        self.embedder, self.vectors = embedder, vectors
        self.name, self.dimension = embedder.name, embedder.dimension

    def encode(self, texts):
        if all(t in self.vectors for t in texts):
            return np.stack([self.vectors[t] for t in texts])
        return self.embedder.encode(texts)


def squad_sentences(corpus: Path) -> list[str]:
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted((corpus / "squad" / "docs").glob("*.md")))
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if 5 <= len(s.split()) <= 60]


def build_collection(store, name: str, n: int, sentences: list[str], rng: np.random.Generator):
    """``n`` committed chunks in documents of 100 chunks, metadata as ingest writes it."""
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
        chroma.add(ids=ids, embeddings=vectors, documents=docs, metadatas=metas)
    return chroma


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    return {"p50_ms": round(statistics.median(ms), 2), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2)}


def latency(size: int, queries: int, corpus: Path, embedder, tmp: Path) -> dict:
    from workbench.retrieval.bm25 import get_index
    from workbench.retrieval.search import search
    from workbench.store.chroma import open_store

    settings = make_settings(tmp / f"lat{size}", collection_name="bench")
    store = open_store(settings)
    rng = np.random.default_rng(size)
    sentences = squad_sentences(corpus)
    t = time.perf_counter()
    chroma = build_collection(store, "bench", size, sentences, rng)
    build_s = time.perf_counter() - t
    questions = [json.loads(line)["question"] for line in (corpus / "squad" / "dev.jsonl").read_text().splitlines()]
    texts = random.Random(1).sample(questions, queries)
    vectors = rng.standard_normal((queries, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    fake = QueryVectors(embedder, dict(zip(texts, vectors)))
    t = time.perf_counter()
    get_index(settings, store, "bench")
    bm25_build_s = time.perf_counter() - t
    t = time.perf_counter()
    for text in texts[:50]:
        embedder.encode([text])
    embed_ms = (time.perf_counter() - t) / 50 * 1000

    def run(fn) -> list[float]:
        for text, vector in list(zip(texts, vectors))[:5]:
            fn(text, vector)  # warm-up
        out = []
        for text, vector in zip(texts, vectors):
            t0 = time.perf_counter()
            fn(text, vector)
            out.append(time.perf_counter() - t0)
        return out

    result = {"chunks": size, "add_s": round(build_s, 1), "bm25_build_s": round(bm25_build_s, 2), "query_embed_ms": round(embed_ms, 1)}
    raw = percentiles(run(lambda text, vector: chroma.query(query_embeddings=vector[None, :], n_results=TOP_K)))
    result["raw_query"] = raw
    for label, kwargs in (("vector", {}), ("keyword", {"mode": "keyword"}), ("hybrid", {"mode": "hybrid"}), ("hybrid_rrf", {"mode": "hybrid", "fusion": "rrf"})):
        stats = percentiles(run(lambda text, vector, kw=kwargs: search(text, settings=settings, store=store, embedder=fake, collection="bench", top_k=TOP_K, **kw)))
        stats["x_raw_p50"] = round(stats["p50_ms"] / raw["p50_ms"], 2)
        result[label] = stats
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
    result: dict = {"top_k": TOP_K, "latency": [], "quality": {}}
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
    write_result("search", result)

    print(f"\n{'chunks':>7} {'mode':<11} {'p50 ms':>8} {'p95 ms':>8} {'x raw p50':>9}")
    for row in result["latency"]:
        print(f"{row['chunks']:>7} {'raw query':<11} {row['raw_query']['p50_ms']:>8} {row['raw_query']['p95_ms']:>8} {'1.00':>9}")
        for mode in ("vector", "keyword", "hybrid", "hybrid_rrf"):
            s = row[mode]
            print(f"{row['chunks']:>7} {mode:<11} {s['p50_ms']:>8} {s['p95_ms']:>8} {s['x_raw_p50']:>9}")
        print(f"{row['chunks']:>7} (query embedding {row['query_embed_ms']} ms; BM25 build {row['bm25_build_s']} s)")
    q = result["quality"]
    if not q:
        return
    print(f"\nSQuAD dev, {q['questions']} questions: {'recall@1':>9} {'recall@5':>9} {'recall@10':>10} {'mrr@10':>7} {'ndcg@10':>8}")
    for mode in ("vector", "keyword", "hybrid", "hybrid_rrf", "langchain_default"):
        if mode in q:
            m = q[mode]
            print(f"{mode:<30} {m['recall@1']:>9.3f} {m['recall@5']:>9.3f} {m['recall@10']:>10.3f} {m['mrr@10']:>7.3f} {m['ndcg@10']:>8.3f}")


if __name__ == "__main__":
    main()
