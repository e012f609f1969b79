"""Sentence vectors of chunks, kept beside the chunks: the sidecar behind hybrid search's
best-sentence score (:mod:`workbench.retrieval.fusion`).

**What is stored.** For a chunk of two or more sentences (:func:`sentence_spans`), one vector per
sentence: the mean of the model's output token vectors that fall inside the sentence, taken from
the encoder pass that embeds the chunk (``header + text``) at ingest, L2-normalised, float16
(:meth:`workbench.models.embeddings.Embedder.encode_with_spans`). No extra encoder pass.

**Where.** One SQLite file per collection, named by the collection's Chroma id (a rename keeps
it): ``<CHROMA_PERSIST_PATH>/sentence_vectors/<collection id>.sqlite3`` (in server mode under a
``<host>_<port>`` subfolder, like the BM25 indexes: a local cache of this machine's ingests).
Rows are ``(chunk id, fingerprint, vectors)``.

**Never a wrong score.** An entry counts only when its fingerprint equals
:func:`fingerprint` of the candidate's own header, text and the query's model
(:meth:`SentenceVectors.get`); anything else (no file, no row, another text or model, a damaged
file) is a *missing* entry, and the caller computes the vectors at query time, the same way.
So the sidecar can lag behind Chroma in any direction without harm, which is what makes it
crash-safe: ingest writes entries before it writes and commits the chunks; the store deletes
them after it deletes the chunks; :meth:`workbench.store.Store.repair` removes the entries of
chunks that are gone (a kill between the two steps).
"""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from workbench.config import Settings

log = logging.getLogger(__name__)

#: Version of how sentence vectors are made (splitter + pooling); part of every fingerprint.
METHOD = "pooled-1"

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n\s*\n|\n(?=\s*[-*#>|]|\s*\d+[.)]\s)")
#: SQLite host parameters per statement (the default limit is 32766; stay well below).
_IN_BATCH = 900


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character spans of the sentences of ``text``: split after . ! ? before a
    capital or digit, at blank lines and at list items; spans of whitespace only are dropped.
    ``" ".join(text[a:b].split())`` of each span is :func:`sentences`."""
    out, pos = [], 0
    text = text or ""
    for match in [*_SENTENCE_END.finditer(text), None]:
        end = match.start() if match else len(text)
        if text[pos:end].strip():
            out.append((pos, end))
        if match:
            pos = match.end()
    return out


def sentences(text: str) -> list[str]:
    """The sentences of a chunk (see :func:`sentence_spans`), whitespace collapsed."""
    return [" ".join(text[a:b].split()) for a, b in sentence_spans(text)]


def fingerprint(model: str, header: str, text: str) -> bytes:
    """16 bytes naming what a chunk's sentence vectors are computed from: METHOD, the model
    name, the chunk's context header and text."""
    return hashlib.sha256(f"{METHOD}\x00{model}\x00{header or ''}\x00{text or ''}".encode()).digest()[:16]


def sidecar_root(settings: Settings) -> Path:
    """Folder of the sentence-vector files of this store (see module docstring)."""
    root = Path(settings.chroma_persist_path) / "sentence_vectors"
    if settings.chroma_host:
        root = root / f"{settings.chroma_host}_{settings.chroma_port}"
    return root


class SentenceVectors:
    """The sentence-vector files of one store. Reading never raises (a problem is a missing
    entry, logged); writing logs and gives up on an error (the entries are then computed at query
    time). Safe across threads and processes (SQLite in WAL mode; one connection per thread)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._local = threading.local()

    def path(self, collection_id: str) -> Path:
        return self.root / f"{collection_id}.sqlite3"

    def _connect(self, collection_id: str, *, create: bool) -> sqlite3.Connection | None:
        conns = self._local.__dict__.setdefault("conns", {})
        conn = conns.get(collection_id)
        path = self.path(collection_id)
        if conn is not None and path.exists():
            return conn
        if conn is not None:  # the file was deleted (collection dropped): forget the handle
            conn.close()
            conns.pop(collection_id, None)
        if not create and not path.exists():
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # a lost entry after power loss is only missing
        conn.execute("CREATE TABLE IF NOT EXISTS sentences (chunk_id TEXT PRIMARY KEY, fingerprint BLOB NOT NULL, vectors BLOB NOT NULL) WITHOUT ROWID")
        conns[collection_id] = conn
        return conn

    def put(self, collection_id: str, rows: Iterable[tuple[str, bytes, np.ndarray]]) -> None:
        """Store ``(chunk id, fingerprint, (m, d) vectors)`` rows (replacing rows of those ids),
        in one transaction."""
        data = [(cid, fp, np.ascontiguousarray(v, dtype=np.float16).tobytes()) for cid, fp, v in rows]
        if not data:
            return
        try:
            conn = self._connect(collection_id, create=True)
            with conn:
                conn.executemany("INSERT OR REPLACE INTO sentences VALUES (?, ?, ?)", data)
        except (sqlite3.Error, OSError) as exc:
            log.warning("cannot store sentence vectors for %s (%s); they will be computed at query time", collection_id, exc)

    def get(self, collection_id: str, wanted: Sequence[tuple[str, bytes]], dimension: int) -> dict[str, np.ndarray]:
        """``{chunk id: (m, dimension) float32}`` for the ``(chunk id, fingerprint)`` pairs whose
        stored entry has that fingerprint; the rest are missing."""
        if not wanted:
            return {}
        expected = dict(wanted)
        out: dict[str, np.ndarray] = {}
        try:
            conn = self._connect(collection_id, create=False)
            if conn is None:
                return {}
            ids = list(expected)
            for lo in range(0, len(ids), _IN_BATCH):
                part = ids[lo : lo + _IN_BATCH]
                rows = conn.execute(f"SELECT chunk_id, fingerprint, vectors FROM sentences WHERE chunk_id IN ({','.join('?' * len(part))})", part)
                for cid, fp, blob in rows:
                    if fp == expected[cid] and blob and len(blob) % (2 * dimension) == 0:
                        out[cid] = np.frombuffer(blob, dtype=np.float16).reshape(-1, dimension).astype(np.float32)
        except (sqlite3.Error, OSError) as exc:
            log.warning("cannot read sentence vectors of %s (%s); computing them", collection_id, exc)
        return out

    def ids(self, collection_id: str) -> set[str]:
        """Chunk ids with an entry."""
        try:
            conn = self._connect(collection_id, create=False)
            return {row[0] for row in conn.execute("SELECT chunk_id FROM sentences")} if conn else set()
        except (sqlite3.Error, OSError) as exc:
            log.warning("cannot list sentence vectors of %s (%s)", collection_id, exc)
            return set()

    def delete(self, collection_id: str, chunk_ids: Iterable[str]) -> None:
        """Remove the entries of ``chunk_ids`` (absent ones are ignored)."""
        ids = list(chunk_ids)
        try:
            conn = self._connect(collection_id, create=False)
            if conn is None or not ids:
                return
            with conn:
                for lo in range(0, len(ids), _IN_BATCH):
                    part = ids[lo : lo + _IN_BATCH]
                    conn.execute(f"DELETE FROM sentences WHERE chunk_id IN ({','.join('?' * len(part))})", part)
        except (sqlite3.Error, OSError) as exc:  # left behind: harmless (fingerprinted), repair removes them
            log.warning("cannot delete sentence vectors of %s (%s)", collection_id, exc)

    def drop(self, collection_id: str) -> None:
        """Delete the collection's file (its collection was deleted)."""
        conn = self._local.__dict__.get("conns", {}).pop(collection_id, None)
        if conn is not None:
            conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path(collection_id)}{suffix}").unlink(missing_ok=True)
