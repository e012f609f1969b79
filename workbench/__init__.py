"""The RAG workbench core library: config, loaders, OCR, chunking, embeddings, store, ingest,
search, chat, QA and evaluation. It never imports streamlit; ``app.py``/``views/`` and the CLI
(``python -m workbench``) are thin views over it."""

__version__ = "0.1.0"
