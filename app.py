"""The RAG workbench: ``streamlit run app.py``. Navigation over the pages in ``pages/``."""

from pathlib import Path

import streamlit as st

from ui import sidebar

st.set_page_config(page_title="RAG workbench", page_icon="📚", layout="wide")

_HERE = Path(__file__).parent
_PAGES = [
    ("pages/ingest.py", "Ingest", "📥"),
    ("pages/search.py", "Search", "🔎"),
    ("pages/collections.py", "Collections", "🗂️"),
    ("pages/chat.py", "Chat", "💬"),
    ("pages/document_qa.py", "Document QA", "❓"),
    ("pages/evaluate.py", "Evaluate", "📏"),
    ("pages/embedding_map.py", "Embedding map", "🗺️"),
    ("pages/status.py", "Status", "🩺"),
]

pages = [st.Page(path, title=title, icon=icon) for path, title, icon in _PAGES if (_HERE / path).exists()]
page = st.navigation(pages)
sidebar()
page.run()
