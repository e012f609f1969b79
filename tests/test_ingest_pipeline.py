"""Ingest throughput paths (issue 13): long single-line texts are split window by window, and the
reader thread (load + chunk ahead of the encoder) keeps per-file failures, cancellation and
progress as they were."""

from __future__ import annotations

import random
import threading
import time

import pytest

from tests.conftest import write_docs
from workbench.documents import Page
from workbench.ingest import chunking
from workbench.ingest.chunking import Chunker
from workbench.ingest.pipeline import ingest_paths


def single_line(chars: int) -> str:
    """Prose on one line with no sentence ends (the splitter's slowest case), ``chars`` long."""
    random.seed(13)
    words = "river sediment valley delta glacier basin current flood plain terrace estuary channel".split()
    text = " ".join(random.choice(words) + (str(i % 97) if i % 5 == 0 else "") for i in range(chars // 6))
    return text[:chars]


def test_a_300_kb_single_line_chunks_within_limits_in_linear_time(embedder):
    chunker = Chunker(embedder.backend_tokenizer, 200, 32, embedder.max_seq_length)
    splitter, calls = chunker._splitter, []

    class Recording:  # the splitter's cost grows faster than its input: it only sees windows
        def chunk_indices(self, text):
            calls.append(len(text))
            return splitter.chunk_indices(text)

    chunker._splitter = Recording()
    text = single_line(300_000)
    started = time.perf_counter()
    chunks = list(chunker.chunk_pages(iter([Page(text, 1)]), document_id="d", source="s", file_name="one-line.txt"))
    seconds = time.perf_counter() - started
    assert len(chunks) > 250
    for c in chunks:
        assert c.text == text[c.start : c.end] and c.text == c.text.strip()
        assert c.token_count <= 200 and embedder.count_tokens(c.text) == c.token_count
        assert embedder.count_tokens(c.header + c.text) <= embedder.max_seq_length - 2
    # consecutive pieces overlap and cover the whole line, window borders included
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    assert all(b.start < a.end and a.start < b.start for a, b in zip(chunks, chunks[1:]))
    assert not calls or max(calls) <= chunking.SPLIT_WINDOW_CHARS
    # one splitter call over 300 KB took 5.6 s here (its cost grows faster than the text), the
    # splitter in windows ~1.2 s, windows tokenized once ~0.15 s. A bound for a loaded machine:
    assert seconds < 10, f"{seconds:.1f} s for 300 KB"


def test_a_long_line_yields_its_first_chunk_before_the_rest_is_split(embedder):
    """The encoder starts on a 10 MB single-line file's first chunks while the chunker goes on:
    the chunker yields as windows are split (it used to split the whole line first: 12.8 s
    before the first chunk of the 10 MB line, the encoder idle)."""
    chunker = Chunker(embedder.backend_tokenizer, 200, 32, embedder.max_seq_length)
    split_window, calls = chunker._split_window, []

    def recording(text, **kw):
        calls.append(len(text))
        return split_window(text, **kw)

    chunker._split_window = recording
    text = single_line(400_000)  # 25 windows of SPLIT_WINDOW_CHARS
    chunks = chunker.chunk_pages(iter([Page(text, 1)]), document_id="d", source="s", file_name="one-line.txt")
    first = next(chunks)
    assert first.start == 0 and first.text
    assert 1 <= len(calls) <= 2, f"{len(calls)} windows split before the first chunk"
    rest = list(chunks)
    assert len(calls) >= 400_000 // chunking.SPLIT_WINDOW_CHARS and rest[-1].end == len(text)


def prose_line(chars: int) -> str:
    """Sentences of varied length on one line, ``chars`` long."""
    random.seed(7)
    words = "the river carries fine sediment down to its wide delta where new land slowly forms".split()
    sentences = [" ".join(random.choice(words) for _ in range(random.randint(4, 40))).capitalize() + random.choice(".!?") for _ in range(chars // 40)]
    return " ".join(sentences)[:chars].rsplit(" ", 1)[0]


def test_long_paragraphs_split_like_the_splitter(embedder, monkeypatch):
    chunker = Chunker(embedder.backend_tokenizer, 200, 32, embedder.max_seq_length)
    for text in (prose_line(40_000), single_line(40_000)):
        library = list(chunker._splitter.chunk_indices(text))
        monkeypatch.setattr(chunking, "SPLIT_WINDOW_CHARS", 6_000)  # several windows, one tokenization each
        fast = list(chunker.split(text))
        monkeypatch.undo()
        assert len(set(fast) & set(library)) >= 0.9 * len(library) and abs(len(fast) - len(library)) <= 0.05 * len(library)
        for (a, piece), (b, following) in zip(fast, fast[1:]):
            assert text[a : a + len(piece)] == piece == piece.strip() and a < b <= a + len(piece) + 1
            overlap = text[b : a + len(piece)]
            assert embedder.count_tokens(overlap) <= 32
        assert all(embedder.count_tokens(p) <= 200 for _, p in fast)
        if text[-1] in ".!?":  # prose: most pieces end at a sentence end
            assert sum(p[-1] in ".!?" for _, p in fast) >= 0.7 * len(fast)


def test_a_line_without_spaces_gives_bounded_pieces(embedder):
    # BERT reads a word of more than 100 characters as one [UNK]: by tokens alone, one piece
    chunker = Chunker(embedder.backend_tokenizer, 200, 32, embedder.max_seq_length)
    random.seed(5)
    text = "".join(random.choice("abcdef0123456789") for _ in range(100_000))
    chunks = list(chunker.chunk_pages(iter([Page(text, 1)]), document_id="d", source="s", file_name="blob.txt"))
    assert len(chunks) >= 100_000 // chunking.SPLIT_WINDOW_CHARS
    assert max(len(c.text) for c in chunks) <= chunking.SPLIT_WINDOW_CHARS
    assert "".join(c.text for c in chunks) == text  # nothing lost, nothing repeated


def many_docs(count: int) -> dict[str, str]:
    return {
        f"doc{i:03d}.txt": f"Document {i} is about river {i}. " + " ".join(f"River {i} carries sediment {j} to its delta." for j in range(30))
        for i in range(count)
    }


def test_a_failing_file_in_the_middle_fails_alone_and_events_come_from_the_caller(tmp_path, settings, store, embedder):
    docs = many_docs(40)
    kb = write_docs(tmp_path / "kb", docs)
    (kb / "doc020.pdf").write_bytes(b"%PDF-1.4 garbage")  # sorted between doc019 and doc020
    (kb / "doc025.txt").write_bytes(b"")  # empty
    threads = set()

    def progress(event):
        threads.add(threading.current_thread().name)

    summary = ingest_paths([kb], settings=settings, store=store, embedder=embedder, progress=progress)
    assert {r.source for r in summary.failures} == {"doc020.pdf", "doc025.txt"}
    assert summary.count("added") == 39
    assert {d.source for d in store.documents("knowledge_base")} == set(docs) - {"doc025.txt"}
    assert threads == {threading.current_thread().name}
    assert not [t for t in threading.enumerate() if t.name == "ingest-reader"]


@pytest.mark.parametrize("when", ["first chunks written", "before anything"])
def test_cancel_stops_the_reader_and_rolls_back(tmp_path, settings, store, embedder, when):
    kb = write_docs(tmp_path / "kb", many_docs(60))
    cancel = threading.Event()
    kinds = []

    def progress(event):
        kinds.append(event.kind)
        if event.kind == "chunks":
            cancel.set()

    if when == "before anything":
        cancel.set()
    summary = ingest_paths([kb], settings=settings, store=store, embedder=embedder, progress=progress, cancel=cancel)
    assert summary.cancelled and kinds[-1] == "done"
    assert kinds.count("chunks") <= 1
    assert store.documents("knowledge_base") == [] and store.collection_info("knowledge_base").chunks == 0
    assert not [t for t in threading.enumerate() if t.name == "ingest-reader"]


def test_replaced_versions_are_deleted_in_one_go_one_chunk_documents_written_committed(tmp_path, settings, store, embedder):
    docs = {**many_docs(3), "short.txt": "A short note about the delta.", "other.txt": "Another note about a glacier."}
    kb = write_docs(tmp_path / "kb", docs)
    first = ingest_paths([kb], settings=settings, store=store, embedder=embedder)
    assert first.count("added") == 5
    for name in ("doc001.txt", "short.txt"):
        (kb / name).write_text(docs[name] + " Revised.", encoding="utf-8")
    second = ingest_paths([kb], settings=settings, store=store, embedder=embedder)
    assert second.count("replaced") == 2 and second.count("unchanged") == 3
    documents = store.documents("knowledge_base")
    collection = store.get_collection("knowledge_base")
    assert collection.count() == sum(d.chunks for d in documents)  # no chunk of an old version left
    assert store.repair("knowledge_base") == 0
    hits = {h.text for d in documents for h in store.document_chunks("knowledge_base", d.document_id)}
    assert any(t.endswith("Revised.") for t in hits) and "A short note about the delta." not in hits
