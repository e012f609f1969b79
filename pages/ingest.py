"""Ingest page: drag-and-drop upload or the mounted knowledge_base folder, live progress,
per-file results. The job runs in the process-level registry, not in this script run."""

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from workbench.errors import WorkbenchError
from workbench.ingest import SourceFile
from workbench.loaders import SUPPORTED_EXTENSIONS
from workbench_ui import collection_picker, get_jobs, get_settings, require_embedder, require_store

st.title("📥 Ingest")
settings = get_settings()
jobs = get_jobs()

collection = collection_picker("Target collection", key="ingest-collection", allow_new=True)
uploads = st.file_uploader(
    f"Drop documents here (up to {settings.max_upload_mb} MB each)",
    type=sorted(e.lstrip(".") for e in SUPPORTED_EXTENSIONS),
    accept_multiple_files=True,
)
left, right = st.columns(2)
start_upload = left.button("Ingest uploaded files", type="primary", disabled=not uploads or not collection)
start_folder = right.button(
    f"Ingest folder `{settings.knowledge_base_path}`", disabled=not collection, help="The mounted knowledge_base/ folder"
)
prune = right.checkbox("Prune documents whose file is gone", value=False)


def _start(paths, description, cleanup=None):
    try:
        job = jobs.start_ingest(
            paths,
            settings=settings,
            store=require_store(),
            embedder=require_embedder(),
            collection=collection,
            prune=prune,
            description=description,
            cleanup=cleanup,
        )
        st.session_state["ingest_job"] = job.id
    except WorkbenchError as exc:
        st.error(str(exc))


if start_upload and uploads:
    too_big = [u.name for u in uploads if u.size > settings.max_upload_mb * 1_000_000]
    if too_big:
        st.error(f"Over {settings.max_upload_mb} MB, not ingested: {', '.join(too_big)}")
    kept = [u for u in uploads if u.name not in too_big]
    if kept:
        folder = Path(tempfile.mkdtemp(prefix="workbench-upload-"))
        files = []
        for upload in kept:
            target = folder / Path(upload.name).name
            target.write_bytes(upload.getbuffer())
            files.append(SourceFile(target, target.name))
        _start(files, f"{len(files)} uploaded file(s)", cleanup=folder)
if start_folder:
    if settings.knowledge_base_path.is_dir():
        _start([settings.knowledge_base_path], f"folder {settings.knowledge_base_path}")
    else:
        st.error(f"KNOWLEDGE_BASE_PATH {settings.knowledge_base_path} is not a folder")


@st.fragment(run_every=1.0)
def show_job():
    job = jobs.get(st.session_state.get("ingest_job", 0)) or next(iter(jobs.jobs()), None)
    if job is None:
        st.info("No ingestion yet. Drop files above or ingest the folder.")
        return
    event = job.last_event
    st.subheader(f"Job {job.id}: {job.description} → `{job.collection}`")
    if event:
        rate = event.chunks_done / event.elapsed_s if event.elapsed_s else 0.0
        eta = f"{event.eta_s:.0f} s" if event.eta_s is not None else "…"
        st.progress(event.fraction, text=f"{event.files_done}/{event.files_total} files · {event.chunks_done} chunks · {rate:.1f} chunks/s · ETA {eta}")
        if job.running and event.current_file:
            st.caption(f"Now: {event.current_file}")
    if job.running:
        if st.button("Cancel", key=f"cancel-{job.id}"):
            job.cancel()
            st.warning("Cancelling after the current batch…")
        return
    if job.state == "failed":
        st.error(job.error)
    elif job.summary:
        s = job.summary
        msg = f"{'Cancelled' if s.cancelled else 'Done'} in {s.seconds:.1f} s: " + ", ".join(
            f"{n} {s.count(n)}" for n in ("added", "replaced", "unchanged", "failed", "pruned") if s.count(n)
        )
        (st.warning if s.cancelled or s.failures else st.success)(msg)
        rows = [{"file": r.source, "result": r.status, "chunks": r.chunks, "pages": r.pages, "OCR pages": r.ocr_pages, "seconds": round(r.seconds, 2), "message": r.message} for r in s.results]
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


show_job()
