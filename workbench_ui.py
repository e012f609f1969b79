"""Streamlit glue shared by every page: cached settings, store and model, the sidebar, and
error display. Pages import from here, never from chromadb/sentence-transformers directly."""

from __future__ import annotations

import os

import streamlit as st

from workbench.config import Settings
from workbench.embeddings import Embedder
from workbench.embeddings import get_embedder as _get_embedder
from workbench.errors import WorkbenchError
from workbench.logs import configure_logging
from workbench.store import Store, open_store

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
    """The process-wide Store (raises StoreError when unreachable; use ``require_store``)."""
    return open_store(get_settings())


@st.cache_resource(show_spinner="Loading the embedding model…")
def get_embedder() -> Embedder:
    """The process-wide embedding model, loaded once for every page and session."""
    return _get_embedder(get_settings())


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


def sidebar() -> None:
    """Show the active collection and the store on every page."""
    settings = get_settings()
    with st.sidebar:
        st.caption("Active collection")
        st.markdown(f"**{active_collection()}**")
        st.caption(f"Store: {settings.chroma_mode} · `{settings.chroma_location}`")


@st.cache_resource
def get_jobs():
    """The process-wide JobRegistry: ingestion jobs outlive page runs and browser refreshes."""
    from workbench.jobs import JobRegistry

    return JobRegistry()
