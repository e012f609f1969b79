"""Search page: query -> top_k chunks with score, source and page."""

import html

import streamlit as st

from workbench.errors import WorkbenchError
from workbench.search import search
from workbench_ui import collection_picker, get_settings, require_embedder, require_store

st.title("🔎 Search")
settings = get_settings()
store = require_store()
collection = collection_picker(key="search-collection")
query = st.text_input("Query", placeholder="Ask about your documents…")
top_k = st.slider("top_k", 1, 50, settings.top_k)
if not query or not collection:
    st.info("Type a query to search the collection.")
    st.stop()
try:
    hits = search(query, settings=settings, store=store, embedder=require_embedder(), collection=collection, top_k=top_k)
except WorkbenchError as exc:
    st.error(str(exc))
    st.stop()
if not hits:
    st.warning("No results.")
for hit in hits:
    with st.container(border=True):
        st.markdown(f"**{hit.rank}. {html.escape(hit.file_name)}** · page {hit.page} · chunk {hit.chunk_index} · score `{hit.score:.3f}`")
        st.text(hit.text)
