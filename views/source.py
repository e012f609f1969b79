"""Source page (``/source``): a cited chunk on the page it came from. A PDF page is rendered with
the chunk's text highlighted; an OCR'd page or an image shows its OCR lines and the chunk's; any
other format shows the page's text with the chunk marked and scrolled to. When the file is gone
or outside the allowed folders, the chunk's stored text is shown with the reason.

Deep link (Search, Chat and Documents link here): ``?collection=NAME&document=ID&chunk=CHUNK``,
CHUNK a chunk id or index. The last source opened in the session is shown again when the page
is opened without a link.
"""

import streamlit as st

from ui import get_settings, md_escape, require_store, show_text, span_html
from ui.boxes import draw_highlights
from workbench.errors import WorkbenchError
from workbench.ingest.source_view import source_view

DOCUMENTS_PAGE = "views/documents.py"  # opens ?collection=&document=&chunk=
LINK = ("collection", "document", "chunk")
KIND_LABELS = {"pdf": "PDF page", "ocr": "OCR'd page", "text": "page text", "chunk": "stored chunk text"}
state = st.session_state


def go_to(chunk) -> None:
    """Button callback: open ``chunk`` of the same document (another page)."""
    st.query_params["chunk"] = chunk.chunk_id


if all(st.query_params.get(k) for k in LINK):
    state["source-link"] = {k: st.query_params[k] for k in LINK}
link = state.get("source-link")

st.title("📑 Source")
if not link:
    st.info("Open a source page from a Search hit, a Chat citation or a chunk on the Documents page.")
    st.stop()
try:
    with st.spinner("Opening the page…"):
        view = source_view(get_settings(), require_store(), link["collection"], link["document"], link["chunk"])
except WorkbenchError as exc:
    st.error(md_escape(str(exc)))
    st.stop()

chunk = view.chunk
st.subheader(f"📄 {md_escape(view.document.source)}")
st.caption(
    f"{md_escape(view.collection)} · page {view.page} · chunk #{chunk.chunk_index} · chars {chunk.start}–{chunk.end}"
    f" · {KIND_LABELS[view.kind]}" + (" · highlight approximate" if view.kind != "chunk" and not view.exact else "")
)
back, forward, documents = st.columns([1, 1, 2])
if view.previous_chunk is not None:
    back.button(f"◀ Page {view.previous_chunk.page}", key="source-previous", on_click=go_to, args=(view.previous_chunk,))
if view.next_chunk is not None:
    forward.button(f"Page {view.next_chunk.page} ▶", key="source-next", on_click=go_to, args=(view.next_chunk,))
with documents:
    st.page_link(DOCUMENTS_PAGE, label="Open in Documents", icon="📄", query_params={"collection": view.collection, "document": chunk.document_id, "chunk": chunk.chunk_id})

if view.note:
    st.warning(md_escape(view.note))

if view.image is not None:
    with st.container(key="source-page"):
        st.image(draw_highlights(view.image, view.highlights, view.ocr_boxes), width="stretch")
    lines = "line" if view.kind == "pdf" else "OCR line"
    st.caption(f"Page {view.page}: the chunk in {len(view.highlights)} highlighted {lines}{'' if len(view.highlights) == 1 else 's'}"
               + (f" · {len(view.ocr_boxes)} OCR lines outlined" if view.ocr_boxes else "")
               + (f" · shown turned {view.rotation}° as it was read" if view.rotation else ""))
    if view.highlights:  # scroll the first highlight near the top of the scrolling block
        top = min(r[1] for r in view.highlights) / max(1, view.image.height)
        st.html(
            "<script>setTimeout(() => { const img = document.querySelector('.st-key-source-page img'); if (!img) return; "
            "const go = () => { let box = img.parentElement; while (box && !(box.scrollHeight > box.clientHeight && "
            "/(auto|scroll)/.test(getComputedStyle(box).overflowY))) box = box.parentElement; "
            "const r = img.getBoundingClientRect(), base = box ? box.getBoundingClientRect().top : 0; "
            f"(box || window).scrollBy({{top: r.top - base + {top:.4f} * r.height - 80, behavior: 'smooth'}}); }}; "
            "img.complete ? go() : img.addEventListener('load', go, {once: true}); }, 300);</script>",
            unsafe_allow_javascript=True,
        )
    with st.expander("The chunk's text as stored"):
        show_text(chunk.text)
elif view.kind == "text":
    if view.text_offset:
        st.caption(f"… {view.text_offset:,} characters before")
    st.html("<style>.st-key-source-text .wb-text { max-height: 70vh; overflow-y: auto; } "
            ".st-key-source-text mark.wb-span { background: rgba(255, 220, 0, 0.55); scroll-margin: 4rem; }</style>")
    with st.container(border=True, key="source-text"):
        st.markdown(span_html(view.text, view.start, view.end), unsafe_allow_html=True)
    rest = view.page_chars - view.text_offset - len(view.text)
    if rest > 0:
        st.caption(f"… {rest:,} characters after")
    st.html(
        "<script>setTimeout(() => { const el = document.querySelector('.st-key-source-text mark.wb-span'); "
        "if (el) el.scrollIntoView({behavior: 'smooth', block: 'center'}); }, 300);</script>",
        unsafe_allow_javascript=True,
    )
else:
    with st.container(border=True, key="source-chunk"):
        show_text(chunk.text)
