"""A citation opens its source page (issue 14 part 3): ``workbench.ingest.source_view`` on real
files ingested into a real embedded Chroma with the real model — a text-layer PDF written with
fpdf2 (the cited sentence located with pdfium's text search, page image cached on disk), a PNG
and a scanned PDF read by the real EasyOCR (slow), a markdown file (text with the span), a
deleted file and a path outside the allowed folders (stored text with a note, file never
opened) — and the Source page (``views/source.py``) in AppTest through its deep link and from
a Search hit."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs

import pytest

from tests.conftest import forbid_ocr, make_settings
from tests.test_ui import ingest, open_app, texts, ui  # noqa: F401  (ui is a fixture)
from workbench.errors import DocumentError
from workbench.ingest import loaders
from workbench.ingest import source_view as sv
from workbench.ingest.source_view import source_view

SENTENCE = (
    "The quartz lighthouse of Vellmar flashes green every eleven seconds across the northern fjord, "
    "guiding the herring boats home before dawn."
)
FILLER = "Harbour records list the tides, the cargo and the weather of each day in plain words. "
NOTES = (
    "# Field notes\n\nThe first paragraph is about apples and pears in the orchard.\n\n"
    "## Crossing\n\nThe zebra crossing near the abbey has <b>seven</b> stripes & a *lamp*.\n"
)


def write_pdf(path: Path) -> Path:
    """Two A4 pages of Helvetica text; the SENTENCE is on page 2 between filler paragraphs."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    pdf.add_page()
    pdf.multi_cell(0, 7, "Page one is about bread, ovens and flour. " * 12)
    pdf.add_page()
    pdf.multi_cell(0, 7, FILLER * 14)
    pdf.ln(8)
    pdf.multi_cell(0, 7, SENTENCE)
    pdf.ln(8)
    pdf.multi_cell(0, 7, FILLER * 14)
    pdf.output(str(path))
    return path


def ingest_into(settings, embedder, paths, collection="sources"):
    from workbench.ingest.pipeline import ingest_paths
    from workbench.store.chroma import open_store

    store = open_store(settings)
    summary = ingest_paths(paths, settings=settings, store=store, embedder=embedder, collection=collection)
    assert not summary.failures, summary.failures
    return store


@pytest.fixture(scope="module")
def kb(tmp_path_factory, embedder):
    """report.pdf, notes.md and gone.txt (deleted after ingest) in the knowledge base, and
    secret.txt ingested from outside it; one collection ``sources``."""
    root = tmp_path_factory.mktemp("source-view")
    settings = make_settings(root)
    folder = settings.knowledge_base_path
    folder.mkdir(parents=True)
    write_pdf(folder / "report.pdf")
    (folder / "notes.md").write_text(NOTES, encoding="utf-8")
    (folder / "gone.txt").write_text("This file about moonlit gardens will be deleted after ingest.\n", encoding="utf-8")
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("A secret paragraph about the vault combination.\n", encoding="utf-8")
    store = ingest_into(settings, embedder, [folder, outside / "secret.txt"])
    (folder / "gone.txt").unlink()
    docs = {d.source: d for d in store.documents("sources")}
    return SimpleNamespace(settings=settings, store=store, docs=docs, root=root)


def chunk_with(kb, source: str, needle: str):
    doc = kb.docs[source]
    chunk = next(c for c in kb.store.document_chunks("sources", doc.document_id) if needle in c.text)
    return doc, chunk


def pdfium_word_box(path: Path, page: int, word: str, size: tuple[int, int]):
    """pdfium's own box of ``word`` on ``page`` in pixels of an image of ``size``, computed the
    plain way (points scaled, y flipped): the reference the highlight must cover."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(path))
    try:
        p = pdf[page - 1]
        width, height = p.get_size()
        textpage = p.get_textpage()
        index, count = textpage.search(word, match_case=True).get_next()
        boxes = [textpage.get_charbox(i) for i in range(index, index + count)]
    finally:
        pdf.close()
    sx, sy = size[0] / width, size[1] / height
    left, right = min(b[0] for b in boxes), max(b[2] for b in boxes)
    bottom, top = min(b[1] for b in boxes), max(b[3] for b in boxes)
    return left * sx, (height - top) * sy, right * sx, (height - bottom) * sy


def inside(box, rect, slack: float = 3.0) -> bool:
    return rect[0] - slack <= box[0] and rect[1] - slack <= box[1] and box[2] <= rect[2] + slack and box[3] <= rect[3] + slack


# --- core -------------------------------------------------------------------------------------
def test_pdf_chunk_is_highlighted_on_its_rendered_page(kb, monkeypatch):
    doc, chunk = chunk_with(kb, "report.pdf", "Vellmar")
    assert chunk.page == 2 and SENTENCE in " ".join(chunk.text.split())
    view = source_view(kb.settings, kb.store, "sources", doc.document_id, chunk.chunk_id)
    assert (view.kind, view.page, view.exact, view.note) == ("pdf", 2, True, "")
    assert view.image.size == (1654, 2339)  # A4 at OCR_DPI=200
    assert view.highlights and all(0 <= r[0] < r[2] <= 1654 and 0 <= r[1] < r[3] <= 2339 for r in view.highlights)
    for word in ("Vellmar", "dawn"):  # first and last line of the sentence
        box = pdfium_word_box(Path(doc.source_path), 2, word, view.image.size)
        assert any(inside(box, r) for r in view.highlights), (word, box, view.highlights)
    if chunk.start > 0:  # the chunk starts below page 2's first line, which is not highlighted
        first_line = pdfium_word_box(Path(doc.source_path), 2, "Harbour", view.image.size)
        assert not any(inside(first_line, r) for r in view.highlights)
    assert view.previous_chunk is not None and view.previous_chunk.page == 1
    assert view.chunk == chunk and view.document == doc

    assert list((kb.settings.ocr_cache_dir / "pages").glob("*.png"))  # OCR_CACHE_DIR/pages/<sha256>.png

    def no_render(*args, **kwargs):
        raise AssertionError("the page was rendered again")

    monkeypatch.setattr(loaders, "render_pdf_page", no_render)
    again = source_view(kb.settings, kb.store, "sources", doc.document_id, str(chunk.chunk_index))
    assert again.cached and again.highlights == view.highlights and again.image.tobytes() == view.image.tobytes()


def test_pdf_first_page_and_navigation(kb):
    doc = kb.docs["report.pdf"]
    chunks = kb.store.document_chunks("sources", doc.document_id)
    view = source_view(kb.settings, kb.store, "sources", doc.document_id, chunks[0].chunk_id)
    assert view.page == 1 and view.previous_chunk is None and view.next_chunk.page == 2
    assert view.exact and view.highlights
    assert max(r[3] for r in view.highlights) < 2339 / 2  # page 1's text is in its upper half


def test_pdf_falls_back_to_the_chunk_start_and_end(kb):
    """A chunk whose middle no longer matches the page (here: words inserted) is located by its
    first and last ANCHOR_CHARS characters: the highlight spans from one to the other."""
    doc, chunk = chunk_with(kb, "report.pdf", "Vellmar")
    changed = replace(chunk, text=chunk.text.replace("flashes green", "flashes a bright green"))
    layer = loaders._pdf_text_layers(Path(doc.source_path), only=1)[1]
    rects, exact = sv._locate_in_pdf(Path(doc.source_path), changed, layer, (1654, 2339))
    full, _ = sv._locate_in_pdf(Path(doc.source_path), chunk, layer, (1654, 2339))
    assert not exact and rects == full
    missing = replace(chunk, text="Nothing like this sentence is printed anywhere on the page at all, not one word of it.")
    assert sv._locate_in_pdf(Path(doc.source_path), missing, layer, (1654, 2339)) == ([], False)


def test_markdown_chunk_is_marked_in_the_page_text(kb):
    doc, chunk = chunk_with(kb, "notes.md", "zebra")
    view = source_view(kb.settings, kb.store, "sources", doc.document_id, chunk.chunk_id)
    assert (view.kind, view.exact, view.note, view.image) == ("text", True, "", None)
    assert view.text == NOTES and view.text[view.start : view.end] == chunk.text
    assert view.text_offset == 0 and view.page_chars == len(NOTES)


def test_long_text_is_windowed_around_the_chunk(tmp_path, embedder, monkeypatch):
    monkeypatch.setattr(sv, "CONTEXT_CHARS", 100)
    settings = make_settings(tmp_path)
    settings.knowledge_base_path.mkdir(parents=True)
    body = "\n\n".join(f"Paragraph {i} talks about item number {i} in the long list of things." for i in range(60))
    (settings.knowledge_base_path / "long.txt").write_text(body, encoding="utf-8")
    store = ingest_into(settings, embedder, [settings.knowledge_base_path])
    doc = store.documents("sources")[0]
    chunks = store.document_chunks("sources", doc.document_id)
    assert len(chunks) > 2
    chunk = chunks[len(chunks) // 2]
    view = source_view(settings, store, "sources", doc.document_id, chunk.chunk_id)
    assert view.kind == "text" and view.text[view.start : view.end] == chunk.text
    assert view.text_offset == chunk.start - 100 and len(view.text) == len(chunk.text) + 200
    assert view.page_chars == len(body)


def test_changed_file_is_said_and_the_span_found_again(tmp_path, embedder):
    settings = make_settings(tmp_path)
    settings.knowledge_base_path.mkdir(parents=True)
    path = settings.knowledge_base_path / "moved.txt"
    path.write_text("Alpha paragraph about the heron.\n", encoding="utf-8")
    store = ingest_into(settings, embedder, [path])
    doc = store.documents("sources")[0]
    chunk = store.document_chunks("sources", doc.document_id)[0]
    path.write_text("A new first line.\nAlpha paragraph about the heron.\n", encoding="utf-8")
    view = source_view(settings, store, "sources", doc.document_id, chunk.chunk_id)
    assert view.kind == "text" and not view.exact and "changed since it was ingested" in view.note
    assert view.text[view.start : view.end] == chunk.text
    path.write_text("Nothing of the old text is left.\n", encoding="utf-8")
    view = source_view(settings, store, "sources", doc.document_id, chunk.chunk_id)
    assert view.kind == "chunk" and "no longer on page 1" in view.note and view.chunk.text == chunk.text


def test_deleted_file_shows_the_stored_chunk_with_a_note(kb):
    doc, chunk = chunk_with(kb, "gone.txt", "moonlit")
    view = source_view(kb.settings, kb.store, "sources", doc.document_id, chunk.chunk_id)
    assert view.kind == "chunk" and view.image is None and not view.highlights
    assert "the original file is gone" in view.note and "Showing the chunk's text as stored" in view.note
    assert "moonlit gardens" in view.chunk.text


@pytest.fixture
def opened(monkeypatch):
    """Every path opened through io.open (builtins.open and pathlib use it) during the test."""
    seen: list[str] = []
    real = io.open

    def spy(file, *args, **kwargs):
        if isinstance(file, (str, Path)):
            seen.append(str(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", spy)
    monkeypatch.setattr("builtins.open", spy)
    return seen


def test_source_outside_the_allowed_folders_is_refused_unopened(kb, opened, monkeypatch):
    doc, chunk = chunk_with(kb, "secret.txt", "vault")
    assert Path(doc.source_path).parent == (kb.root / "outside").resolve()
    looked: list[str] = []
    real_is_file = Path.is_file
    monkeypatch.setattr(Path, "is_file", lambda self: looked.append(str(self)) or real_is_file(self))
    view = source_view(kb.settings, kb.store, "sources", doc.document_id, chunk.chunk_id)
    assert view.kind == "chunk" and "outside the knowledge base and the upload area" in view.note
    assert "vault combination" in view.chunk.text
    assert not any("secret" in p for p in opened + looked), opened + looked
    Path(doc.source_path).read_text()
    assert any(p.endswith("secret.txt") for p in opened)  # the spy does see a read


def test_unknown_document_or_chunk_raises(kb):
    doc = kb.docs["notes.md"]
    with pytest.raises(DocumentError, match="is not in collection"):
        source_view(kb.settings, kb.store, "sources", "no-such-document", "0")
    with pytest.raises(DocumentError, match="no longer in collection"):
        source_view(kb.settings, kb.store, "sources", doc.document_id, "no-such-chunk")


@pytest.mark.slow
def test_ocr_image_and_scanned_pdf_show_their_ocr_boxes(tmp_path, embedder, monkeypatch):
    """A PNG, a copy of it lying sideways and a one-page scanned PDF of it, read by the real
    OCR engine (Tesseract where installed, else EasyOCR) at ingest: the view shows the page image (the sideways one turned upright, as it
    was read), every OCR line and the chunk's lines highlighted on it, from the OCR cache (the
    reader is not called again), the scanned page rendered once."""
    from fpdf import FPDF
    from PIL import Image, ImageDraw, ImageFont

    settings = make_settings(tmp_path, ocr_dpi=100)
    folder = settings.knowledge_base_path
    folder.mkdir(parents=True)
    image = Image.new("RGB", (900, 300), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=40)
    for i, line in enumerate(["The copper gate closes at nine", "Bring your blue permit card"]):
        draw.text((60, 60 + i * 130), line, fill="black", font=font)
    image.save(folder / "notice.png")
    image.transpose(Image.Transpose.ROTATE_270).save(folder / "notice-sideways.png")
    pdf = FPDF()
    pdf.add_page()
    pdf.image(str(folder / "notice.png"), x=10, y=20, w=190)
    pdf.output(str(folder / "scan.pdf"))
    store = ingest_into(settings, embedder, [folder])

    forbid_ocr(monkeypatch)
    for name, size, rotation in (("notice.png", (900, 300), 0), ("notice-sideways.png", (900, 300), 90), ("scan.pdf", (827, 1170), 0)):
        doc = next(d for d in store.documents("sources") if d.source == name)
        chunk = store.document_chunks("sources", doc.document_id)[0]
        assert "copper" in chunk.text.lower()
        view = source_view(settings, store, "sources", doc.document_id, chunk.chunk_id)
        assert (view.kind, view.exact, view.note, view.image.size, view.rotation) == ("ocr", True, "", size, rotation)
        assert view.ocr_boxes and len(view.highlights) == len(view.ocr_boxes)  # one chunk holds the page
        top = min(r[1] for r in view.highlights)
        assert top < size[1] / 2 and all(0 <= r[0] < r[2] <= size[0] for r in view.highlights)
    monkeypatch.setattr(loaders, "render_pdf_page", lambda *a, **k: (_ for _ in ()).throw(AssertionError("rendered again")))
    assert source_view(settings, store, "sources", doc.document_id, chunk.chunk_id).cached


# --- the Source page ----------------------------------------------------------------------------
def test_source_page_deep_link_shows_text_and_pdf_page(ui):  # noqa: F811 (the ui fixture)
    write_pdf(ui.docs / "report.pdf")
    store = ingest(ui)
    evil = next(d for d in store.documents("uitest") if d.source == "evil.md")
    chunk = store.document_chunks("uitest", evil.document_id)[0]
    at = open_app("views/source.py")
    assert "Source" in at.title[0].value and "Open a source page" in texts(at.info)
    at.query_params.update(collection="uitest", document=evil.document_id, chunk=chunk.chunk_id)
    at.run()
    assert not at.exception, at.exception
    assert "evil\\.md" in texts(at.subheader) and "page text" in texts(at.caption)
    body = texts(at.get_by_key("source-text").markdown)
    assert '<mark class="wb-span">' in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<script>" not in body and "<b>" not in body and "&#36;x^2&#36;" in body
    assert "scrollIntoView" in texts(at.get("html"))

    report = next(d for d in store.documents("uitest") if d.source == "report.pdf")
    cited = next(c for c in store.document_chunks("uitest", report.document_id) if "Vellmar" in c.text)
    at.query_params.update(collection="uitest", document=report.document_id, chunk=cited.chunk_id)
    at.run()
    assert not at.exception, at.exception
    assert "PDF page" in texts(at.caption) and len(at.image) == 1
    assert "Page 2: the chunk in" in texts(at.caption) and "scrollBy" in texts(at.get("html"))
    at.button(key="source-previous").click().run()
    assert not at.exception and "page 1 ·" in texts(at.caption)

    at.switch_page("views/documents.py")
    at.run()
    at.switch_page("views/source.py")
    at.run()  # no link in the URL: the last source opened in this session
    assert not at.exception and "report\\.pdf" in texts(at.subheader)


def test_search_hits_chunks_and_citations_link_to_their_source_page(ui):  # noqa: F811 (the ui fixture)
    store = ingest(ui)
    at = open_app("views/search.py")
    at.text_input(key="search-query").set_value("volcano Etna").run()
    assert not at.exception
    links = [link for link in at.get("page_link") if link.value == "Open source page"]
    assert links and len(links) == len([link for link in at.get("page_link") if link.value == "Open in Documents"])
    params = parse_qs(links[0].proto.query_string)
    volcano = next(d for d in store.documents("uitest") if d.source == "volcanoes.md")
    assert params["collection"] == ["uitest"] and params["document"] == [volcano.document_id]
    assert params["chunk"][0] in {c.chunk_id for c in store.document_chunks("uitest", volcano.document_id)}
    assert links[0].proto.page.endswith("source")

    at.switch_page("views/documents.py")
    at.run()
    next(s for s in at.selectbox if s.label == "Open document").set_value(volcano.document_id).run()
    links = [link for link in at.get("page_link") if link.value == "Open source page"]
    assert len(links) == len(store.document_chunks("uitest", volcano.document_id))

    at.switch_page("views/chat.py")
    at.run()
    at.toggle(key="chat-retrieval-only").set_value(True).run()
    at.chat_input[0].set_value("Which volcano in Sicily is active?").run()
    assert not at.exception, at.exception
    links = [link for link in at.get("page_link") if link.value == "Open source page"]
    assert links and parse_qs(links[0].proto.query_string)["collection"] == ["uitest"]
