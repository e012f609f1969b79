"""Ask one document a question: an uploaded file (read whole when short, else its best chunks
by embedding) or an ingested document (its best chunks by search), answered by the extractive
reader (:mod:`workbench.answer.reader`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workbench.answer.reader import QaContext, QaResult, answer_question
from workbench.config import Settings
from workbench.errors import WorkbenchError
from workbench.ingest.chunking import Chunker
from workbench.ingest.loaders import iter_pages
from workbench.models.embeddings import get_embedder
from workbench.models.qa_model import QaModel
from workbench.retrieval.search import search

#: An uploaded document with at most this many characters is read whole (about 10 windows);
#: a longer one is chunked and only its best chunks by embedding are read.
FULL_SCAN_CHARS = 12_000


def _contexts_from_file(path: Path, question: str, *, settings: Settings, embedder, top_k: int) -> list[QaContext]:
    """Pages of an uploaded file (OCR'd where they have no text layer). A short document is
    read whole; a longer one is chunked like an ingest and its ``top_k`` chunks most similar
    to the question (cosine of the embeddings) are returned, in that order."""
    pages = list(iter_pages(path, settings))
    source = path.name
    whole = [QaContext(p.text, p.page, source, f"{source}#p{p.page}", p.ocr) for p in pages]
    if sum(len(p.text) for p in pages) <= FULL_SCAN_CHARS:
        return whole
    if embedder is None:
        embedder = get_embedder(settings)

    chunker = Chunker(embedder.backend_tokenizer, settings.chunk_size, settings.chunk_overlap, embedder.max_seq_length)
    chunks = list(chunker.chunk_pages(iter(pages), document_id=source, source=source, file_name=source))
    vectors = embedder.encode([c.text for c in chunks])
    scores = vectors @ embedder.encode([question])[0]
    best = np.argsort(-scores, kind="stable")[:top_k]
    return [
        QaContext(chunks[i].text, chunks[i].page, source, f"{source}#{chunks[i].chunk_index}", chunks[i].ocr, chunks[i].start)
        for i in best
    ]


def ask_document(
    question: str,
    *,
    settings: Settings,
    path: Path | None = None,
    collection: str | None = None,
    document_id: str | None = None,
    file_name: str | None = None,
    store=None,
    embedder=None,
    top_k: int | None = None,
    qa: QaModel | None = None,
) -> QaResult:
    """Answer ``question`` from one document.

    - Uploaded file (``path``): its pages (``loaders.iter_pages``, which OCRs pages without a
      text layer, cached) are read whole when short, else the ``top_k`` best chunks by
      embedding (``embedder``, default ``get_embedder(settings)``, loaded only then).
    - Ingested document (``document_id`` or ``file_name`` in ``collection``, with ``store`` and
      ``embedder``): its ``top_k`` best chunks by ``workbench.retrieval.search.search``.

    ``top_k`` defaults to TOP_K. Raises DocumentError for unreadable files, StoreError for a
    missing collection, ModelMissingError when a model is not on disk.
    """
    k = top_k or settings.top_k
    if path is not None:
        contexts = _contexts_from_file(Path(path), question, settings=settings, embedder=embedder, top_k=k)
    else:
        if store is None or embedder is None or not (document_id or file_name):
            raise WorkbenchError("ask_document needs a file path, or store + embedder + a document")
        hits = search(
            question,
            settings=settings,
            store=store,
            embedder=embedder,
            collection=collection,
            top_k=k,
            document_id=document_id,
            file_name=None if document_id else file_name,
        )
        contexts = [QaContext(h.text, h.page, h.source, h.chunk_id, False, h.start) for h in hits]
    return answer_question(question, contexts, settings=settings, qa=qa)
