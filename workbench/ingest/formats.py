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
  the body (plain text preferred, else HTML as text). Attachments are not in that page:
  :func:`eml_attachments` returns them so the pipeline can ingest each as its own document
  (how: see its docstring).
- ``.json``: pretty-printed (indent 2); a top-level array is cut into blocks of
  ``RECORDS_PER_BLOCK`` items, one Page each. ``.jsonl``: one record a line, the same blocks.
  Inside a block, records are separated by a blank line, so the chunker keeps each record whole
  when it fits the model window.

Zip containers (.pptx .xlsx .epub, and .docx in :mod:`workbench.ingest.loaders`) pass
:func:`check_zip` before a library opens them. Every failure is a DocumentError whose message
names the file and the reason. This module imports only from ``.documents``, ``.errors`` and
``.config``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import zipfile
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator
from datetime import datetime, time
from itertools import zip_longest
from pathlib import Path, PurePosixPath

from workbench.documents import Page
from workbench.errors import DocumentError, WorkbenchError

#: Most bytes the members of one zip container (.docx .pptx .xlsx .epub) may unpack to: the sum
#: of their declared sizes (``ZipInfo.file_size``), in bytes. 512 MiB is far above documents
#: people write, and bounds what python-pptx, python-docx and ebooklib (which read whole
#: members into memory) and openpyxl (shared strings in memory) can be made to hold.
MAX_UNCOMPRESSED_BYTES = 512 * 1024 * 1024
#: Above ``RATIO_CHECKED_ABOVE`` bytes unpacked, a container compressed more than this many
#: times (unpacked / packed member bytes) is refused as a zip bomb. Measured here: a python-pptx
#: deck 4x, an openpyxl workbook 5x, a 300,000-row sheet of repeated values 10x.
MAX_COMPRESSION_RATIO = 100
RATIO_CHECKED_ABOVE = 10 * 1024 * 1024
#: Data rows of a sheet or CSV per Page (block); the header row is repeated in every block.
ROWS_PER_BLOCK = 50
#: JSON array items or JSONL records per Page (block).
RECORDS_PER_BLOCK = 50
#: Extensions this module reads (lower case, with the dot).
FORMAT_EXTENSIONS = frozenset({".pptx", ".xlsx", ".csv", ".epub", ".eml", ".json", ".jsonl"})

#: First bytes of an OLE compound file: what an encrypted .docx/.pptx/.xlsx (or a legacy
#: .doc/.ppt/.xls renamed) really is.
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_EMAIL_HEADERS = ("From", "To", "Cc", "Date", "Subject")
_BLOCK_TAGS = ["p", "div", "li", "tr", "br", "blockquote", "pre", "section", "article", "h1", "h2", "h3", "h4", "h5", "h6", "dt", "dd", "figcaption"]
#: What parsers raise on damaged input (lxml's XMLSyntaxError is a SyntaxError; openpyxl and
#: python-pptx raise KeyError/ValueError/IndexError/TypeError on missing or wrong XML parts).
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, LookupError, ValueError, EOFError, OSError, SyntaxError, IndexError, TypeError, csv.Error)

ReadText = Callable[[Path], str]


def check_zip(path: Path, max_bytes: int | None = None) -> None:
    """Refuse a zip container before a library opens it.

    ``max_bytes``: cap on the sum of the members' uncompressed sizes, in bytes (default
    ``MAX_UNCOMPRESSED_BYTES``, read at call time). The declared sizes can be trusted as a
    bound: Python's zipfile, which python-docx, python-pptx, openpyxl and ebooklib all read
    through, never returns more than a member's declared ``file_size`` (a header that lies
    fails the CRC check).

    Raises DocumentError (message names the file) when the file is empty, is an OLE file (a
    password-protected Office file, or a legacy .doc/.ppt/.xls renamed), is not a readable zip,
    has encrypted members, unpacks to more than ``max_bytes``, or unpacks to more than
    ``RATIO_CHECKED_ABOVE`` bytes at more than ``MAX_COMPRESSION_RATIO`` x compression.
    """
    path = Path(path)
    cap = MAX_UNCOMPRESSED_BYTES if max_bytes is None else max_bytes
    kind = path.suffix.lower().lstrip(".") or "zip"
    with open(path, "rb") as handle:
        head = handle.read(len(_OLE_MAGIC))
    if not head:
        raise DocumentError(f"{path.name}: file is empty")
    if head == _OLE_MAGIC:
        raise DocumentError(
            f"{path.name}: password-protected (encrypted) Office file, or an old binary .doc/.ppt/.xls "
            f"file renamed; save it without a password as .{kind}"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise DocumentError(f"{path.name}: not a valid .{kind} file (damaged or not a zip container: {exc})") from exc
    if any(info.flag_bits & 0x1 for info in members):
        raise DocumentError(f"{path.name}: has encrypted zip members; save it without a password")
    unpacked = sum(info.file_size for info in members)
    packed = sum(info.compress_size for info in members)
    if unpacked > cap:
        raise DocumentError(
            f"{path.name}: refused, would unpack to {_size(unpacked)}, above the {_size(cap)} limit "
            "(possible zip bomb)"
        )
    if unpacked > RATIO_CHECKED_ABOVE and unpacked > MAX_COMPRESSION_RATIO * max(packed, 1):
        raise DocumentError(
            f"{path.name}: refused, compressed {unpacked / max(packed, 1):.0f}x "
            f"({_size(unpacked)} unpacked), above {MAX_COMPRESSION_RATIO}x (possible zip bomb)"
        )


def _size(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n:,} bytes"


@contextlib.contextmanager
def _reading(path: Path, what: str, *extra: type[BaseException]) -> Iterator[None]:
    """Turn a parser's exception into one DocumentError naming the file and the reason."""
    try:
        yield
    except WorkbenchError:
        raise
    except RecursionError as exc:
        raise DocumentError(f"{path.name}: not a readable {what} (nested too deeply)") from exc
    except (*_READ_ERRORS, *extra) as exc:
        kind = "zlib.error" if isinstance(exc, zlib.error) else type(exc).__name__
        raise DocumentError(f"{path.name}: not a readable {what} ({kind}: {exc})") from exc


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

    with _reading(path, "PowerPoint file", PythonPptxError):
        deck = Presentation(str(path))
        for number, slide in enumerate(deck.slides, start=1):
            title_shape = slide.shapes.title
            title = _line(title_shape.text_frame.text) if title_shape is not None and title_shape.has_text_frame else ""
            parts = [title]
            for shape in _walk_shapes(slide.shapes):
                if title_shape is not None and shape.shape_id == title_shape.shape_id:
                    continue
                if getattr(shape, "has_text_frame", False):
                    parts.append(shape.text_frame.text.replace("\v", "\n"))
                elif getattr(shape, "has_table", False):
                    parts.append("\n".join(" | ".join(_line(c.text) for c in row.cells) for row in shape.table.rows))
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
    return _line(str(value))


def _line(text: str) -> str:
    return " ".join(text.split())


def xlsx_pages(path: Path) -> Iterator[Page]:
    """Blocks of rows of every worksheet in order (see :func:`table_block`): ``page`` = block
    number counted across the workbook (1-based), ``section`` = sheet name. Formulas give their
    cached values (none when the file was never opened in Excel). Raises DocumentError when the
    file is encrypted, damaged or not an .xlsx workbook."""
    path = Path(path)
    check_zip(path)
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    with _reading(path, "Excel workbook", InvalidFileException):
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
    with _reading(path, "CSV file"):
        rows = ([_line(cell) for cell in row] for row in csv.reader(io.StringIO(text), dialect))
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

    with _reading(path, "EPUB book", epub.EpubException):
        book = epub.read_epub(str(path), {"ignore_ncx": True})
        book_title = _line(" ".join(str(t[0]) for t in book.get_metadata("DC", "title")[:1]))
        titles = _toc_titles(book.toc)
        items = [book.get_item_with_id(idref) for idref, _linear in book.spine]
        items = [i for i in items if i is not None and i.get_type() == ebooklib.ITEM_DOCUMENT and not isinstance(i, epub.EpubNav)]
        number = 0
        for item in items:
            heading, text = _html_text(item.get_content())
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
        href, title = getattr(entry, "href", None), _line(getattr(entry, "title", "") or "")
        if href and title:
            target = href.split("#")[0]
            titles.setdefault(target, title)
            titles.setdefault(PurePosixPath(target).name, title)
    return titles


def _html_text(markup: bytes | str) -> tuple[str, str]:
    """(first h1-h3 heading, text) of an HTML/XHTML document; block elements end in a blank
    line (a paragraph for the chunker), inline ones stay in their line."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    heading = soup.find(["h1", "h2", "h3"])
    for tag in soup.find_all(_BLOCK_TAGS):
        tag.append("\n\n")
    lines = [_line(line) for line in soup.get_text().splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return (_line(heading.get_text()) if heading else ""), text


# --- e-mail -------------------------------------------------------------------------------------------


def _read_email(path: Path):
    from email import policy
    from email.parser import BytesParser

    data = path.read_bytes()
    if not data.strip():
        raise DocumentError(f"{path.name}: file is empty")
    message = BytesParser(policy=policy.default).parsebytes(data)
    if not any(message.get(h) for h in ("From", "To", "Subject", "Date")):
        raise DocumentError(f"{path.name}: not an e-mail message (no From, To, Subject or Date header)")
    return message


def eml_pages(path: Path) -> Iterator[Page]:
    """Page 1 of an e-mail: "From: / To: / Cc: / Date: / Subject:" lines, "Attachments:" with
    their file names, a blank line, then the body (text/plain preferred, else text/html as
    text). ``section`` = Subject. Attachment contents are not included: see
    :func:`eml_attachments`. Raises DocumentError when the file is empty or has none of the
    From/To/Subject/Date headers."""
    path = Path(path)
    with _reading(path, "e-mail message"):
        message = _read_email(path)
        lines = [f"{h}: {_line(str(message[h]))}" for h in _EMAIL_HEADERS if message.get(h)]
        names = [name for name, _ in _attachments(message)]
        if names:
            lines.append("Attachments: " + ", ".join(names))
        body = message.get_body(preferencelist=("plain", "html"))
        text = ""
        if body is not None:
            try:
                text = body.get_content()
            except (LookupError, UnicodeError):  # unknown or lying charset: decode leniently
                text = (body.get_payload(decode=True) or b"").decode("utf-8", errors="replace")
            if body.get_content_subtype() == "html":
                text = _html_text(text)[1]
        subject = _line(str(message.get("Subject", "")))
        yield Page(text="\n".join(lines) + "\n\n" + text.replace("\r\n", "\n").strip(), page=1, section=subject)


def eml_attachments(path: Path, extensions: Collection[str] | None = None) -> list[tuple[str, bytes]]:
    """The attachments of an e-mail as ``(file name, decoded bytes)``, in message order.

    File names are reduced to a safe base name (no folders, never "" or ".."), made unique in
    the message with "-2", "-3" before the extension; an attachment without a name is called
    "attachment-N" (or "attachment-N.eml" for an attached message, whose bytes are that whole
    message). ``extensions`` (lower case, with the dot, e.g. ``SUPPORTED_EXTENSIONS``) keeps
    only those. Raises DocumentError like :func:`eml_pages`.

    For the ingest pipeline (not wired in yet): after an e-mail's own document, write each of
    ``eml_attachments(path, SUPPORTED_EXTENSIONS)`` into a scratch folder that lives for the run
    and ingest it as ``SourceFile(folder / name, f"{email_source}/{name}")`` into the same
    collection; its document id follows from that source, so an unchanged e-mail leaves its
    attachments unchanged and a changed one replaces them. The pipeline still has to prune
    ``"<email source>/..."`` documents with their e-mail, stop recursing into attached .eml
    after one level, and re-ingest such a document from its e-mail (its ``source_path`` is in
    the scratch folder).
    """
    path = Path(path)
    with _reading(path, "e-mail message"):
        found = _attachments(_read_email(path))
    if extensions is not None:
        found = [(n, d) for n, d in found if PurePosixPath(n).suffix.lower() in extensions]
    return found


def _attachments(message) -> list[tuple[str, bytes]]:
    """Parts with disposition "attachment" or a file name, in message order, except the body
    and the parts of a multipart/related that have a Content-ID (pictures shown in the HTML
    body: logos, signatures); an attached message is one .eml, not its parts."""
    body = message.get_body(preferencelist=("plain", "html"))
    found: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def add(part, data: bytes, default: str, extension: str = "") -> None:
        name = PurePosixPath((part.get_filename() or "").replace("\\", "/")).name.strip()
        if not name or name in (".", ".."):
            name = default
        if not name.lower().endswith(extension):
            name += extension
        stem, suffix, count = PurePosixPath(name).stem, PurePosixPath(name).suffix, 1
        while name.lower() in seen:
            count += 1
            name = f"{stem}-{count}{suffix}"
        seen.add(name.lower())
        found.append((name, data))

    def visit(container) -> None:
        for part in container.iter_parts():
            disposition = part.get_content_disposition()
            if part is body or (container.get_content_subtype() == "related" and part.get("Content-ID")):
                continue
            if part.get_content_type() == "message/rfc822":
                inner = part.get_payload()
                add(part, (inner[0] if isinstance(inner, list) else inner).as_bytes(), f"attachment-{len(found) + 1}", ".eml")
            elif part.is_multipart():
                visit(part)
            elif disposition == "attachment" or part.get_filename():
                add(part, part.get_payload(decode=True) or b"", f"attachment-{len(found) + 1}")

    visit(message)
    return found


# --- JSON ---------------------------------------------------------------------------------------------


def json_pages(path: Path, read_text: ReadText) -> Iterator[Page]:
    """Pretty-printed JSON (indent 2, non-ASCII kept). A top-level array gives blocks of
    ``RECORDS_PER_BLOCK`` items, ``page`` = block number; anything else is page 1. Raises
    DocumentError naming the line and column of invalid JSON."""
    path = Path(path)
    text = read_text(path)
    with _reading(path, "JSON file"):
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
        for number, line in enumerate(text.split("\n"), start=1):  # not splitlines(): U+2028 may sit in a string
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DocumentError(f"{path.name}: line {number} is not valid JSON (column {exc.colno}: {exc.msg})") from exc

    with _reading(path, "JSON Lines file"):
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
