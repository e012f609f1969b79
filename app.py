"""The RAG workbench: ``streamlit run app.py``. Navigation over the pages in ``pages/``."""

from pathlib import Path

import streamlit as st

from ui import sidebar

st.set_page_config(page_title="RAG workbench", page_icon="📚", layout="wide")

_HERE = Path(__file__).parent
_PAGES = [  # (file, title, icon, url path; None: from the file name)
    ("pages/ingest.py", "Ingest", "📥", None),
    ("pages/search.py", "Search", "🔎", None),
    ("pages/library.py", "Collections", "🗂️", "collections"),
    ("pages/documents.py", "Documents", "📄", "documents"),
    ("pages/chat.py", "Chat", "💬", None),
    ("pages/document_qa.py", "Document QA", "❓", None),
    ("pages/evaluate.py", "Evaluate", "📏", None),
    ("pages/embedding_map.py", "Embedding map", "🗺️", None),
    ("pages/status.py", "Status", "🩺", None),
]

pages = [st.Page(path, title=title, icon=icon, url_path=url) for path, title, icon, url in _PAGES if (_HERE / path).exists()]
page = st.navigation(pages)
sidebar()
page.run()
