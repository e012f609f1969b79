"""Chat conversations kept across browser reloads, in a small SQLite file beside the Chroma store.

The file is ``CONVERSATIONS_DB``, default ``CHROMA_PERSIST_PATH/conversations.sqlite3`` (also in
server mode: it is always a local file). This module owns its format: table ``conversations``
(one row each) and table ``turns`` (one row per question, its citations as a JSON array), the
schema version in ``PRAGMA user_version`` (:func:`migrate`), WAL journaling.

Concurrency: every call opens its own connection (``busy_timeout`` :data:`BUSY_TIMEOUT_MS`) and
runs one short transaction, ``BEGIN IMMEDIATE`` for writes. A turn is an INSERT of its own row,
so two writers (two browser tabs, the CLI and the app) appending to one conversation never
overwrite each other. Only :class:`Conversation`, :class:`Turn` and :class:`Citation` (frozen
dataclasses) leave this module, never sqlite rows.

Typical use::

    conversations = ConversationStore.open(settings)
    conv = conversations.create(title=question, collection="kb", model="llama3.2", search_mode="hybrid")
    conversations.append_turn(conv.id, question, chat_result)   # a ChatResult or a finished ChatStream
    conversations.get(conv.id, store=store)   # turns, citations of gone chunks marked present=False
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.config import Settings
from workbench.documents import Hit
from workbench.errors import WorkbenchError

if TYPE_CHECKING:  # types only: importing .chat at run time would pull in ollama and httpx
    from workbench.answer.chat import ChatResult, ChatStream, ChatTimings

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1  # PRAGMA user_version this code writes; each version's steps are in _MIGRATIONS
FILE_NAME = "conversations.sqlite3"
BUSY_TIMEOUT_MS = 10_000  # a writer waits up to this long for another one's transaction
MAX_TITLE_CHARS = 200
AUTO_TITLE_CHARS = 80  # a title made from the first question is cut to this length
MAX_QUESTION_CHARS = 10_000
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ConversationError(WorkbenchError):
    """The conversation database cannot be opened or written, or a request is invalid."""


class ConversationNotFoundError(ConversationError):
    """No conversation has this id (never created, or deleted); the message names the id."""

    def __init__(self, conversation_id: str):
        self.conversation_id = conversation_id
        super().__init__(f"conversation {conversation_id[:80]!r} does not exist (deleted, or a wrong id)")


class TextTooLongError(ConversationError):
    """A title or question is longer than its cap (:data:`MAX_TITLE_CHARS`, :data:`MAX_QUESTION_CHARS`)."""


@dataclass(frozen=True)
class Citation:
    """A chunk given to the model for one answer, as it was then: ``number`` is its [n] in the
    answer; ``text`` the chunk text; ``score`` the retrieval score of ``mode`` (cosine in [-1, 1],
    BM25 >= 0, or fused), ``vector_score`` / ``keyword_score`` when known; ``rank`` 1-based.
    ``present``: None when not checked, True/False when :func:`mark_missing` found the chunk
    still in / gone from its collection (document re-ingested or deleted)."""

    number: int
    chunk_id: str
    document_id: str
    file_name: str
    source: str
    page: int
    chunk_index: int
    text: str
    score: float
    mode: str = "vector"
    vector_score: float | None = None
    keyword_score: float | None = None
    rank: int = 0
    section: str = ""
    present: bool | None = None

    @classmethod
    def from_hit(cls, number: int, hit: Hit) -> "Citation":
        return cls(number=number, chunk_id=hit.chunk_id, document_id=hit.document_id, file_name=hit.file_name,
                   source=hit.source, page=hit.page, chunk_index=hit.chunk_index, text=hit.text,
                   score=float(hit.score), mode=hit.mode, vector_score=hit.vector_score,
                   keyword_score=hit.keyword_score, rank=hit.rank, section=hit.section)


@dataclass(frozen=True)
class Turn:
    """One question and its answer. ``number``: 1-based position in the conversation; ``answer``
    is "" in retrieval-only mode or when the model failed before answering (then ``error`` is
    one sentence and ``error_fixes`` what the user can do); ``timings``: ChatTimings.as_dict()
    (seconds) or None; ``created_at``: ISO 8601 UTC."""

    id: int
    number: int
    question: str
    answer: str
    citations: tuple[Citation, ...]
    model: str
    collection: str
    search_mode: str
    created_at: str
    timings: Mapping[str, Any] | None = None
    error: str | None = None
    error_fixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Conversation:
    """A conversation: ``collection``, ``model`` and ``search_mode`` are the ones of its newest
    turn (of its creation before the first turn); ``turn_count`` counts every turn; ``turns``
    holds them, oldest first, only when read with :meth:`ConversationStore.get`."""

    id: str
    title: str
    collection: str
    model: str
    search_mode: str
    created_at: str
    updated_at: str
    turn_count: int = 0
    turns: tuple[Turn, ...] = ()

    def messages(self) -> list[dict[str, str]]:
        """The answered turns as chat history for ``ask_stream(history=...)``:
        ``[{"role": "user", "content": q}, {"role": "assistant", "content": a}, ...]``."""
        out: list[dict[str, str]] = []
        for turn in self.turns:
            if turn.answer and not turn.error:
                out += [{"role": "user", "content": turn.question}, {"role": "assistant", "content": turn.answer}]
        return out


# --- schema --------------------------------------------------------------------------------------
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE conversations (
            id TEXT PRIMARY KEY, title TEXT NOT NULL, collection TEXT NOT NULL, model TEXT NOT NULL,
            search_mode TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
        """CREATE TABLE turns (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            question TEXT NOT NULL, answer TEXT NOT NULL, citations TEXT NOT NULL, model TEXT NOT NULL,
            collection TEXT NOT NULL, search_mode TEXT NOT NULL, timings TEXT, error TEXT,
            error_fixes TEXT, created_at TEXT NOT NULL)""",
        "CREATE INDEX turns_by_conversation ON turns (conversation_id, id)",
        "CREATE INDEX conversations_by_update ON conversations (updated_at)",
    ),
}


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database of ``conn`` (autocommit mode) to :data:`SCHEMA_VERSION`, one
    transaction for all steps (a second process waits, then finds nothing to do). Returns the
    version it found. Raises ConversationError when the file was written by a newer version."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found > SCHEMA_VERSION:
            raise ConversationError(f"the conversation database has schema version {found}, newer than this "
                                    f"workbench's {SCHEMA_VERSION}: update the workbench")
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {int(version)}")
        conn.execute("COMMIT")
        return found
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def auto_title(question: str) -> str:
    """A title from a question: one line, cut at a word to at most AUTO_TITLE_CHARS (+ "…")."""
    line = _one_line(question)
    if len(line) <= AUTO_TITLE_CHARS:
        return line
    cut = line[:AUTO_TITLE_CHARS].rsplit(" ", 1)[0] or line[:AUTO_TITLE_CHARS]
    return cut.rstrip(" ,;:.") + "…"


def _check_title(title: str) -> str:
    line = _one_line(title)
    if not line:
        raise ConversationError("the title is empty")
    if len(line) > MAX_TITLE_CHARS:
        raise TextTooLongError(f"the title has {len(line):,} characters; the limit is {MAX_TITLE_CHARS}")
    return line


def check_question(question: str) -> str:
    """``question`` if it can be kept (not blank, at most MAX_QUESTION_CHARS), else raise
    ConversationError / TextTooLongError."""
    if not question or not question.strip():
        raise ConversationError("the question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise TextTooLongError(f"the question has {len(question):,} characters; the limit is {MAX_QUESTION_CHARS:,}")
    return question


# --- the store -----------------------------------------------------------------------------------
class ConversationStore:
    """The conversation database at ``path``; cheap to keep (it holds no connection), safe to
    share between threads and processes. Build it with :meth:`open`."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @staticmethod
    def path_for(settings: Settings) -> Path:
        """CONVERSATIONS_DB, else CHROMA_PERSIST_PATH/conversations.sqlite3 (also with CHROMA_HOST)."""
        return Path(settings.conversations_db or Path(settings.chroma_persist_path) / FILE_NAME)

    @classmethod
    def open(cls, settings: Settings) -> "ConversationStore":
        """Create or migrate the database for ``settings`` and switch it to WAL. Raises
        ConversationError when the file cannot be created or read."""
        store = cls(cls.path_for(settings))
        try:
            store.path.parent.mkdir(parents=True, exist_ok=True)
            conn = store._raw()
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    log.warning("conversation database %s: journal mode %s, not WAL", store.path, mode)
                migrate(conn)
            finally:
                conn.close()
        except (OSError, sqlite3.Error) as exc:
            raise ConversationError(f"cannot open the conversation database {store.path} ({exc}); check that "
                                    "the folder is writable (CONVERSATIONS_DB, CHROMA_PERSIST_PATH)") from exc
        return store

    def _raw(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @contextmanager
    def _transaction(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One short transaction on a fresh connection (BEGIN IMMEDIATE when ``write``)."""
        try:
            conn = self._raw()
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise ConversationError(f"conversation database {self.path}: {exc}") from exc

    # --- conversations ---------------------------------------------------------------------------
    def create(self, *, title: str = "", collection: str = "", model: str = "", search_mode: str = "") -> Conversation:
        """A new, empty conversation with a random 12-character url-safe id. ``title`` may be a
        whole first question (made one line and cut to AUTO_TITLE_CHARS); "" means the first
        appended question becomes it."""
        title = auto_title(title)
        now = _now()
        conv = Conversation(secrets.token_urlsafe(9), title, collection, model, search_mode, now, now)
        with self._transaction(write=True) as conn:
            conn.execute("INSERT INTO conversations VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (conv.id, conv.title, collection, model, search_mode, now, now))
        return conv

    def list(self, limit: int | None = None) -> list[Conversation]:
        """Conversations, newest (last updated) first, with ``turn_count`` and no turns."""
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT c.*, (SELECT COUNT(*) FROM turns t WHERE t.conversation_id = c.id) AS turn_count "
                "FROM conversations c ORDER BY c.updated_at DESC, c.rowid DESC LIMIT ?",
                (-1 if limit is None else int(limit),)).fetchall()
        return [_conversation(r) for r in rows]

    def get(self, conversation_id: str, *, store: Any = None) -> Conversation:
        """The conversation with its turns, oldest first (one consistent read). With a
        workbench ``Store``, citations are checked with :func:`mark_missing`.
        Raises ConversationNotFoundError."""
        with self._transaction() as conn:
            row = self._row(conn, conversation_id)
            turns = conn.execute("SELECT * FROM turns WHERE conversation_id = ? ORDER BY id",
                                 (conversation_id,)).fetchall()
        conv = _conversation(row, tuple(_turn(r, n) for n, r in enumerate(turns, 1)))
        return mark_missing(conv, store) if store is not None else conv

    def rename(self, conversation_id: str, title: str) -> Conversation:
        """Set the title (one line, 1-MAX_TITLE_CHARS characters). Returns the conversation
        without turns. Raises ConversationNotFoundError, TextTooLongError, ConversationError."""
        title = _check_title(title)
        with self._transaction(write=True) as conn:
            self._row(conn, conversation_id)
            conn.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conversation_id))
            row = self._row(conn, conversation_id, count=True)
        return _conversation(row)

    def delete(self, conversation_id: str) -> None:
        """Delete a conversation and its turns. Raises ConversationNotFoundError."""
        with self._transaction(write=True) as conn:
            self._row(conn, conversation_id)
            conn.execute("DELETE FROM turns WHERE conversation_id = ?", (conversation_id,))
            conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    def append_turn(
        self,
        conversation_id: str,
        question: str,
        result: "ChatResult | ChatStream | None" = None,
        *,
        answer: str | None = None,
        model: str | None = None,
        citations: Sequence[Hit | Citation] | None = None,
        timings: "ChatTimings | Mapping[str, Any] | None" = None,
        error: BaseException | str | None = None,
        collection: str | None = None,
        search_mode: str | None = None,
    ) -> Turn:
        """Append one turn (one INSERT). ``result`` (a ChatResult, or a ChatStream after its
        iteration ended or failed) supplies answer, model, citations, timings and error; the
        keyword arguments give or override them. ``error``: the exception (its ``what`` and
        ``fixes`` are kept when it has them) or a message. collection/search_mode/model default
        to the conversation's, which then follow this turn; an untitled conversation takes the
        question as title. Raises ConversationNotFoundError, TextTooLongError."""
        check_question(question)
        if result is not None:
            answer = answer if answer is not None else getattr(result, "answer", None)
            answer = answer if isinstance(answer, str) else getattr(result, "text", "")
            model = model or getattr(result, "model", None)
            citations = citations if citations is not None else getattr(result, "citations", ())
            timings = timings if timings is not None else getattr(result, "timings", None)
            error = error if error is not None else getattr(result, "error", None)
        cited = [c if isinstance(c, Citation) else Citation.from_hit(n, c) for n, c in enumerate(citations or (), 1)]
        cited = [replace(c, number=n, present=None) for n, c in enumerate(cited, 1)]
        timing_dict = timings.as_dict() if hasattr(timings, "as_dict") else (dict(timings) if timings else None)
        what, fixes = _error_parts(error)
        now = _now()
        with self._transaction(write=True) as conn:
            conv = self._row(conn, conversation_id)
            model = model or conv["model"]
            collection = collection if collection is not None else conv["collection"]
            search_mode = search_mode or conv["search_mode"]
            cursor = conn.execute(
                "INSERT INTO turns (conversation_id, question, answer, citations, model, collection, search_mode, "
                "timings, error, error_fixes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, question, answer or "", json.dumps([asdict(c) for c in cited], ensure_ascii=False),
                 model, collection, search_mode, json.dumps(timing_dict) if timing_dict else None, what,
                 json.dumps(fixes) if fixes else None, now))
            conn.execute(
                "UPDATE conversations SET updated_at = ?, model = ?, collection = ?, search_mode = ?, "
                "title = CASE WHEN title = '' THEN ? ELSE title END WHERE id = ?",
                (now, model, collection, search_mode, auto_title(question), conversation_id))
            number = conn.execute("SELECT COUNT(*) FROM turns WHERE conversation_id = ? AND id <= ?",
                                  (conversation_id, cursor.lastrowid)).fetchone()[0]
        return Turn(cursor.lastrowid, number, question, answer or "", tuple(cited), model, collection, search_mode,
                    now, timing_dict, what, tuple(fixes))

    @staticmethod
    def _row(conn: sqlite3.Connection, conversation_id: str, *, count: bool = False) -> sqlite3.Row:
        if not isinstance(conversation_id, str) or not _ID_RE.match(conversation_id):
            raise ConversationNotFoundError(str(conversation_id))
        sql = "SELECT c.*" + (", (SELECT COUNT(*) FROM turns t WHERE t.conversation_id = c.id) AS turn_count"
                              if count else "") + " FROM conversations c WHERE c.id = ?"
        row = conn.execute(sql, (conversation_id,)).fetchone()
        if row is None:
            raise ConversationNotFoundError(conversation_id)
        return row


def _error_parts(error: BaseException | str | None) -> tuple[str | None, list[str]]:
    if error is None or error == "":
        return None, []
    if isinstance(error, BaseException):
        return _one_line(getattr(error, "what", None) or str(error) or type(error).__name__), \
            [str(f) for f in getattr(error, "fixes", None) or ()]
    return _one_line(error), []


def _conversation(row: sqlite3.Row, turns: tuple[Turn, ...] = ()) -> Conversation:
    count = row["turn_count"] if "turn_count" in row.keys() else len(turns)
    return Conversation(row["id"], row["title"], row["collection"], row["model"], row["search_mode"],
                        row["created_at"], row["updated_at"], int(count), turns)


def _turn(row: sqlite3.Row, number: int) -> Turn:
    citations = tuple(Citation(**c) for c in json.loads(row["citations"]))
    return Turn(row["id"], number, row["question"], row["answer"], citations, row["model"], row["collection"],
                row["search_mode"], row["created_at"], json.loads(row["timings"]) if row["timings"] else None,
                row["error"], tuple(json.loads(row["error_fixes"])) if row["error_fixes"] else ())


# --- citations of chunks that are gone -----------------------------------------------------------
def mark_missing(conversation: Conversation, store: Any) -> Conversation:
    """``conversation`` with every citation's ``present`` set: False when its chunk id is no
    longer in its turn's collection (document re-ingested with new content, or deleted; a
    deleted collection counts too), else True. One Chroma ``get(ids=...)`` per collection of the
    conversation. ``store``: a workbench ``Store``. When the store cannot be read the
    citations stay unchecked (None) and a warning is logged."""
    wanted: dict[str, set[str]] = {}
    for turn in conversation.turns:
        for c in turn.citations:
            wanted.setdefault(turn.collection, set()).add(c.chunk_id)
    found: dict[str, set[str]] = {}
    for name, ids in wanted.items():
        try:
            if not store.has_collection(name):
                found[name] = set()
                continue
            found[name] = set(store.get_collection(name).get(ids=sorted(ids), include=[])["ids"])
        except Exception as exc:  # the Chroma server is down: say nothing rather than "gone"
            log.warning("cannot check the citations of conversation %s in %r: %s", conversation.id, name, exc)
    turns = tuple(
        replace(t, citations=tuple(replace(c, present=c.chunk_id in found[t.collection]) for c in t.citations))
        if t.collection in found else t
        for t in conversation.turns
    )
    return replace(conversation, turns=turns)
