"""Export and import of a collection as one zip archive.

Archive format (a zip, ``FORMAT`` version ``FORMAT_VERSION``)::

    manifest.json    format, version, collection name and metadata (embedding model, dimension,
                     chunk size/overlap), record count, sha256 of the two files below
    records.jsonl    one {"id", "document", "metadata"} object per chunk, in vector order
    embeddings.npy   (count, dimension) float32, row i is the vector of line i

Both directions hold the collection lock. An archive is checked before it is read: every member's
uncompressed size and compression ratio (zip bombs), the manifest, the checksums, the array
shape and every record.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import StoreError, WorkbenchError
from workbench.store.admin import iter_records, locked, new_collection
from workbench.store.chroma import IMPORT_SUFFIX, CollectionInfo, Store, check_collection_name
from workbench.store.records import now_iso

FORMAT = "rag-workbench-collection"
FORMAT_VERSION = 1
MANIFEST, RECORDS, VECTORS = "manifest.json", "records.jsonl", "embeddings.npy"
_SCALARS = (str, int, float, bool)
#: Largest uncompressed archive accepted, bytes (about 2.5M chunks of 384-d vectors and text).
MAX_ARCHIVE_BYTES = 8 * 1024**3
#: Largest compression ratio of a member bigger than 16 MiB: float32 vectors compress ~1.1x and
#: JSON text ~3-6x, so a ratio of 100 is a zip bomb, not an archive we wrote.
MAX_RATIO = 100
#: Longest line of records.jsonl, bytes (one chunk record with its metadata).
MAX_RECORD_BYTES = 4 * 1024**2
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError)


class ArchiveError(WorkbenchError):
    """A collection archive is not one this workbench wrote, or is damaged; the message names
    the file and what is wrong."""


class _HashingWriter:
    def __init__(self, raw):
        self.raw, self.sha = raw, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self.raw.write(data)


def export_collection(store: Store, name: str, path: Path | str) -> Path:
    """Write collection ``name`` to the zip archive ``path`` (see the module docstring) and
    return the path. Vectors are stored as float32. Raises StoreError when the collection is
    missing or changes while it is exported."""
    with locked(store, name, what="an export"):
        return _export(store, name, Path(path))


def _export(store: Store, name: str, path: Path) -> Path:
    collection = store.get_collection(name)
    meta = dict(collection.metadata or {})
    count = collection.count()
    batches = iter_records(collection, store.max_batch)
    first = next(batches, None)
    dim = int(first[3].shape[1]) if first else int(meta.get("embedding_dimensions", 0) or 0)
    written = 0
    tmp = path.with_name(path.name + ".part")
    vec_tmp = path.with_name(path.name + ".vectors.part")  # zip writes one member at a time
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            with zf.open(RECORDS, "w", force_zip64=True) as rec_raw, open(vec_tmp, "wb") as vec_raw:
                rec, vec = _HashingWriter(rec_raw), _HashingWriter(vec_raw)
                np.lib.format.write_array_header_1_0(vec, {"descr": "<f4", "fortran_order": False, "shape": (count, dim)})
                for ids, docs, metas, vectors in itertools.chain([first] if first else [], batches):
                    if vectors.shape[1] != dim:
                        raise StoreError(f"collection {name!r} mixes {dim}-d and {vectors.shape[1]}-d vectors")
                    for chunk_id, doc, m in zip(ids, docs, metas):
                        line = json.dumps({"id": chunk_id, "document": doc, "metadata": m}, ensure_ascii=False)
                        rec.write((line + "\n").encode("utf-8"))
                    vec.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
                    written += len(ids)
            if written != count:
                raise StoreError(f"collection {name!r} changed while it was exported ({written} of {count} chunks); export again")
            zf.write(vec_tmp, VECTORS)
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "name": name,
                "metadata": meta,
                "embedding_model": meta.get("embedding_model", ""),
                "embedding_dimensions": dim,
                "chunk_size": meta.get("chunk_size"),
                "chunk_overlap": meta.get("chunk_overlap"),
                "count": count,
                "documents": store.collection_info(name).documents,
                "distance": "cosine",
                "exported_at": now_iso(),
                "sha256": {RECORDS: rec.sha.hexdigest(), VECTORS: vec.sha.hexdigest()},
            }
            zf.writestr(MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False))
        tmp.replace(path)
    finally:
        vec_tmp.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return path


def read_manifest(path: Path | str) -> dict[str, Any]:
    """The validated manifest of archive ``path``. Raises ArchiveError naming the file when it
    is not a zip, lacks a member, or the manifest is not this format/version."""
    path = Path(path)
    label = path.name
    if not path.is_file():
        raise ArchiveError(f"{label}: archive not found")
    if not zipfile.is_zipfile(path):
        raise ArchiveError(f"{label}: not a collection archive (not a zip file)")
    try:
        with zipfile.ZipFile(path) as zf:
            missing = {MANIFEST, RECORDS, VECTORS} - set(zf.namelist())
            if missing:
                raise ArchiveError(f"{label}: not a collection archive (missing {', '.join(sorted(missing))})")
            check_sizes(zf, label)
            manifest = json.loads(zf.read(MANIFEST).decode("utf-8"))
    except (*_ZIP_ERRORS, UnicodeDecodeError, json.JSONDecodeError, OSError) as exc:
        raise ArchiveError(f"{label}: damaged archive ({type(exc).__name__}: {exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveError(f"{label}: manifest.json is not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArchiveError(f"{label}: archive format version {manifest.get('format_version')!r} is not supported (expected {FORMAT_VERSION})")
    for key, kind in (("name", str), ("count", int), ("embedding_dimensions", int), ("metadata", dict), ("sha256", dict)):
        if not isinstance(manifest.get(key), kind):
            raise ArchiveError(f"{label}: manifest.json field {key!r} is missing or not a {kind.__name__}")
    return manifest


def check_sizes(zf: zipfile.ZipFile, label: str, *, max_bytes: int = MAX_ARCHIVE_BYTES) -> None:
    """Refuse an archive whose members would unpack to more than ``max_bytes`` in all, or one of
    whose members bigger than 16 MiB is compressed more than MAX_RATIO times (a zip bomb).
    Raises ArchiveError naming the archive."""
    total = 0
    for info in zf.infolist():
        total += info.file_size
        if info.file_size > 16 * 1024**2 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise ArchiveError(
                f"{label}: member {info.filename} would unpack {info.file_size / info.compress_size:.0f}x "
                f"(more than {MAX_RATIO}x): refused as a zip bomb"
            )
    if total > max_bytes:
        raise ArchiveError(f"{label}: unpacks to {total / 1024**3:.1f} GiB, more than the {max_bytes / 1024**3:.1f} GiB allowed")


def _check_member_hashes(zf: zipfile.ZipFile, manifest: dict, label: str) -> None:
    for member in (RECORDS, VECTORS):
        sha = hashlib.sha256()
        with zf.open(member) as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                sha.update(block)
        if sha.hexdigest() != manifest["sha256"].get(member):
            raise ArchiveError(f"{label}: {member} does not match its checksum in manifest.json (damaged archive)")


def _read_vector_header(fh, manifest: dict, label: str) -> None:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        reader = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        if reader is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, dtype = reader(fh)
    except ValueError as exc:
        raise ArchiveError(f"{label}: {VECTORS} is not a .npy array ({exc})") from exc
    want = (manifest["count"], manifest["embedding_dimensions"])
    if fortran or dtype != np.dtype("<f4") or tuple(shape) != want:
        raise ArchiveError(f"{label}: {VECTORS} holds {dtype} {tuple(shape)}, expected float32 {want}")


def _check_record(line: bytes, number: int, label: str) -> tuple[str, str, dict]:
    if len(line) >= MAX_RECORD_BYTES:
        raise ArchiveError(f"{label}: {RECORDS} line {number} is longer than {MAX_RECORD_BYTES} bytes")
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"{label}: {RECORDS} line {number} is not JSON ({exc})") from exc
    ok = isinstance(obj, dict) and isinstance(obj.get("id"), str) and obj["id"] and isinstance(obj.get("document"), str)
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if (
        not ok
        or not isinstance(meta, dict)
        or "document_id" not in meta
        or "chunk_index" not in meta
        or not all(isinstance(v, _SCALARS) for v in meta.values())
    ):
        raise ArchiveError(f"{label}: {RECORDS} line {number} is not a chunk record (id, document, flat metadata with document_id and chunk_index)")
    return obj["id"], obj["document"], meta


def import_collection(store: Store, path: Path | str, name: str | None = None) -> CollectionInfo:
    """Load archive ``path`` into a new collection ``name`` (default: the name in the manifest).

    Everything is validated (format, checksums, array shape, each record) while it is written
    into ``<name>.importing``, which is renamed to ``name`` only when complete, so a bad archive
    leaves no collection behind. Raises ArchiveError for a bad archive, StoreError when ``name``
    is invalid or exists.
    """
    path = Path(path)
    label = path.name
    manifest = read_manifest(path)
    name = check_collection_name(name or manifest["name"])
    staging = check_collection_name(name + IMPORT_SUFFIX)
    with locked(store, name, what="an import"):
        try:
            return _import(store, path, label, manifest, name, staging)
        except _ZIP_ERRORS as exc:
            raise ArchiveError(f"{label}: damaged archive ({type(exc).__name__}: {exc})") from exc


def _import(store: Store, path: Path, label: str, manifest: dict, name: str, staging: str) -> CollectionInfo:
    if store.has_collection(name):
        raise StoreError(f"collection {name!r} already exists; import under another name")
    if store.has_collection(staging):
        store.client.delete_collection(staging)
    count, dim = manifest["count"], manifest["embedding_dimensions"]
    metadata = dict(manifest["metadata"], imported_at=now_iso(), imported_from=label)
    with zipfile.ZipFile(path) as zf:
        _check_member_hashes(zf, manifest, label)
        target = new_collection(store, staging, metadata)
        try:
            with zf.open(RECORDS) as lines, zf.open(VECTORS) as vectors:
                _read_vector_header(vectors, manifest, label)
                done = 0
                while done < count:
                    k = min(store.max_batch, count - done)
                    rows = [_check_record(lines.readline(MAX_RECORD_BYTES), done + i + 1, label) for i in range(k)]
                    raw = vectors.read(k * dim * 4)
                    if len(raw) != k * dim * 4:
                        raise ArchiveError(f"{label}: {VECTORS} ends early")
                    block = np.frombuffer(raw, dtype="<f4").reshape(k, dim)
                    if not np.isfinite(block).all():
                        raise ArchiveError(f"{label}: {VECTORS} holds NaN or infinite values")
                    target.add(ids=[r[0] for r in rows], documents=[r[1] for r in rows], metadatas=[r[2] for r in rows], embeddings=block)
                    done += k
                if lines.readline(MAX_RECORD_BYTES).strip():
                    raise ArchiveError(f"{label}: {RECORDS} has more records than the manifest's count {count}")
            if target.count() != count:
                raise ArchiveError(f"{label}: {count} records expected, {target.count()} distinct ids imported (duplicate ids?)")
            target.modify(name=name)
        except BaseException:
            if store.has_collection(staging):
                store.client.delete_collection(staging)
            raise
    return store.collection_info(name)
