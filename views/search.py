"""Search page: query, top_k, collection, file filter, min score -> result cards with score,
file, page, the query terms highlighted in the escaped chunk text, and a link that opens the
chunk on the Documents page and one that opens its source page (views/source.py)."""

import streamlit as st

from workbench.errors import WorkbenchError
from workbench.retrieval.search import search
from ui import (
    existing_collection,
    get_settings,
    md_escape,
    plural,
    query_terms,
    require_embedder,
    require_store,
    score_text,
    search_mode_picker,
    show_text,
)

DOCUMENTS_PAGE = "views/documents.py"  # opens ?collection=&document=&chunk=
SOURCE_PAGE = "views/source.py"  # the same link: the chunk on its page

st.title("🔎 Search")
settings = get_settings()
store = require_store()
collection = existing_collection(key="search-collection")

documents = store.documents(collection)
query = st.text_input("Query", placeholder="Ask about your documents…", key="search-query")
with st.container(key="search-mode-row"):
    mode = search_mode_picker(key="search-mode")
c1, c2, c3 = st.columns([1, 1, 2])
top_k = c1.number_input("top_k", min_value=1, max_value=100, value=settings.top_k, key="search-top-k")
min_score = c2.slider(
    "Min score", -1.0, 1.0, 0.0, 0.05, key="search-min-score", disabled=mode == "keyword",
    help="Cosine similarity (vector and hybrid modes); weaker hits are dropped. BM25 scores have no common scale, so keyword mode ignores it.",
)
by_id = {d.document_id: d for d in documents}
document_id = c3.selectbox(
    "File",
    [None, *by_id],
    format_func=lambda i: "All documents" if i is None else by_id[i].source,
    key="search-file",
)
if not query.strip():
    st.info(f"Type a query to search `{collection}` ({len(documents)} documents).")
    st.stop()


def run_search(text: str) -> list:
    """The one search call of this page."""
    return search(
        text,
        settings=settings,
        store=store,
        embedder=require_embedder(),
        collection=collection,
        top_k=int(top_k),
        document_id=document_id,
        min_score=None if mode == "keyword" else min_score,
        mode=mode,
    )


try:
    hits = run_search(query)
except WorkbenchError as exc:
    st.error(str(exc))
    st.stop()
if not hits:
    if mode == "keyword":
        st.warning("No chunk contains a word of the query: try vector or hybrid mode.")
    else:
        st.warning(f"No results at or above score {min_score:.2f}.")
    st.stop()

terms = query_terms(query)
st.html("<style>[class*='st-key-hit-'] .wb-text { max-height: 16rem; overflow-y: auto; }</style>")
st.caption(f"{plural(len(hits), 'result')} from `{collection}` ({mode})" + (f" · highlighted: {', '.join(terms)}" if terms else ""))
for hit in hits:
    with st.container(border=True, key=f"hit-{hit.rank}"):
        head, link = st.columns([4, 1])
        head.markdown(
            f"**{hit.rank}. {md_escape(hit.file_name)}** · page {hit.page} · chunk {hit.chunk_index} · {score_text(hit)}"
        )
        with link:
            params = {"collection": collection, "document": hit.document_id, "chunk": hit.chunk_id}
            st.page_link(DOCUMENTS_PAGE, label="Open in Documents", icon="📄", query_params=params)
            st.page_link(SOURCE_PAGE, label="Open source page", icon="📑", query_params=params)
        show_text(hit.text, terms)
