"""Documents page (``/documents``): the documents of one collection, the chunks of a document
(with the ones at the model's token limit marked), re-ingest of a document from its file, and
delete. Collections themselves are managed on the Collections page (``views/library.py``).

Deep links (used by Search, Chat and Evaluate): ``?collection=NAME&document=ID&chunk=CHUNK``
where CHUNK is a chunk id or a chunk index; the chunk is highlighted and scrolled to. Each chunk
links to its source page (``views/source.py``, the same parameters).
"""

import pandas as pd
import streamlit as st

from workbench.errors import DocumentError, WorkbenchError
from workbench.ingest import attachments
from workbench.ingest.rebuild import chunk_windows, start_reingest
from ui import (
    existing_collection,
    get_jobs,
    get_settings,
    job_panel,
    latest_job,
    md_escape,
    plural,
    require_embedder,
    require_store,
    rerun_when_done,
    set_active_collection,
    show_text,
)

CHUNKS_PER_PAGE = 40
SOURCE_PAGE = "views/source.py"  # opens ?collection=&document=&chunk= on the chunk's page
state = st.session_state

# --- deep link ---------------------------------------------------------------------------
if st.query_params.get("collection"):
    set_active_collection(st.query_params["collection"])
    state.pop("docs-collection", None)  # the picker re-reads the active collection
    state["docs-doc"], state["docs-chunk"] = st.query_params.get("document"), st.query_params.get("chunk")
    st.query_params.clear()  # applied once; the same link clicked again applies again

st.title("📄 Documents")
settings = get_settings()
store = require_store()
embedder = require_embedder()
jobs = get_jobs()

if "docs-flash" in state:
    st.success(md_escape(state.pop("docs-flash")))
collection = existing_collection("Collection", key="docs-collection")
info = store.collection_info(collection)
busy = jobs.running_for(collection)
st.caption(f"{plural(info.documents, 'document')} · {plural(info.chunks, 'chunk')} · {md_escape(info.embedding_model)} ({info.embedding_dimensions}-d)")


@st.fragment(run_every=1.0)
def job_status():
    job = latest_job(collection, "docs-job")
    if job is not None and (job.running or state.get("docs-job") == job.id):
        with st.container(border=True):
            job_panel(job, key="docs")
        rerun_when_done(job, "docs")


with st.container():
    job_status()

# --- the documents -----------------------------------------------------------------------------
documents = store.documents(collection)
if not documents:
    st.info("No documents in this collection yet.")
    st.stop()
needle = st.text_input("Filter", placeholder="part of a file name or hash", key="docs-filter").strip().lower()
shown = [d for d in documents if not needle or needle in d.source.lower() or needle in d.content_hash]
table = pd.DataFrame(
    [
        {"file": d.source, "pages": d.pages, "chunks": d.chunks, "OCR pages": d.ocr_pages, "ingested at": d.ingested_at, "hash": d.content_hash[:12]}
        for d in shown
    ],
    columns=["file", "pages", "chunks", "OCR pages", "ingested at", "hash"],
)
st.caption(f"{len(shown)} of {len(documents)} documents · click a column to sort, a row to open it")
picked = st.dataframe(table, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row", key="docs-table")
rows = list(picked.selection.rows) if picked else []
if rows and rows != state.get("docs-rows") and rows[0] < len(shown):
    state["docs-doc"], state["docs-chunk"] = shown[rows[0]].document_id, None
state["docs-rows"] = rows

by_id = {d.document_id: d for d in documents}
current = state.get("docs-doc") if state.get("docs-doc") in by_id else None
options = [None, *by_id]
choice = st.selectbox("Open document", options, index=options.index(current), format_func=lambda i: "—" if i is None else by_id[i].source)
if choice != current:
    state["docs-doc"], state["docs-chunk"] = choice, None
if choice is None:
    st.stop()
doc = by_id[choice]

# --- one document ------------------------------------------------------------------------------
st.subheader(f"📄 {md_escape(doc.source)}")
st.caption(
    f"{plural(doc.pages, 'page')} · {plural(doc.chunks, 'chunk')} · {doc.ocr_pages} OCR'd · ingested {md_escape(doc.ingested_at)} · "
    f"sha256 {md_escape(doc.content_hash[:16])}… · id {md_escape(doc.document_id)}"
)
attached = attachments.attachments_of(documents, doc, settings)
if attachments.is_attachment(doc, settings):
    st.caption(f"📎 Attachment of {md_escape(attachments.email_source(doc.source))} (it is replaced, pruned and deleted with the e-mail).")
elif attached:
    st.caption(f"📎 {plural(len(attached), 'attachment')} ingested as documents: " + ", ".join(md_escape(d.source) for d in attached))
a, b = st.columns(2)
with a:
    if st.button("Re-ingest from file", disabled=bool(busy), key="docs-reingest", help=md_escape(doc.source_path) or None):
        try:
            job = start_reingest(jobs, store, collection, doc, settings, embedder)
        except DocumentError as exc:  # outside the allowed folders, or gone: nothing was read
            st.warning(md_escape(f"{exc}. Upload it again on the Ingest page (the same name replaces this document)."))
        except WorkbenchError as exc:
            st.error(md_escape(str(exc)))
        else:
            state["docs-job"] = job.id
            st.rerun()
with b:
    also = f" and its {plural(len(attached), 'attachment')}" if attached else ""
    sure = st.checkbox(f"Yes, delete this document{also}", key=f"docs-del-sure-{doc.document_id}")
    if st.button("Delete document", disabled=not sure or bool(busy), key="docs-del-doc"):
        try:
            removed = attachments.delete_document(store, settings, collection, doc.document_id)
        except WorkbenchError as exc:
            st.error(md_escape(str(exc)))
        else:
            state["docs-flash"] = f"Deleted {doc.source}{also} ({removed} chunks)."
            state["docs-doc"] = None
            st.rerun()

# --- its chunks --------------------------------------------------------------------------------
chunks = store.document_chunks(collection, doc.document_id)
target = state.get("docs-chunk")
target_index = next((c.chunk_index for c in chunks if target in (c.chunk_id, str(c.chunk_index))), None)
pages = max(1, -(-len(chunks) // CHUNKS_PER_PAGE))
start_page = target_index // CHUNKS_PER_PAGE + 1 if target_index is not None else 1
page = st.number_input(f"Chunks page (of {pages}, {CHUNKS_PER_PAGE} per page)", 1, pages, start_page, key=f"docs-chunk-page-{doc.document_id}-{target}") if pages > 1 else 1
windows = chunk_windows(store, collection, doc.document_id, embedder)
st.html(
    "<style>[class*='st-key-chunk-hl'] { background: rgba(255, 200, 0, 0.12); "
    "outline: 2px solid rgba(240, 160, 0, 0.9); border-radius: 0.5rem; scroll-margin-top: 5rem; }"
    "[class*='st-key-chunk-'] .wb-text { max-height: 16rem; overflow-y: auto; }</style>"
)
for chunk in chunks[(page - 1) * CHUNKS_PER_PAGE : page * CHUNKS_PER_PAGE]:
    highlighted = chunk.chunk_index == target_index
    with st.container(border=True, key=f"chunk-{'hl-' if highlighted else ''}{chunk.chunk_index}"):
        window = windows.get(chunk.chunk_id)
        header = f" (+{window.header_tokens} header)" if window and window.header_tokens else ""
        line = (
            f"**#{chunk.chunk_index}** · page {chunk.page} · {chunk.token_count} tokens{header} · "
            f"chars {chunk.start}–{chunk.end}" + (f" · {md_escape(chunk.section)}" if chunk.section else "")
        )
        if window and window.at_limit:
            line += f" · :orange-badge[⚠️ at the model's {embedder.max_seq_length}-token limit]"
        head, link = st.columns([4, 1])
        head.markdown(line)
        link.page_link(SOURCE_PAGE, label="Open source page", icon="📑",
                       query_params={"collection": collection, "document": doc.document_id, "chunk": chunk.chunk_id})
        show_text(chunk.text)
if target_index is not None:
    st.html(
        f"<script>setTimeout(() => {{ const el = document.querySelector('.st-key-chunk-hl-{int(target_index)}'); "
        "if (el) el.scrollIntoView({behavior: 'smooth', block: 'start'}); }, 300);</script>",
        unsafe_allow_javascript=True,
    )
