"""Collections page: every collection with its counts, model and chunking; create, import,
rename, delete, rebuild and export; open a collection's documents, open a document's chunks.

Deep links (used by Search and Chat citations): ``?collection=NAME&document=ID&chunk=CHUNK``
where CHUNK is a chunk id or a chunk index; the chunk is highlighted and scrolled to.
"""

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from workbench.ingest import rebuild
from workbench.store import admin
from workbench.store import archive as wa
from workbench.ingest.chunking import SPECIAL_TOKENS
from workbench.errors import WorkbenchError
from workbench.ingest.pipeline import SourceFile
from workbench.retrieval import delete_collection
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
TABS = ["📄 Documents", "🔁 Rebuild", "⬇️ Export", "✏️ Rename / delete"]
EXPORT_DIR = Path(tempfile.gettempdir()) / "workbench-exports"

st.title("🗂️ Collections")
settings = get_settings()
store = require_store()
embedder = require_embedder()
jobs = get_jobs()
state = st.session_state


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{max(1, round(n / 1e3))} kB"


def go_to(collection: str, document: str | None = None, chunk: str | None = None) -> None:
    """Open ``collection`` (and a document/chunk) on the next run."""
    set_active_collection(collection)
    state.pop("coll-open", None)  # the picker re-reads the active collection
    state["coll-doc"] = document
    state["coll-chunk"] = chunk


# --- deep link ---------------------------------------------------------------------------
link = (st.query_params.get("collection"), st.query_params.get("document"), st.query_params.get("chunk"))
if link[0]:
    go_to(*link)
    state["coll-tabs"] = TABS[0]
    st.query_params.clear()  # applied once; the same link clicked again applies again
# Fixed slots: elements above the tabs must not come and go, or the tabs reset to the first one.
flash = st.empty()
if "coll-flash" in state:
    flash.success(state.pop("coll-flash"))

# --- all collections ---------------------------------------------------------------------
infos = store.list_collections()
if infos:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "collection": i.name,
                    "documents": i.documents,
                    "chunks": i.chunks,
                    "model": i.embedding_model,
                    "dimension": i.embedding_dimensions,
                    "chunk size": i.chunk_size,
                    "overlap": i.chunk_overlap,
                    "matches model": "✅" if (i.embedding_model, i.embedding_dimensions) == (embedder.name, embedder.dimension) else "❌",
                    "created": i.created_at,
                }
                for i in infos
            ]
        ),
        hide_index=True,
        width="stretch",
    )
else:
    st.info("No collections yet: create one below or ingest documents (Ingest page).")

new_col, import_col = st.columns(2)
with new_col.expander("➕ New collection"):
    name = st.text_input("Name", placeholder="letters, digits, . _ -", key="coll-new-name")
    st.caption(f"Built with {embedder.name} ({embedder.dimension}-d), chunks of {settings.chunk_size} tokens, overlap {settings.chunk_overlap}.")
    if st.button("Create", disabled=not name, key="coll-create"):
        try:
            admin.create_collection(store, name, model=embedder.name, dimensions=embedder.dimension, chunk_size=settings.chunk_size, chunk_overlap=settings.chunk_overlap)
            state["coll-flash"] = f"Created collection {name}."
            go_to(name)
            st.rerun()
        except WorkbenchError as exc:
            st.error(str(exc))
with import_col.expander("📦 Import an archive"):
    archive = st.file_uploader("Collection archive (.zip exported here)", type=["zip"], key="coll-import-file")
    import_name = st.text_input("Import as (empty: the name in the archive)", key="coll-import-name")
    if st.button("Import", disabled=archive is None, key="coll-import"):
        with tempfile.TemporaryDirectory(prefix="workbench-import-") as tmp:
            path = Path(tmp) / Path(archive.name).name
            path.write_bytes(archive.getbuffer())
            try:
                with st.spinner("Importing…"):
                    info = wa.import_collection(store, path, name=import_name or None)
                state["coll-flash"] = f"Imported {info.name}: {info.documents} documents, {info.chunks} chunks."
                go_to(info.name)
                st.rerun()
            except WorkbenchError as exc:
                st.error(str(exc))

st.divider()
collection = existing_collection("Open collection", key="coll-open")
info = store.collection_info(collection)
busy = jobs.running_for(collection)
st.caption(
    f"{plural(info.documents, 'document')} · {plural(info.chunks, 'chunk')} · {md_escape(info.embedding_model)} ({info.embedding_dimensions}-d) · "
    f"chunks of {info.chunk_size} tokens, overlap {info.chunk_overlap} · created {info.created_at}"
)


@st.fragment(run_every=1.0)
def job_status():
    job = latest_job(collection, "coll-job")
    if job is not None and (job.running or state.get("coll-job") == job.id):
        with st.container(border=True):
            job_panel(job, key="coll")
        rerun_when_done(job, "coll")


with st.container():
    job_status()
docs_tab, rebuild_tab, export_tab, manage_tab = st.tabs(TABS, key="coll-tabs", on_change="rerun")

# --- rebuild -----------------------------------------------------------------------------
with rebuild_tab:
    st.markdown(
        "Re-chunk and re-embed every document into a shadow collection "
        f"`{collection}{admin.REBUILD_SUFFIX}`, then swap it in. `{collection}` stays searchable until the swap."
    )
    model = st.text_input("Embedding model", value=info.embedding_model or settings.embedding_model, key="coll-rb-model")
    r1, r2 = st.columns(2)
    size = r1.number_input("Chunk size (tokens)", 16, embedder.max_seq_length - SPECIAL_TOKENS, info.chunk_size or settings.chunk_size, key="coll-rb-size")
    overlap = r2.number_input("Chunk overlap (tokens)", 0, 256, info.chunk_overlap or settings.chunk_overlap, key="coll-rb-overlap")
    if model != settings.embedding_model:
        st.warning(f"Search uses the loaded model ({settings.embedding_model}); after the swap set EMBEDDING_MODEL={model} and restart.")
    if st.button("Rebuild and swap", disabled=bool(busy), key="coll-rb-start"):
        try:
            new_settings = rebuild.settings_for_rebuild(settings, embedding_model=model, chunk_size=int(size), chunk_overlap=int(overlap))
        except ValueError as exc:
            st.error(f"Invalid rebuild settings: {exc.errors()[0]['msg'] if hasattr(exc, 'errors') else exc}")
        else:
            same_model = new_settings.embedding_model == settings.embedding_model

            def work(progress, cancel, name=collection, s=new_settings, e=embedder if same_model else None):
                new = rebuild.rebuild(store, name, s, progress, embedder=e, cancel=cancel)
                return f"Rebuilt {name}: {new.documents} documents, {new.chunks} chunks, {new.embedding_model}, chunks of {new.chunk_size}/{new.chunk_overlap}."

            try:
                job = jobs.start_task(work, collection=collection, description=f"rebuild ({model}, {int(size)}/{int(overlap)})")
                state["coll-job"] = job.id
                st.rerun()
            except WorkbenchError as exc:
                st.error(str(exc))

# --- export ------------------------------------------------------------------------------
with export_tab:
    st.markdown("One zip with chunks, vectors (float32), metadata and a manifest naming the model and chunk settings.")
    if st.button("Build archive", disabled=bool(busy), key="coll-export"):
        EXPORT_DIR.mkdir(parents=True, exist_ok=True)
        try:
            with st.spinner("Exporting…"):
                path = wa.export_collection(store, collection, EXPORT_DIR / f"{collection}.zip")
            state["coll-export-path"] = (collection, str(path))
        except WorkbenchError as exc:
            st.error(str(exc))
    exported = state.get("coll-export-path")
    if exported and exported[0] == collection and Path(exported[1]).is_file():
        path = Path(exported[1])
        st.download_button(
            f"Download {path.name} ({_size(path.stat().st_size)})", path.read_bytes(), file_name=path.name, mime="application/zip", key="coll-download"
        )

# --- rename / delete -----------------------------------------------------------------------
with manage_tab:
    new_name = st.text_input("New name", key="coll-rename-to")
    if st.button("Rename", disabled=not new_name or bool(busy), key="coll-rename"):
        try:
            admin.rename_collection(store, collection, new_name)
            state["coll-flash"] = f"Renamed {collection} to {new_name}."
            go_to(new_name)
            st.rerun()
        except WorkbenchError as exc:
            st.error(str(exc))
    st.markdown("---")
    confirm = st.text_input(f"Type `{collection}` to delete it with its {info.chunks} chunks", key="coll-delete-confirm")
    if st.button("Delete collection", type="primary", disabled=confirm != collection or bool(busy), key="coll-delete"):
        delete_collection(store, collection)
        state["coll-flash"] = f"Deleted collection {collection}."
        go_to(settings.collection_name)
        st.rerun()

# --- documents ----------------------------------------------------------------------------
with docs_tab:
    documents = store.documents(collection)
    if not documents:
        st.info("No documents in this collection yet.")
        st.stop()
    needle = st.text_input("Filter", placeholder="part of a file name or hash", key="coll-filter").strip().lower()
    shown = [d for d in documents if not needle or needle in d.source.lower() or needle in d.content_hash]
    table = pd.DataFrame(
        [
            {
                "file": d.source,
                "pages": d.pages,
                "chunks": d.chunks,
                "OCR pages": d.ocr_pages,
                "ingested at": d.ingested_at,
                "hash": d.content_hash[:12],
            }
            for d in shown
        ],
        columns=["file", "pages", "chunks", "OCR pages", "ingested at", "hash"],
    )
    st.caption(f"{len(shown)} of {len(documents)} documents · click a column to sort, a row to open it")
    picked = st.dataframe(table, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row", key="coll-docs-table")
    rows = list(picked.selection.rows) if picked else []
    if rows and rows != state.get("coll-docs-rows") and rows[0] < len(shown):
        state["coll-doc"], state["coll-chunk"] = shown[rows[0]].document_id, None
    state["coll-docs-rows"] = rows

    by_id = {d.document_id: d for d in documents}
    current = state.get("coll-doc") if state.get("coll-doc") in by_id else None
    options = [None, *by_id]
    choice = st.selectbox("Open document", options, index=options.index(current), format_func=lambda i: "—" if i is None else by_id[i].source)
    if choice != current:
        state["coll-doc"], state["coll-chunk"] = choice, None
    if choice is None:
        st.stop()
    doc = by_id[choice]

    st.subheader(f"📄 {md_escape(doc.source)}")
    st.caption(
        f"{plural(doc.pages, 'page')} · {plural(doc.chunks, 'chunk')} · {doc.ocr_pages} OCR'd · ingested {doc.ingested_at} · "
        f"sha256 {doc.content_hash[:16]}… · id {doc.document_id}"
    )
    a, b = st.columns(2)
    with a:
        if st.button("Re-ingest from file", disabled=bool(busy), key="coll-reingest", help=doc.source_path or None):
            path = Path(doc.source_path) if doc.source_path else None
            if path is None or not path.is_file():
                st.warning(f"The original file {doc.source_path or doc.source} no longer exists; upload it again on the Ingest page (same name replaces this document).")
            else:
                try:
                    job = jobs.start_ingest([SourceFile(path, doc.source)], settings=settings, store=store, embedder=embedder, collection=collection, description=f"re-ingest {doc.source}")
                    state["coll-job"] = job.id
                    st.rerun()
                except WorkbenchError as exc:
                    st.error(str(exc))
    with b:
        sure = st.checkbox("Yes, delete this document", key=f"coll-del-sure-{doc.document_id}")
        if st.button("Delete document", disabled=not sure or bool(busy), key="coll-del-doc"):
            removed = admin.delete_document(store, collection, doc.document_id)
            state["coll-flash"] = f"Deleted {md_escape(doc.source)} ({removed} chunks)."
            state["coll-doc"] = None
            st.rerun()

    chunks = store.document_chunks(collection, doc.document_id)
    target = state.get("coll-chunk")
    target_index = next((c.chunk_index for c in chunks if target in (c.chunk_id, str(c.chunk_index))), None)
    pages = max(1, -(-len(chunks) // CHUNKS_PER_PAGE))
    start_page = target_index // CHUNKS_PER_PAGE + 1 if target_index is not None else 1
    page = st.number_input(f"Chunks page (of {pages}, {CHUNKS_PER_PAGE} per page)", 1, pages, start_page, key=f"coll-chunk-page-{doc.document_id}-{target}") if pages > 1 else 1
    limit = embedder.max_seq_length
    window = rebuild.embedded_token_counts(store, collection, doc.document_id, embedder.count_tokens)
    st.html(
        "<style>[class*='st-key-chunk-hl'] { background: rgba(255, 200, 0, 0.12); "
        "outline: 2px solid rgba(240, 160, 0, 0.9); border-radius: 0.5rem; scroll-margin-top: 5rem; }"
        "[class*='st-key-chunk-'] .wb-text { max-height: 16rem; overflow-y: auto; }</style>"
    )
    for chunk in chunks[(page - 1) * CHUNKS_PER_PAGE : page * CHUNKS_PER_PAGE]:
        highlighted = chunk.chunk_index == target_index
        with st.container(border=True, key=f"chunk-{'hl-' if highlighted else ''}{chunk.chunk_index}"):
            embedded = window.get(chunk.chunk_id, chunk.token_count)
            header = f" (+{embedded - chunk.token_count} header)" if embedded > chunk.token_count else ""
            line = (
                f"**#{chunk.chunk_index}** · page {chunk.page} · {chunk.token_count} tokens{header} · "
                f"chars {chunk.start}–{chunk.end}" + (f" · {md_escape(chunk.section)}" if chunk.section else "")
            )
            if embedded + SPECIAL_TOKENS >= limit:
                line += f" · :orange-badge[⚠️ at the model's {limit}-token limit]"
            st.markdown(line)
            show_text(chunk.text)
    if target_index is not None:
        st.html(
            f"<script>setTimeout(() => {{ const el = document.querySelector('.st-key-chunk-hl-{target_index}'); "
            "if (el) el.scrollIntoView({behavior: 'smooth', block: 'start'}); }, 300);</script>",
            unsafe_allow_javascript=True,
        )
