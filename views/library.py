"""Collections page (``/collections``): every collection with its counts, model and chunking;
create, import, rename, delete, rebuild and export. A collection's documents and chunks are on
the Documents page (``views/documents.py``).

An old deep link ``/collections?collection=NAME&document=ID&chunk=CHUNK`` still works: it is
passed on to the Documents page.
"""

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from workbench.errors import WorkbenchError
from workbench.ingest.rebuild import max_chunk_size, start_rebuild
from workbench.ingest.uploads import import_uploaded_archive
from workbench.retrieval import delete_collection
from workbench.store import admin
from workbench.store.archive import export_collection
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
)

DOCUMENTS_PAGE = "views/documents.py"
TABS = ["🔁 Rebuild", "⬇️ Export", "✏️ Rename / delete"]
EXPORT_DIR = Path(tempfile.gettempdir()) / "workbench-exports"

state = st.session_state
# --- an old deep link: the documents view moved to the Documents page -------------------------
if st.query_params.get("document"):
    st.switch_page(DOCUMENTS_PAGE, query_params=st.query_params.to_dict())
if st.query_params.get("collection"):
    set_active_collection(st.query_params["collection"])
    state.pop("coll-open", None)
    st.query_params.clear()

st.title("🗂️ Collections")
settings = get_settings()
store = require_store()
embedder = require_embedder()
jobs = get_jobs()


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{max(1, round(n / 1e3))} kB"


def go_to(collection: str, flash: str) -> None:
    """Open ``collection`` on the next run with the message ``flash`` (plain text)."""
    set_active_collection(collection)
    state.pop("coll-open", None)  # the picker re-reads the active collection
    state["coll-flash"] = flash
    st.rerun()


# Fixed slots: elements above the tabs must not come and go, or the tabs reset to the first one.
flash = st.empty()
if "coll-flash" in state:
    flash.success(md_escape(state.pop("coll-flash")))

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
    st.caption(
        f"Built with {md_escape(embedder.name)} ({embedder.dimension}-d), chunks of {settings.chunk_size} tokens, "
        f"overlap {settings.chunk_overlap}."
    )
    if st.button("Create", disabled=not name, key="coll-create"):
        try:
            admin.create_collection(store, name, model=embedder.name, dimensions=embedder.dimension, chunk_size=settings.chunk_size, chunk_overlap=settings.chunk_overlap)
        except WorkbenchError as exc:
            st.error(md_escape(str(exc)))
        else:
            go_to(name, f"Created collection {name}.")
with import_col.expander("📦 Import an archive"):
    archive = st.file_uploader("Collection archive (.zip exported here)", type=["zip"], key="coll-import-file")
    import_name = st.text_input("Import as (empty: the name in the archive)", key="coll-import-name")
    if st.button("Import", disabled=archive is None, key="coll-import"):
        try:
            with st.spinner("Importing…"):
                info = import_uploaded_archive(store, archive.name, archive.getvalue(), settings, name=import_name or None)
        except WorkbenchError as exc:
            st.error(md_escape(str(exc)))
        else:
            go_to(info.name, f"Imported {info.name}: {info.documents} documents, {info.chunks} chunks.")

st.divider()
collection = existing_collection("Open collection", key="coll-open")
info = store.collection_info(collection)
busy = jobs.running_for(collection)
st.caption(
    f"{plural(info.documents, 'document')} · {plural(info.chunks, 'chunk')} · {md_escape(info.embedding_model)} ({info.embedding_dimensions}-d) · "
    f"chunks of {info.chunk_size} tokens, overlap {info.chunk_overlap} · created {md_escape(info.created_at)}"
)
st.page_link(DOCUMENTS_PAGE, label=f"Browse its {plural(info.documents, 'document')} and chunks", icon="📄")


@st.fragment(run_every=1.0)
def job_status():
    job = latest_job(collection, "coll-job")
    if job is not None and (job.running or state.get("coll-job") == job.id):
        with st.container(border=True):
            job_panel(job, key="coll")
        rerun_when_done(job, "coll")


with st.container():
    job_status()
rebuild_tab, export_tab, manage_tab = st.tabs(TABS, key="coll-tabs", on_change="rerun")

# --- rebuild -----------------------------------------------------------------------------
with rebuild_tab:
    st.markdown(
        "Re-chunk and re-embed every document into a shadow collection "
        f"{md_escape(collection + admin.REBUILD_SUFFIX)}, then swap it in. {md_escape(collection)} stays searchable until the swap."
    )
    model = st.text_input("Embedding model", value=info.embedding_model or settings.embedding_model, key="coll-rb-model")
    r1, r2 = st.columns(2)
    size = r1.number_input("Chunk size (tokens)", 16, max_chunk_size(embedder), info.chunk_size or settings.chunk_size, key="coll-rb-size")
    overlap = r2.number_input("Chunk overlap (tokens)", 0, 256, info.chunk_overlap or settings.chunk_overlap, key="coll-rb-overlap")
    if model != settings.embedding_model:
        st.warning(md_escape(f"Search uses the loaded model ({settings.embedding_model}); after the swap set EMBEDDING_MODEL={model} and restart."))
    if st.button("Rebuild and swap", disabled=bool(busy), key="coll-rb-start"):
        try:
            job = start_rebuild(jobs, store, collection, settings, embedder, model=model, chunk_size=int(size), chunk_overlap=int(overlap))
        except WorkbenchError as exc:
            st.error(md_escape(str(exc)))
        else:
            state["coll-job"] = job.id
            st.rerun()

# --- export ------------------------------------------------------------------------------
with export_tab:
    st.markdown("One zip with chunks, vectors (float32), metadata and a manifest naming the model and chunk settings.")
    if st.button("Build archive", disabled=bool(busy), key="coll-export"):
        EXPORT_DIR.mkdir(parents=True, exist_ok=True)
        try:
            with st.spinner("Exporting…"):
                path = export_collection(store, collection, EXPORT_DIR / f"{collection}.zip")
            state["coll-export-path"] = (collection, str(path))
        except WorkbenchError as exc:
            st.error(md_escape(str(exc)))
    exported = state.get("coll-export-path")
    if exported and exported[0] == collection and Path(exported[1]).is_file():
        path = Path(exported[1])
        st.download_button(
            f"Download {md_escape(path.name)} ({_size(path.stat().st_size)})", path.read_bytes(), file_name=path.name, mime="application/zip", key="coll-download"
        )

# --- rename / delete -----------------------------------------------------------------------
with manage_tab:
    new_name = st.text_input("New name", key="coll-rename-to")
    if st.button("Rename", disabled=not new_name or bool(busy), key="coll-rename"):
        try:
            admin.rename_collection(store, collection, new_name)
        except WorkbenchError as exc:
            st.error(md_escape(str(exc)))
        else:
            go_to(new_name, f"Renamed {collection} to {new_name}.")
    st.markdown("---")
    confirm = st.text_input(f"Type {md_escape(collection)} to delete it with its {info.chunks} chunks", key="coll-delete-confirm")
    if st.button("Delete collection", type="primary", disabled=confirm != collection or bool(busy), key="coll-delete"):
        try:
            delete_collection(store, collection)
        except WorkbenchError as exc:
            st.error(md_escape(str(exc)))
        else:
            go_to(settings.collection_name, f"Deleted collection {collection}.")
