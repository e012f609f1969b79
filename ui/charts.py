"""Plotly figures for the Evaluate and Embedding map pages (built here so they can be tested
without a browser). Document text shown in hovers is HTML-escaped and truncated: plotly renders
a subset of HTML in hover labels."""

from __future__ import annotations

import html
import textwrap

import numpy as np

from workbench.embedding_map import EmbeddingMap
from workbench.evaluate import EvalReport

#: Characters of chunk text shown in a hover label.
HOVER_CHARS = 240


def hover_text(text: str, limit: int = HOVER_CHARS, width: int = 60) -> str:
    """``text`` collapsed to one paragraph, cut to ``limit`` characters (… added), HTML-escaped,
    wrapped with ``<br>`` every ``width`` characters: safe inside a plotly hover label."""
    flat = " ".join((text or "").split())
    if len(flat) > limit:
        flat = flat[: limit - 1].rstrip() + "…"
    return "<br>".join(html.escape(line) for line in textwrap.wrap(flat, width)) or "(empty)"


def recall_chart(report: EvalReport):
    """Line chart of recall@k against k = 1..top_k, one line per mode."""
    import plotly.graph_objects as go

    ks = list(range(1, report.top_k + 1))
    fig = go.Figure()
    for mode in report.modes:
        fig.add_trace(go.Scatter(x=ks, y=report.recall_curve(mode), mode="lines+markers", name=mode))
    fig.update_layout(
        xaxis_title="k (chunks retrieved)", yaxis_title="recall@k", yaxis_range=[0, 1.02],
        legend_title="mode", margin=dict(l=10, r=10, t=30, b=10), height=380,
    )
    return fig


def map_figure(emap: EmbeddingMap, *, query_xy: np.ndarray | None = None, query: str = "", neighbours: list[int] = ()):
    """Scatter of the map's points coloured by document; hover shows file, chunk and text.
    With ``query_xy`` (2,), a star marks the query and its ``neighbours`` (indexes) are ringed."""
    import plotly.graph_objects as go

    fig = go.Figure()
    files = emap.file_names
    for name in sorted(set(files)):
        idx = [i for i, f in enumerate(files) if f == name]
        fig.add_trace(
            go.Scattergl(
                x=emap.xy[idx, 0], y=emap.xy[idx, 1], mode="markers", name=html.escape(name),
                marker=dict(size=6, opacity=0.75),
                customdata=[[html.escape(emap.sources[i]), emap.chunk_indexes[i], emap.pages[i], hover_text(emap.texts[i])] for i in idx],
                hovertemplate="<b>%{customdata[0]}</b> · chunk %{customdata[1]} · page %{customdata[2]}<br>%{customdata[3]}<extra></extra>",
            )
        )
    if query_xy is not None:
        if len(neighbours):
            nb = list(neighbours)
            fig.add_trace(
                go.Scatter(
                    x=emap.xy[nb, 0], y=emap.xy[nb, 1], mode="markers", name="neighbours",
                    marker=dict(size=14, color="rgba(0,0,0,0)", line=dict(width=2, color="black")),
                    hoverinfo="skip",
                )
            )
        fig.add_trace(
            go.Scatter(
                x=[float(query_xy[0])], y=[float(query_xy[1])], mode="markers", name="query",
                marker=dict(symbol="star", size=18, color="black"),
                hovertemplate=f"<b>query</b><br>{hover_text(query)}<extra></extra>",
            )
        )
    axis = "PC" if emap.method == "pca" else "UMAP "
    fig.update_layout(
        xaxis_title=f"{axis}1", yaxis_title=f"{axis}2", legend_title="document", height=600,
        margin=dict(l=10, r=10, t=30, b=10),
    )
    return fig
