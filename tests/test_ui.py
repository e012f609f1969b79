"""The workbench pages in Streamlit's AppTest over a real temp store and the real model:
Ingest (upload -> job -> results, one job per collection), Search (cards, escaping, links),
Documents (deep links, documents, chunks, re-ingest, delete), Collections (create, rename/delete,
rebuild, export/import), Status, and the sidebar/session state shared by every page.
tests/test_ui_safety.py has the hostile-input cases (names, archives, source paths)."""

from __future__ import annotations

import socket
import threading
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import SAMPLE_DOCS, make_settings, write_docs
from tests.fake_ollama import FakeOllama

REPO = Path(__file__).resolve().parents[1]
EVIL = (
    "# Evil\n\nThis note about volcanoes has <script>alert(1)</script> and **bold** markdown, "
    "<b>raw html</b>, [a link](http://example.com) and $x^2$.\n\n# Not a heading\n"
)
DOCS = {**SAMPLE_DOCS, "evil.md": EVIL}


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def ui(tmp_path, monkeypatch, embedder):
    """Environment for the app: a temp store, the shared model cache, Ollama on a closed port.
    Set before the app builds its (cached) settings; the caches are cleared around each test."""
    import streamlit as st

    docs = write_docs(tmp_path / "docs", DOCS)
    settings = make_settings(tmp_path, collection_name="uitest", knowledge_base_path=docs)
    env = {
        "CHROMA_PERSIST_PATH": settings.chroma_persist_path,
        "MODEL_CACHE_DIR": settings.model_cache_dir,
        "LOG_DIR": settings.log_dir,
        "COLLECTION_NAME": "uitest",
        "KNOWLEDGE_BASE_PATH": docs,
        "CHROMA_HOST": "",
        "OLLAMA_BASE_URL": closed_port_url(),
        "OLLAMA_TIMEOUT": "2",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    st.cache_resource.clear()  # settings, store, jobs; the model stays loaded (workbench.models.embeddings caches it)
    yield SimpleNamespace(settings=settings, docs=docs, tmp=tmp_path, embedder=embedder)
    import ui

    for job in ui.get_jobs().jobs():
        job.cancel()
        job.wait(120)
    st.cache_resource.clear()


def ingest(ui, collection: str = "uitest", settings=None):
    from workbench.ingest.pipeline import ingest_paths
    from workbench.store.chroma import open_store

    s = settings or ui.settings
    summary = ingest_paths([ui.docs], settings=s, store=open_store(s), embedder=ui.embedder, collection=collection)
    assert not summary.failures
    return open_store(s)


def open_app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    assert not at.exception, at.exception
    return at


def jobs():
    import ui

    return ui.get_jobs()


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


# --- helpers of ui --------------------------------------------------------------
def test_text_html_escapes_before_highlighting():
    from ui import md_escape, query_terms, text_html

    out = text_html("A <script>alert('x')</script> & **bold** about Volcanoes\n\n# h", ["volcano", "script", "amp"])
    assert "<script>" not in out and "&lt;<mark>script</mark>&gt;alert(&#x27;x&#x27;)&lt;/<mark>script</mark>&gt;" in out
    assert "&amp;" in out and "<mark>amp</mark>" not in out  # entities are never matched
    assert "<mark>Volcanoes</mark>" in out and "\n" not in out and out.count("<br>") == 2
    assert query_terms("What is the active volcano in Sicily?") == ["volcano", "active", "sicily"]
    assert md_escape("my_file*[1].pdf") == r"my\_file\*\[1\]\.pdf"


# --- every page, sidebar, session state ------------------------------------------------------
def test_every_page_renders_and_sidebar_shows_collection_and_store(ui):
    ingest(ui)
    at = open_app()
    sidebar = texts(at.sidebar.markdown) + texts(at.sidebar.caption)
    assert "uitest" in sidebar and str(ui.settings.chroma_persist_path) in sidebar
    pages = [("views/ingest.py", "Ingest"), ("views/search.py", "Search"), ("views/library.py", "Collections"), ("views/documents.py", "Documents"), ("views/status.py", "Status")]
    for page, title in pages:
        at.switch_page(page)
        at.run()
        assert not at.exception, (page, at.exception)
        assert title in at.title[0].value


def test_active_collection_survives_page_switches(ui):
    ingest(ui)
    ingest(ui, collection="second")
    at = open_app("views/search.py")
    at.selectbox(key="search-collection").set_value("second").run()
    at.switch_page("views/library.py")
    at.run()
    assert at.session_state["collection"] == "second"
    assert at.selectbox(key="coll-open").value == "second"
    at.switch_page("views/documents.py")
    at.run()
    assert at.selectbox(key="docs-collection").value == "second"
    at.switch_page("views/ingest.py")
    at.run()
    assert at.selectbox(key="ingest-collection").value == "second"


# --- ingest ----------------------------------------------------------------------------------
def test_upload_ingest_then_search_finds_the_file(ui):
    at = open_app("views/ingest.py")
    uploader = at.file_uploader(key="ingest-uploads")
    for name in ("volcanoes.md", "bread.txt"):
        uploader.upload(name, SAMPLE_DOCS[name].encode(), "text/plain")
    at.run()
    at.button[0].click().run()  # "Ingest uploaded files"
    assert not at.exception and not at.error, [e.value for e in at.error]
    job = jobs().get(at.session_state["ingest_job"])
    assert job is not None and job.collection == "uitest"
    assert job.wait(300) and job.state == "done", job.error
    at.run()
    assert "Done in" in texts(at.success) and "added 2" in texts(at.success)
    table = at.dataframe[0].value
    assert sorted(table["file"]) == ["bread.txt", "volcanoes.md"] and set(table["result"]) == {"added"}

    at.switch_page("views/search.py")
    at.run()
    at.text_input(key="search-query").set_value("how long does the dough rise").run()
    assert not at.exception
    heads = [m.value for m in at.markdown if m.value.startswith("**1.")]
    assert heads and heads[0].startswith("**1. bread\\.txt**"), heads


def test_progress_is_found_again_after_session_loss(ui):
    at = open_app("views/ingest.py")
    at.button[1].click().run()  # ingest the folder
    job = jobs().get(at.session_state["ingest_job"])
    assert job.wait(300) and job.state == "done"
    fresh = open_app("views/ingest.py")  # a browser refresh: new session, same process
    assert "ingest_job" not in fresh.session_state
    assert f"Job {job.id}" in texts(fresh.markdown) and "added 4" in texts(fresh.success)


def test_second_job_on_same_collection_is_refused(ui):
    from workbench.ingest.jobs import JobConflictError

    release = threading.Event()
    blocker = jobs().start_task(lambda progress, cancel: release.wait(120) and "held", collection="uitest", description="holding the collection")
    try:
        with pytest.raises(JobConflictError, match="already running"):
            jobs().start_ingest([ui.docs], settings=ui.settings, store=None, embedder=None, collection="uitest")
        at = open_app("views/ingest.py")
        assert f"Job {blocker.id} is ingesting" in texts(at.info)
        at.button[1].click().run()  # ingest the folder into the busy collection
        assert "already running" in texts(at.error)
        assert [j.id for j in jobs().jobs()] == [blocker.id]  # nothing was started
    finally:
        release.set()
        blocker.wait(60)
    assert blocker.state == "done" and blocker.result == "held"


def test_cancel_button_stops_the_running_job(ui):
    from workbench.errors import CancelledError

    def work(progress, cancel):
        if cancel.wait(120):
            raise CancelledError("stopped by the user")
        return "not cancelled"

    job = jobs().start_task(work, collection="uitest", description="waits for cancel")
    at = open_app("views/ingest.py")
    at.button(key=f"ingest-cancel-{job.id}").click().run()
    assert job.wait(60) and job.state == "cancelled" and job.error == "stopped by the user"
    at.run()
    assert "stopped by the user" in texts(at.warning)


# --- search ------------------------------------------------------------------------------------
def test_search_cards_escape_document_text(ui):
    ingest(ui)
    at = open_app("views/search.py")
    at.text_input(key="search-query").set_value("volcanoes script bold").run()
    bodies = [m.value for m in at.markdown if m.value.startswith('<div class="wb-text"')]
    evil = next(b for b in bodies if "alert" in b)
    assert "&lt;<mark>script</mark>&gt;alert(1)&lt;/<mark>script</mark>&gt;" in evil
    assert "&lt;b&gt;raw html&lt;/b&gt;" in evil and "**<mark>bold</mark>**" in evil
    assert "<script>" not in evil and "<b>" not in evil and "\n" not in evil  # one HTML line: markdown stays literal
    assert "&#36;x^2&#36;" in evil
    assert all(m.value.count("<script") == 0 for m in at.markdown)


def test_search_filters_file_and_min_score(ui):
    store = ingest(ui)
    at = open_app("views/search.py")
    at.radio(key="search-mode").set_value("vector").run()
    at.slider(key="search-min-score").set_value(-1.0).run()
    at.number_input(key="search-top-k").set_value(50).run()
    at.text_input(key="search-query").set_value("volcano").run()
    assert len([m for m in at.markdown if "· cosine `" in m.value]) == store.collection_info("uitest").chunks
    bread = next(d for d in store.documents("uitest") if d.source == "bread.txt")
    at.selectbox(key="search-file").set_value(bread.document_id).run()
    heads = [m.value for m in at.markdown if "· cosine `" in m.value]
    assert len(heads) == 1 and "bread\\.txt" in heads[0]
    at.selectbox(key="search-file").set_value(None).run()
    at.slider(key="search-min-score").set_value(0.5).run()
    heads = [m.value for m in at.markdown if "· cosine `" in m.value]
    assert heads and all(float(h.rsplit("`", 2)[1]) >= 0.5 for h in heads)
    assert not any("bread" in h for h in heads)


def test_search_modes_show_their_scores(ui):
    """Hybrid is the default (SEARCH_MODE) and shows fused rank, fused, vector and BM25 scores;
    keyword shows BM25 only and finds nothing without a query word; vector shows cosine."""
    ingest(ui)
    at = open_app("views/search.py")
    assert at.radio(key="search-mode").value == "hybrid"
    at.text_input(key="search-query").set_value("Etna eruption").run()
    heads = [m.value for m in at.markdown if "fused rank" in m.value]
    assert heads and "volcanoes" in heads[0] and heads[0].startswith("**1.")
    assert "fused rank 1 ·" in heads[0] and "vector `" in heads[0] and "BM25 `" in heads[0]
    assert "(hybrid)" in texts(at.caption)
    at.radio(key="search-mode").set_value("keyword").run()
    assert at.slider(key="search-min-score").disabled
    heads = [m.value for m in at.markdown if "BM25 `" in m.value]
    assert heads and "volcanoes" in heads[0] and not any("cosine" in h or "fused" in h for h in heads)
    assert all(float(h.rsplit("`", 2)[1]) > 0 for h in heads)
    at.text_input(key="search-query").set_value("zzzqx unmatched").run()
    assert "No chunk contains a word of the query" in texts(at.warning)
    at.radio(key="search-mode").set_value("vector").run()
    assert [m.value for m in at.markdown if "· cosine `" in m.value]


# --- documents -----------------------------------------------------------------------------------
def test_deep_link_opens_document_and_highlights_chunk(ui):
    store = ingest(ui)
    doc = next(d for d in store.documents("uitest") if d.source == "volcanoes.md")
    chunk = store.document_chunks("uitest", doc.document_id)[0]
    at = open_app("views/documents.py")
    at.query_params.update(collection="uitest", document=doc.document_id, chunk=chunk.chunk_id)
    at.run()
    assert not at.exception
    assert "Documents" in at.title[0].value
    assert at.selectbox(key="docs-collection").value == "uitest"
    assert next(s for s in at.selectbox if s.label == "Open document").value == doc.document_id
    highlighted = at.get_by_key("chunk-hl-0")
    assert "Mount Etna" in texts(highlighted.markdown)
    assert "scrollIntoView" in texts(at.get("html"))


def test_document_chunks_are_escaped_and_delete_drops_counts(ui):
    store = ingest(ui)
    evil = next(d for d in store.documents("uitest") if d.source == "evil.md")
    at = open_app("views/documents.py")
    docs_table = at.dataframe[0].value
    assert sorted(docs_table["file"]) == sorted(DOCS) and list(docs_table.columns) == ["file", "pages", "chunks", "OCR pages", "ingested at", "hash"]
    at.text_input(key="docs-filter").set_value("evil").run()
    assert list(at.dataframe[0].value["file"]) == ["evil.md"]
    next(s for s in at.selectbox if s.label == "Open document").set_value(evil.document_id).run()
    chunk_md = texts(at.get_by_key("chunk-0").markdown)
    assert "**#0** · page 1 ·" in chunk_md and "chars 0–" in chunk_md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in chunk_md and "<script>" not in chunk_md
    at.checkbox(key=f"docs-del-sure-{evil.document_id}").check().run()
    at.button(key="docs-del-doc").click().run()
    assert not at.exception
    assert "Deleted evil\\.md" in texts(at.success)
    assert texts(at.caption).startswith(f"{len(DOCS) - 1} documents · ")
    assert at.dataframe[0].value.empty  # the filter "evil" matches nothing now
    at.text_input(key="docs-filter").set_value("").run()
    assert sorted(at.dataframe[0].value["file"]) == sorted(set(DOCS) - {"evil.md"})
    at.switch_page("views/library.py")
    at.run()
    assert at.dataframe[0].value["documents"].tolist() == [len(DOCS) - 1]
    assert [d.source for d in store.documents("uitest")] == sorted(set(DOCS) - {"evil.md"}, key=str)


def test_reingest_missing_file_says_so(ui):
    store = ingest(ui)
    bread = next(d for d in store.documents("uitest") if d.source == "bread.txt")
    (ui.docs / "bread.txt").unlink()
    at = open_app("views/documents.py")
    next(s for s in at.selectbox if s.label == "Open document").set_value(bread.document_id).run()
    at.button(key="docs-reingest").click().run()
    assert "no longer exists" in texts(at.warning)
    assert jobs().jobs() == []


def test_reingest_picks_up_a_changed_file(ui):
    store = ingest(ui)
    bread = next(d for d in store.documents("uitest") if d.source == "bread.txt")
    (ui.docs / "bread.txt").write_text("Sourdough bread needs a starter of flour and water, fed daily.\n", encoding="utf-8")
    at = open_app("views/documents.py")
    next(s for s in at.selectbox if s.label == "Open document").set_value(bread.document_id).run()
    at.button(key="docs-reingest").click().run()
    assert not at.exception and not at.error
    job = jobs().get(at.session_state["docs-job"])
    assert job.wait(300) and job.state == "done", job.error
    assert [r.status for r in job.summary.results] == ["replaced"]
    at.run()
    assert "starter of flour" in texts(at.get_by_key("chunk-0").markdown)
    assert len(store.documents("uitest")) == len(DOCS)


def test_token_limit_badge(ui, monkeypatch):
    words = " ".join(["harbor", "ship", "sea", "wind", "light", "stone", "rock", "tide"] * 150)
    write_docs(ui.docs, {"long.txt": words})
    settings = make_settings(ui.tmp, collection_name="uitest", knowledge_base_path=ui.docs, chunk_size=254, chunk_overlap=0)
    store = ingest(ui, settings=settings)
    doc = next(d for d in store.documents("uitest") if d.source == "long.txt")
    at_limit = [c for c in store.document_chunks("uitest", doc.document_id) if c.token_count + 2 >= 256]
    assert at_limit, "the test text must produce chunks at the limit"
    at = open_app("views/documents.py")
    next(s for s in at.selectbox if s.label == "Open document").set_value(doc.document_id).run()
    badges = [m.value for m in at.markdown if "256-token limit" in m.value]
    assert len(badges) == len(at_limit)


# --- collections ---------------------------------------------------------------------------------
def test_create_rename_delete_collection(ui):
    from ui import md_escape

    at = open_app("views/library.py")
    at.text_input(key="coll-new-name").set_value("made-here").run()
    at.button(key="coll-create").click().run()
    assert md_escape("Created collection made-here") in texts(at.success)
    assert at.selectbox(key="coll-open").value == "made-here"
    at.text_input(key="coll-rename-to").set_value("renamed-here").run()
    at.button(key="coll-rename").click().run()
    assert not at.exception and md_escape("Renamed made-here to renamed-here") in texts(at.success)
    assert at.session_state["collection"] == "renamed-here"
    assert at.button(key="coll-delete").disabled
    at.text_input(key="coll-delete-confirm").set_value("renamed-here").run()
    at.button(key="coll-delete").click().run()
    assert md_escape("Deleted collection renamed-here") in texts(at.success)
    from workbench.store.chroma import open_store

    assert open_store(ui.settings).collection_names() == []


def test_rebuild_from_the_page(ui):
    ingest(ui)
    at = open_app("views/library.py")
    at.number_input(key="coll-rb-size").set_value(64).run()
    at.number_input(key="coll-rb-overlap").set_value(8).run()
    at.button(key="coll-rb-start").click().run()
    assert not at.exception and not at.error, texts(at.error)
    job = jobs().get(at.session_state["coll-job"])
    assert job.wait(300) and job.state == "done", job.error
    at.run()
    assert "Rebuilt uitest" in texts(at.success)
    assert at.dataframe[0].value["chunk size"].tolist() == [64]


def test_export_then_import_from_the_page(ui):
    from ui import md_escape

    ingest(ui)
    at = open_app("views/library.py")
    at.button(key="coll-export").click().run()
    name, path = at.session_state["coll-export-path"]
    assert name == "uitest" and zipfile.is_zipfile(path)
    data = Path(path).read_bytes()
    at.file_uploader(key="coll-import-file").upload("uitest.zip", data, "application/zip")
    at.text_input(key="coll-import-name").set_value("uitest-copy").run()
    at.button(key="coll-import").click().run()
    assert not at.exception and md_escape(f"Imported uitest-copy: {len(DOCS)} documents") in texts(at.success)
    # a file that is not an archive: one clear error, no new collection
    at.file_uploader(key="coll-import-file").set_value(("junk.zip", b"not a zip at all", "application/zip"))
    at.text_input(key="coll-import-name").set_value("junk-copy").run()
    at.button(key="coll-import").click().run()
    assert md_escape("junk.zip: not a collection archive") in texts(at.error)
    from workbench.store.chroma import open_store

    assert open_store(ui.settings).collection_names() == ["uitest", "uitest-copy"]


# --- status ------------------------------------------------------------------------------------
def test_status_reports_each_check_with_fixes(ui):
    store = ingest(ui)
    from workbench.store import admin

    admin.create_collection(store, "other-model", model="bge-small-en", dimensions=384, chunk_size=200, chunk_overlap=32)
    at = open_app("views/status.py")
    page = texts(at.markdown)
    assert "✅ **model** · all\\-MiniLM\\-L6\\-v2" in page and "device CPU" in page
    assert "✅ **chroma** · embedded Chroma at" in page
    assert "✅ **collections** · uitest" in page and "❌ **collections** · other\\-model" in page
    assert "rebuild 'other-model' with all-MiniLM-L6-v2" in page
    ollama = texts(at.get_by_key("check-ollama").markdown)
    assert "❌ **ollama**" in ollama
    for fix in ("OLLAMA_HOST=172.17.0.1", "host-gateway", "172.17.0.1"):
        assert fix in ollama
    assert "**disk**" in page and "**memory**" in page
    assert "**ocr** · Tesseract" in page or "**ocr** · EasyOCR" in page  # which, tests/test_ocr_tesseract.py
    assert "failed" in texts(at.error)


def test_status_with_a_reachable_ollama(ui, monkeypatch):
    ingest(ui)
    with FakeOllama(models=["llama3.2:latest"]) as fake:
        monkeypatch.setenv("OLLAMA_BASE_URL", fake.url)
        import ui

        ui.get_settings.clear()
        at = open_app("views/status.py")
        page = texts(at.markdown)
        assert "✅ **ollama** · Ollama 0\\.12\\.6 at" in page and "llama3\\.2\\:latest" in page
        assert "✅ **ollama model** · OLLAMA\\_MODEL 'llama3\\.2' is available" in page


def test_status_core_reports_unreachable_chroma_server(tmp_path):
    from workbench.diagnostics import run_checks

    settings = make_settings(tmp_path, chroma_host="127.0.0.1", chroma_port=int(closed_port_url().rsplit(":", 1)[1]))
    report = run_checks(settings, include=("chroma", "disk", "memory"))
    chroma = report.get("chroma")[0]
    assert chroma.level == "fail" and "server Chroma at 127.0.0.1" in chroma.detail
    assert any("chroma run --path DIR" in f for f in chroma.fixes)
    assert report.level == "fail" and {c.name for c in report.checks} == {"chroma", "disk", "memory"}
