"""Token-aware chunking with semantic-text-splitter (kept library, Rust core).

Sizes are counted in the embedding model's own tokens, so a chunk never exceeds what the model
reads (``max_seq_length`` minus the [CLS]/[SEP] special tokens): nothing is silently truncated.
The splitter prefers paragraph, then sentence, then word boundaries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from semantic_text_splitter import TextSplitter

from .documents import Chunk, Page
from .errors import ConfigError

#: Special tokens the model adds around every input ([CLS] and [SEP] for BERT-style models).
SPECIAL_TOKENS = 2


class Chunker:
    """Split pages into chunks of at most ``chunk_size`` model tokens with ``chunk_overlap``
    tokens of overlap.

    ``tokenizer`` is a ``tokenizers.Tokenizer`` with padding/truncation off
    (``Embedder.backend_tokenizer``). Raises ConfigError when chunk_size + special tokens is
    above ``max_seq_length``.
    """

    def __init__(self, tokenizer, chunk_size: int, chunk_overlap: int, max_seq_length: int):
        if chunk_size + SPECIAL_TOKENS > max_seq_length:
            raise ConfigError(
                f"CHUNK_SIZE {chunk_size} tokens is above what the embedding model reads "
                f"({max_seq_length} - {SPECIAL_TOKENS} special tokens); lower CHUNK_SIZE"
            )
        self.tokenizer = tokenizer
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self._splitter = TextSplitter.from_huggingface_tokenizer(
            tokenizer, capacity=chunk_size, overlap=chunk_overlap, trim=True
        )

    def count_tokens(self, text: str) -> int:
        """Model tokens in ``text``, special tokens excluded."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def chunk_pages(
        self,
        pages: Iterator[Page],
        *,
        document_id: str,
        source: str,
        file_name: str,
        first_index: int = 0,
    ) -> Iterator[Chunk]:
        """Yield the chunks of ``pages`` in order; chunk_index counts on across pages from
        ``first_index``. ``start``/``end`` are character offsets into the page's text."""
        index = first_index
        for page in pages:
            for start, text in self._splitter.chunk_indices(page.text):
                if not text.strip():
                    continue
                tokens = self.count_tokens(text)
                yield Chunk(
                    document_id=document_id,
                    source=source,
                    file_name=file_name,
                    page=page.page,
                    chunk_index=index,
                    start=start,
                    end=start + len(text),
                    token_count=tokens,
                    content_hash=hashlib.sha256(text.encode("utf-8")).hexdigest(),
                    text=text,
                    section=page.section,
                    ocr=page.ocr,
                )
                index += 1
