"""E-mail attachments become documents of their own (issue 14 part 4): .eml files written with
the stdlib ``email`` package (a text note, a CSV, a PDF written with fpdf2, an .exe, a forwarded
.eml with its own attachment, a broken PDF), ingested through the real pipeline into a real
embedded Chroma with the real model. Each supported attachment is found by search as
``"<e-mail>/<name>"``, is unchanged when the e-mail is, replaced or pruned when the e-mail
changes or goes, fails alone with a message naming the e-mail and the attachment, keeps its
bytes in the attachment area for the source page, and is listed and deleted with its e-mail on
the Documents page."""

from __future__ import annotations

import shutil
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.conftest import make_settings
from tests.test_source_view import write_pdf
from tests.test_ui import open_app, texts, ui  # noqa: F401  (ui is a fixture)
from workbench.ingest import attachments
from workbench.ingest.attachments import attachment_root
from workbench.ingest.pipeline import SourceFile, ingest_paths
from workbench.ingest.source_view import source_view
from workbench.ingest.uploads import confine, stored_source
from workbench.retrieval import delete_collection
from workbench.retrieval.search import search
from workbench.store import admin
from workbench.store.chroma import open_store

NOTES = "Packing list for the glacier trek: crampons, an ice axe and two thermos flasks of cocoa.\n"
NOTES_2 = "Revised packing list: snowshoes replace the crampons; the thermos of cocoa stays.\n"
FARES = "Route;Fare;Note\nOslo-Bergen;89 EUR;scenic mountain railway\nBergen-Flam;45 EUR;steep descent by ferry link\n"
INNER = b"The inner note of the forwarded message mentions a lighthouse of amber glass."
SENTENCE = (
    "The quartz lighthouse of Vellmar flashes green every eleven seconds across the northern fjord, "
    "guiding the herring boats home before dawn."
)
EMAIL = "trip.eml"
SUPPORTED = ["notes.txt", "fares.csv", "brochure.pdf", "forwarded.eml", "broken.pdf"]


def message(subject: str, body: str) -> EmailMessage:
    m = EmailMessage()
    m["From"] = "Ingrid Dahl <ingrid@example.org>"
    m["To"] = "Trek team <team@example.org>"
    m["Date"] = "Mon, 02 Mar 2026 08:00:00 +0000"
    m["Subject"] = subject
    m.set_content(body)
    return m


def forwarded() -> EmailMessage:
    inner = message("Old thread", "Forwarded body about the harbour.\n")
    inner.add_attachment(INNER, maintype="text", subtype="plain", filename="inner.txt")
    return inner


def write_trip(path: Path, tmp: Path, *, notes: str = NOTES, fares: bool = True) -> Path:
    """``trip.eml``: body + notes.txt, fares.csv, brochure.pdf, setup.exe, forwarded.eml (with
    inner.txt), broken.pdf."""
    m = message("Glacier trek plans", "Hi team,\n\nThe glacier trek starts from the Nigard hut on Saturday at six.\n")
    m.add_attachment(notes.encode(), maintype="text", subtype="plain", filename="notes.txt")
    if fares:
        m.add_attachment(FARES.encode(), maintype="text", subtype="csv", filename="fares.csv")
    pdf = tmp / "brochure-src.pdf"  # written once: fpdf2 stamps the time into each file
    m.add_attachment((pdf if pdf.exists() else write_pdf(pdf)).read_bytes(), maintype="application", subtype="pdf", filename="brochure.pdf")
    m.add_attachment(b"MZ\x90\x00 not a program", maintype="application", subtype="octet-stream", filename="setup.exe")
    m.add_attachment(forwarded(), filename="forwarded.eml")  # message/rfc822
    m.add_attachment(b"%PDF-1.4\n garbage that is no PDF at all", maintype="application", subtype="pdf", filename="broken.pdf")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(m.as_bytes())
    return path


def by_source(summary) -> dict[str, object]:
    return {r.source: r for r in summary.results}


def area_files(settings) -> list[Path]:
    root = attachment_root(settings)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


@pytest.fixture
def kb(tmp_path):
    folder = tmp_path / "kb"
    write_trip(folder / EMAIL, tmp_path)
    return folder


def test_attachments_are_documents_found_by_search_and_fail_alone(kb, settings, store, embedder, tmp_path):
    events = []
    summary = ingest_paths([kb], settings=settings, store=store, embedder=embedder, prune=True, progress=events.append)
    results = by_source(summary)
    assert results[EMAIL].status == "added"
    for name in ["notes.txt", "fares.csv", "brochure.pdf", "forwarded.eml"]:
        assert results[f"{EMAIL}/{name}"].status == "added", results[f"{EMAIL}/{name}"]
    broken = results[f"{EMAIL}/broken.pdf"]
    assert broken.status == "failed" and broken.message.startswith(f"{EMAIL}: attachment broken.pdf: "), broken.message
    assert len(summary.failures) == 1
    # unsupported (.exe) and one level deep only (the forwarded message's inner.txt): not documents
    assert set(results) == {EMAIL} | {f"{EMAIL}/{n}" for n in SUPPORTED}
    docs = {d.source: d for d in store.documents(settings.collection_name)}
    assert set(docs) == {EMAIL} | {f"{EMAIL}/{n}" for n in SUPPORTED if n != "broken.pdf"}
    email_text = " ".join(c.text for c in store.document_chunks(settings.collection_name, docs[EMAIL].document_id))
    assert "Attachments: notes.txt, fares.csv, brochure.pdf, setup.exe, forwarded.eml, broken.pdf" in email_text
    inner = " ".join(c.text for c in store.document_chunks(settings.collection_name, docs[f"{EMAIL}/forwarded.eml"].document_id))
    assert "Attachments: inner.txt" in inner and "amber glass" not in inner
    # progress counted the attachments as files
    done = events[-1]
    assert done.kind == "done" and done.files_total == done.files_done == 1 + len(SUPPORTED)
    # searchable as their own documents, by their source
    for query, source in [
        ("what to pack for the glacier trek: crampons and ice axe", f"{EMAIL}/notes.txt"),
        ("train fare from Oslo to Bergen", f"{EMAIL}/fares.csv"),
        ("which lighthouse flashes green every eleven seconds", f"{EMAIL}/brochure.pdf"),
    ]:
        hit = search(query, settings=settings, store=store, embedder=embedder, top_k=3)[0]
        assert hit.source == source, (query, hit)
    # the bytes are kept in the attachment area, inside the roots that are read again
    root = attachment_root(settings)
    for name in ["notes.txt", "fares.csv", "brochure.pdf", "forwarded.eml"]:
        doc = docs[f"{EMAIL}/{name}"]
        path = confine(doc.source_path, settings)
        assert root in path.parents and path.name == name and doc.file_name == name
        assert stored_source(doc, settings) == SourceFile(path, doc.source)
    assert {p.name for p in area_files(settings)} == {"notes.txt", "fares.csv", "brochure.pdf", "forwarded.eml"}  # broken.pdf released
    # the citation of a PDF attachment opens its page
    pdf = docs[f"{EMAIL}/brochure.pdf"]
    chunk = next(c for c in store.document_chunks(settings.collection_name, pdf.document_id) if "quartz lighthouse" in c.text)
    view = source_view(settings, store, settings.collection_name, pdf.document_id, chunk.chunk_id)
    assert view.kind == "pdf" and view.page == 2 and view.highlights and not view.note, view.note
    notes = docs[f"{EMAIL}/notes.txt"]
    view = source_view(settings, store, settings.collection_name, notes.document_id, store.document_chunks(settings.collection_name, notes.document_id)[0].chunk_id)
    assert view.kind == "text" and "ice axe" in view.text[view.start : view.end]


def test_unchanged_email_leaves_attachments_changed_replaces_and_prunes(kb, settings, store, embedder, tmp_path):
    name = settings.collection_name
    ingest_paths([kb], settings=settings, store=store, embedder=embedder, prune=True)
    before = {d.source: d for d in store.documents(name)}
    files_before = area_files(settings)

    again = by_source(ingest_paths([kb], settings=settings, store=store, embedder=embedder, prune=True))
    assert {s: r.status for s, r in again.items()} == {
        EMAIL: "unchanged", **{f"{EMAIL}/{n}": "unchanged" for n in SUPPORTED if n != "broken.pdf"}, f"{EMAIL}/broken.pdf": "failed",
    }
    assert {d.source: d for d in store.documents(name)} == before
    assert area_files(settings) == files_before

    write_trip(kb / EMAIL, tmp_path, notes=NOTES_2, fares=False)  # notes.txt changed, fares.csv gone
    changed = by_source(ingest_paths([kb], settings=settings, store=store, embedder=embedder, prune=True))
    assert changed[EMAIL].status == "replaced"
    assert changed[f"{EMAIL}/notes.txt"].status == "replaced"
    assert changed[f"{EMAIL}/brochure.pdf"].status == "unchanged"
    assert changed[f"{EMAIL}/fares.csv"].status == "pruned" and "no longer attached to trip.eml" in changed[f"{EMAIL}/fares.csv"].message
    after = {d.source: d for d in store.documents(name)}
    assert f"{EMAIL}/fares.csv" not in after and after[f"{EMAIL}/notes.txt"].document_id == before[f"{EMAIL}/notes.txt"].document_id
    hit = search("snowshoes replace the crampons", settings=settings, store=store, embedder=embedder, top_k=1)[0]
    assert hit.source == f"{EMAIL}/notes.txt" and "snowshoes" in hit.text
    names = [p.name for p in area_files(settings)]
    assert sorted(names) == ["brochure.pdf", "forwarded.eml", "notes.txt"]  # old notes.txt and fares.csv released
    assert not Path(before[f"{EMAIL}/notes.txt"].source_path).exists()

    (kb / EMAIL).unlink()
    gone = by_source(ingest_paths([kb], settings=settings, store=store, embedder=embedder, prune=True))
    assert {s: r.status for s, r in gone.items()} == {EMAIL: "pruned", **{f"{EMAIL}/{n}": "pruned" for n in ["notes.txt", "brochure.pdf", "forwarded.eml"]}}
    assert store.documents(name) == [] and area_files(settings) == []


def test_deleting_the_email_document_deletes_its_attachments(kb, settings, store, embedder):
    name = settings.collection_name
    ingest_paths([kb], settings=settings, store=store, embedder=embedder)
    (kb / "other.txt").write_text("An unrelated note about beekeeping and honey.\n", encoding="utf-8")
    ingest_paths([kb], settings=settings, store=store, embedder=embedder)
    docs = {d.source: d for d in store.documents(name)}
    # deleting an attachment alone releases its file, the e-mail stays
    attachments.delete_document(store, settings, name, docs[f"{EMAIL}/fares.csv"].document_id)
    assert not Path(docs[f"{EMAIL}/fares.csv"].source_path).exists() and EMAIL in {d.source for d in store.documents(name)}
    removed = attachments.delete_document(store, settings, name, docs[EMAIL].document_id)
    assert removed == sum(docs[s].chunks for s in docs if s.startswith(EMAIL) and s != f"{EMAIL}/fares.csv")
    assert [d.source for d in store.documents(name)] == ["other.txt"] and area_files(settings) == []
    # an attachment whose e-mail went another way (the store's own delete) is pruned by the next ingest
    ingest_paths([kb], settings=settings, store=store, embedder=embedder)
    email = next(d for d in store.documents(name) if d.source == EMAIL)
    admin.delete_document(store, name, email.document_id)
    (kb / EMAIL).rename(kb.parent / EMAIL)
    orphans = by_source(ingest_paths([kb], settings=settings, store=store, embedder=embedder))
    assert orphans[f"{EMAIL}/notes.txt"].status == "pruned" and "no longer in the collection" in orphans[f"{EMAIL}/notes.txt"].message
    assert [d.source for d in store.documents(name)] == ["other.txt"] and area_files(settings) == []


def test_a_copy_keeps_the_files_until_its_own_delete(kb, settings, store, embedder):
    name = settings.collection_name
    ingest_paths([kb], settings=settings, store=store, embedder=embedder)
    files = area_files(settings)
    admin.copy_collection(store, name, "copied")
    delete_collection(store, name)
    assert area_files(settings) == files  # the copy still names them
    doc = next(d for d in store.documents("copied") if d.source == f"{EMAIL}/notes.txt")
    assert stored_source(doc, settings).path.read_text() == NOTES
    delete_collection(store, "copied")
    assert area_files(settings) == []


def three_page_pdf(path: Path) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for n in range(3):
        pdf.add_page()
        pdf.multi_cell(0, 7, f"Survey page {n + 1} lists the tidal gauges of the outer harbour.")
    pdf.output(str(path))
    return path


def test_an_uploaded_email_keeps_its_attachments_and_caps_apply(tmp_path, embedder):
    settings = make_settings(tmp_path, max_pages=2)
    store = open_store(settings)
    m = message("Survey", "The survey is attached.\n")
    m.add_attachment(three_page_pdf(tmp_path / "s.pdf").read_bytes(), maintype="application", subtype="pdf", filename="survey.pdf")
    m.add_attachment(NOTES.encode(), maintype="text", subtype="plain", filename="notes.txt")
    batch = tmp_path / "upload-batch"
    batch.mkdir()
    (batch / "survey.eml").write_bytes(m.as_bytes())
    summary = ingest_paths([SourceFile(batch / "survey.eml", "survey.eml")], settings=settings, store=store, embedder=embedder)
    results = by_source(summary)
    assert results["survey.eml"].status == "added" and results["survey.eml/notes.txt"].status == "added"
    capped = results["survey.eml/survey.pdf"]
    assert capped.status == "failed" and capped.message.startswith("survey.eml: attachment survey.pdf: ") and "MAX_PAGES=2" in capped.message
    shutil.rmtree(batch)  # an upload's batch folder goes when its job ends; the attachment stays readable
    doc = next(d for d in store.documents(settings.collection_name) if d.source == "survey.eml/notes.txt")
    assert stored_source(doc, settings).path.read_text() == NOTES
    assert [p.name for p in area_files(settings)] == ["notes.txt"]


def test_an_attachment_above_max_file_mb_is_not_written(tmp_path):
    # An e-mail above MAX_FILE_MB fails whole before it is read; this is the attachment's own
    # check, for an e-mail read anyway (extract does not check the e-mail's size).
    settings = make_settings(tmp_path, max_file_mb=1)
    m = message("Big file", "The survey data is attached.\n")
    m.add_attachment(b"tidal gauge reading\n" * 60_000, maintype="text", subtype="plain", filename="survey.txt")  # 1.2 MB
    m.add_attachment(NOTES.encode(), maintype="text", subtype="plain", filename="notes.txt")
    (tmp_path / "big.eml").write_bytes(m.as_bytes())
    big, notes = attachments.extract(tmp_path / "big.eml", "mail/big.eml", settings)
    assert big.path is None and big.error == "mail/big.eml: attachment survey.txt: 1 MB is above MAX_FILE_MB=1"
    assert notes.source == "mail/big.eml/notes.txt" and notes.path.read_text() == NOTES and not notes.error
    assert [p.name for p in area_files(settings)] == ["notes.txt"]


def test_documents_page_lists_attachments_with_their_email_and_deletes_them_together(ui):  # noqa: F811
    write_trip(ui.docs / EMAIL, ui.tmp)
    store = open_store(ui.settings)
    summary = ingest_paths([ui.docs], settings=ui.settings, store=store, embedder=ui.embedder, collection="uitest")
    assert [r.source for r in summary.failures] == [f"{EMAIL}/broken.pdf"]
    at = open_app("views/documents.py")
    files = list(at.dataframe[0].value["file"])
    at_email = files.index(EMAIL)
    assert files[at_email : at_email + 5] == [EMAIL] + sorted(f"{EMAIL}/{n}" for n in SUPPORTED if n != "broken.pdf")
    email = next(d for d in store.documents("uitest") if d.source == EMAIL)
    next(s for s in at.selectbox if s.label == "Open document").set_value(email.document_id).run()
    assert "4 attachments ingested as documents" in texts(at.caption)
    at.checkbox(key=f"docs-del-sure-{email.document_id}").check().run()
    at.button(key="docs-del-doc").click().run()
    assert not at.exception
    assert "and its 4 attachments" in texts(at.success)
    assert not [d for d in store.documents("uitest") if d.source.startswith(EMAIL)]
    assert area_files(ui.settings) == []


def test_attachment_names_are_safe_file_names(tmp_path):
    from workbench.ingest.mail import MAX_NAME_BYTES, eml_attachments

    m = message("Names", "Odd names.\n")
    for name in ["../../etc/pass\x00wd.txt", "C:\\Users\\me\\tab\there.txt", "é" * 300 + ".txt", "\x07"]:
        m.add_attachment(b"some text", maintype="text", subtype="plain", filename=name)
    (tmp_path / "names.eml").write_bytes(m.as_bytes())
    names = [n for n, _ in eml_attachments(tmp_path / "names.eml")]
    assert names[:2] == ["passwd.txt", "tabhere.txt"]
    assert names[2].endswith(".txt") and set(names[2][:-4]) == {"é"} and len(names[2].encode()) <= MAX_NAME_BYTES
    assert names[3] == "attachment-4"
    for name in names:  # each can be written as a file
        (tmp_path / name).write_bytes(b"x")
