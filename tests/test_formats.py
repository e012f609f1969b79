"""The formats people have (.pptx .xlsx .csv .epub .eml .json .jsonl): real files written at test
time by the libraries themselves, read by the loaders, ingested into a real embedded Chroma with
the real model and found by search; damaged, encrypted, wrong and empty files fail alone with a
message naming them; zip bombs are refused before a parser opens them."""

from __future__ import annotations

import datetime
import json
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest

from workbench.ingest import containers, formats
from workbench.ingest.chunking import Chunker
from workbench.errors import DocumentError
from workbench.ingest.containers import check_zip
from workbench.ingest.mail import eml_attachments
from workbench.ingest.pipeline import ingest_paths
from workbench.ingest.loaders import SUPPORTED_EXTENSIONS, iter_pages
from workbench.retrieval.search import search

MIB = 1024 * 1024


# --- sample files, written by the libraries ----------------------------------------------------


def make_pptx(path: Path) -> Path:
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "Orbital transfer planning"
    slide.placeholders[1].text = "A Hohmann transfer moves a satellite between two circular orbits\nwith two engine burns"
    slide.notes_slide.notes_text_frame.text = "Remind the team that the xenon propellant budget is forty kilograms."
    slide = deck.slides.add_slide(deck.slide_layouts[5])
    slide.shapes.title.text = "Mission budget"
    table = slide.shapes.add_table(3, 2, Inches(1), Inches(2), Inches(6), Inches(1.5)).table
    for r, (a, b) in enumerate([("Item", "Cost"), ("Launch", "62 million"), ("Ground station", "4 million")]):
        table.cell(r, 0).text, table.cell(r, 1).text = a, b
    deck.save(path)
    return path


def make_xlsx(path: Path) -> Path:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "Inventory"
    sheet.append(["Item", "Warehouse", "Quantity"])
    for i in range(1, 61):  # 60 data rows: blocks of 50 + 10
        sheet.append([f"Widget {i}", ["Rotterdam", "Gdansk", "Valencia"][i % 3], i * 10])
    suppliers = book.create_sheet("Suppliers")
    suppliers.append(["Supplier", "Country", "Product", "Since"])
    suppliers.append(["Quillfeather Tannery", "Portugal", "hand-stitched leather satchels", datetime.datetime(2019, 4, 1)])
    suppliers.append(["Borealis Looms", None, "wool blankets", 2021.0])
    book.save(path)
    return path


TIDES = [("Port", "Country", "Range", "Note"), ("Bay of Fundy", "Canada", "16 m", "the highest tides in the world"), ("Saint-Malo", "France", "13 m", "marée d'équinoxe très forte")]


def make_csv(path: Path) -> Path:
    rows = TIDES + [(f"Harbour {i}", "Norway", f"{i % 4} m", "quiet fjord") for i in range(1, 56)]  # 57 data rows
    path.write_bytes("\n".join(";".join(r) for r in rows).encode("cp1252"))  # ; delimiter, not UTF-8
    return path


def make_epub(path: Path) -> Path:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("lighthouse-1")
    book.set_title("The Lighthouse Keeper")
    book.set_language("en")
    one = epub.EpubHtml(title="The Keeper", file_name="ch1.xhtml")
    one.content = "<h1>Chapter One</h1><p>Every night the keeper polished the great <b>brass lens</b> before lighting the lamp.</p><p>Gulls nested below.</p>"
    two = epub.EpubHtml(title="The Storm", file_name="ch2.xhtml")
    two.content = "<h1>Chapter Two</h1><p>A winter gale drove the fishing fleet towards the reef.</p>"
    book.add_item(one)
    book.add_item(two)
    book.toc = [epub.Link("ch1.xhtml", "The Keeper", "ch1"), epub.Link("ch2.xhtml", "The Storm", "ch2")]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", one, two]
    epub.write_epub(str(path), book)
    return path


MENU = b"Picnic menu: grilled halloumi, lemon tart and elderflower cordial."


def make_eml(path: Path) -> Path:
    message = EmailMessage()
    message["From"] = "Alice Martin <alice@example.org>"
    message["To"] = "Staff <staff@example.org>"
    message["Date"] = "Tue, 01 Dec 2026 10:00:00 +0000"
    message["Subject"] = "Quarterly picnic"
    message.set_content("Hello all,\n\nThe annual staff picnic moves to the botanical garden on Friday.\n")
    message.add_alternative('<html><body><p>The annual staff picnic moves to the <b>botanical garden</b>.</p><img src="cid:logo@example.org"></body></html>', subtype="html")
    html = message.get_payload()[1]  # a logo shown in the HTML body is not an attachment
    html.add_related(b"\x89PNG\r\n\x1a\n", maintype="image", subtype="png", cid="<logo@example.org>", filename="logo.png")
    message.add_attachment(MENU, maintype="text", subtype="plain", filename="menu.txt")
    message.add_attachment(b"\x00\x01\x02", maintype="application", subtype="octet-stream", filename="../../tools/run.bin")
    path.write_bytes(message.as_bytes())
    return path


def make_json(path: Path) -> Path:
    animals = [
        {"species": "Axolotl", "habitat": "Lake Xochimilco canals", "note": "regrows entire limbs"},
        {"species": "Quokka", "habitat": "Rottnest Island", "note": "mostly nocturnal"},
    ]
    path.write_text(json.dumps(animals), encoding="utf-8")
    return path


def make_jsonl(path: Path) -> Path:
    lines = [json.dumps({"id": i, "dish": f"Stew {i}", "instructions": "simmer slowly"}) for i in range(1, 121)]
    lines[100] = json.dumps({"id": 101, "dish": "Shakshuka", "instructions": "Poach eggs in a spiced tomato and pepper sauce"})
    path.write_text("\n".join(lines[:60]) + "\n\n" + "\n".join(lines[60:]) + "\n", encoding="utf-8")  # a blank line is skipped
    return path


BUILDERS = {
    "deck.pptx": make_pptx,
    "stock_book.xlsx": make_xlsx,
    "tides.csv": make_csv,
    "lighthouse.epub": make_epub,
    "picnic.eml": make_eml,
    "animals.json": make_json,
    "recipes.jsonl": make_jsonl,
}


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("formats")
    for name, build in BUILDERS.items():
        build(folder / name)
    return folder


def pages_of(path: Path, settings):
    return list(iter_pages(path, settings))


# --- (a) each loader -------------------------------------------------------------------------------


def test_extensions_are_supported():
    assert formats.FORMAT_EXTENSIONS <= SUPPORTED_EXTENSIONS
    assert {Path(n).suffix for n in BUILDERS} == set(formats.FORMAT_EXTENSIONS)


def test_pptx_slide_numbers_titles_tables_and_notes(samples, settings):
    one, two = pages_of(samples / "deck.pptx", settings)
    assert (one.page, one.section, two.page, two.section) == (1, "Orbital transfer planning", 2, "Mission budget")
    assert one.text.startswith("Orbital transfer planning\n\nA Hohmann transfer")
    assert one.text.endswith("Speaker notes:\nRemind the team that the xenon propellant budget is forty kilograms.")
    assert "Item | Cost\nLaunch | 62 million\nGround station | 4 million" in two.text
    assert "Speaker notes" not in two.text


def test_xlsx_blocks_per_sheet_repeat_the_header(samples, settings):
    pages = pages_of(samples / "stock_book.xlsx", settings)
    assert [(p.page, p.section) for p in pages] == [(1, "Inventory"), (2, "Inventory"), (3, "Suppliers")]
    assert all(p.title == "stock_book" for p in pages)
    first, second, suppliers = (p.text.splitlines() for p in pages)
    assert first[0] == second[0] == "Item | Warehouse | Quantity"
    assert len(first) == 1 + formats.ROWS_PER_BLOCK and len(second) == 1 + 10
    assert first[1] == "Item: Widget 1; Warehouse: Gdansk; Quantity: 10"
    assert second[1] == "Item: Widget 51; Warehouse: Rotterdam; Quantity: 510"
    assert suppliers == [
        "Supplier | Country | Product | Since",
        "Supplier: Quillfeather Tannery; Country: Portugal; Product: hand-stitched leather satchels; Since: 2019-04-01",
        "Supplier: Borealis Looms; Product: wool blankets; Since: 2021",  # empty cell left out, 2021.0 -> 2021
    ]


def test_csv_detects_encoding_and_delimiter_and_repeats_the_header(samples, settings, tmp_path):
    pages = pages_of(samples / "tides.csv", settings)
    assert [(p.page, p.section) for p in pages] == [(1, ""), (2, "")]
    lines = pages[0].text.splitlines()
    assert lines[0] == "Port | Country | Range | Note"
    assert lines[1] == "Port: Bay of Fundy; Country: Canada; Range: 16 m; Note: the highest tides in the world"
    assert lines[2] == "Port: Saint-Malo; Country: France; Range: 13 m; Note: marée d'équinoxe très forte"
    assert pages[1].text.splitlines()[0] == "Port | Country | Range | Note"
    assert len(pages[1].text.splitlines()) == 1 + 57 - formats.ROWS_PER_BLOCK
    single = tmp_path / "words.csv"  # one column: the sniffer fails, comma is the fallback
    single.write_text("word\napple\npear\n")
    assert pages_of(single, settings)[0].text == "word\nword: apple\nword: pear"


def test_epub_chapters_are_pages_with_toc_titles(samples, settings):
    pages = pages_of(samples / "lighthouse.epub", settings)
    assert [(p.page, p.section) for p in pages] == [(1, "The Keeper"), (2, "The Storm")]
    assert all(p.title == "The Lighthouse Keeper" for p in pages)
    assert "Every night the keeper polished the great brass lens before lighting the lamp.\n\nGulls nested below." in pages[0].text
    assert "gale drove the fishing fleet" in pages[1].text


def test_eml_headers_body_and_attachments(samples, settings):
    (page,) = pages_of(samples / "picnic.eml", settings)
    assert page.page == 1 and page.section == "Quarterly picnic"
    head, body = page.text.split("\n\n", 1)
    assert head.splitlines() == [
        "From: Alice Martin <alice@example.org>",
        "To: Staff <staff@example.org>",
        "Date: Tue, 01 Dec 2026 10:00:00 +0000",
        "Subject: Quarterly picnic",
        "Attachments: menu.txt, run.bin",
    ]
    assert body.startswith("Hello all,\n\nThe annual staff picnic moves to the botanical garden")  # text/plain preferred
    assert "halloumi" not in page.text  # attachment contents are their own documents
    assert eml_attachments(samples / "picnic.eml") == [("menu.txt", MENU), ("run.bin", b"\x00\x01\x02")]
    assert eml_attachments(samples / "picnic.eml", SUPPORTED_EXTENSIONS) == [("menu.txt", MENU)]


def test_eml_html_only_body_and_an_attached_message(tmp_path, settings):
    inner = EmailMessage()
    inner["From"], inner["Subject"] = "carol@example.org", "Original note"
    inner.set_content("Forwarded text about the harbour crane.")
    outer = EmailMessage()
    outer["From"], outer["Subject"] = "dave@example.org", "Fwd: note"
    outer.set_content("<html><head><style>p{}</style></head><body><h2>Hi</h2><p>See the <i>forwarded</i> note.</p></body></html>", subtype="html")
    outer.add_attachment(inner)  # message/rfc822, no file name
    path = tmp_path / "fwd.eml"
    path.write_bytes(outer.as_bytes())
    (page,) = pages_of(path, settings)
    assert page.text.endswith("Attachments: attachment-1.eml\n\nHi\n\nSee the forwarded note.")
    ((name, data),) = eml_attachments(path)
    assert name == "attachment-1.eml" and "harbour crane" in pages_of(_write(tmp_path / name, data), settings)[0].text


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_json_pretty_printed_and_jsonl_in_blocks_of_records(samples, settings):
    (page,) = pages_of(samples / "animals.json", settings)
    assert page.page == 1
    assert page.text.split("\n\n")[0] == json.dumps({"species": "Axolotl", "habitat": "Lake Xochimilco canals", "note": "regrows entire limbs"}, indent=2)
    pages = pages_of(samples / "recipes.jsonl", settings)
    assert [p.page for p in pages] == [1, 2, 3]
    assert [len(p.text.split("\n\n")) for p in pages] == [50, 50, 20]
    assert json.loads(pages[2].text.split("\n\n")[0])["dish"] == "Shakshuka"


def test_chunk_headers_name_the_document_not_the_first_sheet(samples, settings, embedder):
    chunker = Chunker(embedder.backend_tokenizer, 200, 32, embedder.max_seq_length)

    def headers(name):
        chunks = chunker.chunk_pages(iter_pages(samples / name, settings), document_id="d", source=name, file_name=name)
        return {c.header for c in chunks}

    assert headers("stock_book.xlsx") == {"stock book: Inventory\n", "stock book: Suppliers\n"}
    assert headers("lighthouse.epub") == {"The Lighthouse Keeper: The Keeper\n", "The Lighthouse Keeper: The Storm\n"}
    assert headers("deck.pptx") == {"Orbital transfer planning\n", "Orbital transfer planning: Mission budget\n"}


# --- (b) end to end: ingest into real Chroma, then search -------------------------------------------

QUERIES = [
    ("xenon propellant budget of forty kilograms", "deck.pptx", 1),
    ("supplier of hand-stitched leather satchels in Portugal", "stock_book.xlsx", 3),
    ("where are the highest tides in the world", "tides.csv", 1),
    ("the keeper polished the brass lens", "lighthouse.epub", 1),
    ("staff picnic at the botanical garden", "picnic.eml", 1),
    ("an animal that regrows entire limbs", "animals.json", 1),
    ("poach eggs in a spiced tomato and pepper sauce", "recipes.jsonl", 3),
]


def test_ingest_and_search_every_format(samples, settings, store, embedder):
    summary = ingest_paths([samples], settings=settings, store=store, embedder=embedder)
    assert not summary.failures, summary.failures
    # every file, and the e-mail's supported attachment as a document of its own
    assert sorted(r.source for r in summary.results if r.status == "added") == sorted([*BUILDERS, "picnic.eml/menu.txt"])
    for query, file_name, page in QUERIES:
        hits = search(query, settings=settings, store=store, embedder=embedder, top_k=3)
        assert (hits[0].file_name, hits[0].page) == (file_name, page), (query, hits[0])
    hit = search("leather satchels", settings=settings, store=store, embedder=embedder, file_name="stock_book.xlsx")[0]
    assert hit.section == "Suppliers" and hit.text.startswith("Supplier | Country | Product | Since\n")
    # The e-mail's supported attachment is its own document, "<e-mail source>/<file name>"
    # (tests/test_mail_attachments.py has the rest); the .bin one is only named on page 1.
    hits = search("elderflower cordial and lemon tart", settings=settings, store=store, embedder=embedder, top_k=3)
    assert hits[0].source == "picnic.eml/menu.txt" and hits[0].file_name == "menu.txt"


# --- (c) bad files fail alone, with a message naming them -------------------------------------------


def _truncated(build, path: Path) -> bytes:
    build(path)
    return path.read_bytes()[: path.stat().st_size // 2]


def _encrypted_xlsx(path: Path) -> bytes:
    from msoffcrypto.format.ooxml import OOXMLFile

    plain = make_xlsx(path.with_name("plain-" + path.name))
    with open(plain, "rb") as source, open(path, "wb") as out:
        OOXMLFile(source).encrypt("secret", out)
    return path.read_bytes()


BAD = {
    "corrupt.pptx": (lambda p: _truncated(make_pptx, p), "not a valid .pptx file"),
    "corrupt.xlsx": (lambda p: _truncated(make_xlsx, p), "not a valid .xlsx file"),
    "corrupt.epub": (lambda p: _truncated(make_epub, p), "not a valid .epub file"),
    "corrupt.docx": (lambda p: b"PK\x03\x04" + b"\x00" * 200, "not a valid .docx file"),
    "locked.xlsx": (_encrypted_xlsx, "password-protected"),
    "slides.pptx": (lambda p: make_xlsx(p.with_name("x.xlsx")).read_bytes(), "is not a PowerPoint file"),
    "sheet.xlsx": (lambda p: make_pptx(p.with_name("x.pptx")).read_bytes(), "no valid workbook part"),
    "book.epub": (lambda p: make_xlsx(p.with_name("x.xlsx")).read_bytes(), "META-INF/container.xml"),
    "empty.pptx": (lambda p: b"", "empty"),
    "empty.epub": (lambda p: b"", "empty"),
    "empty.csv": (lambda p: b"", "empty"),
    "empty.eml": (lambda p: b"\n\n", "empty"),
    "empty.jsonl": (lambda p: b"", "empty"),
    "binary.csv": (lambda p: bytes(range(256)) * 8, "not a text file"),
    "notmail.eml": (lambda p: b"just some words\nand more words\n", "not an e-mail message"),
    "invalid.json": (lambda p: b'{\n  "a": 1,,\n}', "invalid JSON at line 2 column 10"),
    "nothing.json": (lambda p: b"[]", "no text found"),
    "invalid.jsonl": (lambda p: b'{"a": 1}\n{oops}\n', "line 2 is not valid JSON"),
}


def write_bad(folder: Path, name: str) -> Path:
    build, _ = BAD[name]
    scratch = folder.parent / f"scratch-{name}"
    scratch.mkdir(parents=True, exist_ok=True)
    data = build(scratch / name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_file_raises_document_error_naming_it(tmp_path, settings, name):
    path = write_bad(tmp_path / "bad", name)
    with pytest.raises(DocumentError) as info:
        pages_of(path, settings)
    assert str(info.value).startswith(f"{name}: ") and BAD[name][1] in str(info.value), str(info.value)


def test_bad_files_fail_alone_and_the_batch_goes_on(tmp_path, settings, store, embedder):
    folder = tmp_path / "batch"
    for name in BAD:
        write_bad(folder, name)
    make_csv(folder / "tides.csv")
    make_jsonl(folder / "recipes.jsonl")
    summary = ingest_paths([folder], settings=settings, store=store, embedder=embedder)
    failed = {r.source: r.message for r in summary.failures}
    assert set(failed) == set(BAD)
    for name, (_, reason) in BAD.items():
        assert failed[name].startswith(f"{name}: ") and reason in failed[name], failed[name]
    assert summary.count("added") == 2
    assert search("highest tides in the world", settings=settings, store=store, embedder=embedder)[0].file_name == "tides.csv"


# --- (d) zip bombs --------------------------------------------------------------------------------------


def _with_zeros(path: Path, size: int) -> Path:
    """Add a member of ``size`` zero bytes (deflates ~1000x) to a zip container."""
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("customXml/zeros.bin", bytes(size))
    return path


def _docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.add_paragraph("A short memo about glaciers.")
    document.save(path)
    return path


@pytest.mark.parametrize("name,build", [("deck.pptx", make_pptx), ("book.xlsx", make_xlsx), ("novel.epub", make_epub), ("memo.docx", _docx)])
def test_every_zip_format_is_checked_against_the_cap(tmp_path, settings, monkeypatch, name, build):
    path = _with_zeros(build(tmp_path / name), 2 * MIB)
    assert pages_of(path, settings)  # 2 MiB is fine under the default cap
    monkeypatch.setattr(containers, "MAX_UNCOMPRESSED_BYTES", 1 * MIB)
    with pytest.raises(DocumentError, match=rf"^{name}: refused, would unpack to 2\.\d MiB, above the 1\.0 MiB limit"):
        pages_of(path, settings)


def test_check_zip_refuses_high_compression_and_takes_a_cap(tmp_path, settings):
    bomb = _with_zeros(_docx(tmp_path / "bomb.docx"), 24 * MIB)  # ~24 KiB on disk
    assert bomb.stat().st_size < MIB
    with pytest.raises(DocumentError, match=r"^bomb\.docx: refused, compressed \d+x .* above 100x \(possible zip bomb\)"):
        pages_of(bomb, settings)
    sheet = make_xlsx(tmp_path / "sheet.xlsx")
    check_zip(sheet)  # a normal workbook passes
    with pytest.raises(DocumentError, match=r"^sheet\.xlsx: refused, would unpack to [\d,]+ bytes, above the 1,000 bytes limit"):
        check_zip(sheet, max_bytes=1000)
