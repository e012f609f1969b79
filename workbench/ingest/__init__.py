"""The ingest layer: files -> pages -> chunks -> embeddings -> the store.

- :mod:`~workbench.ingest.loaders`: files and their pages (text, PDF, Office, HTML, images).
- :mod:`~workbench.ingest.ocr`: image -> text with EasyOCR, cached by image hash.
- :mod:`~workbench.ingest.chunking`: token-aware chunks with context headers.
- :mod:`~workbench.ingest.pipeline`: incremental, crash-safe :func:`ingest_paths`.
- :mod:`~workbench.ingest.jobs`: background ingest jobs for the UI.
- :mod:`~workbench.ingest.rebuild`: re-chunk and re-embed a collection, then swap it in.
"""
