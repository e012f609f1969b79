"""Small frozen records that cross layers: pages of a document, chunks, search hits,
and the events and results of an ingestion run. Views never see raw Chroma dicts."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Page:
    """Text of one page of a document.

    page: 1-based page number (1 for formats without pages).
    ocr: True when the text was read by OCR (no text layer).
    section: nearest heading for markdown/rst/html, slide title, sheet name, chapter title,
    e-mail subject, else "".
    title: the document's title when the format knows a better one than its first page's
    section (EPUB metadata title; a workbook's file stem, as its sections are sheet names),
    else "". The chunker reads it from the first page for the chunks' context header.
    """

    text: str
    page: int
    ocr: bool = False
    section: str = ""
    title: str = ""


@dataclass(frozen=True)
class Chunk:
    """One piece of a document, the unit that is embedded and retrieved.

    start/end: character span of ``text`` within its page's text (end exclusive).
    token_count: length in embedding-model tokens, special tokens excluded.
    content_hash: sha256 hex of ``text``.
    """

    document_id: str
    source: str
    file_name: str
    page: int
    chunk_index: int
    start: int
    end: int
    token_count: int
    content_hash: str
    text: str
    section: str = ""
    ocr: bool = False
    #: Context header ("title\n" or "title: section\n") embedded and indexed before ``text``.
    header: str = ""


@dataclass(frozen=True)
class Hit:
    """One search result.

    score: cosine similarity in [-1, 1] for vector search (higher is better); for other
    modes the fused/keyword score described by ``mode``.
    """

    chunk_id: str
    score: float
    text: str
    document_id: str
    source: str
    file_name: str
    page: int
    chunk_index: int
    start: int = 0
    end: int = 0
    token_count: int = 0
    section: str = ""
    rank: int = 0
    vector_score: float | None = None
    keyword_score: float | None = None
    mode: str = "vector"


@dataclass(frozen=True)
class DocumentInfo:
    """Summary of one ingested document in a collection."""

    document_id: str
    source: str
    file_name: str
    source_path: str
    pages: int
    chunks: int
    ocr_pages: int
    content_hash: str
    ingested_at: str
    ingest_key: str


@dataclass(frozen=True)
class IngestEvent:
    """Progress of an ingestion run, sent to the progress callback.

    kind: "start" | "file_start" | "chunks" | "file_done" | "done".
    elapsed_s/eta_s: seconds (eta_s None until it can be estimated).
    """

    kind: str
    files_total: int
    files_done: int
    chunks_done: int
    current_file: str = ""
    status: str = ""
    message: str = ""
    errors: int = 0
    elapsed_s: float = 0.0
    eta_s: float | None = None

    @property
    def fraction(self) -> float:
        """Files done over files total, in [0, 1]."""
        return self.files_done / self.files_total if self.files_total else 1.0


@dataclass(frozen=True)
class FileResult:
    """Outcome for one file: status is "added" | "unchanged" | "replaced" | "failed" | "pruned"."""

    source: str
    status: str
    chunks: int = 0
    pages: int = 0
    ocr_pages: int = 0
    message: str = ""
    seconds: float = 0.0


@dataclass
class IngestSummary:
    """Result of one ingestion run."""

    collection: str
    results: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    cancelled: bool = False

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def failures(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def chunks_added(self) -> int:
        return sum(r.chunks for r in self.results if r.status in ("added", "replaced"))
