"""Shared fixtures: settings on temp folders, the real model, real Chroma (embedded and a
`chroma run` server on loopback), and the shared corpus (skipped with a reason when absent)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from workbench.config import Settings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WORKBENCH_SHARED", REPO.parent / "shared"))
#: One model cache for the whole run (the OpenVINO export is made once, then reused).
MODEL_CACHE = Path(os.environ.get("WORKBENCH_TEST_MODEL_CACHE", REPO / "models"))


def shared_corpus() -> Path | None:
    """../shared/corpus when present (CI always has it), else None."""
    path = SHARED / "corpus"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    path = shared_corpus()
    if path is None:
        pytest.skip(f"the shared corpus is not here ({SHARED / 'corpus'}); it lives beside the repo in CI")
    return path


def make_settings(tmp: Path, **overrides) -> Settings:
    """Settings on folders under ``tmp``, ignoring any .env file."""
    values = dict(
        chroma_persist_path=tmp / "chroma_db",
        log_dir=tmp / "logs",
        knowledge_base_path=tmp / "kb",
        model_cache_dir=MODEL_CACHE,
        ocr_cache_dir=tmp / "ocr-cache",
        chroma_host=None,
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)


def forbid_ocr(monkeypatch) -> None:
    """Make any OCR read fail with AssertionError("the OCR reader was called"), whichever
    engine would read (EasyOCR's reader, Tesseract's ``read_page``): for tests that a result
    comes from the OCR cache."""
    from workbench.ingest import ocr

    def refuse(*args, **kwargs):
        raise AssertionError("the OCR reader was called")

    monkeypatch.setattr(ocr, "get_reader", refuse)
    monkeypatch.setattr(ocr, "read_page", refuse)


def tesseract_missing() -> str:
    """Why the Tesseract engine cannot run here ("" when it can): ``make install-ocr`` installs it."""
    from workbench.models.tesseract import tesseract_info

    problem = tesseract_info(make_settings(Path("/nonexistent-unused"))).problem
    return f"{problem}: run `make install-ocr`" if problem else ""


@pytest.fixture
def settings(tmp_path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture(scope="session")
def embedder():
    from workbench.models.embeddings import get_embedder

    return get_embedder(make_settings(Path("/nonexistent-unused")))


@pytest.fixture
def store(settings):
    from workbench.store.chroma import open_store

    return open_store(settings)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate a server started by a test, kill it when it has not exited after ``timeout`` s."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def wait_http(url: str, timeout: float = 60.0) -> None:
    """Poll ``url`` until it answers 200 or raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s ({last})")


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """A real `chroma run` server on 127.0.0.1:<free port>, stopped by its PID at the end."""
    exe = shutil.which("chroma", path=str(Path(sys.executable).parent)) or shutil.which("chroma")
    assert exe, "the chroma CLI (chromadb package) is missing"
    port = free_port()
    data = tmp_path_factory.mktemp("chroma-server")
    log = open(data / "server.log", "wb")
    proc = subprocess.Popen([exe, "run", "--path", str(data / "db"), "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/v2/heartbeat", 60)
        yield "127.0.0.1", port
    finally:
        stop_process(proc)
        log.close()


def write_docs(folder: Path, docs: dict[str, str]) -> Path:
    """Write ``{relative name: text}`` under ``folder``; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in docs.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


SAMPLE_DOCS = {
    "volcanoes.md": "# Volcanoes\n\nA volcano is a rupture in the crust of a planet that allows hot lava, volcanic ash and gases to escape from a magma chamber below the surface. Mount Etna in Sicily is one of the most active volcanoes in the world.\n",
    "bread.txt": "Baking bread needs flour, water, salt and yeast. The dough is kneaded, left to rise for about an hour, shaped, and baked in a hot oven until the crust is brown.\n",
    "notes/rivers.md": "# Rivers\n\nThe Danube flows through ten countries, more than any other river in the world, from the Black Forest in Germany to the Black Sea.\n",
}


@pytest.fixture(scope="session")
def squad_store(tmp_path_factory, corpus_dir, embedder):
    """The 24 SQuAD dev articles (``../shared/corpus/squad/docs``) ingested once per test session
    into collection ``squad`` of an embedded store (a few minutes on 2 cores; shared by every
    test that needs them). Returns a namespace: ``settings``, ``store``, ``collection``,
    ``docs`` (the folder), ``summary`` (the IngestSummary)."""
    from types import SimpleNamespace

    from workbench.ingest.pipeline import ingest_paths
    from workbench.store.chroma import open_store

    docs = corpus_dir / "squad" / "docs"
    if not docs.is_dir():
        pytest.skip(f"the SQuAD articles are not here ({docs})")
    settings = make_settings(tmp_path_factory.mktemp("squad"), collection_name="squad")
    store = open_store(settings)
    summary = ingest_paths([docs], settings=settings, store=store, embedder=embedder, collection="squad")
    assert not summary.failures, summary.failures
    return SimpleNamespace(settings=settings, store=store, collection="squad", docs=docs, summary=summary)
