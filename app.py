"""The RAG workbench: ``streamlit run app.py``. Navigation over the pages in ``views/``."""

from pathlib import Path

import streamlit as st

from ui import sidebar

st.set_page_config(page_title="RAG workbench", page_icon="📚", layout="wide")

_HERE = Path(__file__).parent
_PAGES = [  # (file, title, icon, url path; None: from the file name)
    ("views/ingest.py", "Ingest", "📥", None),
    ("views/search.py", "Search", "🔎", None),
    ("views/library.py", "Collections", "🗂️", "collections"),
    ("views/documents.py", "Documents", "📄", "documents"),
    ("views/source.py", "Source", "📑", "source"),
    ("views/chat.py", "Chat", "💬", None),
    ("views/document_qa.py", "Document QA", "❓", None),
    ("views/evaluate.py", "Evaluate", "📏", None),
    ("views/embedding_map.py", "Embedding map", "🗺️", None),
    ("views/status.py", "Status", "🩺", None),
]

pages = [st.Page(path, title=title, icon=icon, url_path=url) for path, title, icon, url in _PAGES if (_HERE / path).exists()]
page = st.navigation(pages)
sidebar()
page.run()
