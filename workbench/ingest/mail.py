"""E-mail (.eml, stdlib ``email``): page 1 = From/To/Cc/Date/Subject headers, the attachment
names and the body (plain text preferred, else HTML as text). Attachments are returned by
:func:`eml_attachments`; the ingest pipeline makes each supported one a document of its own
(:mod:`workbench.ingest.attachments`)."""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Iterator
from pathlib import Path, PurePosixPath

from workbench.documents import Page
from workbench.errors import DocumentError
from workbench.ingest.containers import html_text, one_line, reading

_EMAIL_HEADERS = ("From", "To", "Cc", "Date", "Subject")
#: Longest attachment file name, bytes of UTF-8 (a file of that name is written to disk).
MAX_NAME_BYTES = 200


def _safe_name(raw: str) -> str:
    """The last path part of ``raw`` (``/`` or ``\\``), NFC, without control or format
    characters, stripped, at most MAX_NAME_BYTES of UTF-8 (the stem shortened, a suffix of up
    to 16 bytes kept); may be ""."""
    name = PurePosixPath(str(raw).replace("\\", "/")).name
    name = "".join(ch for ch in unicodedata.normalize("NFC", name) if unicodedata.category(ch)[0] != "C").strip()
    suffix = PurePosixPath(name).suffix if len(PurePosixPath(name).suffix.encode()) <= 16 else ""
    stem = name[: len(name) - len(suffix)]
    while stem and len((stem + suffix).encode("utf-8")) > MAX_NAME_BYTES:
        stem = stem[:-1]
    return stem.rstrip() + suffix if stem.strip() else ""


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
    with reading(path, "e-mail message"):
        message = _read_email(path)
        lines = [f"{h}: {one_line(str(message[h]))}" for h in _EMAIL_HEADERS if message.get(h)]
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
                text = html_text(text)[1]
        subject = one_line(str(message.get("Subject", "")))
        yield Page(text="\n".join(lines) + "\n\n" + text.replace("\r\n", "\n").strip(), page=1, section=subject)


def eml_attachments(path: Path, extensions: Collection[str] | None = None) -> list[tuple[str, bytes]]:
    """The attachments of an e-mail as ``(file name, decoded bytes)``, in message order.

    File names are reduced to a safe base name (no folders, no control characters, at most
    MAX_NAME_BYTES bytes of UTF-8 with the suffix kept, never "" or ".."), made unique in
    the message with "-2", "-3" before the extension; an attachment without a name is called
    "attachment-N" (or "attachment-N.eml" for an attached message, whose bytes are that whole
    message). ``extensions`` (lower case, with the dot, e.g. ``SUPPORTED_EXTENSIONS``) keeps
    only those. Raises DocumentError like :func:`eml_pages`.

    The ingest pipeline writes each of ``eml_attachments(path, SUPPORTED_EXTENSIONS)`` to the
    store's data area and ingests it as ``"<e-mail source>/<name>"`` into the same collection:
    see :mod:`workbench.ingest.attachments` (one level deep: an attached .eml is a document,
    its own attachments are not expanded).
    """
    path = Path(path)
    with reading(path, "e-mail message"):
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
        name = _safe_name(part.get_filename() or "")
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
