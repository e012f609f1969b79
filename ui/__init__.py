"""Streamlit glue shared by every page: cached settings, store and model, the sidebar, and
error display. Pages import from here, never from chromadb/sentence-transformers directly."""

from __future__ import annotations

import html
import os
import re

import streamlit as st

from workbench.config import SEARCH_MODES, Settings
from workbench.diagnostics import start_up
from workbench.answer.conversations import ConversationStore
from workbench.models.embeddings import Embedder
from workbench.models.embeddings import get_embedder as _get_embedder
from workbench.errors import WorkbenchError
from workbench.logs import configure_logging
from workbench.store.chroma import Store, open_store

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@st.cache_resource(show_spinner=False)
def get_settings() -> Settings:
    """Settings read once per server process (restart the app to change them)."""
    settings = Settings()
    configure_logging(settings)
    return settings


@st.cache_resource(show_spinner="Opening the Chroma store…")
def get_store() -> Store:
    """The process-wide Store (raises StoreError when unreachable; use ``require_store``).
    Opening it first finishes what a killed run left (``workbench.diagnostics.start_up``)."""
    settings = get_settings()
    store = open_store(settings)
    start_up(settings, store)
    return store


@st.cache_resource(show_spinner="Loading the embedding model…")
def get_embedder() -> Embedder:
    """The process-wide embedding model, loaded once for every page and session."""
    return _get_embedder(get_settings())


@st.cache_resource(show_spinner=False)
def _conversations(path: str) -> ConversationStore:
    return ConversationStore.open(get_settings())


def require_conversations() -> ConversationStore:
    """The conversation database (CONVERSATIONS_DB), opened once per path, or an st.error with
    the reason and st.stop()."""
    try:
        return _conversations(str(ConversationStore.path_for(get_settings())))
    except WorkbenchError as exc:
        st.error(f"Conversation database unavailable: {exc}")
        st.stop()


def require_store() -> Store:
    """The store, or an st.error with the reason and st.stop()."""
    try:
        return get_store()
    except WorkbenchError as exc:
        st.error(f"Chroma store unavailable: {exc}")
        st.stop()


def require_embedder() -> Embedder:
    """The embedding model, or an st.error with the reason and st.stop()."""
    try:
        return get_embedder()
    except WorkbenchError as exc:
        st.error(f"Embedding model unavailable: {exc}")
        st.stop()


def active_collection() -> str:
    """The collection chosen in this session (default COLLECTION_NAME); survives page switches."""
    if "collection" not in st.session_state:
        st.session_state["collection"] = get_settings().collection_name
    return st.session_state["collection"]


def set_active_collection(name: str) -> None:
    st.session_state["collection"] = name


def collection_picker(label: str = "Collection", *, key: str | None = None, allow_new: bool = False) -> str | None:
    """A selectbox over existing collections bound to the active collection. With
    ``allow_new`` a text input lets the user type a new name. Returns the chosen name."""
    store = require_store()
    names = store.collection_names()
    current = active_collection()
    options = list(names)
    if current not in options:
        options.insert(0, current)
    new_label = "➕ New collection…"
    if allow_new:
        options.append(new_label)
    choice = st.selectbox(label, options, index=options.index(current), key=key)
    if choice == new_label:
        choice = st.text_input("New collection name", placeholder="letters, digits, . _ -", key=f"{key}-new")
        if not choice:
            return None
    set_active_collection(choice)
    return choice


def existing_collection(label: str = "Collection", *, key: str) -> str:
    """:func:`collection_picker`, then stop the page with a hint when the chosen collection does
    not exist yet (nothing ingested). Returns the name of an existing collection."""
    collection = collection_picker(label, key=key)
    if not collection or not require_store().has_collection(collection):
        st.info(f"Collection {md_escape(collection)} does not exist yet: ingest documents first (Ingest page).")
        st.stop()
    return collection


def sidebar() -> None:
    """Show the active collection and the store on every page."""
    settings = get_settings()
    with st.sidebar:
        st.caption("Active collection")
        st.markdown(f"**{md_escape(active_collection())}**")
        st.caption(f"Store: {settings.chroma_mode} · `{settings.chroma_location}`")
        running = [j for j in get_jobs().jobs() if j.running]
        if running:
            st.caption(f"⏳ {len(running)} job(s) running: " + ", ".join(md_escape(f"{j.description} → {j.collection}") for j in running))
        try:
            watcher = get_watcher()  # starts it on the first page run of the process
        except WorkbenchError as exc:
            st.warning(f"Folder watcher not running: {md_escape(exc)}")
        else:
            if watcher is not None:
                state = watcher.state
                st.caption(f"{WATCH_ICONS.get(state.status, '')} Watching {md_escape(watcher.folder.name)}: {state.status}")


@st.cache_resource
def get_jobs():
    """The process-wide JobRegistry: ingestion jobs outlive page runs and browser refreshes."""
    from workbench.ingest.jobs import JobRegistry

    return JobRegistry()


@st.cache_resource(show_spinner="Starting the folder watcher…", on_release=lambda watcher: watcher.stop())
def _started_watcher():
    from workbench.ingest.watch import FolderWatcher

    return FolderWatcher(get_settings(), store=get_store(), embedder=get_embedder(), jobs=get_jobs()).start()


def get_watcher():
    """The process-wide FolderWatcher on KNOWLEDGE_BASE_PATH, started on the first call, when
    WATCH_KNOWLEDGE_BASE is true; else None. Its runs are jobs of :func:`get_jobs`. Raises
    WorkbenchError when it cannot start (missing folder, store or model); the next call tries
    again. Clearing the cache stops it."""
    if not get_settings().watch_knowledge_base:
        return None
    return _started_watcher()


WATCH_ICONS = {"idle": "⚪", "watching": "👁️", "settling": "⏱️", "waiting-for-lock": "🔒", "ingesting": "⏳", "stopped": "⏹️", "error": "⚠️"}


def watcher_panel(watcher, *, max_events: int = 50) -> None:
    """The folder watcher's state and its recent events (newest first). Every file name and
    message is escaped or shown in a table, never rendered as markdown."""
    import datetime

    state = watcher.state
    line = f"{WATCH_ICONS.get(state.status, '')} **{state.status}** · {md_escape(state.message)}"
    (st.error if state.status == "error" else st.markdown)(line)
    pending = f" · {plural(state.pending, 'change')} pending" if state.pending else ""
    st.caption(
        f"Folder {md_escape(watcher.folder)} → collection {md_escape(watcher.collection)} · {md_escape(state.observer)}"
        f" · settle {watcher.settle_seconds:g} s{pending}"
    )
    events = watcher.events[::-1][:max_events]
    if events:
        rows = [{"time": datetime.datetime.fromtimestamp(e.time).strftime("%H:%M:%S"), "event": e.kind, "path": e.path} for e in events]
        st.dataframe(rows, hide_index=True, width="stretch")
    else:
        st.caption("No changes seen yet.")


# --- showing document text safely ---------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")
_STOPWORDS = frozenset(
    "a about after all also an and any are as at be been before but by can could did do does each "
    "for from had has have how i if in into is it its just me more most my no not of on only or other "
    "our out over same should so some such than that the their them then there these they this those "
    "to too under up very was we were what when where which while who whom why will with would you your".split()
)


def md_escape(text: str) -> str:
    """Backslash-escape markdown (and ``<``, ``>``, ``$``, ``:``) so user text such as a file
    name renders literally inside st.markdown."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


_CODE = re.compile(r"(```[\s\S]*?(?:```|$)|`[^`\n]+`)")
_LIVE = re.compile(r"[\\\[\]<>!$]|(?<=www)\.|:(?=//)")


def safe_markdown(text: str) -> str:
    """Model-written (or stored) markdown made inert for st.markdown: emphasis, lists,
    headings and code keep their formatting, but links, images, autolinks, HTML and math do not
    come alive (``\\ [ ] < > ! $``, ``www.`` and ``://`` are backslash-escaped outside code,
    where they are literal anyway). ``[1]`` citations stay readable as ``[1]``."""
    parts = _CODE.split(str(text))
    return "".join(part if i % 2 else _LIVE.sub(lambda m: "\\" + m.group(0), part) for i, part in enumerate(parts))


def plural(count: int, word: str) -> str:
    """``plural(1, "page")`` -> ``"1 page"``, ``plural(3, "page")`` -> ``"3 pages"``."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def query_terms(query: str) -> list[str]:
    """Words of ``query`` worth highlighting: lower-cased, stopwords and 1-2 letter words
    dropped (numbers kept), longest first, unique."""
    words = {w for w in re.findall(r"\w+", query.lower()) if (len(w) > 2 or w.isdigit()) and w not in _STOPWORDS}
    return sorted(words, key=lambda w: (-len(w), w))


def text_html(text: str, terms: list[str] | tuple[str, ...] = ()) -> str:
    """``text`` as one safe HTML block for ``st.markdown(..., unsafe_allow_html=True)``.

    Every piece of ``text`` is ``html.escape``d before anything is added; matches of ``terms``
    (case-insensitive, at a word start, running to the end of the word) are then wrapped in
    ``<mark>``. Newlines become ``<br>``, so the block is a single line that markdown leaves
    alone: ``**bold**``, ``# heading`` or ``$x$`` in a document stay literal text.
    """
    parts: list[str] = []
    pos = 0
    if terms:
        pattern = re.compile(r"\b(?:" + "|".join(re.escape(t) for t in terms) + r")\w*", re.IGNORECASE)
        for match in pattern.finditer(text):
            parts.append(html.escape(text[pos : match.start()]))
            parts.append(f"<mark>{html.escape(match.group(0))}</mark>")
            pos = match.end()
    parts.append(html.escape(text[pos:]))
    body = "".join(parts).replace("$", "&#36;").replace("\r", "").replace("\n", "<br>")
    return f'<div class="wb-text" style="white-space: pre-wrap; overflow-wrap: anywhere">{body}</div>'


SEARCH_MODE_LABELS = {
    "vector": "Vector",
    "keyword": "Keyword (BM25)",
    "hybrid": "Hybrid",
}
SEARCH_MODE_HELP = (
    "Vector: cosine similarity of the embeddings (finds paraphrases). Keyword: BM25 over the "
    "words (finds exact names, codes, error messages). Hybrid: both lists fused (best measured "
    "recall; see the Evaluate page)."
)


def search_mode_picker(*, key: str, horizontal: bool = True) -> str:
    """A radio of the retrieval modes (vector / keyword / hybrid), SEARCH_MODE preselected."""
    modes = list(SEARCH_MODES)
    return st.radio(
        "Retrieval", modes, index=modes.index(get_settings().search_mode), format_func=SEARCH_MODE_LABELS.get,
        horizontal=horizontal, key=key, help=SEARCH_MODE_HELP,
    )


def score_text(hit) -> str:
    """The scores of a search hit as one line of markdown: for a hybrid hit its fused rank and
    score with the vector (cosine) and keyword (BM25) scores it was fused from, else the one
    score of its mode."""
    if hit.mode == "hybrid":
        keyword = f"`{hit.keyword_score:.2f}`" if hit.keyword_score else "— (no query word)"
        return (f"fused rank {hit.rank} · fused `{hit.score:.3f}` · vector `{hit.vector_score:.3f}`"
                f" · BM25 {keyword}")
    if hit.mode == "keyword":
        return f"BM25 `{hit.score:.2f}`"
    return f"cosine `{hit.score:.3f}`"


def span_html(text: str, start: int, end: int) -> str:
    """``text`` as one safe HTML block, like :func:`text_html`, with characters [start, end)
    wrapped in ``<mark class="wb-span">``. Each piece is ``html.escape``d before the tags are
    added; newlines become ``<br>``."""
    start = max(0, min(start, len(text)))
    end = max(start, min(end, len(text)))

    def body(piece: str) -> str:
        return html.escape(piece).replace("$", "&#36;").replace("\r", "").replace("\n", "<br>")

    return (
        '<div class="wb-text" style="white-space: pre-wrap; overflow-wrap: anywhere">'
        f'{body(text[:start])}<mark class="wb-span">{body(text[start:end])}</mark>{body(text[end:])}</div>'
    )


def show_text(text: str, terms: list[str] | tuple[str, ...] = ()) -> None:
    """Render document text escaped (see :func:`text_html`), with ``terms`` highlighted."""
    st.markdown(text_html(text, terms), unsafe_allow_html=True)


# --- background jobs ----------------------------------------------------------------------------
def latest_job(collection: str | None = None, session_key: str | None = None):
    """The job this session started (``session_state[session_key]``) when it is on ``collection``,
    else the newest job on ``collection`` (any collection when None). The registry is
    process-level, so this finds a running job again after a browser refresh."""
    jobs = get_jobs()
    mine = jobs.get(st.session_state.get(session_key, 0)) if session_key else None
    if mine is not None and (collection is None or mine.collection == collection):
        return mine
    return next((j for j in jobs.jobs() if collection is None or j.collection == collection), None)


def job_panel(job, *, key: str = "job") -> None:
    """Progress of one background job: bar, current file, chunks/s, ETA, cancel, result and
    log. Call it inside an ``st.fragment(run_every=...)`` to keep it live."""
    event = job.last_event
    st.markdown(f"**Job {job.id}** · {md_escape(job.description)} → {md_escape(job.collection)} · {job.state}")
    if event:
        rate = event.chunks_done / event.elapsed_s if event.elapsed_s else 0.0
        eta = f"{event.eta_s:.0f} s" if event.eta_s is not None else "…"
        text = f"{event.files_done}/{event.files_total} files · {event.chunks_done} chunks · {rate:.1f} chunks/s"
        st.progress(min(1.0, event.fraction), text=text + (f" · ETA {eta}" if job.running else f" · {event.elapsed_s:.1f} s"))
        if job.running and event.current_file:
            st.caption(f"Now: {md_escape(event.current_file)}")
    elif job.running:
        st.progress(0.0, text="starting…")
    if job.running:
        if job.cancel_event.is_set():
            st.warning("Cancelling after the current batch…")
        elif st.button("Cancel", key=f"{key}-cancel-{job.id}"):
            job.cancel()
            st.warning("Cancelling after the current batch…")
    elif job.state == "failed":
        st.error(md_escape(job.error))
    elif job.state == "cancelled" and job.error:
        st.warning(md_escape(job.error))
    elif job.result:
        st.success(md_escape(job.result))
    if job.summary:
        s = job.summary
        counts = ", ".join(f"{n} {s.count(n)}" for n in ("added", "replaced", "unchanged", "failed", "pruned") if s.count(n))
        if not job.running:
            msg = f"{'Cancelled' if s.cancelled else 'Done'} in {s.seconds:.1f} s: {counts or 'nothing to do'}"
            (st.warning if s.cancelled or s.failures else st.success)(msg)
        rows = [
            {"file": r.source, "result": r.status, "chunks": r.chunks, "pages": r.pages, "OCR pages": r.ocr_pages, "seconds": round(r.seconds, 2), "message": r.message}
            for r in s.results
        ]
        if rows:
            st.dataframe(rows, hide_index=True, width="stretch")
    if job.log:
        with st.expander(f"Job log ({len(job.log)} lines)"):
            st.code("\n".join(job.log[-500:]), language=None)


def rerun_when_done(job, key: str) -> None:
    """Inside a polling fragment: rerun the whole page once when ``job`` ends, so buttons that
    were disabled while it ran come back and counts refresh."""
    watch = f"_watch-{key}"
    if job.running:
        st.session_state[watch] = job.id
    elif st.session_state.get(watch) == job.id:
        del st.session_state[watch]
        st.rerun()
