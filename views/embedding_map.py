"""Embedding map page: a collection's chunk embeddings projected to 2-D (PCA, or UMAP when the
umap package is installed), coloured by document; a query can be dropped in to see where it
lands and which chunks are its nearest neighbours (cosine, in the full space)."""

import pandas as pd
import streamlit as st

from ui.charts import map_figure
from workbench.embedding_map import build_map, umap_available
from workbench.errors import WorkbenchError
from workbench.retrieval.bm25 import collection_generation
from ui import existing_collection, require_embedder, require_store

st.title("🗺️ Embedding map")
store = require_store()
collection = existing_collection(key="map-collection")

c1, c2 = st.columns([1, 1])
methods = {"PCA": "pca"} | ({"UMAP": "umap"} if umap_available() else {})
method = methods[c1.radio("Projection", list(methods), horizontal=True, key="map-method")]
if len(methods) == 1:
    c1.caption("UMAP appears here when the `umap-learn` package is installed.")
limit = c2.select_slider("Points (a seeded sample when the collection is larger)", [500, 1000, 2000, 3000, 5000, 10000], 3000, key="map-limit")


@st.cache_resource(max_entries=4, show_spinner="Projecting the embeddings…")
def cached_map(name: str, method: str, limit: int, generation: str):
    """One projection per (collection, method, size, committed content)."""
    return build_map(store, name, method=method, limit=limit)


try:
    emap = cached_map(collection, method, int(limit), collection_generation(store, collection))
except (WorkbenchError, ValueError) as exc:
    st.error(str(exc))
    st.stop()
if not len(emap):
    st.info(f"`{collection}` has no committed chunks yet.")
    st.stop()
caption = f"{len(emap)} of {emap.total} chunks · {len(set(emap.file_names))} documents"
if emap.explained:
    caption += f" · PCA axes explain {emap.explained[0]:.1%} and {emap.explained[1]:.1%} of the variance"
st.caption(caption)

c1, c2 = st.columns([4, 1])
query = c1.text_input("Drop a query in", placeholder="a question or a phrase…", key="map-query")
k = c2.number_input("Neighbours", 1, 50, 10, key="map-k")
query_xy, nearest = None, []
if query.strip():
    vector = require_embedder().encode([query])[0]
    query_xy = emap.place(vector)[0]
    nearest = emap.neighbours(vector, int(k))
st.plotly_chart(map_figure(emap, query_xy=query_xy, query=query, neighbours=[i for i, _ in nearest]), width="stretch", key="map-chart")
if nearest:
    st.subheader("Nearest chunks (cosine similarity in the full embedding space)")
    st.dataframe(
        pd.DataFrame(
            {
                "cosine": [round(s, 3) for _, s in nearest],
                "document": [emap.sources[i] for i, _ in nearest],
                "chunk": [emap.chunk_indexes[i] for i, _ in nearest],
                "text": [" ".join(emap.texts[i].split())[:300] for i, _ in nearest],
            }
        ),
        hide_index=True,
        width="stretch",
    )
