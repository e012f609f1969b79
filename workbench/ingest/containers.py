"""Reading container formats safely: zip containers checked before a library opens them (zip
bombs, encryption, damage), parser errors turned into one DocumentError naming the file, and
HTML/XHTML as text. Shared by :mod:`workbench.ingest.formats`, :mod:`workbench.ingest.mail` and
the .docx loader."""

from __future__ import annotations

import contextlib
import csv
import re
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

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
#: First bytes of an OLE compound file: what an encrypted .docx/.pptx/.xlsx (or a legacy
#: .doc/.ppt/.xls renamed) really is.
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_BLOCK_TAGS = ["p", "div", "li", "tr", "br", "blockquote", "pre", "section", "article", "h1", "h2", "h3", "h4", "h5", "h6", "dt", "dd", "figcaption"]
#: What parsers raise on damaged input (lxml's XMLSyntaxError is a SyntaxError; openpyxl and
#: python-pptx raise KeyError/ValueError/IndexError/TypeError on missing or wrong XML parts).
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, LookupError, ValueError, EOFError, OSError, SyntaxError, IndexError, TypeError, csv.Error)


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
def reading(path: Path, what: str, *extra: type[BaseException]) -> Iterator[None]:
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


def one_line(text: str) -> str:
    return " ".join(text.split())



def html_text(markup: bytes | str) -> tuple[str, str]:
    """(first h1-h3 heading, text) of an HTML/XHTML document; block elements end in a blank
    line (a paragraph for the chunker), inline ones stay in their line."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    heading = soup.find(["h1", "h2", "h3"])
    for tag in soup.find_all(_BLOCK_TAGS):
        tag.append("\n\n")
    lines = [one_line(text_line) for text_line in soup.get_text().splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return (one_line(heading.get_text()) if heading else ""), text
