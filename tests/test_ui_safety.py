"""Hostile input on the pages, in Streamlit's AppTest over a real temp store and the real model:
upload names (same name twice, control characters, overlong, too large), an imported archive
whose records point ``source_path`` at a file outside the allowed folders (Documents'
"Re-ingest from file" and Document QA's page image never open it), Document QA's candidates,
the old ``/collections`` deep link, and the core calls behind the pages (``start_rebuild``,
``chunk_windows``, ``stored_source``, ``import_uploaded_archive``)."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from tests.conftest import make_settings, write_docs
from tests.test_qa import random_qa_dir  # noqa: F401  (a fixture: a tiny random QA model)
from tests.test_ui import DOCS, ingest, jobs, open_app, texts, ui  # noqa: F401  (ui is a fixture)

OUTSIDE = Path("/etc/hostname")  # a real file outside the knowledge base and the upload area


def _rewrite(archive: Path, target: Path, **members: bytes) -> Path:
    """A copy of zip ``archive`` with some members replaced (``records_jsonl=...``)."""
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(target, "w") as dst:
        for item in src.infolist():
            dst.writestr(item.filename, members.get(item.filename.replace(".", "_"), src.read(item.filename)))
    return target


def archive_pointing_at(store, name: str, tmp: Path, source_path: Path, doc_hash: str | None = None) -> Path:
    """Export collection ``name`` and rewrite every record's ``source_path`` to ``source_path``
    (and ``doc_hash``, the file hash a rebuild compares, when given), with the manifest's
    checksum recomputed: an archive that passes every check."""
    from workbench.store.archive import export_collection

    archive = export_collection(store, name, tmp / f"{name}.zip")
    with zipfile.ZipFile(archive) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        lines = zf.read("records.jsonl").decode().splitlines()
    records = []
    for line in lines:
        record = json.loads(line)
        record["metadata"]["source_path"] = str(source_path)
        if doc_hash is not None:
            record["metadata"]["doc_hash"] = doc_hash
        records.append(json.dumps(record))
    body = ("\n".join(records) + "\n").encode()
    sums = {**manifest["sha256"], "records.jsonl": hashlib.sha256(body).hexdigest()}
    manifest_json = json.dumps({**manifest, "sha256": sums}).encode()
    return _rewrite(archive, tmp / "evil-archive.zip", records_jsonl=body, manifest_json=manifest_json)


@pytest.fixture
def opened(monkeypatch):
    """Every path opened through io.open (builtins.open and pathlib use it) while the test runs."""
    seen: list[str] = []
    real = io.open

    def spy(file, *args, **kwargs):
        if isinstance(file, (str, Path)):
            seen.append(str(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", spy)
    monkeypatch.setattr("builtins.open", spy)
    return seen


# --- the Documents page and its deep link ---------------------------------------------------------
def test_old_collections_deep_link_goes_to_the_documents_page(ui):  # noqa: F811 (the ui fixture)
    store = ingest(ui)
    doc = next(d for d in store.documents("uitest") if d.source == "bread.txt")
    at = open_app("views/library.py")
    assert "Collections" in at.title[0].value
    at.query_params.update(collection="uitest", document=doc.document_id, chunk="0")
    at.run()
    assert not at.exception, at.exception
    assert "Documents" in at.title[0].value
    assert next(s for s in at.selectbox if s.label == "Open document").value == doc.document_id
    assert at.get_by_key("chunk-hl-0") is not None and "dough" in texts(at.get_by_key("chunk-hl-0").markdown)


# --- uploads ---------------------------------------------------------------------------------------
def test_upload_same_names_and_bad_names(ui, monkeypatch):  # noqa: F811 (the ui fixture)
    """Two "a.txt" become "a.txt" and "a (2).txt"; a name of control characters and a file over
    MAX_UPLOAD_MB fail alone with an error naming them; an overlong name is shortened; the rest
    of the batch is ingested; the staged folder is gone when the job ends."""
    from ui import md_escape
    from workbench.ingest.uploads import MAX_NAME_BYTES

    monkeypatch.setenv("MAX_UPLOAD_MB", "1")
    monkeypatch.setenv("UPLOAD_PATH", str(ui.tmp / "uploads"))
    control = "\x07\x08\x1b\x7f.txt"  # only an extension is left once the control characters go
    overlong = "harbour-" * 40 + ".txt"  # 324 bytes
    at = open_app("views/ingest.py")
    uploader = at.file_uploader(key="ingest-uploads")
    uploader.upload("a.txt", b"Alpha file: the lighthouse keeper logs every passing ship.\n", "text/plain")
    uploader.upload("a.txt", b"Beta file: the orchard yields apples and pears in autumn.\n", "text/plain")
    uploader.upload(control, b"control characters only\n", "text/plain")
    uploader.upload("big.txt", b"x" * (1024 * 1024 + 1), "text/plain")
    uploader.upload(overlong, b"A note with a very long file name about tides.\n", "text/plain")
    at.run()
    at.button[0].click().run()  # "Ingest uploaded files"
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 2, errors
    assert md_escape(repr(control)) in errors[0] and "not a usable file name" in errors[0]
    assert "big\\.txt" in errors[1] and "MAX\\_UPLOAD\\_MB=1" in errors[1]
    job = jobs().get(at.session_state["ingest_job"])
    assert job.wait(300) and job.state == "done", job.error
    sources = sorted(r.source for r in job.summary.results)
    assert [r.status for r in job.summary.results] == ["added"] * 3
    assert sources[:2] == ["a (2).txt", "a.txt"]
    short = sources[2]
    assert short.startswith("harbour-") and short.endswith(".txt") and len(short.encode()) <= MAX_NAME_BYTES
    from workbench.store.chroma import open_store

    store = open_store(ui.settings)
    texts_by_source = {d.source: store.document_chunks("uitest", d.document_id)[0].text for d in store.documents("uitest")}
    assert "lighthouse" in texts_by_source["a.txt"] and "orchard" in texts_by_source["a (2).txt"]
    staged = ui.tmp / "uploads"
    assert staged.is_dir() and not any(staged.glob("batch-*"))  # staged there, removed when the job ended


# --- imported archives: source_path is not trusted -------------------------------------------------
def test_reingest_refuses_a_source_path_outside_the_allowed_folders(ui, opened):  # noqa: F811 (the ui fixture)
    """An archive whose records say source_path=/etc/hostname imports (it is a valid archive),
    but "Re-ingest from file" refuses it with the reason and never opens the file."""
    from ui import md_escape

    store = ingest(ui)
    archive = archive_pointing_at(store, "uitest", ui.tmp, OUTSIDE)
    at = open_app("views/library.py")
    at.file_uploader(key="coll-import-file").upload("evil-archive.zip", archive.read_bytes(), "application/zip")
    at.text_input(key="coll-import-name").set_value("imported").run()
    at.button(key="coll-import").click().run()
    assert not at.exception and md_escape("Imported imported:") in texts(at.success), texts(at.error)
    doc = next(d for d in store.documents("imported") if d.source == "bread.txt")
    assert doc.source_path == str(OUTSIDE)

    at.switch_page("views/documents.py")
    at.run()
    assert at.selectbox(key="docs-collection").value == "imported"
    next(s for s in at.selectbox if s.label == "Open document").set_value(doc.document_id).run()
    opened.clear()
    at.button(key="docs-reingest").click().run()
    assert not at.exception, at.exception
    warning = texts(at.warning)
    assert "outside the knowledge base and the upload area" in warning and md_escape(str(OUTSIDE)) in warning
    assert str(OUTSIDE) not in opened and not any(p.endswith("hostname") for p in opened)
    assert jobs().jobs() == []  # nothing was started, so nothing reads it later either
    assert store.document("imported", doc.document_id) == doc
    OUTSIDE.read_bytes()
    assert str(OUTSIDE) in opened  # the spy does see a read


def test_core_stored_source_confines_before_looking(ui, tmp_path):  # noqa: F811 (the ui fixture)
    from workbench.errors import DocumentError
    from workbench.ingest.uploads import stored_source

    store = ingest(ui)
    doc = next(d for d in store.documents("uitest") if d.source == "bread.txt")
    assert stored_source(doc, ui.settings).path == (ui.docs / "bread.txt").resolve()
    from dataclasses import replace

    link = ui.docs / "sneaky.txt"
    link.symlink_to(OUTSIDE)  # inside the knowledge base by name, outside once resolved
    climb = Path(str(ui.docs) + "/.." * len(ui.docs.parts)) / OUTSIDE.relative_to("/")  # .../docs/../../etc/hostname
    for path in (OUTSIDE, link, climb):
        with pytest.raises(DocumentError, match="outside the knowledge base"):
            stored_source(replace(doc, source_path=str(path)), ui.settings)
    with pytest.raises(DocumentError, match="no original file"):
        stored_source(replace(doc, source_path=""), ui.settings)


def test_import_stages_the_archive_and_removes_it(ui, tmp_path):  # noqa: F811 (the ui fixture)
    from workbench.ingest.uploads import import_uploaded_archive, upload_root
    from workbench.store.archive import ArchiveError, export_collection

    settings = make_settings(ui.tmp, collection_name="uitest", knowledge_base_path=ui.docs, upload_path=tmp_path / "up")
    store = ingest(ui)
    data = export_collection(store, "uitest", tmp_path / "x.zip").read_bytes()
    info = import_uploaded_archive(store, "../../x.zip", data, settings, name="copy")
    assert (info.name, info.documents) == ("copy", len(DOCS))
    with pytest.raises(ArchiveError, match=r"junk\.zip: not a collection archive"):
        import_uploaded_archive(store, "junk.zip", b"nope", settings, name="junk")
    assert list(upload_root(settings).iterdir()) == []  # staged and deleted both times


# --- rebuild and the token window, through the core ------------------------------------------------
def test_start_rebuild_reports_invalid_settings_as_config_errors(ui):  # noqa: F811 (the ui fixture)
    from workbench.errors import ConfigError, StoreError
    from workbench.ingest.rebuild import start_rebuild

    store = ingest(ui)
    registry = jobs()
    with pytest.raises(ConfigError, match=r"invalid rebuild settings: chunk_size: .*greater than or equal to 16"):
        start_rebuild(registry, store, "uitest", ui.settings, ui.embedder, model=ui.settings.embedding_model, chunk_size=8, chunk_overlap=0)
    with pytest.raises(ConfigError, match=r"CHUNK_OVERLAP \(64\) must be smaller than CHUNK_SIZE \(32\)"):
        start_rebuild(registry, store, "uitest", ui.settings, ui.embedder, model=ui.settings.embedding_model, chunk_size=32, chunk_overlap=64)
    with pytest.raises(ConfigError, match=r"chunk_size: 300 tokens do not fit"):
        start_rebuild(registry, store, "uitest", ui.settings, ui.embedder, model=ui.settings.embedding_model, chunk_size=300, chunk_overlap=0)
    with pytest.raises(StoreError, match="does not exist"):
        start_rebuild(registry, store, "nope", ui.settings, ui.embedder, model=ui.settings.embedding_model, chunk_size=64, chunk_overlap=0)
    assert registry.jobs() == []


def test_rebuild_error_is_shown_on_the_page(ui):  # noqa: F811 (the ui fixture)
    ingest(ui)
    at = open_app("views/library.py")
    at.number_input(key="coll-rb-size").set_value(32).run()
    at.number_input(key="coll-rb-overlap").set_value(64).run()
    at.button(key="coll-rb-start").click().run()
    assert not at.exception
    assert "invalid rebuild settings" in texts(at.error) and "CHUNK\\_OVERLAP \\(64\\)" in texts(at.error)
    assert jobs().jobs() == []


def test_rebuild_never_reads_a_source_path_outside_the_allowed_folders(ui, tmp_path, opened):  # noqa: F811
    """A rebuild re-chunks a document from its file when the file still has the stored hash. An
    archive can name any file and its hash: the rebuild must not read it into the collection
    (where search shows it and export carries it away); it re-chunks the stored texts."""
    from workbench.ingest import rebuild
    from workbench.ingest.loaders import file_hash
    from workbench.store.archive import import_collection

    secret = tmp_path / "outside" / "vault.txt"
    secret.parent.mkdir()
    secret.write_text("The vault combination is 4417-2209, kept by the night porter.\n", encoding="utf-8")
    store = ingest(ui)
    import_collection(store, archive_pointing_at(store, "uitest", ui.tmp, secret, doc_hash=file_hash(secret)), name="imported")
    before = {d.source: d for d in store.documents("imported")}
    opened.clear()
    rebuild.rebuild(store, "imported", rebuild.settings_for_rebuild(ui.settings, chunk_size=32, chunk_overlap=0), embedder=ui.embedder)
    assert str(secret) not in opened
    texts_after = store.get_collection("imported").get(include=["documents"])["documents"]
    assert texts_after and not any("vault" in t for t in texts_after)
    assert {d.source for d in store.documents("imported")} == set(before)


def test_chunk_windows_flag_the_chunks_at_the_limit(ui):  # noqa: F811 (the ui fixture)
    from workbench.ingest.rebuild import chunk_windows

    words = " ".join(["harbor", "ship", "sea", "wind", "light", "stone", "rock", "tide"] * 150)
    write_docs(ui.docs, {"long.txt": words})
    settings = make_settings(ui.tmp, collection_name="uitest", knowledge_base_path=ui.docs, chunk_size=254, chunk_overlap=0)
    store = ingest(ui, settings=settings)
    doc = next(d for d in store.documents("uitest") if d.source == "long.txt")
    chunks = store.document_chunks("uitest", doc.document_id)
    windows = chunk_windows(store, "uitest", doc.document_id, ui.embedder)
    assert set(windows) == {c.chunk_id for c in chunks}
    for c in chunks:
        w = windows[c.chunk_id]
        assert w.tokens == c.token_count + w.header_tokens
        assert w.at_limit == (w.tokens + 2 >= ui.embedder.max_seq_length)
    assert any(w.at_limit for w in windows.values()) and chunk_windows(store, "uitest", "no-such-doc", ui.embedder) == {}


# --- Document QA: the page image of an ingested document, and the other candidates ---------------------
def test_document_qa_reads_no_file_outside_and_escapes_candidates(ui, random_qa_dir, monkeypatch, opened):  # noqa: F811
    """An ingested document whose source_path is outside the allowed folders is still answered
    from its chunks, but its page image is refused with the reason and the file is never opened;
    the other candidates (spans of hostile text) are HTML blocks markdown leaves alone."""
    import ui as ui_module
    from workbench.store.archive import import_collection

    monkeypatch.setenv("QA_MODEL", str(random_qa_dir))
    monkeypatch.setenv("QA_MIN_SCORE", "0")
    ui_module.get_settings.clear()
    store = ingest(ui)
    import_collection(store, archive_pointing_at(store, "uitest", ui.tmp, OUTSIDE), name="imported")
    evil = next(d for d in store.documents("imported") if d.source == "evil.md")
    at = open_app("views/document_qa.py")
    at.radio[0].set_value("Ingested document").run()
    at.selectbox(key="qa-collection").set_value("imported").run()
    next(s for s in at.selectbox if s.label == "Document").set_value(evil).run()
    opened.clear()
    at.text_input[0].set_value("What does the note say about volcanoes?").run()
    assert not at.exception and not at.error, (at.exception, texts(at.error))
    captions = texts(at.caption)
    assert "Page image unavailable" in captions and "outside the knowledge base" in captions
    assert not any(p.endswith("hostname") for p in opened)
    candidates = [m.value for m in at.markdown if m.value.startswith("<div><code>")]
    assert candidates, [m.value for m in at.markdown]
    for block in candidates:
        assert "\n" not in block and "<script" not in block and "<b>" not in block
    assert all("<script" not in m.value for m in at.markdown)
