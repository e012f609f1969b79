"""Token-aware chunking with semantic-text-splitter (kept library, Rust core).

Sizes are counted in the embedding model's own tokens, so what is embedded never exceeds what
the model reads (``max_seq_length`` minus the [CLS]/[SEP] special tokens): nothing is silently
truncated.

Paragraphs (text between blank lines) are kept whole: a paragraph that fits the model window
(beside its context header) is one chunk, even when longer than CHUNK_SIZE; a longer one is split
by the splitter (sentence, then word boundaries) into pieces of at most CHUNK_SIZE tokens with
CHUNK_OVERLAP tokens of overlap. Short paragraphs (under CHUNK_SIZE/4 tokens, e.g. a one-line
list item) are joined to their neighbours while the result stays within CHUNK_SIZE; in markdown
a heading starts a new chunk and stays with the paragraph below it.

Each chunk carries a *context header*, ``"<document title>\n"`` or ``"<title>: <section>\n"``
(section = nearest markdown heading above the chunk), that is embedded and keyword-indexed with
the chunk text (``Chunk.header + Chunk.text``) but not shown as part of it. The header gets at
most ``max_seq_length - 2 - CHUNK_SIZE`` tokens (54 by default), so header + piece always fits.

Measured on the SQuAD dev articles (``benchmarks/search.py``): against the splitter alone at
200/32 with no header, hybrid recall@5 / MRR@10 went from 0.939 / 0.828 to 0.952 / 0.847 with
whole paragraphs and the title header (and BM25 stemming), before fusion weights.

Long texts are split window by window (:meth:`Chunker.split`): the splitter's cost grows faster
than the text (on a 300 KB single line without sentence ends it took 3.3 s, on 10 MB ~11 min),
so a paragraph longer than SPLIT_WINDOW_CHARS is cut at whitespace into windows and each window
is split alone; the last piece of a window is dropped and the next window starts where it began,
so the pieces are those of one call over the whole text (identical on the corpora tried) and cost
time in proportion to its length. A paragraph longer than MAX_WHOLE_CHARS is never kept whole
(its tokens are not counted in full), and no piece is longer than SPLIT_WINDOW_CHARS characters,
even a text without spaces that the tokenizer reads as one unknown token.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

from semantic_text_splitter import TextSplitter

from workbench.documents import Chunk, Page
from workbench.errors import ConfigError

#: Special tokens the model adds around every input ([CLS] and [SEP] for BERT-style models).
SPECIAL_TOKENS = 2
#: Version of the chunking rules; part of every ingest key, so a change re-chunks documents.
CHUNKER_VERSION = "2-paragraphs-header"

#: Characters of a long paragraph split per splitter call (see module docstring).
SPLIT_WINDOW_CHARS = 16_000
#: Longest paragraph (characters) kept whole when its tokens fit: ~10x what 254 tokens of prose take.
MAX_WHOLE_CHARS = 12_000

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_MD_HEADING = re.compile(r"^[ ]{0,3}#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def document_title(file_name: str, section: str = "") -> str:
    """A document's title for the context header: the given title or section of its first
    page (``Page.title``, else markdown's first heading, HTML <title>, ...) or else the file
    stem, underscores as spaces."""
    title = section.strip() or Path(file_name).stem
    return " ".join(title.replace("_", " ").split())


def context_header(title: str, section: str = "") -> str:
    """``"title\n"``, or ``"title: section\n"`` when the section says something the title
    does not; ``""`` when both are empty."""
    title, section = title.strip(), " ".join(section.replace("_", " ").split())
    if section and section.casefold() != title.casefold():
        return f"{title}: {section}\n" if title else f"{section}\n"
    return f"{title}\n" if title else ""


class Chunker:
    """Split pages into chunks (see module docstring): whole paragraphs, long ones split into
    pieces of at most ``chunk_size`` model tokens with ``chunk_overlap`` tokens of overlap.

    ``tokenizer`` is a ``tokenizers.Tokenizer`` with padding/truncation off
    (``Embedder.backend_tokenizer``). ``context=False`` leaves the header empty. Raises
    ConfigError when chunk_size + special tokens is above ``max_seq_length``.
    """

    def __init__(self, tokenizer, chunk_size: int, chunk_overlap: int, max_seq_length: int, *, context: bool = True):
        if chunk_size + SPECIAL_TOKENS > max_seq_length:
            raise ConfigError(
                f"CHUNK_SIZE {chunk_size} tokens is above what the embedding model reads "
                f"({max_seq_length} - {SPECIAL_TOKENS} special tokens); lower CHUNK_SIZE"
            )
        self.tokenizer = tokenizer
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self.context = context
        #: Tokens the model reads besides the special tokens.
        self.window = max_seq_length - SPECIAL_TOKENS
        #: Most tokens a header may take: what is left of the window beside a full piece.
        self.header_budget = self.window - chunk_size
        self.small = max(1, chunk_size // 4)
        self._splitter = TextSplitter.from_huggingface_tokenizer(
            tokenizer, capacity=chunk_size, overlap=chunk_overlap, trim=True
        )
        self._headers: dict[tuple[str, str], tuple[str, int]] = {}

    def count_tokens(self, text: str) -> int:
        """Model tokens in ``text``, special tokens excluded."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def header(self, title: str, section: str) -> str:
        """The context header, cut to ``header_budget`` tokens (at a token boundary)."""
        return self._header(title, section)[0]

    def header_tokens(self, title: str, section: str) -> int:
        """Model tokens of :meth:`header` (special tokens excluded)."""
        return self._header(title, section)[1]

    def _header(self, title: str, section: str) -> tuple[str, int]:
        key = (title, section)
        cached = self._headers.get(key)
        if cached is None:
            if len(self._headers) > 4096:  # one entry per section: bounded for pathological input
                self._headers.clear()
            cached = self._headers[key] = self._make_header(title, section)
        return cached

    def _make_header(self, title: str, section: str) -> tuple[str, int]:
        if not self.context or self.header_budget <= 0:
            return "", 0
        text = context_header(title, section)
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        if len(encoding.ids) <= self.header_budget:
            return text, len(encoding.ids)
        text = text[: encoding.offsets[self.header_budget - 1][1]].rstrip() + "\n"
        return text, self.count_tokens(text)

    def split(self, body: str) -> Iterator[tuple[int, str]]:
        """``(offset, piece)`` of ``body`` split by the splitter (at most ``chunk_size`` tokens
        each, ``chunk_overlap`` overlap), window by window when it is longer than
        SPLIT_WINDOW_CHARS (see module docstring); pieces are trimmed and in order."""
        size, pos = len(body), 0
        while pos < size:
            end = min(size, pos + SPLIT_WINDOW_CHARS)
            if end < size:  # cut at the last whitespace of the window's second half, if any
                cut = max(body.rfind(sep, pos + SPLIT_WINDOW_CHARS // 2, end) for sep in ("\n", " ", "\t"))
                end = cut if cut > pos else end
            pieces = self._splitter.chunk_indices(body[pos:end])
            if end < size and len(pieces) > 1:
                pieces, resume = pieces[:-1], pos + pieces[-1][0]  # the cut piece starts the next window
            else:
                resume = end
            for offset, piece in pieces:
                yield pos + offset, piece
            pos = max(resume, pos + 1)

    def pieces(self, text: str, header_tokens=lambda start: 0, *, markdown: bool = False) -> Iterator[tuple[int, str, int | None]]:
        """``(start, piece, tokens)`` of one page's text (``tokens``: the piece's model tokens
        when already counted, else None): whole paragraphs, long ones split, small ones
        joined (see module docstring). With ``markdown``, a heading starts a new piece and stays
        with the paragraph below it. ``header_tokens(start)`` is the header size for a piece
        starting at ``start``."""
        units: list[dict] = []
        for start, end in _paragraphs(text):
            body = text[start:end]
            tokens = self.count_tokens(body) if len(body) <= MAX_WHOLE_CHARS else self.window + 1
            if tokens + header_tokens(start) <= self.window:
                heading = markdown and bool(_MD_HEADING.fullmatch(body))
                units.append(dict(start=start, end=end, tokens=tokens, whole=True, heading=heading, body=not heading))
            else:
                for offset, piece in self.split(body):
                    if piece.strip():
                        units.append(dict(start=start + offset, end=start + offset + len(piece), whole=False, body=True))
        merged: list[dict] = []
        for unit in units:
            last = merged[-1] if merged else None
            if last and last["whole"] and unit["whole"]:
                if not last["body"]:  # only headings so far: take what follows, up to the window
                    limit = self.window - header_tokens(last["start"])
                elif unit["heading"]:
                    limit = -1  # a heading opens a new piece
                elif last["tokens"] < self.small or unit["tokens"] < self.small:
                    limit = self.chunk_size
                else:
                    limit = -1
                if limit > 0 and unit["end"] - last["start"] <= MAX_WHOLE_CHARS:
                    joined = self.count_tokens(text[last["start"] : unit["end"]])
                    if joined <= limit:
                        last.update(end=unit["end"], tokens=joined, body=last["body"] or unit["body"])
                        continue
            merged.append(unit)
        for unit in merged:
            yield unit["start"], text[unit["start"] : unit["end"]], unit.get("tokens")

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
        ``first_index``. ``start``/``end`` are character offsets into the page's text;
        ``token_count`` counts the text only (the header is extra, within the window)."""
        index = first_index
        title: str | None = None
        markdown = Path(file_name).suffix.lower() in (".md", ".markdown")
        for page in pages:
            if title is None:
                title = document_title(file_name, page.title or page.section)
            found = [(m.start(), m.group(1)) for m in _MD_HEADING.finditer(page.text)] if markdown else []
            positions, names = [pos for pos, _ in found], [name for _, name in found]

            def section_at(start: int, page=page, positions=positions, names=names) -> str:
                above = bisect.bisect_right(positions, start)
                return names[above - 1] if above else page.section

            def header_tokens(start: int) -> int:
                return self.header_tokens(title, section_at(start))

            for start, text, tokens in self.pieces(page.text, header_tokens, markdown=markdown):
                if not text.strip():
                    continue
                section = section_at(start)
                yield Chunk(
                    document_id=document_id,
                    source=source,
                    file_name=file_name,
                    page=page.page,
                    chunk_index=index,
                    start=start,
                    end=start + len(text),
                    token_count=self.count_tokens(text) if tokens is None else tokens,
                    content_hash=hashlib.sha256(text.encode("utf-8")).hexdigest(),
                    text=text,
                    section=section,
                    ocr=page.ocr,
                    header=self.header(title, section),
                )
                index += 1


def _paragraphs(text: str) -> Iterator[tuple[int, int]]:
    """Character spans of the paragraphs of ``text`` (separated by blank lines), stripped."""
    pos = 0
    for match in [*_PARAGRAPH_BREAK.finditer(text), None]:
        end = match.start() if match else len(text)
        span = text[pos:end]
        lead = len(span) - len(span.lstrip())
        body = span.strip()
        if body:
            yield pos + lead, pos + lead + len(body)
        if match:
            pos = match.end()
