"""Document QA page: ask one document a question. Shows the answer span with its score and
page, the context with the span highlighted and, for OCR'd pages, the page image with the OCR
boxes drawn and the answer's boxes highlighted."""

import html
from pathlib import Path

import streamlit as st

from workbench.errors import DocumentError, WorkbenchError
from workbench.ingest.loaders import SUPPORTED_EXTENSIONS
from ui.boxes import draw_boxes
from workbench.answer.document_qa import ask_document
from workbench.ingest.layout import span_boxes
from workbench.ingest.loaders import page_view
from workbench.ingest.uploads import stage_upload, stored_source
from workbench.models.qa_model import load_qa_model
from ui import collection_picker, get_settings, md_escape, require_embedder, require_store


def _escaped(text: str) -> str:
    """HTML-escaped text on one line (<br> for newlines). Inside a ``<div>`` that opens the
    markdown it is an HTML block, which markdown never parses (``**``, ``[a](b)`` stay literal)."""
    return html.escape(text).replace("$", "&#36;").replace("\r", "").replace("\n", "<br>")


st.title("❓ Document QA")
settings = get_settings()
try:
    with st.spinner("Loading the QA model…"):
        load_qa_model(settings)
except WorkbenchError as exc:
    st.error(md_escape(f"QA model unavailable: {exc}"))
    st.stop()

mode = st.radio("Document", ["Upload a file", "Ingested document"], horizontal=True)
path: Path | None = None
no_image = ""  # why the page image of an ingested document cannot be shown
ask = {}
if mode == "Upload a file":
    upload = st.file_uploader("PDF, image or text file", type=sorted(e.lstrip(".") for e in SUPPORTED_EXTENSIONS))
    if upload is not None:
        try:
            path = stage_upload(upload.name, upload.getvalue(), settings)
        except WorkbenchError as exc:
            st.error(md_escape(str(exc)))
            st.stop()
        ask = {"path": path}
else:
    store = require_store()
    collection = collection_picker(key="qa-collection")
    documents = store.documents(collection) if collection and store.has_collection(collection) else []
    if not documents:
        st.info("This collection has no documents yet: ingest some on the Ingest page.")
        st.stop()
    document = st.selectbox("Document", documents, format_func=lambda d: f"{d.source} ({d.pages} pages)")
    ask = {"collection": collection, "document_id": document.document_id, "store": store, "embedder": require_embedder()}
    try:  # the stored path is read only under the knowledge base or the upload area
        path = stored_source(document, settings).path
    except DocumentError as exc:
        no_image = str(exc)

question = st.text_input("Question", placeholder="What is this document about?")
if not ask or not question.strip():
    st.info("Choose a document and type a question.")
    st.stop()

try:
    with st.spinner("Reading the document (OCR runs once per scanned page)…"):
        result = ask_document(question, settings=settings, **ask)
except WorkbenchError as exc:
    st.error(md_escape(str(exc)))
    st.stop()

if not result.found:
    st.warning(md_escape(result.message))
    st.stop()

answer = result.answer
st.markdown(f'<div style="font-size:1.5em;font-weight:600">{_escaped(answer.text)}</div>', unsafe_allow_html=True)
c1, c2, c3 = st.columns(3)
c1.metric("Score", f"{answer.score:.2f}", help="P(start)·P(end) of the span; QA_MIN_SCORE is " f"{result.min_score:.2f}")
c2.metric("Page", answer.page or "–")
c3.metric("Read", f"{result.windows} windows", help=f"{result.contexts} contexts in {result.seconds:.1f} s")

before, span, after = answer.excerpt(400)
st.caption(f"Context from {md_escape(answer.source)}" + (" (OCR)" if answer.ocr else ""))
st.markdown(
    f'<div style="line-height:1.6">{_escaped(before)}<mark>{_escaped(span)}</mark>{_escaped(after)}</div>',
    unsafe_allow_html=True,
)

if no_image and answer.page:
    st.caption(f"Page image unavailable: {md_escape(no_image)}")
if path is not None and answer.page:
    try:
        view = page_view(path, answer.page, settings)
    except WorkbenchError as exc:
        view = None
        st.caption(f"Page image unavailable: {md_escape(str(exc))}")
    if view is not None:
        image, ocr_page = view
        marked = span_boxes(ocr_page, answer.page_start, answer.page_end)
        st.image(
            draw_boxes(image, ocr_page.boxes, marked),
            caption=f"Page {answer.page}: {len(ocr_page.boxes)} OCR lines, answer in {len(marked)} highlighted"
            + (f" · shown turned {ocr_page.rotation}° as it was read" if ocr_page.rotation else ""),
            width="stretch",
        )

if result.alternatives:
    with st.expander("Other candidates"):
        for alt in result.alternatives:
            st.markdown(
                f"<div><code>{alt.score:.2f}</code> · page {html.escape(str(alt.page or '–'))} · {_escaped(alt.text)}</div>",
                unsafe_allow_html=True,
            )
