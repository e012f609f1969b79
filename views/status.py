"""Status page: pre-flight diagnostics (model, Chroma, collections vs. model, Ollama, disk,
memory), each failure with its exact fix."""

import streamlit as st

from workbench.errors import WorkbenchError
from workbench.diagnostics import run_checks
from ui import get_embedder, get_settings, get_store, md_escape

ICONS = {"ok": "✅", "warn": "⚠️", "fail": "❌"}

st.title("🩺 Status")
settings = get_settings()
st.button("Run the checks again", key="status-rerun")


def cached(getter):
    """The cached store/model, or None so that run_checks reports why it is unavailable."""
    try:
        return getter()
    except WorkbenchError:
        return None


with st.spinner("Checking…"):
    report = run_checks(settings, store=cached(get_store), embedder=cached(get_embedder))

summary = {"ok": st.success, "warn": st.warning, "fail": st.error}[report.level]
failed = sum(c.level == "fail" for c in report.checks)
warned = sum(c.level == "warn" for c in report.checks)
summary(f"{len(report.checks)} checks: {failed} failed, {warned} warnings" if failed or warned else f"All {len(report.checks)} checks passed")

names = [c.name for c in report.checks]
for i, check in enumerate(report.checks):
    key = "check-" + check.name.replace(" ", "-") + (f"-{i}" if names.count(check.name) > 1 else "")
    with st.container(border=True, key=key):
        st.markdown(f"{ICONS[check.level]} **{check.name}** · {md_escape(check.detail)}")
        if check.fixes:
            st.markdown("**To fix:**\n" + "\n".join(f"{n}. {fix}" for n, fix in enumerate(check.fixes, 1)))

with st.expander("Settings in effect"):
    st.json(
        {
            "EMBEDDING_MODEL": settings.embedding_model,
            "EMBEDDING_BACKEND": settings.embedding_backend,
            "EMBEDDING_PRECISION": settings.embedding_precision,
            "MODEL_CACHE_DIR": str(settings.model_cache_dir),
            "CHROMA": f"{settings.chroma_mode}: {settings.chroma_location}",
            "COLLECTION_NAME": settings.collection_name,
            "CHUNK_SIZE / CHUNK_OVERLAP": f"{settings.chunk_size} / {settings.chunk_overlap}",
            "OLLAMA_BASE_URL": settings.ollama_base_url,
            "OLLAMA_MODEL": settings.ollama_model,
        }
    )
