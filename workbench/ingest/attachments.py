"""E-mail attachments as documents of their own.

When an ingest reads an e-mail (``.eml``), each attachment of a supported format
(``SUPPORTED_EXTENSIONS``, names from :func:`workbench.ingest.mail.eml_attachments`) becomes a
document of the same collection, known as ``"<e-mail source>/<attachment name>"``. Its document
id follows from that source, so:

- an unchanged e-mail leaves its attachments unchanged, a changed one replaces them, and an
  attachment no longer in a changed e-mail is pruned;
- an e-mail pruned from its folder, or deleted from the collection (:func:`delete_document`,
  used by the Documents page and ``python -m workbench delete``), takes its attachments with it;
  an attachment document whose e-mail is gone from the collection by any other way is pruned at
  the end of the next ingest into that collection;
- one level deep only: an attached ``.eml`` is ingested as a document (its page 1 lists its own
  attachments), but its attachments are not expanded: a file in the attachment area is never
  expanded;
- an unsupported attachment (``.exe``, ``.zip``, …) is only named on the e-mail's page 1.

The bytes live in the store's data area: ``<CHROMA_PERSIST_PATH>/attachments/<document id>/
<sha256[:16] of the bytes>/<name>`` (:func:`attachment_root`), written atomically (a temporary
file renamed into place) and never rewritten: a new version is a new file, so a copy or a rebuild
of the collection that still names the old one as ``source_path`` keeps it. The area is one of
the roots :func:`workbench.ingest.uploads.confine` accepts, so the source page, re-ingest and
rebuild read an attachment like any file. A file is deleted once no head of any collection
(work collections included) records it (:func:`release_unused`): at the end of an ingest for the
attachments it replaced, pruned or failed, after :func:`delete_document`, and after a collection
is deleted. Known limit: a run killed between writing an attachment and committing its document
leaves that file until the same attachment is ingested and released again.

Caps: an attachment larger than MAX_FILE_MB fails before it is written; the others (MAX_PAGES,
MAX_PAGE_MEGAPIXELS, zip checks) apply when it is read as a file. A failed attachment's message
names the e-mail and the attachment (``"mail.eml: attachment scan.pdf: cannot be read (…)"``);
the e-mail and the rest of the batch go on.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from workbench.config import Settings
from workbench.documents import DocumentInfo, FileResult
from workbench.ingest.loaders import SUPPORTED_EXTENSIONS
from workbench.ingest.mail import eml_attachments
from workbench.store import Store, admin
from workbench.store import records as rec
from workbench.store.records import document_id_for

log = logging.getLogger(__name__)

#: The attachment area's folder under CHROMA_PERSIST_PATH.
AREA = "attachments"
#: Bytes an e-mail holds when it may have an attachment (a disposition, a file name, an attached
#: message); one without any of them is not parsed a second time.
_MAYBE_ATTACHED = re.compile(rb"(?i)attachment|message/rfc822|name\*?[0-9*]*\s*=")


def attachment_root(settings: Settings) -> Path:
    """The attachment area: ``<CHROMA_PERSIST_PATH>/attachments``, resolved (also in server
    mode: CHROMA_PERSIST_PATH is the local data folder there too)."""
    return Path(_resolved_root(os.path.abspath(settings.chroma_persist_path)))


@functools.lru_cache(maxsize=8)
def _resolved_root(persist_path: str) -> str:
    """The area under absolute ``persist_path``, symlinks resolved once (in_area runs for
    every document of a collection)."""
    return str(Path(persist_path).resolve() / AREA)


def in_area(path: Path | str, settings: Settings) -> bool:
    """True when ``path`` (made absolute, not resolved) lies inside the attachment area."""
    return bool(path) and os.path.abspath(path).startswith(_resolved_root(os.path.abspath(settings.chroma_persist_path)) + os.sep)


def expands(path: Path, settings: Settings) -> bool:
    """True for an e-mail whose attachments are ingested: a ``.eml`` outside the attachment area
    (one level deep: an attached e-mail is not expanded again)."""
    return Path(path).suffix.lower() == ".eml" and not in_area(path, settings)


def email_source(source: str) -> str:
    """The e-mail's source of attachment source ``"<e-mail source>/<name>"``."""
    return source.rsplit("/", 1)[0]


def is_attachment(document: DocumentInfo, settings: Settings) -> bool:
    """True when ``document`` was ingested from the attachment area (an e-mail's attachment)."""
    return "/" in document.source and in_area(document.source_path, settings)


def attachments_of(documents: Iterable[DocumentInfo], email: DocumentInfo, settings: Settings) -> list[DocumentInfo]:
    """The attachment documents among ``documents`` that belong to e-mail document ``email``."""
    return [d for d in documents if d.document_id != email.document_id and is_attachment(d, settings) and email_source(d.source) == email.source]


def failure_message(source: str, path: Path, message: str, settings: Settings) -> str:
    """``message`` (a failure of the file at ``path`` known as ``source``) prefixed with
    ``"<e-mail source>: attachment "`` when that file is an attachment."""
    if "/" in source and in_area(path, settings):
        return f"{email_source(source)}: attachment {message}"
    return message


@dataclass(frozen=True)
class Attachment:
    """One supported attachment of an e-mail: ``source`` = ``"<e-mail source>/<name>"``,
    ``path`` the written file (None when ``error`` says why it was not written), ``size`` in
    bytes."""

    name: str
    source: str
    path: Path | None
    size: int
    error: str = ""


def extract(email: Path, source: str, settings: Settings) -> list[Attachment]:
    """Write the supported attachments of e-mail ``email`` (known as ``source``) to the
    attachment area and return them in message order; one above MAX_FILE_MB, or that cannot be
    written, comes back with ``error`` set instead (nothing written). A file already there with
    the same bytes is not written again. Raises DocumentError when the e-mail cannot be parsed
    (as :func:`eml_attachments`), OSError when it cannot be read."""
    email = Path(email)
    if not _MAYBE_ATTACHED.search(email.read_bytes()):
        return []
    limit = settings.max_file_mb * 1024 * 1024
    found: list[Attachment] = []
    for name, data in eml_attachments(email, SUPPORTED_EXTENSIONS):
        attached = f"{source}/{name}"
        if len(data) > limit:
            reason = f"{source}: attachment {name}: {len(data) / 2**20:,.0f} MB is above MAX_FILE_MB={settings.max_file_mb}"
            found.append(Attachment(name, attached, None, len(data), reason))
            continue
        try:
            path = _write(settings, attached, name, data)
        except OSError as exc:
            found.append(Attachment(name, attached, None, len(data), f"{source}: attachment {name}: cannot be written ({exc.strerror or exc})"))
            continue
        found.append(Attachment(name, attached, path, len(data)))
    return found


def _write(settings: Settings, source: str, name: str, data: bytes) -> Path:
    """``<area>/<document id>/<sha256[:16]>/<name>`` holding ``data``: kept when it is there
    with that size (the folder names the content), else written to a temporary file, fsync'd
    and renamed into place."""
    folder = attachment_root(settings) / document_id_for(source) / hashlib.sha256(data).hexdigest()[:16]
    target = folder / name
    if target.is_file() and target.stat().st_size == len(data):
        return target
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f".{uuid.uuid4().hex}.part"
    try:
        with open(part, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    return target


def release_unused(store: Store, settings: Settings, paths: Iterable[str | Path]) -> int:
    """Delete the files among ``paths`` that lie in the attachment area and that no head of any
    collection records any more (:meth:`Store.source_paths_in_use`), with their folders once
    empty. Returns how many files were deleted. Errors are logged, never raised (a file left
    behind costs disk space, not correctness)."""
    mine = {os.path.abspath(p) for p in paths if p and in_area(p, settings)}
    if not mine:
        return 0
    try:
        unused = mine - store.source_paths_in_use(sorted(mine))
    except Exception as exc:  # noqa: BLE001 - best effort, see above
        log.warning("attachment files not released: %s", exc)
        return 0
    root = attachment_root(settings)
    removed = 0
    for name in sorted(unused):
        path = Path(name)
        try:
            path.unlink(missing_ok=True)
            removed += 1
        except OSError as exc:
            log.warning("cannot delete attachment file %s: %s", path, exc)
            continue
        for folder in (path.parent, path.parent.parent):
            if folder == root or not in_area(folder, settings):
                break
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break
    return removed


def delete_document(store: Store, settings: Settings, name: str, document_id: str) -> int:
    """Delete one document of collection ``name`` (every version, holding the collection's lock);
    when it is an e-mail, its attachment documents too; then the attachment files no document
    needs any more. Returns the number of chunks removed. Raises StoreError when the collection
    does not exist, IngestBusyError while it is being written."""
    with admin.locked(store, name, what="a document delete"):
        documents = store.documents(name)
        doc = next((d for d in documents if d.document_id == document_id), None)
        gone = [doc, *attachments_of(documents, doc, settings)] if doc else []
        removed = store.delete_document(name, document_id)
        for attached in gone[1:]:
            removed += store.delete_document(name, attached.document_id)
    release_unused(store, settings, [d.source_path for d in gone])
    return removed


def stored_files(store: Store, name: str, settings: Settings) -> list[str]:
    """The attachment files the documents of collection ``name`` record (to release after the
    collection is deleted)."""
    return [d.source_path for d in store.documents(name) if is_attachment(d, settings)]


@dataclass
class Tracker:
    """What one ingest run does with attachments (the pipeline's side, see
    :func:`workbench.ingest.pipeline.ingest_paths`): the e-mails whose attachments were read
    (``expected``: e-mail source -> the attachment sources now in it) and the files that may be
    unused at the end (``candidates``)."""

    settings: Settings
    expected: dict[str, set[str]] = field(default_factory=dict)
    candidates: set[str] = field(default_factory=set)

    def found(self, source: str, attachments: list[Attachment]) -> None:
        """E-mail ``source`` was read and holds ``attachments`` (the failed ones included)."""
        self.expected[source] = {a.source for a in attachments}
        self.candidates |= {str(a.path) for a in attachments if a.path}

    def finish(self, store: Store, collection, name: str, heads: dict[str, dict]) -> list[FileResult]:
        """After the run's documents are committed (not after a cancel), holding the lock:
        delete every attachment document of collection ``name`` (raw ``collection``) that is no
        longer in its e-mail read in this run, or whose e-mail is no longer in the collection.
        ``heads``: the heads at the start of the run. Returns a "pruned" FileResult for each.
        No query unless the run read an e-mail or the collection holds attachments."""
        before = [rec.document_info(m) for m in heads.values()]
        if not self.expected and not any(is_attachment(d, self.settings) for d in before):
            return []
        self.candidates |= {d.source_path for d in before if is_attachment(d, self.settings) and email_source(d.source) in self.expected}
        documents = [rec.document_info(m) for m in store.current_heads(collection).values()]
        present = {d.source for d in documents}
        results = []
        for doc in documents:
            if not is_attachment(doc, self.settings):
                continue
            email = email_source(doc.source)
            if email not in present:
                reason = f"its e-mail {email} is no longer in the collection"
            elif email in self.expected and doc.source not in self.expected[email]:
                reason = f"no longer attached to {email}"
            else:
                continue
            store.delete_document(name, doc.document_id)
            self.candidates.add(doc.source_path)
            results.append(FileResult(doc.source, "pruned", message=reason))
        return results

    def release(self, store: Store) -> int:
        """:func:`release_unused` for every file this run wrote or stopped needing."""
        return release_unused(store, self.settings, self.candidates)
