"""The Embedder shared by threads: the app's searches and chats run while a background ingest
(the folder watcher, an upload) encodes with the same loaded model."""

from __future__ import annotations

import threading

import numpy as np


def test_queries_and_token_counts_while_an_ingest_encodes(embedder):
    """A query's encode and a prompt's token counts during an ingest's encode_with_spans used to
    collide in the shared Hugging Face tokenizer ("RuntimeError: Already borrowed", the CI
    failure of test_watch's search after a lock was freed)."""
    texts = [("harbour ferry pier " * (5 + i % 60)).strip() for i in range(16)]
    spans = [[(0, 13), (7, 18)] for _ in texts]
    expected_vectors, expected_spans = embedder.encode_with_spans(texts, spans)
    question = "when does the harbour ferry leave pier seven?"
    expected_count = len(embedder.tokenizer(question, add_special_tokens=False)["input_ids"])
    errors: list[str] = []
    stop = threading.Event()
    passes = []

    def ingest():
        try:
            while not stop.is_set():
                vectors, span_vectors = embedder.encode_with_spans(texts, spans)
                np.testing.assert_allclose(vectors, expected_vectors, atol=1e-5)
                np.testing.assert_allclose(span_vectors[-1], expected_spans[-1], atol=1e-5)
                passes.append(1)
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            errors.append(f"ingest: {exc!r}")
            stop.set()

    worker = threading.Thread(target=ingest)
    worker.start()
    try:
        for i in range(30):
            if stop.is_set():
                break
            assert embedder.encode([f"{question} {i}"]).shape == (1, embedder.dimension)
            for _ in range(20):
                assert embedder.count_tokens(question) == expected_count
    except Exception as exc:  # noqa: BLE001
        errors.append(f"query: {exc!r}")
    finally:
        stop.set()
        worker.join(120)
    assert errors == []
    assert passes, "the ingest thread never finished an encode call"
