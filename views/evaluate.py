"""Evaluate page: a question set (uploaded JSONL, or generated from the collection's own chunks)
-> recall@k / MRR@10 / nDCG@10 per search mode, recall@k chart, per-question ranks, and the
chunks each mode retrieved for a chosen question."""

from pathlib import Path

import pandas as pd
import streamlit as st

from ui.charts import recall_chart
from workbench.errors import WorkbenchError
from workbench.evaluate import evaluate, generate_questions, is_relevant, parse_questions, to_jsonl
from workbench.retrieval.search import MODES
from ui import existing_collection, get_settings, md_escape, query_terms, require_embedder, require_store, show_text

DOCUMENTS_PAGE = "views/documents.py"  # opens ?collection=&document=&chunk=
state = st.session_state

st.title("📏 Evaluate retrieval")
st.caption(
    "A question counts as found at rank r when the r-th chunk comes from `expected_source` and "
    "contains `expected_text` (case-insensitive). recall@k: share found in the top k; MRR@10: mean "
    "1/r; nDCG@10: mean 1/log2(r+1) (one relevant passage per question)."
)
settings = get_settings()
store = require_store()
collection = existing_collection(key="eval-collection")

# --- the question set ---------------------------------------------------------------------------
source = st.radio("Question set", ["Upload JSONL", "Generate from this collection"], horizontal=True, key="eval-source")
if source == "Upload JSONL":
    st.caption('One JSON object a line: `{"question": …, "expected_source": "file.md", "expected_text": "…"}` '
               "(either expected field may be left out; SQuAD lines with `title` and `answers` work too).")
    upload = st.file_uploader("Question set", type=["jsonl", "json", "txt"], key="eval-upload")
    if upload is not None:
        try:
            state["eval-questions"] = parse_questions(upload.getvalue().decode("utf-8").splitlines(), name=upload.name)
            state["eval-set-name"] = upload.name
        except (WorkbenchError, UnicodeDecodeError) as exc:
            st.error(f"{upload.name}: {exc}" if isinstance(exc, UnicodeDecodeError) else str(exc))
            st.stop()
else:
    st.caption("A **self-retrieval sanity set**: one sentence of a chunk is the question and must find its own "
               "document. It checks the pipeline, not how well real questions are answered.")
    c1, c2, c3 = st.columns([1, 1, 1])
    n = c1.number_input("Questions", 5, 2000, 50, step=5, key="eval-gen-n")
    seed = c2.number_input("Seed", 0, 10_000, 0, key="eval-gen-seed")
    if c3.button("Generate", key="eval-generate"):
        try:
            state["eval-questions"] = generate_questions(store, collection, int(n), seed=int(seed))
            state["eval-set-name"] = f"generated from {collection} (seed {seed})"
        except WorkbenchError as exc:
            st.error(str(exc))
            st.stop()

questions = state.get("eval-questions")
if not questions:
    st.info("Upload a question set or generate one to start.")
    st.stop()
st.write(f"**{len(questions)} questions** · {md_escape(state.get('eval-set-name', ''))}")
st.download_button("Download question set (JSONL)", to_jsonl(questions), file_name="questions.jsonl", mime="application/json")

c1, c2 = st.columns([2, 1])
modes = c1.multiselect("Modes", list(MODES), default=list(MODES), key="eval-modes")
top_k = c2.slider("Chunks per question (k)", 10, 50, 10, key="eval-top-k")
if st.button("Run evaluation", type="primary", disabled=not modes, key="eval-run"):
    bar = st.progress(0.0, text="starting…")

    def progress(mode: str, done: int, total: int) -> None:
        step = modes.index(mode)
        bar.progress(min(1.0, (step + done / total) / len(modes)), text=f"{mode}: {done}/{total}")

    try:
        state["eval-report"] = evaluate(
            questions, settings=settings, store=store, embedder=require_embedder(), collection=collection,
            modes=modes, top_k=top_k, progress=progress,
        )
    except WorkbenchError as exc:
        st.error(str(exc))
        st.stop()
    bar.empty()

report = state.get("eval-report")
if report is None or report.collection != collection or report.questions != questions:
    st.info("Choose the modes and press **Run evaluation**.")
    st.stop()

# --- results ---------------------------------------------------------------------------------------
table = pd.DataFrame({m: report.metrics(m) for m in report.modes}).T
table["seconds"] = [round(report.seconds[m], 1) for m in report.modes]
st.subheader("Metrics")
st.dataframe(table.style.format("{:.3f}", subset=[c for c in table.columns if c != "seconds"]), width="stretch")
st.plotly_chart(recall_chart(report), width="stretch", key="eval-chart")

st.subheader("Per question")
rows = pd.DataFrame(
    {
        "question": [q.question for q in report.questions],
        "expected source": [q.expected_source or "" for q in report.questions],
        "expected text": [q.expected_text or "" for q in report.questions],
        **{f"rank {m}": [r or None for r in report.ranks[m]] for m in report.modes},
    }
)
only_missed = st.toggle("Only questions some mode missed in the top 5", key="eval-missed")
if only_missed:
    rows = rows[[any(not (1 <= report.ranks[m][i] <= 5) for m in report.modes) for i in range(len(rows))]]
st.caption("Rank empty = not in the top k. Select a row to see what each mode retrieved.")
event = st.dataframe(rows, hide_index=False, width="stretch", on_select="rerun", selection_mode="single-row", key="eval-rows")
picked = [rows.index[i] for i in (event.selection.rows if event and event.selection else [])]
if not len(rows):
    st.stop()
choice = st.selectbox(
    "Question", list(rows.index), index=list(rows.index).index(picked[0]) if picked else 0,
    format_func=lambda i: f"#{i}: {report.questions[i].question[:90]}", key="eval-pick",
)
q = report.questions[choice]
st.markdown(f"**{md_escape(q.question)}** → expected `{md_escape(q.expected_source or 'any')}`"
            + (f" containing “{md_escape(q.expected_text)}”" if q.expected_text else ""))
has_documents_page = (Path(__file__).parent / "documents.py").exists()
for tab, mode in zip(st.tabs([f"{m} (rank {report.ranks[m][choice] or '—'})" for m in report.modes]), report.modes):
    with tab:
        for hit in report.hits[mode][choice]:
            with st.container(border=True):
                mark = "✅" if is_relevant(hit, q) else "·"
                scores = " · ".join(
                    f"{label} `{value:.3f}`" for label, value in (("cosine", hit.vector_score), ("BM25", hit.keyword_score)) if value is not None
                )
                head, link = st.columns([4, 1])
                head.markdown(f"{mark} **{hit.rank}. {md_escape(hit.file_name)}** · chunk {hit.chunk_index} · page {hit.page} · {scores}")
                if has_documents_page:
                    link.page_link(
                        DOCUMENTS_PAGE, label="Open", icon="📄",
                        query_params={"collection": collection, "document": hit.document_id, "chunk": hit.chunk_id},
                    )
                show_text(hit.text, query_terms(q.expected_text or q.question))
