"""Staging uploaded files on disk, and the roots the app may read documents from.

Uploads land in the *upload area* (UPLOAD_PATH, default ``<temp dir>/workbench-uploads``):
``batch-*`` folders for an ingest (deleted when its job ends) and content-addressed
``qa/<sha256[:16]>/`` folders for Document QA (so a rerun and the OCR cache line up). The area
is emptied at start-up (:func:`clean_upload_area`).

A file name from a browser is not trusted: :func:`safe_file_name` keeps its last path part,
NFC-normalises it, drops control characters and caps it at MAX_NAME_BYTES of UTF-8 with its
suffix kept. Two uploads with the same name in one drop are kept apart (``a.txt``,
``a (2).txt``). A path stored in a collection (``source_path``, which an imported archive could
set to anything) is read only when it lies under the knowledge base, the upload area or the
attachment area of e-mail attachments (:func:`confine`, :func:`stored_source`). A collection archive uploaded for import is staged
in an ``import-*`` folder and deleted when the import ends (:func:`import_uploaded_archive`).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import unicodedata
from collections.abc import Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath

from workbench.config import Settings
from workbench.documents import DocumentInfo, FileResult
from workbench.errors import DocumentError
from workbench.ingest.attachments import attachment_root
from workbench.ingest.pipeline import SourceFile
from workbench.store import Store
from workbench.store.archive import import_collection
from workbench.store.chroma import CollectionInfo

#: Longest staged file name, bytes of UTF-8 (most file systems allow 255).
MAX_NAME_BYTES = 200


def upload_root(settings: Settings) -> Path:
    """The upload area: UPLOAD_PATH, else ``<temp dir>/workbench-uploads``."""
    return Path(settings.upload_path) if settings.upload_path else Path(tempfile.gettempdir()) / "workbench-uploads"


def safe_file_name(name: str) -> str:
    """A file name safe to create: the last part of ``name`` (``/`` or ``\\`` separated), NFC,
    without control or format characters, without leading dots or spaces, at most
    MAX_NAME_BYTES bytes of UTF-8 (the stem is shortened, the suffix kept). Raises
    DocumentError when nothing usable is left, or only an extension (``"\x07.txt"``,
    ``".txt"``)."""
    raw = str(name or "")
    base = PureWindowsPath(PurePosixPath(raw).name).name
    base = unicodedata.normalize("NFC", base)
    base = "".join(ch for ch in base if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn")).strip()
    head, dot, _ = base.rpartition(".")
    if dot and not head.strip(". "):  # only an extension is left, e.g. "\x07.txt" -> ".txt"
        raise DocumentError(f"{raw[:80]!r}: not a usable file name")
    base = base.lstrip(". ").strip()
    if not base:
        raise DocumentError(f"{raw[:80]!r}: not a usable file name")
    suffix = Path(base).suffix if len(Path(base).suffix.encode()) <= 16 else ""
    stem = base[: len(base) - len(suffix)] if suffix else base
    while len((stem + suffix).encode("utf-8")) > MAX_NAME_BYTES:
        stem = stem[:-1]
    if not stem.strip():
        raise DocumentError(f"{raw[:80]!r}: not a usable file name")
    return stem + suffix


def _check_size(name: str, size: int, settings: Settings) -> None:
    if size > settings.max_upload_mb * 1024 * 1024:
        raise DocumentError(f"{name}: {size / 2**20:.1f} MB is above MAX_UPLOAD_MB={settings.max_upload_mb}")


def stage_upload(name: str, data: bytes, settings: Settings) -> Path:
    """Write one upload to ``<upload area>/qa/<sha256[:16]>/<safe name>`` and return the path
    (the same bytes reuse the same file). Raises DocumentError when it is larger than
    MAX_UPLOAD_MB or has no usable name."""
    safe = safe_file_name(name)
    _check_size(safe, len(data), settings)
    folder = upload_root(settings) / "qa" / hashlib.sha256(data).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / safe
    if not target.is_file() or target.stat().st_size != len(data):
        tmp = folder / f".{hashlib.sha256(safe.encode()).hexdigest()[:8]}.part"
        tmp.write_bytes(data)
        tmp.replace(target)
    return target


def stage_batch(files: Iterable[tuple[str, bytes]], settings: Settings) -> tuple[Path | None, list[SourceFile], list[FileResult]]:
    """Write a drop of uploads (``(name, bytes)`` pairs) into a fresh folder of the upload area
    for one ingest. Returns ``(folder, files to ingest, failures)``: a file that is too large
    or has no usable name fails alone (a FileResult naming it) and the rest go on; same names
    are kept apart (``a.txt``, ``a (2).txt``). ``folder`` is None when nothing was staged. The
    folder is removed again if writing fails; the caller removes it when the ingest ends."""
    root = upload_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="batch-", dir=root))
    staged: list[SourceFile] = []
    failed: list[FileResult] = []
    taken: set[str] = set()
    try:
        for name, data in files:
            try:
                safe = safe_file_name(name)
                _check_size(safe, len(data), settings)
            except DocumentError as exc:
                failed.append(FileResult(str(name)[:200], "failed", message=str(exc)))
                continue
            unique, n = safe, 1
            while unique.casefold() in taken:
                n += 1
                stem, suffix = Path(safe).stem, Path(safe).suffix
                unique = safe_file_name(f"{stem} ({n}){suffix}")
            taken.add(unique.casefold())
            target = folder / unique
            target.write_bytes(data)
            staged.append(SourceFile(target, unique))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if not staged:
        shutil.rmtree(folder, ignore_errors=True)
        return None, staged, failed
    return folder, staged, failed


def import_uploaded_archive(store: Store, file_name: str, data: bytes, settings: Settings, *, name: str | None = None) -> CollectionInfo:
    """Import an uploaded collection archive (:func:`workbench.store.archive.import_collection`)
    as collection ``name`` (None or empty: the name in the archive). The bytes are staged as
    ``<upload area>/import-*/<safe name>`` and deleted when the import ends, whatever happens.
    Raises DocumentError for a file larger than MAX_UPLOAD_MB or without a usable name,
    ArchiveError for a bad archive (the message names the file), StoreError when ``name`` is
    invalid or taken."""
    safe = safe_file_name(file_name)
    _check_size(safe, len(data), settings)
    root = upload_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="import-", dir=root))
    try:
        path = folder / safe
        path.write_bytes(data)
        return import_collection(store, path, name=name or None)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def clean_upload_area(settings: Settings) -> int:
    """Delete everything in the upload area (at start-up: no job is running yet). Returns the
    number of entries removed."""
    root = upload_root(settings)
    if not root.is_dir():
        return 0
    removed = 0
    for entry in root.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    return removed


def allowed_roots(settings: Settings) -> list[Path]:
    """Folders documents may be read from again: the knowledge base, the upload area and the
    attachment area (``<CHROMA_PERSIST_PATH>/attachments``, :mod:`workbench.ingest.attachments`),
    where the e-mail attachments ingested as documents are kept."""
    return [Path(settings.knowledge_base_path).resolve(), upload_root(settings).resolve(), attachment_root(settings)]


def confine(path: Path | str, settings: Settings) -> Path:
    """``path`` resolved, if it lies under :func:`allowed_roots`; else DocumentError. Used for
    paths read from a collection (``source_path``), which an imported archive could set."""
    resolved = Path(path).resolve()
    for root in allowed_roots(settings):
        if resolved == root or root in resolved.parents:
            return resolved
    raise DocumentError(
        f"{Path(path).name}: {path} is outside the knowledge base and the upload area (and the e-mail attachment area); "
        "only files there are read again"
    )


def stored_source(document: DocumentInfo, settings: Settings) -> SourceFile:
    """The file ``document`` was ingested from, to read again, as a SourceFile under the same
    ``source``: its ``source_path`` passed through :func:`confine` first, so nothing outside the
    knowledge base, the upload area and the attachment area is ever opened or checked with
    ``is_file``. Raises
    DocumentError when no path was stored, it lies outside those folders, or the file is gone."""
    if not document.source_path:
        raise DocumentError(f"{document.source}: no original file was recorded for this document")
    path = confine(document.source_path, settings)
    if not path.is_file():
        raise DocumentError(f"{document.source}: the original file {document.source_path} no longer exists")
    return SourceFile(path, document.source)
