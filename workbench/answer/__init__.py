"""The answer layer: chat with retrieval against Ollama, and extractive document QA.

- :mod:`~workbench.answer.ollama`: the Ollama client, its errors and what they mean.
- :mod:`~workbench.answer.prompt`: the token-budgeted prompt with numbered passages.
- :mod:`~workbench.answer.chat`: :func:`ask_stream`, the streamed answer with citations.
- :mod:`~workbench.answer.reader`: extractive QA spans (SQuAD-style decoding).
- :mod:`~workbench.answer.document_qa`: ask one document a question.
"""
