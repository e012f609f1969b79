"""The models layer: model files on disk, the embedding model, and prefetching them all.

- :mod:`~workbench.models.files`: where model folders live, atomic writes, offline mode.
- :mod:`~workbench.models.embeddings`: :class:`Embedder` (sentence-transformers, torch or OpenVINO).
- :mod:`~workbench.models.qa_model`: the extractive QA model (transformers).
- :mod:`~workbench.models.ocr_reader`: the EasyOCR reader from the packaged weights.
- :mod:`~workbench.models.prefetch`: put every model in the cache (the Docker build runs it).
"""
