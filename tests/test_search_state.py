"""What search keeps beside the chunks, and how it stays right: the store's revision (a cheap
"did the committed chunks change?"), the sentence vectors made at ingest (sidecar), the current
heads and BM25 index kept per revision, and the best-sentence keyword score. Real model, real
Chroma, real SQuAD articles."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import SAMPLE_DOCS, make_settings, write_docs
from workbench.evaluate import squad_questions
from workbench.ingest.pipeline import ingest_paths
from workbench.retrieval import bm25 as keyword
from workbench.retrieval import fusion
from workbench.retrieval.search import search
from workbench.store import Store, open_store
from workbench.store.sentences import fingerprint, sentence_spans

ARTICLES = ("Amazon_rainforest.md", "Sky_(United_Kingdom).md", "Victoria_(Australia).md")


@pytest.fixture(scope="module")
def articles(tmp_path_factory, corpus_dir, embedder):
    """Three SQuAD dev articles ingested into a store of their own (~150 chunks), with questions."""
    folder = tmp_path_factory.mktemp("articles")
    write_docs(folder / "kb", {name: (corpus_dir / "squad" / "docs" / name).read_text(encoding="utf-8") for name in ARTICLES})
    settings = make_settings(folder, collection_name="articles")
    store = open_store(settings)
    summary = ingest_paths([folder / "kb"], settings=settings, store=store, embedder=embedder)
    assert summary.count("added") == 3 and not summary.failures
    questions = [q for q in squad_questions(corpus_dir, 1200) if q.expected_source in ARTICLES][:24]
    assert len(questions) == 24
    return settings, store, questions


def revision(store: Store, name: str):
    return store.revision(store.get_collection(name))


# --- the revision -----------------------------------------------------------------------------
def test_the_revision_changes_with_the_committed_chunks_and_only_then(tmp_path, settings, store, embedder):
    kb = write_docs(tmp_path / "kb", SAMPLE_DOCS)
    name = settings.collection_name
    ingest_paths([kb], settings=settings, store=store, embedder=embedder)
    first = revision(store, name)
    assert first and first.startswith(f"{store.get_collection(name).id}:")
    assert keyword.collection_generation(store, name) == first

    # nothing to do: no new revision, so no index is rebuilt
    ingest_paths([kb], settings=settings, store=store, embedder=embedder)
    assert store.repair(name) == 0
    assert revision(store, name) == first

    (kb / "bread.txt").write_text("Sourdough rises slowly with wild yeast.\n")
    assert ingest_paths([kb], settings=settings, store=store, embedder=embedder).count("replaced") == 1
    second = revision(store, name)
    assert second not in (None, first)

    doc = next(d for d in store.documents(name) if d.file_name == "rivers.md")
    store.delete_document(name, doc.document_id)
    third = revision(store, name)
    assert third not in (None, first, second)

    # a writer killed midway leaves "changing": the revision is unknown, search still right
    chroma = store.get_collection(name)
    store._set_revision(chroma, changing=True)
    volcano = next(d for d in store.documents(name) if d.file_name == "volcanoes.md")
    chroma.delete(ids=[cid for cid in chroma.get(where={"document_id": volcano.document_id}, include=[])["ids"]])
    assert revision(store, name) is None
    assert keyword.collection_generation(store, name).startswith("generation:")
    for mode in ("keyword", "vector", "hybrid"):
        hits = search("Etna volcano magma", settings=settings, store=store, embedder=embedder, mode=mode)
        assert all(h.file_name != "volcanoes.md" for h in hits), mode
    store.repair(name)  # the next start-up or ingest
    assert revision(store, name) not in (None, first, second, third)

    # a collection deleted and made again under the same name never has an old revision
    old = revision(store, name)
    store.delete_collection(name)
    ingest_paths([kb], settings=settings, store=store, embedder=embedder)
    assert revision(store, name).split(":")[0] != old.split(":")[0]


def test_searches_do_not_scan_the_collection_while_the_revision_stands(articles, monkeypatch):
    """Per search: no generation (ids of every head) and no query over all heads; both are
    read once per revision."""
    settings, store, questions = articles
    from workbench.models.embeddings import get_embedder

    embedder = get_embedder(settings)
    for mode in ("vector", "keyword", "hybrid"):  # warm: index and current heads of this revision
        search(questions[0].question, settings=settings, store=store, embedder=embedder, mode=mode)
    monkeypatch.setattr(Store, "generation", lambda *a, **k: pytest.fail("generation computed on a search"))
    monkeypatch.setattr(Store, "committed_heads", lambda *a, **k: pytest.fail("every head read on a search"))
    for mode in ("vector", "keyword", "hybrid"):
        assert search(questions[1].question, settings=settings, store=store, embedder=embedder, mode=mode)


# --- sentence vectors ---------------------------------------------------------------------------
def test_sentence_vectors_are_made_at_ingest_and_go_with_their_chunks(articles, embedder):
    settings, store, _ = articles
    chroma = store.get_collection("articles")
    got = chroma.get(include=["documents", "metadatas"])
    several = {cid: (meta.get("header") or "", text) for cid, text, meta in zip(got["ids"], got["documents"], got["metadatas"]) if len(sentence_spans(text)) > 1}
    assert len(several) > 20
    assert store.sentences.ids(str(chroma.id)) == set(several)
    wanted = [(cid, fingerprint(embedder.name, *several[cid])) for cid in several]
    stored = store.sentences.get(str(chroma.id), wanted, embedder.dimension)
    assert set(stored) == set(several)
    # the same vectors as one pass over the chunk now (float16 in the sidecar)
    sample = sorted(several)[:5]
    texts = [several[c][0] + several[c][1] for c in sample]
    spans = [[(len(several[c][0]) + a, len(several[c][0]) + b) for a, b in sentence_spans(several[c][1])] for c in sample]
    vectors, fresh = embedder.encode_with_spans(texts, spans)
    assert np.allclose(vectors, embedder.encode(texts), atol=2e-3)
    for cid, now in zip(sample, fresh):
        assert stored[cid].shape == now.shape and float(np.min(np.sum(stored[cid] * now, axis=1))) > 0.999
    # another text, header or model never matches
    cid = sample[0]
    assert not store.sentences.get(str(chroma.id), [(cid, fingerprint(embedder.name, "", several[cid][1] + " "))], embedder.dimension)
    assert not store.sentences.get(str(chroma.id), [(cid, fingerprint("another-model", *several[cid]))], embedder.dimension)


def test_sentence_vectors_are_deleted_with_chunks_and_swept_by_repair(tmp_path, settings, store, embedder):
    text = "# Tides\n\nThe Moon pulls the sea. Two tides come each day. Spring tides are the highest.\n"
    kb = write_docs(tmp_path / "kb", {"tides.md": text, **SAMPLE_DOCS})
    name = settings.collection_name
    ingest_paths([kb], settings=settings, store=store, embedder=embedder)
    chroma = store.get_collection(name)
    key = str(chroma.id)
    before = store.sentences.ids(key)
    tides = next(d for d in store.documents(name) if d.file_name == "tides.md")
    tide_ids = set(chroma.get(where={"document_id": tides.document_id}, include=[])["ids"])
    assert tide_ids <= before
    store.delete_document(name, tides.document_id)
    assert store.sentences.ids(key) == before - tide_ids
    # what a kill between the two deletes (or before a write) leaves: an entry without a chunk
    store.sentences.put(key, [("gone-chunk", b"0" * 16, np.ones((2, 384), dtype=np.float32))])
    store.repair(name)
    assert store.sentences.ids(key) == before - tide_ids
    path = store.sentences.path(key)
    assert path.exists()
    store.delete_collection(name)
    assert not path.exists()


def test_hybrid_ranks_the_same_without_stored_sentence_vectors(articles, embedder):
    """A missing or foreign sidecar entry is computed at query time the way ingest made it: same
    ranking, same scores (to float16), and the entry is stored again."""
    settings, store, questions = articles
    chroma = store.get_collection("articles")
    key = str(chroma.id)

    def run():
        fusion._cache.data.clear()
        return [search(q.question, settings=settings, store=store, embedder=embedder, mode="hybrid", top_k=10) for q in questions]

    stored = run()
    entries = store.sentences.ids(key)
    store.sentences.drop(key)  # no sidecar at all
    computed = run()
    assert store.sentences.ids(key) >= {h.chunk_id for hits in computed for h in hits[:5] if len(sentence_spans(h.text)) > 1}
    # entries of another text under the right ids: ignored, computed again
    store.sentences.put(key, [(cid, b"x" * 16, np.ones((3, 384), dtype=np.float32)) for cid in entries])
    foreign = run()
    for a, b, c in zip(stored, computed, foreign):
        assert [h.chunk_id for h in a] == [h.chunk_id for h in b] == [h.chunk_id for h in c]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=2e-3)
        assert [h.score for h in a] == pytest.approx([h.score for h in c], abs=2e-3)


# --- the BM25 index's sentence words ----------------------------------------------------------
def test_the_index_keeps_each_sentences_words(articles):
    settings, store, questions = articles
    index = keyword.get_index(settings, store, "articles")
    chroma = store.get_collection("articles")
    records = store.fetch(chroma, index.ids)
    vocab = index.retriever.vocab_dict
    for i, cid in enumerate(index.ids[:40]):
        text, meta = records[cid]
        parts = keyword.sentences(text)
        assert index.chunk_sentences[i + 1] - index.chunk_sentences[i] == len(parts)
        for j, part in enumerate(parts):
            s = index.chunk_sentences[i] + j
            words = index.sentence_words[index.sentence_starts[s] : index.sentence_starts[s + 1]]
            assert sorted(words.tolist()) == sorted({vocab[w] for w in keyword.tokenize([part])[0]})
    # the chunk's words are its header's and its sentences': BM25 sees the text as before
    for cid in index.ids[:40]:
        text, meta = records[cid]
        pieces = keyword.tokenize([meta.get("header") or "", *keyword.sentences(text)])
        assert [w for piece in pieces for w in piece] == keyword.tokenize([keyword.indexed_text(text, meta)])[0]
    # best-sentence keyword score by hand
    query = questions[0].question
    words = index.word_ids(query)
    query_words = set(keyword.tokenize([query])[0])
    expected = []
    for cid in index.ids[:30]:
        text, meta = records[cid]
        best = 0.0
        for part in keyword.sentences(text):
            best = max(best, sum(float(index.idf[vocab[w]]) for w in set(keyword.tokenize([part])[0]) & query_words if w in vocab))
        expected.append(best)
    assert index.sentence_keyword_scores(words, index.ids[:30]) == pytest.approx(expected, rel=1e-5)
    assert index.sentence_keyword_scores(words, ["not-a-chunk"]) == [0.0]
