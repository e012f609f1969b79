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

Long texts are split window by window (:meth:`Chunker.split`). The splitter's cost grows faster
than its input (a 300 KB line without sentence ends: 3.3 s; 10 MB: ~11 min, ~18 chunks/s), and
even in bounded windows it tokenizes each candidate piece again and again (~1 ms a piece). So a
paragraph longer than SPLIT_WINDOW_CHARS is cut at whitespace into windows, each tokenized once;
pieces take as many tokens as fit and end at the last blank line, line break, sentence end or
word end inside them (the best kind there is), and overlap by whole sentences or words of at most
CHUNK_OVERLAP tokens, as the splitter does: on a 300 KB line of prose 432 of its 447 pieces are
the splitter's (the same pieces without sentence ends), at ~10x its speed. The last piece of a
window is left to the next, which starts where it began. A paragraph longer than MAX_WHOLE_CHARS
is never kept whole (its tokens are not counted in full), and no piece is longer than
SPLIT_WINDOW_CHARS characters, even a text without spaces that the tokenizer reads as one
unknown token.
"""

from __future__ import annotations

import bisect
import hashlib
import os
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

#: A sentence's end: . ! ? (and closing quotes or brackets after them) at the end of a text.
_SENTENCE_END = re.compile(r"[.!?\u2026\u3002\uff01\uff1f][\"'\u201d\u2019)\]\u00bb]*$")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_MD_HEADING = re.compile(r"^[ ]{0,3}#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def document_title(file_name: str, section: str = "") -> str:
    """A document's title for the context header: the given title or section of its first
    page (``Page.title``, else markdown's first heading, HTML <title>, ...) or else the file
    stem, underscores as spaces."""
    title = section.strip() or os.path.splitext(os.path.basename(file_name))[0]  # Path.stem, without building a Path
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
        #: Whether tokens(a + whitespace + b) == tokens(a) + tokens(b): joined paragraphs are then
        #: counted by addition instead of tokenized again.
        self.additive = _is_additive(tokenizer)

    def count_tokens(self, text: str) -> int:
        """Model tokens in ``text``, special tokens excluded."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def count_many(self, texts: list[str]) -> list[int]:
        """:meth:`count_tokens` of each text, in one tokenizer call."""
        if len(texts) < 2:
            return [self.count_tokens(t) for t in texts]
        return [len(e.ids) for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

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
        """``(offset, piece)`` of one paragraph, at most ``chunk_size`` tokens each, consecutive
        pieces overlapping by at most ``chunk_overlap`` tokens, trimmed, in order. Up to
        SPLIT_WINDOW_CHARS: the splitter's pieces. Longer: window by window, each window
        tokenized once (see module docstring and :meth:`_split_window`)."""
        for offset, piece, _ in self._split(body):
            yield offset, piece

    def _split(self, body: str) -> Iterator[tuple[int, str, int | None]]:
        """:meth:`split` with each piece's tokens when known (None from the splitter)."""
        size = len(body)
        if size <= SPLIT_WINDOW_CHARS:
            for offset, piece in self._splitter.chunk_indices(body):
                yield offset, piece, None
            return
        pos = 0
        while pos < size:
            end = min(size, pos + SPLIT_WINDOW_CHARS)
            if end < size:  # cut at the last whitespace of the window's second half, if any
                cut = max(body.rfind(sep, pos + SPLIT_WINDOW_CHARS // 2, end) for sep in ("\n", " ", "\t"))
                end = cut if cut > pos else end
            pieces, resume = self._split_window(body[pos:end], final=end >= size)
            for offset, piece, tokens in pieces:
                yield pos + offset, piece, tokens
            pos = pos + resume if resume > 0 else end

    def _split_window(self, text: str, *, final: bool) -> tuple[list[tuple[int, str, int]], int]:
        """Pieces of one window from one tokenization: each takes as many tokens as fit
        (``chunk_size``) and ends at the last boundary of the best kind inside them (blank
        line, line break, sentence end, word end, else a token); the next starts at most
        ``chunk_overlap`` tokens before, after a boundary of the same kind (else without
        overlap). Returns ``(pieces, resume)``, pieces as ``(offset, piece, tokens)``: when the
        window is not ``final``, the piece that would reach its end is left out and ``resume``
        is its offset (0: the window is done). A piece not cut at whitespace (or from a
        tokenizer whose counts do not add up, see :func:`_is_additive`) is counted again alone,
        and cut shorter in the rare case it exceeds ``chunk_size``."""
        offsets = self.tokenizer.encode(text, add_special_tokens=False).offsets
        count = len(offsets)
        if not count:
            return [], 0
        # kind of the boundary after token k: 4 blank line, 3 line break, 2 sentence end, 1 word end, 0 none
        kinds = []
        for k, (_, stop) in enumerate(offsets):
            gap = text[stop : offsets[k + 1][0]] if k + 1 < count else text[stop:] or " "
            if not gap:
                kinds.append(0)
            elif "\n" in gap:
                kinds.append(4 if gap.count("\n") > 1 else 3)
            else:
                kinds.append(2 if _SENTENCE_END.search(text, max(0, stop - 3), stop) else 1)
        by_kind = {kind: [k for k, v in enumerate(kinds) if v >= kind] for kind in (4, 3, 2, 1)}
        by_kind[0] = range(count)
        pieces: list[tuple[int, int]] = []  # (first token, last token)
        first, resume = 0, 0
        while first < count:
            limit = first + self.chunk_size  # tokens [first, limit) fit
            if limit >= count:
                if final or not pieces:
                    pieces.append((first, count - 1))
                else:
                    resume = offsets[first][0]
                break
            for kind in (4, 3, 2, 1, 0):
                found = by_kind[kind]
                at = bisect.bisect_right(found, limit - 1) - 1
                if at >= 0 and found[at] >= first:
                    last = found[at]
                    break
            pieces.append((first, last))
            # the overlap starts after a boundary of the same kind (whole sentences after a
            # sentence end, whole words after a word end), or there is none
            at = bisect.bisect_left(found, max(last - self.chunk_overlap, first))
            first = found[at] + 1 if at < len(found) and found[at] < last else last + 1
        out = []
        for first, last in pieces:
            exact = self.additive and kinds[last] > 0 and (first == 0 or kinds[first - 1] > 0)  # cut at whitespace
            while True:
                piece = text[offsets[first][0] : offsets[last][1]]
                tokens = last - first + 1 if exact else self.count_tokens(piece)
                if tokens <= self.chunk_size or last == first:
                    break
                last -= 1
            out.append((offsets[first][0], piece, tokens))
        return out, resume

    def pieces(self, text: str, header_tokens=lambda start: 0, *, markdown: bool = False) -> Iterator[tuple[int, str, int]]:
        """``(start, piece, tokens)`` of one page's text (``tokens``: the piece's model tokens,
        special tokens excluded): whole paragraphs, long ones split, small ones
        joined (see module docstring). With ``markdown``, a heading starts a new piece and stays
        with the paragraph below it. ``header_tokens(start)`` is the header size for a piece
        starting at ``start``."""
        last: dict | None = None
        for unit in self._units(text, header_tokens, markdown):
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
                    joined = last["tokens"] + unit["tokens"] if self.additive else self.count_tokens(text[last["start"] : unit["end"]])
                    if joined <= limit:
                        last.update(end=unit["end"], tokens=joined, body=last["body"] or unit["body"])
                        continue
            if last:
                yield last["start"], text[last["start"] : last["end"]], last["tokens"]
            last = unit
        if last:
            yield last["start"], text[last["start"] : last["end"]], last["tokens"]

    def _units(self, text: str, header_tokens, markdown: bool) -> Iterator[dict]:
        """The paragraphs of ``text`` as units to join (whole ones, with their tokens) and the
        pieces of long ones, in order, as they are made (a 10 MB page yields its first pieces at
        once). Tokens are counted a batch of paragraphs per tokenizer call."""
        spans = list(_paragraphs(text))
        for lo in range(0, len(spans), 256):
            group = spans[lo : lo + 256]
            counts = self.count_many([text[a:b] if b - a <= MAX_WHOLE_CHARS else "" for a, b in group])
            for (start, end), tokens in zip(group, counts):
                body = text[start:end]
                if end - start <= MAX_WHOLE_CHARS and tokens + header_tokens(start) <= self.window:
                    heading = markdown and bool(_MD_HEADING.fullmatch(body))
                    yield dict(start=start, end=end, tokens=tokens, whole=True, heading=heading, body=not heading)
                    continue
                for offset, piece, tokens in self._counted(self._split(body)):
                    yield dict(start=start + offset, end=start + offset + len(piece), tokens=tokens, whole=False, body=True)

    def _counted(self, pieces: Iterator[tuple[int, str, int | None]]) -> Iterator[tuple[int, str, int]]:
        """``pieces`` without the blank ones, in order and as they come, their unknown token
        counts (None) counted up to 64 pieces per tokenizer call."""
        unknown: list[tuple[int, str]] = []

        def counted() -> Iterator[tuple[int, str, int]]:
            for (offset, piece), tokens in zip(unknown, self.count_many([piece for _, piece in unknown])):
                yield offset, piece, tokens
            unknown.clear()

        for offset, piece, tokens in pieces:
            if not piece.strip():
                continue
            if tokens is None:
                unknown.append((offset, piece))
                if len(unknown) >= 64:
                    yield from counted()
                continue
            yield from counted()
            yield offset, piece, tokens
        yield from counted()

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
        markdown = os.path.splitext(file_name)[1].lower() in (".md", ".markdown")
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
                    token_count=tokens,
                    content_hash=hashlib.sha256(text.encode("utf-8")).hexdigest(),
                    text=text,
                    section=section,
                    ocr=page.ocr,
                    header=self.header(title, section),
                )
                index += 1


def _is_additive(tokenizer) -> bool:
    """True for a WordPiece tokenizer that splits words at whitespace and punctuation before
    anything else (BERT's: MiniLM, mpnet, bge, e5...), checked on a probe: there, the tokens of
    two paragraphs joined by whitespace are the tokens of each. Other tokenizers (byte-level BPE,
    SentencePiece) mark word starts, so their counts are not added."""
    try:
        if type(tokenizer.model).__name__ != "WordPiece":
            return False
        if type(tokenizer.pre_tokenizer).__name__ not in ("BertPreTokenizer", "Whitespace", "WhitespaceSplit"):
            return False
    except AttributeError:
        return False
    probe = ["Rivers carry sediment.", "x² = 3,5 km; naïve CAFÉ!", "def f(a):\n    return a**2", "longwordwithoutanyspaces" * 6]
    count = lambda t: len(tokenizer.encode(t, add_special_tokens=False).ids)  # noqa: E731
    return all(count(a + "\n\n" + b) == count(a) + count(b) for a in probe for b in probe)


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
