"""Ingest page: drag-and-drop upload or the mounted knowledge_base folder, live progress,
per-file results, and the folder watcher's state and recent events when WATCH_KNOWLEDGE_BASE
is on. The job runs in the process-level registry, not in this script run, so its progress
survives a page switch or a browser refresh; a second job on the same collection is refused."""

import streamlit as st

from workbench.errors import WorkbenchError
from ui import (
    collection_picker,
    get_jobs,
    get_settings,
    get_watcher,
    job_panel,
    latest_job,
    md_escape,
    require_embedder,
    require_store,
    rerun_when_done,
    watcher_panel,
)
from workbench.ingest.loaders import SUPPORTED_EXTENSIONS
from workbench.ingest.uploads import stage_batch

st.title("📥 Ingest")
settings = get_settings()
jobs = get_jobs()

collection = collection_picker("Target collection", key="ingest-collection", allow_new=True)
extensions = sorted(e.lstrip(".") for e in SUPPORTED_EXTENSIONS)
uploads = st.file_uploader(
    "Drop documents here",
    type=extensions,
    accept_multiple_files=True,
    max_upload_size=settings.max_upload_mb,
    key="ingest-uploads",
)
st.caption(f"Up to {settings.max_upload_mb} MB per file (MAX_UPLOAD_MB) · {', '.join(extensions)}")
busy = jobs.running_for(collection) if collection else None
if busy:
    st.info(f"Job {busy.id} is ingesting into {md_escape(collection)}; a new job on this collection starts when it ends.")
left, right = st.columns(2)
start_upload = left.button("Ingest uploaded files", type="primary", disabled=not uploads or not collection)
start_folder = right.button(
    f"Ingest folder `{settings.knowledge_base_path}`",
    disabled=not collection,
    help="The mounted knowledge_base/ folder (KNOWLEDGE_BASE_PATH)",
)
prune = right.checkbox("Prune documents whose file is gone", value=False, help="Only for the folder")


def _start(paths, description, cleanup=None, prune_gone=False):
    try:
        job = jobs.start_ingest(
            paths,
            settings=settings,
            store=require_store(),
            embedder=require_embedder(),
            collection=collection,
            prune=prune_gone,
            description=description,
            cleanup=cleanup,
        )
        st.session_state["ingest_job"] = job.id
    except WorkbenchError as exc:  # JobConflictError, CollectionMismatchError, StoreError
        if cleanup:
            import shutil

            shutil.rmtree(cleanup, ignore_errors=True)
        st.error(md_escape(str(exc)))


if start_upload and uploads:
    # Staged one at a time into the upload area; a bad name or a file over MAX_UPLOAD_MB fails alone.
    try:
        folder, files, failures = stage_batch(((u.name, u.getvalue()) for u in uploads), settings)
    except OSError as exc:  # the upload area is full or not writable
        st.error(md_escape(f"Could not stage the uploads: {exc}"))
        folder, files, failures = None, [], []
    for failure in failures:
        st.error(f"Not ingested: {md_escape(failure.message)}")
    if files:
        _start(files, f"{len(files)} uploaded file(s)", cleanup=folder)
if start_folder:
    if settings.knowledge_base_path.is_dir():
        _start([settings.knowledge_base_path], f"folder {settings.knowledge_base_path}", prune_gone=prune)
    else:
        st.error(md_escape(f"KNOWLEDGE_BASE_PATH {settings.knowledge_base_path} is not a folder"))


@st.fragment(run_every=1.0)
def show_job():
    job = latest_job(collection, "ingest_job") or latest_job(None, "ingest_job")
    if job is None:
        st.info("No ingestion yet. Drop files above or ingest the folder.")
        return
    job_panel(job, key="ingest")
    rerun_when_done(job, "ingest")


if settings.watch_knowledge_base:
    st.subheader("Folder watcher")
    try:
        watcher = get_watcher()
    except WorkbenchError as exc:
        st.error(f"The folder watcher is not running: {md_escape(exc)}")
    else:

        @st.fragment(run_every=2.0)
        def show_watcher():
            watcher_panel(watcher)

        show_watcher()


st.subheader("Progress")
show_job()

