"""Retrieval you can measure: BM25 kept in step with the store, fusion, metrics, the eval CLI,
the embedding map, and retrieval quality on the SQuAD dev articles (real model, real Chroma)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests.conftest import REPO, SAMPLE_DOCS, make_settings, write_docs
from workbench.retrieval import bm25 as keyword
from workbench.documents import Hit
from workbench.errors import DocumentError
from workbench.evaluate import (
    Question,
    evaluate,
    found_rank,
    generate_questions,
    is_relevant,
    load_questions,
    metrics_from_ranks,
    squad_questions,
)
from workbench.retrieval.fusion import convex, minmax, rrf, sentences
from workbench.ingest.pipeline import ingest_key_for, ingest_paths
from workbench.retrieval.search import search


def hit(source: str, text: str, rank: int = 1) -> Hit:
    return Hit(chunk_id=f"{source}-{rank}", score=0.0, text=text, document_id="d", source=source, file_name=source.rsplit("/", 1)[-1], page=1, chunk_index=0, rank=rank)


# --- fusion --------------------------------------------------------------------------------------
def test_rrf_on_hand_made_rankings():
    fused = dict(rrf([["a", "b", "c"], ["b", "c", "d"]]))
    assert fused == pytest.approx({"a": 1 / 61, "b": 1 / 62 + 1 / 61, "c": 1 / 63 + 1 / 62, "d": 1 / 63})
    assert [i for i, _ in rrf([["a", "b", "c"], ["b", "c", "d"]])] == ["b", "c", "a", "d"]
    # weights scale each list's contribution; k changes how flat the ranks are
    assert [i for i, _ in rrf([["a", "b"], ["b", "a"]], weights=[2, 1])] == ["a", "b"]
    assert dict(rrf([["x"]], k=0)) == {"x": 1.0}
    # ties keep first appearance
    assert [i for i, _ in rrf([["p", "q"], ["q", "p"]])] == ["p", "q"]
    with pytest.raises(ValueError, match="2 weights for 1 rankings"):
        rrf([["a"]], weights=[1, 2])
    with pytest.raises(ValueError, match="k must be >= 0"):
        rrf([["a"]], k=-1)


def test_convex_fusion_and_sentences():
    assert minmax([2, 4, 6]).tolist() == [0.0, 0.5, 1.0]
    assert minmax([3, 3]).tolist() == [0.0, 0.0]
    fused = convex([[0.9, 0.5, 0.1], [0.0, 10.0, 5.0]], [0.5, 0.5])
    assert fused.tolist() == pytest.approx([0.5, 0.75, 0.25])
    assert sentences("Etna erupts often. It is in Sicily! Is it tall? yes.\n\n- a list item") == [
        "Etna erupts often.", "It is in Sicily!", "Is it tall? yes.", "- a list item",
    ]


# --- metrics -------------------------------------------------------------------------------------
def test_metrics_on_a_hand_made_ranking():
    ranks = [1, 3, 0, 10, 2, 11]  # 11 cannot happen with top 10 but must not count
    m = metrics_from_ranks(ranks)
    assert m["recall@1"] == pytest.approx(1 / 6)
    assert m["recall@5"] == pytest.approx(3 / 6)
    assert m["recall@10"] == pytest.approx(4 / 6)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3 + 1 / 10 + 1 / 2) / 6)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(11) + 1 / math.log2(3)) / 6)
    assert metrics_from_ranks([]) == {"recall@1": 0.0, "recall@5": 0.0, "recall@10": 0.0, "mrr@10": 0.0, "ndcg@10": 0.0}


def test_relevance_needs_source_and_text_normalised():
    q = Question("q", expected_source="notes/rivers.md", expected_text="Black   SEA")
    hits = [hit("bread.txt", "the black sea"), hit("notes/rivers.md", "flows to the Black\nSea.", 2)]
    assert not is_relevant(hits[0], q) and is_relevant(hits[1], q)
    assert found_rank(hits, q) == 2
    assert found_rank(hits, Question("q", expected_source="rivers.md")) == 2  # file name works too
    assert found_rank(hits, Question("q", expected_text="black sea")) == 1
    assert found_rank(hits, Question("q", expected_text="amazon")) == 0


def test_question_files_are_checked_line_by_line(tmp_path, corpus_dir):
    good = tmp_path / "q.jsonl"
    good.write_text('{"question": "a?", "expected_source": "x.md"}\n\n{"question": "b?", "title": "T", "answers": ["y", "z"]}\n')
    qs = load_questions(good)
    assert [(q.expected_source, q.expected_text) for q in qs] == [("x.md", None), ("T.md", "y")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a?", "expected_text": "x"}\n{"question": "b?"\n')
    with pytest.raises(DocumentError, match=r"bad.jsonl line 2: not valid JSON"):
        load_questions(bad)
    bad.write_text('{"question": "a?"}\n')
    with pytest.raises(DocumentError, match=r"line 1: needs \"expected_source\" and/or \"expected_text\""):
        load_questions(bad)
    sample = squad_questions(corpus_dir, 50)
    assert len(sample) == 50 and len({q.expected_source for q in sample}) == 24
    assert sample == squad_questions(corpus_dir, 50), "the sample must be deterministic"
    assert all((corpus_dir / "squad" / "docs" / q.expected_source).exists() for q in sample)


# --- BM25 in step with ingest, replace and delete ------------------------------------------------
def test_keyword_index_stays_in_step_with_the_store(tmp_path, settings, store, embedder):
    kb = write_docs(tmp_path / "kb", SAMPLE_DOCS)
    ingest_paths([kb], settings=settings, store=store, embedder=embedder)
    name = settings.collection_name
    hits = search("Danube countries", settings=settings, store=store, embedder=embedder, mode="keyword")
    assert hits[0].file_name == "rivers.md" and hits[0].keyword_score > 0 and hits[0].mode == "keyword"
    assert hits[0].score == hits[0].keyword_score and hits[0].rank == 1
    folder = settings.chroma_persist_path / "bm25" / name
    first = [p.name for p in folder.iterdir() if not p.name.startswith(".")]
    assert len(first) == 1 and (folder / first[0] / "meta.json").exists()

    # a new process finds the index on disk and does not rebuild it
    keyword._cache.clear()
    original = keyword._build
    keyword._build = lambda *a, **k: pytest.fail("rebuilt although the index on disk is current")
    try:
        assert search("yeast dough", settings=settings, store=store, embedder=embedder, mode="keyword")[0].file_name == "bread.txt"
    finally:
        keyword._build = original

    # replace: the old words are gone, the new ones are found
    (kb / "notes" / "rivers.md").write_text("# Rivers\n\nThe Amazon carries more water than any other river.\n")
    summary = ingest_paths([kb], settings=settings, store=store, embedder=embedder)
    assert summary.count("replaced") == 1
    assert all(h.file_name != "rivers.md" for h in search("Danube", settings=settings, store=store, embedder=embedder, mode="keyword"))
    assert search("Amazon water", settings=settings, store=store, embedder=embedder, mode="keyword")[0].file_name == "rivers.md"
    second = [p.name for p in folder.iterdir() if not p.name.startswith(".")]
    assert len(second) == 1 and second != first, "one index folder per generation, the old one removed"

    # uncommitted chunks (an ingest in progress) are not indexed
    chroma = store.get_collection(name)
    chroma.add(ids=["zz-partial-000000"], documents=["Zanzibar spice islands"], embeddings=embedder.encode(["x"]),
               metadatas=[{"document_id": "zz", "ingest_key": "k" * 64, "chunk_index": 0, "complete": False, "file_name": "z.md"}])
    assert search("Zanzibar", settings=settings, store=store, embedder=embedder, mode="keyword") == []
    chroma.delete(ids=["zz-partial-000000"])

    # delete a document
    doc = next(d for d in store.documents(name) if d.file_name == "rivers.md")
    store.delete_document(name, doc.document_id)
    assert search("Amazon", settings=settings, store=store, embedder=embedder, mode="keyword") == []
    for mode in ("vector", "hybrid"):
        assert all(h.file_name != "rivers.md" for h in search("Amazon river", settings=settings, store=store, embedder=embedder, mode=mode))

    # delete the collection and make one with the same name: the old index must not answer
    store.delete_collection(name)
    other = write_docs(tmp_path / "kb2", {"tea.md": "# Tea\n\nGreen tea comes from the leaves of Camellia sinensis.\n"})
    ingest_paths([other], settings=settings, store=store, embedder=embedder)
    assert search("yeast dough", settings=settings, store=store, embedder=embedder, mode="keyword") == []
    assert search("Camellia leaves", settings=settings, store=store, embedder=embedder, mode="keyword")[0].file_name == "tea.md"


def test_hybrid_hits_carry_both_scores_and_filters_work(tmp_path, settings, store, embedder):
    ingest_paths([write_docs(tmp_path / "kb", SAMPLE_DOCS)], settings=settings, store=store, embedder=embedder)
    for fusion in ("convex", "rrf"):
        hits = search("magma chamber of a volcano", settings=settings, store=store, embedder=embedder, mode="hybrid", fusion=fusion, top_k=3)
        assert hits[0].file_name == "volcanoes.md" and [h.rank for h in hits] == [1, 2, 3]
        assert all(h.mode == "hybrid" and h.vector_score is not None and h.keyword_score is not None for h in hits)
        assert hits[0].keyword_score > 0 and -1 <= hits[0].vector_score <= 1
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    only = search("volcano", settings=settings, store=store, embedder=embedder, mode="hybrid", file_name="bread.txt")
    assert [h.file_name for h in only] == ["bread.txt"]
    assert [h.file_name for h in search("volcano", settings=settings, store=store, embedder=embedder, mode="keyword", file_name="bread.txt")] == []
    vector = search("volcano", settings=settings, store=store, embedder=embedder)
    assert vector[0].mode == "vector" and vector[0].score == vector[0].vector_score and vector[0].keyword_score is None
    with pytest.raises(ValueError, match="unknown search mode 'fuzzy'"):
        search("x", settings=settings, store=store, embedder=embedder, mode="fuzzy")


def test_chunk_headers_fit_the_model_and_change_the_ingest_key(tmp_path, embedder):
    from workbench.ingest.chunking import Chunker
    from workbench.ingest.loaders import iter_pages

    text = "# Guide\n\nIntro.\n\n## Install_steps\n\n" + "Run the installer and wait. " * 60 + "\n\n## Use\n\nOpen it.\n"
    path = write_docs(tmp_path, {"my_guide.md": text}) / "my_guide.md"
    settings = make_settings(tmp_path)
    chunker = Chunker(embedder.backend_tokenizer, 200, 32, embedder.max_seq_length)
    chunks = list(chunker.chunk_pages(iter_pages(path, settings), document_id="d", source="my_guide.md", file_name="my_guide.md"))
    assert [c.section for c in chunks][:2] == ["Guide", "Install steps".replace(" ", "_")]
    assert chunks[1].header == "Guide: Install steps\n" and chunks[0].header == "Guide\n"
    assert chunks[-1].text.startswith("## Use") and chunks[-1].header == "Guide: Use\n"
    for c in chunks:
        assert c.text == text[c.start : c.end]
        assert embedder.count_tokens(c.header + c.text) + 2 <= embedder.max_seq_length
    # a header never pushes a piece over the window, even at the largest chunk size
    tight = Chunker(embedder.backend_tokenizer, 254, 0, embedder.max_seq_length)
    assert all(c.header == "" for c in tight.chunk_pages(iter_pages(path, settings), document_id="d", source="s", file_name="my_guide.md"))
    no_context = make_settings(tmp_path, chunk_context=False)
    assert ingest_key_for("h", settings, "m", 384) != ingest_key_for("h", no_context, "m", 384)


# --- eval CLI, generated questions, embedding map -------------------------------------------------
def test_eval_cli_json_and_generated_questions(tmp_path, settings, store, embedder, monkeypatch, capsys):
    from workbench.cli import main
    from workbench.evaluate import save_questions

    ingest_paths([write_docs(tmp_path / "kb", SAMPLE_DOCS)], settings=settings, store=store, embedder=embedder)
    questions = generate_questions(store, settings.collection_name, 6)
    assert len(questions) == 3  # one sentence per chunk, every document visited
    assert {q.expected_source for q in questions} == {"volcanoes.md", "bread.txt", "notes/rivers.md"}
    path = save_questions(questions + [Question("Which river crosses ten countries?", "notes/rivers.md", "Danube")], tmp_path / "q.jsonl")
    for key, value in {"CHROMA_PERSIST_PATH": settings.chroma_persist_path, "LOG_DIR": settings.log_dir, "MODEL_CACHE_DIR": settings.model_cache_dir}.items():
        monkeypatch.setenv(key, str(value))
    assert main(["eval", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"vector", "keyword", "hybrid", "questions"} and data["questions"] == len(questions) + 1
    for mode in ("vector", "keyword", "hybrid"):
        assert set(data[mode]) == {"recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"}
        assert data[mode]["recall@1"] <= data[mode]["recall@5"] <= data[mode]["recall@10"] == 1.0
    assert main(["eval", str(path), "--modes", "keyword", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"keyword", "questions"}
    assert main(["eval", str(path), "--modes", "fuzzy"]) == 2
    assert "--modes takes" in capsys.readouterr().err
    assert main(["search", "Danube", "--mode", "keyword", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["keyword_score"] > 0


def test_embedding_map_projects_and_places_a_query(tmp_path, settings, store, embedder):
    from ui.charts import hover_text, map_figure, recall_chart
    from workbench.embedding_map import build_map
    from workbench.evaluate import EvalReport

    docs = dict(SAMPLE_DOCS, **{"evil.md": "# X\n\n<script>alert(1)</script> & <b>bold</b> text about ovens and bread.\n"})
    ingest_paths([write_docs(tmp_path / "kb", docs)], settings=settings, store=store, embedder=embedder)
    emap = build_map(store, settings.collection_name, method="pca")
    assert len(emap) == emap.total == 4 and emap.xy.shape == (4, 2) and emap.vectors.shape == (4, 384)
    assert sum(emap.explained) <= 1.0 and emap.explained[0] >= emap.explained[1]
    vector = embedder.encode(["an erupting volcano"])[0]
    nearest = emap.neighbours(vector, 2)
    assert emap.file_names[nearest[0][0]] == "volcanoes.md" and nearest[0][1] >= nearest[1][1]
    # a stored chunk's own vector lands on its own point
    i = emap.file_names.index("bread.txt")
    assert np.allclose(emap.place(emap.vectors[i])[0], emap.xy[i], atol=1e-5)
    fig = map_figure(emap, query_xy=emap.place(vector)[0], query="<i>q</i>", neighbours=[nearest[0][0]])
    hovers = json.dumps(fig.to_plotly_json()["data"])
    assert "<script>" not in hovers and "&lt;script&gt;" in hovers
    assert {t.name for t in fig.data} >= {"volcanoes.md", "query", "neighbours"}
    assert hover_text("a " * 500).endswith("…") and len(hover_text("a " * 500)) < 400
    report = EvalReport("c", 10, [Question("q", "x")] * 2, ["vector", "hybrid"], ranks={"vector": [1, 0], "hybrid": [3, 12]})
    chart = recall_chart(report)
    assert [t.name for t in chart.data] == ["vector", "hybrid"]
    assert list(chart.data[0].y[:1]) == [0.5] and list(chart.data[1].y[2:3]) == [0.5]


# --- quality on the SQuAD dev articles ----------------------------------------------------------
#: Measured with this test's 240 questions (10 per article) on 2026-11-25 (OpenVINO MiniLM):
#: recall@5 / MRR@10 vector 0.892 / 0.769, keyword 0.958 / 0.870, hybrid 0.971 / 0.920.
#: Floors sit 0.02-0.03 below, so a real regression fails and noise does not.
FLOORS = {"vector": (0.87, 0.74), "keyword": (0.93, 0.84), "hybrid": (0.95, 0.89)}


@pytest.mark.slow
def test_squad_retrieval_quality(squad_store, corpus_dir, embedder):
    questions = squad_questions(corpus_dir, 240)
    assert len(questions) == 240 and len({q.expected_source for q in questions}) == 24
    report = evaluate(questions, settings=squad_store.settings, store=squad_store.store, embedder=embedder, collection=squad_store.collection)
    measured = {m: report.metrics(m) for m in report.modes}
    print(json.dumps(measured, indent=1))
    for mode, (recall5, mrr) in FLOORS.items():
        assert measured[mode]["recall@5"] >= recall5, (mode, measured[mode])
        assert measured[mode]["mrr@10"] >= mrr, (mode, measured[mode])
    assert measured["hybrid"]["recall@5"] > max(measured["vector"]["recall@5"], measured["keyword"]["recall@5"])
    assert measured["hybrid"]["mrr@10"] > max(measured["vector"]["mrr@10"], measured["keyword"]["mrr@10"])
    # every chunk that is embedded fits the model window with its header
    chunks = squad_store.store.get_collection("squad").get(include=["documents", "metadatas"])
    worst = max(embedder.count_tokens(m.get("header", "") + d) for d, m in zip(chunks["documents"], chunks["metadatas"]))
    assert worst + 2 <= embedder.max_seq_length


def test_pages_render_against_a_real_store(tmp_path, settings, store, embedder, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    ingest_paths([write_docs(tmp_path / "kb", SAMPLE_DOCS)], settings=settings, store=store, embedder=embedder)
    env = {"CHROMA_PERSIST_PATH": settings.chroma_persist_path, "LOG_DIR": settings.log_dir, "MODEL_CACHE_DIR": settings.model_cache_dir,
           "COLLECTION_NAME": settings.collection_name, "CHROMA_HOST": ""}
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300).run()
        at.switch_page("views/evaluate.py").run()
        assert not at.exception, at.exception
        at.radio(key="eval-source").set_value("Generate from this collection").run()
        at.number_input(key="eval-gen-n").set_value(5).run()
        at.button(key="eval-generate").click().run()
        assert not at.exception, at.exception
        at.button(key="eval-run").click().run()
        assert not at.exception, at.exception
        assert any("recall@5" in df.value.columns.tolist() for df in at.dataframe)
        assert len(at.tabs) == 3 and "(rank 1)" in at.tabs[0].label
        at.switch_page("views/embedding_map.py").run()
        assert not at.exception, at.exception
        at.text_input(key="map-query").set_value("volcano").run()
        assert not at.exception, at.exception
        assert any("volcanoes.md" in df.value.to_string() for df in at.dataframe)
    finally:
        st.cache_resource.clear()


def test_a_damaged_bm25_index_on_disk_is_rebuilt_from_the_store(tmp_path, embedder):
    """Power loss can leave an index file empty or truncated: keyword search rebuilds it from the
    committed chunks instead of failing."""
    from workbench.store import open_store

    settings = make_settings(tmp_path)
    write_docs(settings.knowledge_base_path, {"volcano.md": "# Volcano\n\nThe caldera of Etna steams at dawn.\n"})
    store = open_store(settings)
    ingest_paths([settings.knowledge_base_path], settings=settings, store=store, embedder=embedder)
    assert search("caldera", settings=settings, store=store, embedder=embedder, mode="keyword")
    folder = next(p for p in keyword.index_root(settings).rglob("meta.json")).parent
    for damage in ("empty", "truncated"):
        for path in folder.iterdir():
            if path.is_file():
                data = path.read_bytes()
                path.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
        keyword._cache.clear()  # a new process: the index comes from disk
        hits = search("caldera", settings=settings, store=store, embedder=embedder, mode="keyword")
        assert hits and hits[0].file_name == "volcano.md", damage
