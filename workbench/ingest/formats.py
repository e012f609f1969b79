"""Loaders for the formats people have: slides, spreadsheets, e-books, e-mail and JSON.

- ``.pptx`` (python-pptx): one Page per slide, ``page`` = slide number, ``section`` = slide
  title; text boxes and tables in shape order, then the speaker notes after "Speaker notes:".
- ``.xlsx`` (openpyxl, read-only streaming, cached formula values) and ``.csv`` (stdlib):
  the first non-empty row is the header; the data rows are cut into blocks of
  ``ROWS_PER_BLOCK`` rows, one Page each, ``page`` = block number counted across the file and
  ``section`` = sheet name (``""`` for CSV). See :func:`table_block` for the text of a block.
- ``.epub`` (ebooklib + BeautifulSoup): one Page per spine document with text, ``page`` =
  chapter number, ``section`` = its title from the table of contents (else its first heading).
- ``.eml`` (stdlib email): page 1 = From/To/Cc/Date/Subject headers, the attachment names and
  the body (plain text preferred, else HTML as text). Attachment contents are not in that page:
  the ingest pipeline makes each attachment of a supported format a document of its own,
  ``"<e-mail source>/<name>"``, one level deep (:mod:`workbench.ingest.attachments`).
- ``.json``: pretty-printed (indent 2); a top-level array is cut into blocks of
  ``RECORDS_PER_BLOCK`` items, one Page each. ``.jsonl``: one record a line, the same blocks.
  Inside a block, records are separated by a blank line, so the chunker keeps each record whole
  when it fits the model window.

Zip containers (.pptx .xlsx .epub, and .docx in :mod:`workbench.ingest.loaders`) pass
:func:`check_zip` before a library opens them. Every failure is a DocumentError whose message
names the file and the reason. The zip check and the HTML text are
:mod:`workbench.ingest.containers`'; e-mail is :mod:`workbench.ingest.mail`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, time
from itertools import zip_longest
from pathlib import Path, PurePosixPath

from workbench.documents import Page
from workbench.errors import DocumentError
from workbench.ingest.containers import check_zip, html_text, one_line, reading
from workbench.ingest.mail import eml_pages

#: Data rows of a sheet or CSV per Page (block); the header row is repeated in every block.
ROWS_PER_BLOCK = 50
#: JSON array items or JSONL records per Page (block).
RECORDS_PER_BLOCK = 50
#: Extensions this module reads (lower case, with the dot).
FORMAT_EXTENSIONS = frozenset({".pptx", ".xlsx", ".csv", ".epub", ".eml", ".json", ".jsonl"})

ReadText = Callable[[Path], str]


def iter_format_pages(path: Path, *, read_text: ReadText) -> Iterator[Page]:
    """Pages of a file whose extension is in ``FORMAT_EXTENSIONS`` (see module docstring).

    ``read_text(path) -> str`` decodes the text formats (.csv .json .jsonl); the loaders pass
    ``workbench.ingest.loaders.read_text_file`` (UTF-8, else the encoding chardet detects). Raises
    DocumentError for another extension and for any unreadable file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    text_loaders = {".csv": csv_pages, ".json": json_pages, ".jsonl": jsonl_pages}
    if suffix in text_loaders:
        return text_loaders[suffix](path, read_text)
    loader = {".pptx": pptx_pages, ".xlsx": xlsx_pages, ".epub": epub_pages, ".eml": eml_pages}.get(suffix)
    if loader is None:
        raise DocumentError(f"{path.name}: unsupported file type {suffix or '(none)'}")
    return loader(path)


# --- slides -------------------------------------------------------------------------------


def pptx_pages(path: Path) -> Iterator[Page]:
    """One Page per slide with text: ``page`` = slide number (1-based, hidden slides included),
    ``section`` = slide title, text = title, text boxes and table rows (cells joined by " | ")
    in shape order, then "Speaker notes:" and the notes. Raises DocumentError (see
    :func:`check_zip`) when the file is not a readable PowerPoint file."""
    path = Path(path)
    check_zip(path)
    from pptx import Presentation
    from pptx.exc import PythonPptxError

    with reading(path, "PowerPoint file", PythonPptxError):
        deck = Presentation(str(path))
        for number, slide in enumerate(deck.slides, start=1):
            title_shape = slide.shapes.title
            title = one_line(title_shape.text_frame.text) if title_shape is not None and title_shape.has_text_frame else ""
            parts = [title]
            for shape in _walk_shapes(slide.shapes):
                if title_shape is not None and shape.shape_id == title_shape.shape_id:
                    continue
                if getattr(shape, "has_text_frame", False):
                    parts.append(shape.text_frame.text.replace("\v", "\n"))
                elif getattr(shape, "has_table", False):
                    parts.append("\n".join(" | ".join(one_line(c.text) for c in row.cells) for row in shape.table.rows))
            if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
                notes = slide.notes_slide.notes_text_frame.text.replace("\v", "\n").strip()
                if notes:
                    parts.append("Speaker notes:\n" + notes)
            text = "\n\n".join(p.strip() for p in parts if p and p.strip())
            yield Page(text=text, page=number, section=title)


def _walk_shapes(shapes) -> Iterator:
    for shape in shapes:
        if hasattr(shape, "shapes"):  # a group: its members in order
            yield from _walk_shapes(shape.shapes)
        else:
            yield shape


# --- tables ------------------------------------------------------------------------------------


def table_block(header: list[str], rows: Iterable[list[str]]) -> str:
    """The text of one block of a table: the header row ("a | b | c"), then one line per data
    row as "column: value; column: value" (empty cells left out; a cell past the header is
    named "column N", 1-based).

    Why not a markdown table: a block of 50 rows is longer than one chunk (CHUNK_SIZE model
    tokens), so the chunker splits it and only the first piece would keep the header line. A
    row that names its columns stays self-describing in any chunk, and the embedding reads
    "Capital: Paris" next to each other (see benchmarks/tables.py for the measurement).
    """
    names = [h or f"column {i}" for i, h in enumerate(header, start=1)]
    lines = [" | ".join(names)]
    for row in rows:
        pairs = zip_longest(names, row, fillvalue="")
        cells = [f"{name or f'column {i}'}: {value}" for i, (name, value) in enumerate(pairs, start=1) if value]
        if cells:
            lines.append("; ".join(cells))
    return "\n".join(lines)


def _table_pages(rows: Iterable[list[str]], section: str, first_page: int, title: str = "") -> Iterator[Page]:
    """Blocks of ``ROWS_PER_BLOCK`` data rows under the first non-empty row (the header)."""
    header: list[str] | None = None
    block: list[list[str]] = []
    number = first_page
    for row in rows:
        if not any(row):
            continue
        if header is None:
            header = row
            continue
        block.append(row)
        if len(block) == ROWS_PER_BLOCK:
            yield Page(text=table_block(header, block), page=number, section=section, title=title)
            number, block = number + 1, []
    if header is not None and (block or number == first_page):
        yield Page(text=table_block(header, block), page=number, section=section, title=title)


def _cell(value: object) -> str:
    """A cell as one line of text: dates ISO 8601, whole floats without ".0"."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time() else value.isoformat(sep=" ")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return one_line(str(value))


def xlsx_pages(path: Path) -> Iterator[Page]:
    """Blocks of rows of every worksheet in order (see :func:`table_block`): ``page`` = block
    number counted across the workbook (1-based), ``section`` = sheet name. Formulas give their
    cached values (none when the file was never opened in Excel). Raises DocumentError when the
    file is encrypted, damaged or not an .xlsx workbook."""
    path = Path(path)
    check_zip(path)
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    with reading(path, "Excel workbook", InvalidFileException):
        book = load_workbook(str(path), read_only=True, data_only=True)
        try:
            number = 1
            for sheet in book.worksheets:
                rows = ([_cell(v) for v in row] for row in sheet.iter_rows(values_only=True))
                for page in _table_pages(rows, sheet.title, number, title=path.stem):
                    number = page.page + 1
                    yield page
        finally:
            book.close()


def csv_pages(path: Path, read_text: ReadText) -> Iterator[Page]:
    """Blocks of rows (see :func:`table_block`), ``page`` = block number (1-based), ``section``
    "". The delimiter (, ; tab |) is sniffed on the first 64 KiB, comma when that fails; the
    first non-empty row is taken as the header. Raises DocumentError when the file is empty,
    not text, or not parseable as CSV."""
    path = Path(path)
    text = read_text(path)
    try:
        dialect = csv.Sniffer().sniff(text[: 64 * 1024], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    with reading(path, "CSV file"):
        rows = ([one_line(cell) for cell in row] for row in csv.reader(io.StringIO(text), dialect))
        yield from _table_pages(rows, "", 1)


# --- e-books -------------------------------------------------------------------------------------


def epub_pages(path: Path) -> Iterator[Page]:
    """One Page per spine document with text (the navigation document skipped): ``page`` =
    chapter number (1-based, counting documents with text), ``section`` = its table-of-contents
    title, else its first heading. Raises DocumentError when the file is damaged or not an EPUB."""
    path = Path(path)
    check_zip(path)
    import ebooklib
    from ebooklib import epub

    with reading(path, "EPUB book", epub.EpubException):
        book = epub.read_epub(str(path), {"ignore_ncx": True})
        book_title = one_line(" ".join(str(t[0]) for t in book.get_metadata("DC", "title")[:1]))
        titles = _toc_titles(book.toc)
        items = [book.get_item_with_id(idref) for idref, _linear in book.spine]
        items = [i for i in items if i is not None and i.get_type() == ebooklib.ITEM_DOCUMENT and not isinstance(i, epub.EpubNav)]
        number = 0
        for item in items:
            heading, text = html_text(item.get_content())
            if not text.strip():
                continue
            number += 1
            name = item.get_name()
            section = titles.get(name) or titles.get(PurePosixPath(name).name) or heading
            yield Page(text=text, page=number, section=section, title=book_title)


def _toc_titles(toc) -> dict[str, str]:
    """{href without fragment (and its basename): title} of the first TOC entry per file."""
    titles: dict[str, str] = {}
    for entry in toc:
        if isinstance(entry, tuple):
            head, children = entry[0], entry[1] if len(entry) > 1 else []
            titles = {**_toc_titles([head]), **_toc_titles(children), **titles}
            continue
        href, title = getattr(entry, "href", None), one_line(getattr(entry, "title", "") or "")
        if href and title:
            target = href.split("#")[0]
            titles.setdefault(target, title)
            titles.setdefault(PurePosixPath(target).name, title)
    return titles


# --- JSON ---------------------------------------------------------------------------------------------


def json_pages(path: Path, read_text: ReadText) -> Iterator[Page]:
    """Pretty-printed JSON (indent 2, non-ASCII kept). A top-level array gives blocks of
    ``RECORDS_PER_BLOCK`` items, ``page`` = block number; anything else is page 1. Raises
    DocumentError naming the line and column of invalid JSON."""
    path = Path(path)
    text = read_text(path)
    with reading(path, "JSON file"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DocumentError(f"{path.name}: invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg})") from exc
        yield from _record_pages(data if isinstance(data, list) else [data])


def jsonl_pages(path: Path, read_text: ReadText) -> Iterator[Page]:
    """JSON Lines: one record a line (blank lines skipped), each pretty-printed, in blocks of
    ``RECORDS_PER_BLOCK`` records, ``page`` = block number. Raises DocumentError naming the
    first line that is not valid JSON."""
    path = Path(path)
    text = read_text(path)

    def records() -> Iterator[object]:
        for number, record in enumerate(text.split("\n"), start=1):  # not splitlines(): U+2028 may sit in a string
            if record.strip():
                try:
                    yield json.loads(record)
                except json.JSONDecodeError as exc:
                    raise DocumentError(f"{path.name}: line {number} is not valid JSON (column {exc.colno}: {exc.msg})") from exc

    with reading(path, "JSON Lines file"):
        yield from _record_pages(records())


def _record_pages(records: Iterable[object]) -> Iterator[Page]:
    block: list[str] = []
    number = 1
    for record in records:
        block.append(json.dumps(record, indent=2, ensure_ascii=False))
        if len(block) == RECORDS_PER_BLOCK:
            yield Page(text="\n\n".join(block), page=number)
            number, block = number + 1, []
    if block:
        yield Page(text="\n\n".join(block), page=number)
