"""End to end in real headless Chromium (Debian's, via Playwright) against `streamlit run` on a
loopback port: upload two real PDFs (and a hostile markdown file) on the Ingest page, wait for
the job, see the counts on Collections, open a document and its chunks on Documents, search,
follow a result's "Open in Documents" link to its highlighted chunk, delete the document and see
the counts drop, rebuild and export on Collections, check Status. A second test opens a page URL
as the first request of a fresh server and expects app.py's titled navigation.

Screenshots of every step go to tests/artifacts/ (git-ignored)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MODEL_CACHE, free_port, stop_process, wait_http

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
ZEN = "py-pdf-sample-files/011-google-doc-document/google-doc-document.pdf"  # 'Zen of Python' text
CRAZY = "py-pdf-sample-files/021-pdfa/crazyones-pdfa.pdf"  # 'The Crazy Ones' text
EVIL_MD = (
    "# Hostile note\n\nAn attacker wrote <script>window.__pwned = 1</script> and "
    '<img src="x" onerror="window.__pwned = 2"> and **bold markdown** in this note about rebels.\n'
)
SLOW = 300_000  # ms: the app loads the model on first use, on 2 busy cores


@contextlib.contextmanager
def serve(tmp: Path, log_name: str):
    """`streamlit run app.py` on 127.0.0.1:<free port> over a temp store; stopped by its PID; its
    log is copied to tests/artifacts/<log_name>."""
    port = free_port()
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        CHROMA_PERSIST_PATH=str(tmp / "chroma_db"),
        CHROMA_HOST="",
        MODEL_CACHE_DIR=str(MODEL_CACHE),
        LOG_DIR=str(tmp / "logs"),
        KNOWLEDGE_BASE_PATH=str(tmp / "kb"),
        COLLECTION_NAME="e2e-docs",
        OLLAMA_BASE_URL=f"http://127.0.0.1:{free_port()}",
        OLLAMA_TIMEOUT="2",
    )
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]  # no reruns when files change under a running test
    with open(tmp / "streamlit.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health", 60)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc, 15)
        shutil.copy(tmp / "streamlit.log", ARTIFACTS / log_name) if ARTIFACTS.is_dir() else None


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    with serve(tmp_path_factory.mktemp("e2e"), "streamlit.log") as url:
        yield url


@pytest.fixture
def fresh_app_url(tmp_path_factory):
    """A server no browser session has run a script on yet (see the direct-URL test)."""
    with serve(tmp_path_factory.mktemp("e2e-fresh"), "streamlit-fresh.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), "Debian chromium is missing: `make browser` (apt-get install chromium)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        yield b
        b.close()


def shot(page, name: str, focus=None) -> None:
    """Screenshot into tests/artifacts/<name>.png; Streamlit scrolls inside its main block, so
    ``focus`` (a locator) is scrolled into view first."""
    if focus is not None:
        focus.evaluate("el => el.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(400)  # let Streamlit finish painting (not an assertion)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def wait_idle(page) -> None:
    """Wait until Streamlit has finished its script runs: no 'Running…' status widget and no
    skeleton of a widget still loading, twice in a row 0.5 s apart (a rerun can start just
    after the previous one ends)."""
    quiet = "() => !document.querySelector('[data-testid=\"stStatusWidget\"], [data-testid=\"stSkeleton\"]')"
    for _ in range(2):
        page.wait_for_timeout(500)
        page.wait_for_function(quiet, timeout=SLOW)


def nav(page, title: str) -> None:
    """Click a page in the sidebar navigation (same session, as a user does)."""
    wait_idle(page)
    page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
    try:
        page.get_by_role("heading", name=re.compile(title)).first.wait_for(timeout=SLOW)
    except Exception:
        shot(page, f"failed-nav-{title}")
        raise
    wait_idle(page)


def choose(page, label: str, option: str) -> None:
    page.get_by_label(label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_idle(page)


TITLES = ["Ingest", "Search", "Collections", "Documents", "Source", "Chat", "Document QA", "Evaluate", "Embedding map", "Status"]


def test_direct_page_url_shows_the_titled_navigation(fresh_app_url, browser):
    """Streamlit falls back to its automatic listing of a `pages/` folder beside app.py until a
    session has run st.navigation; the views live in `views/` so that never happens.
    Opening /search as the very first request of a server (a bookmark after a restart) shows
    app.py's st.navigation (titles, icons, the sidebar with the store), not Streamlit's automatic
    listing of the files in views/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{fresh_app_url}/search")
        page.get_by_role("heading", name=re.compile("Search")).first.wait_for(timeout=SLOW)
        wait_idle(page)
        shot(page, "12-direct-url")
        links = page.locator('[data-testid="stSidebarNav"] a')
        names = [link.inner_text().strip().splitlines()[-1].strip() for link in links.all()]
        assert names == TITLES, names  # not ['app', 'chat', 'document qa', ..., 'library', 'search', 'status']
        sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
        assert "e2e-docs" in sidebar and "Store: embedded" in sidebar  # app.py ran: its sidebar() is there
        nav(page, "Documents")  # and the titled navigation works from there
        assert re.search(r"/documents(\?|$)", page.url), page.url
    finally:
        page.close()


def test_upload_browse_search_delete_in_chromium(app_url, browser, corpus_dir, tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        flow(page, app_url, corpus_dir, tmp_path)
    except BaseException:
        shot(page, "failed")  # what the browser showed when the test failed
        raise
    finally:
        page.close()


def flow(page, app_url, corpus_dir, tmp_path):
    pdfs = corpus_dir / "pdfs"
    evil = tmp_path / "hostile-note.md"
    evil.write_text(EVIL_MD, encoding="utf-8")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # --- Ingest: upload through the real file input, wait for the job --------------------------
    page.goto(app_url)
    page.get_by_role("heading", name=re.compile("Ingest")).wait_for(timeout=SLOW)
    wait_idle(page)
    sidebar = page.locator('[data-testid="stSidebar"]')
    assert "e2e-docs" in sidebar.inner_text() and "Store: embedded" in sidebar.inner_text()
    page.locator('[data-testid="stFileUploaderDropzone"]').wait_for(timeout=SLOW)
    shot(page, "01-ingest-empty")
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files([pdfs / ZEN, pdfs / CRAZY, evil])
    for name in ("google-doc-document.pdf", "crazyones-pdfa.pdf", "hostile-note.md"):
        page.locator(f'[data-testid="stFileChipName"][title="{name}"]').wait_for(timeout=60_000)
    wait_idle(page)
    page.get_by_role("button", name="Ingest uploaded files").click()
    page.get_by_text(re.compile(r"Done in [\d.]+ s: added 3")).wait_for(timeout=SLOW)
    wait_idle(page)
    shot(page, "02-ingest-done")

    # --- Collections: counts; its link to Documents: open a document, its chunks ----------------
    nav(page, "Collections")
    page.get_by_text(re.compile(r"^3 documents · \d+ chunks")).wait_for(timeout=SLOW)
    wait_idle(page)
    shot(page, "03-collections")
    page.get_by_role("link", name=re.compile("Browse its 3 documents and chunks")).click()
    page.get_by_role("heading", name=re.compile("Documents")).first.wait_for(timeout=SLOW)
    page.get_by_text(re.compile(r"^3 of 3 documents")).wait_for(timeout=SLOW)
    wait_idle(page)
    choose(page, "Open document", "google-doc-document.pdf")
    page.get_by_role("heading", name=re.compile("google-doc-document.pdf")).wait_for(timeout=SLOW)
    caption = page.get_by_text(re.compile(r"· id [0-9a-f]+$")).first
    caption.wait_for(timeout=SLOW)
    zen_id = re.search(r"· id ([0-9a-f]+)$", caption.inner_text().strip()).group(1)
    first_chunk = page.locator(".st-key-chunk-0")
    first_chunk.wait_for(timeout=SLOW)
    wait_idle(page)
    shot(page, "04-document-chunks", focus=first_chunk)
    assert re.search(r"#0 · page 1 · \d+ tokens( \(\+\d+ header\))? · chars 0–\d+", first_chunk.inner_text())
    assert "Beautiful is better than ugly" in first_chunk.inner_text()

    # --- Search: the expected file first, hostile text shown as text ---------------------------
    nav(page, "Search")
    query = page.get_by_label("Query")
    query.fill("Readability counts, flat is better than nested")
    query.press("Enter")
    page.locator(".st-key-hit-1 .wb-text mark").first.wait_for(timeout=SLOW)  # query terms highlighted
    wait_idle(page)
    assert "google-doc-document.pdf" in page.locator(".st-key-hit-1").inner_text()
    shot(page, "05-search")

    query.fill("rebels attacker script bold")
    query.press("Enter")
    hostile = page.locator('[class*="st-key-hit-"]', has_text="hostile-note.md").first
    hostile.locator(".wb-text mark").first.wait_for(timeout=SLOW)
    wait_idle(page)
    text = hostile.locator(".wb-text")
    body = text.inner_text()
    assert "<script>window.__pwned = 1</script>" in body and '<img src="x" onerror=' in body
    assert "**bold markdown**" in body
    assert text.locator("script, img, strong, em, a").count() == 0 and text.locator("mark").count() > 0
    assert page.evaluate("() => window.__pwned") is None
    shot(page, "06-search-escaped", focus=hostile)

    # --- a result's link opens the chunk on the Documents page, highlighted ---------------------
    query.fill("Readability counts, flat is better than nested")
    query.press("Enter")
    page.locator(".st-key-hit-1", has_text="google-doc-document.pdf").wait_for(timeout=SLOW)
    wait_idle(page)
    # The link, not only the title, must be this run's: under load the title of hit 1 can be
    # repainted while its link still points at the previous query's first hit.
    link = page.locator(f'.st-key-hit-1 a[href*="document={zen_id}"]', has_text="Open in Documents").first
    link.wait_for(timeout=SLOW)
    link.click()
    page.get_by_role("heading", name=re.compile("Documents")).first.wait_for(timeout=SLOW)
    page.get_by_role("heading", name=re.compile("google-doc-document.pdf")).wait_for(timeout=SLOW)
    assert re.search(r"/documents(\?|$)", page.url), page.url
    highlighted = page.locator('[class*="st-key-chunk-hl-"]').first
    highlighted.wait_for(timeout=SLOW)
    wait_idle(page)
    page.wait_for_function(
        "() => { const r = document.querySelector('[class*=\"st-key-chunk-hl-\"]').getBoundingClientRect();"
        " return r.top >= 0 && r.top < window.innerHeight; }",
        timeout=30_000,
    )  # scrolled to the linked chunk
    shot(page, "07-deep-link")

    # --- delete the document on Documents, counts drop there and on Collections ----------------
    page.get_by_text("Yes, delete this document").click()
    wait_idle(page)
    page.get_by_role("button", name="Delete document").click()
    page.get_by_text("Deleted google-doc-document.pdf").wait_for(timeout=SLOW)
    counts = page.get_by_text(re.compile(r"^2 documents · \d+ chunks"))
    counts.wait_for(timeout=SLOW)
    wait_idle(page)
    page.get_by_text(re.compile(r"^2 of 2 documents")).wait_for(timeout=SLOW)  # the documents table
    shot(page, "08-after-delete", focus=counts)
    nav(page, "Collections")
    page.get_by_text(re.compile(r"^2 documents · \d+ chunks")).wait_for(timeout=SLOW)
    wait_idle(page)

    # --- rebuild with smaller chunks (a background job), then export, on Collections ------------
    page.get_by_role("tab", name=re.compile("Rebuild")).click()
    size = page.get_by_label("Chunk size (tokens)")
    size.fill("64")
    size.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Rebuild and swap").click()
    done = page.get_by_text(re.compile(r"Rebuilt e2e-docs: 2 documents"))
    done.wait_for(timeout=SLOW)
    wait_idle(page)
    page.get_by_text(re.compile(r"chunks of 64 tokens")).first.wait_for(timeout=SLOW)
    shot(page, "09-rebuilt", focus=done)
    page.get_by_role("tab", name=re.compile("Export")).click()
    page.get_by_role("button", name="Build archive").click()
    download = page.get_by_role("button", name=re.compile(r"Download e2e-docs\.zip"))
    download.wait_for(timeout=SLOW)
    wait_idle(page)
    shot(page, "10-export", focus=download)

    # --- Status ----------------------------------------------------------------------------------
    nav(page, "Status")
    page.locator(".st-key-check-model").wait_for(timeout=SLOW)
    assert "all-MiniLM-L6-v2" in page.locator(".st-key-check-model").inner_text()
    assert "OLLAMA_HOST=172.17.0.1" in page.locator(".st-key-check-ollama").inner_text()
    shot(page, "11-status")
    assert "e2e-docs" in sidebar.inner_text()  # the sidebar is on every page
    assert not errors, errors

