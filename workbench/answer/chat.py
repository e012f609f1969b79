"""Chat with retrieval: ask a question, retrieve chunks, stream an Ollama answer with citations.

The server and its errors are :mod:`workbench.answer.ollama`'s, the prompt
:mod:`workbench.answer.prompt`'s.

Typical use (a view)::

    stream = ask_stream(question, settings=s, store=store, embedder=emb)
    for piece in stream:          # text pieces as the model produces them
        print(piece, end="")
    stream.citations, stream.timings   # the chunks put in the prompt; timings when done
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


from workbench.config import Settings
from workbench.errors import InvalidRequestError
from workbench.documents import Hit
from workbench.answer.ollama import OllamaCallError, classify_error, make_client
from workbench.answer.prompt import DEFAULT_TEMPERATURE, Prompt, build_messages
from workbench.retrieval.search import search



# --------------------------------------------------------------------------------------------
# answering
# --------------------------------------------------------------------------------------------
@dataclass
class ChatTimings:
    """Seconds measured by the client, plus the server's own statistics of the final ``done``
    record (Ollama reports nanoseconds; converted to seconds here). None when not measured."""

    retrieval_s: float = 0.0
    first_token_s: float | None = None  # from sending the request to the first text piece
    total_s: float | None = None  # from sending the request to the done record
    server_total_s: float | None = None
    load_s: float | None = None
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    eval_s: float | None = None
    tokens_per_s: float | None = None
    done_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def citation_dict(number: int, hit: Hit) -> dict[str, Any]:
    """JSON-friendly citation: n, file, source, page, score (of the retrieval ``mode``: cosine,
    BM25 or fused), vector_score / keyword_score when known, chunk_id, document_id, text."""
    scores = {k: round(float(v), 4) for k, v in (("vector_score", hit.vector_score), ("keyword_score", hit.keyword_score)) if v is not None}
    return {"n": number, "file": hit.file_name, "source": hit.source, "page": hit.page,
            "score": round(float(hit.score), 4), "mode": hit.mode, **scores, "chunk_id": hit.chunk_id,
            "document_id": hit.document_id, "section": hit.section, "text": hit.text}


class ChatStream:
    """The answer to one question, as an iterator of text pieces (``str``), consumed once
    (the request is sent on the first ``next``).

    Before iterating: ``citations`` (the Hits in the prompt, numbered from 1), ``retrieved``
    (everything retrieval returned), ``prompt``, ``model``. After the iteration ends: ``text``
    (the whole answer), ``timings`` (:class:`ChatTimings`), ``done`` True. A server failure is
    raised from the iteration as :class:`OllamaCallError` and kept in ``error``; the pieces
    streamed before it stay in ``text``. In mode "retrieval" nothing is streamed and the server
    is not called.
    """

    def __init__(self, *, settings: Settings, model: str, prompt: Prompt, retrieved: list[Hit],
                 temperature: float, mode: str, retrieval_s: float):
        self.settings, self.model, self.prompt, self.mode = settings, model, prompt, mode
        self.retrieved = retrieved
        self.citations: list[Hit] = list(prompt.hits)
        self.temperature = temperature
        self.text = ""
        self.timings = ChatTimings(retrieval_s=retrieval_s)
        self.done = False
        self.error: OllamaCallError | None = None
        self._gen: Iterator[str] | None = None

    def __iter__(self) -> "ChatStream":
        return self

    def __next__(self) -> str:
        if self._gen is None:
            self._gen = self._pieces()
        return next(self._gen)

    def close(self) -> None:
        """Stop early (closes the connection); safe to call at any time."""
        if self._gen is not None:
            self._gen.close()

    def _pieces(self) -> Iterator[str]:
        if self.mode == "retrieval":
            self.done = True
            return
        client = make_client(self.settings)
        t0 = time.perf_counter()
        final = None
        stream = None
        try:
            stream = client.chat(
                model=self.model, messages=self.prompt.messages, stream=True,
                options={"temperature": self.temperature, "num_ctx": self.prompt.context_window,
                         "num_predict": self.prompt.answer_tokens},
            )
            deadline = t0 + float(self.settings.ollama_answer_timeout)
            for part in stream:
                if time.perf_counter() > deadline:
                    raise OllamaCallError(
                        "timeout", f"the answer took longer than OLLAMA_ANSWER_TIMEOUT={self.settings.ollama_answer_timeout:g} s "
                        "and was stopped", ["ask a shorter question or use a smaller model",
                                            "raise OLLAMA_ANSWER_TIMEOUT"])
                piece = part.message.content if part.message else None
                if piece:
                    if self.timings.first_token_s is None:
                        self.timings.first_token_s = time.perf_counter() - t0
                    self.text += piece
                    yield piece
                if part.done:
                    final = part  # no break: reading to the end lets the connection be reused
            if final is None:
                raise OllamaCallError(
                    "malformed", f"the answer stream from Ollama at {self.settings.ollama_base_url} "
                    "ended without its final 'done' record", ["retry; see the `ollama serve` log"])
        except Exception as exc:
            self.error = classify_error(exc, settings=self.settings, model=self.model)
            raise self.error from exc
        finally:
            if stream is not None and hasattr(stream, "close"):
                stream.close()  # release the connection now, not when the generator is collected
        t = self.timings
        t.total_s = time.perf_counter() - t0
        ns = 1e-9
        t.server_total_s = final.total_duration * ns if final.total_duration else None
        t.load_s = final.load_duration * ns if final.load_duration else None
        t.prompt_eval_count, t.eval_count = final.prompt_eval_count, final.eval_count
        t.eval_s = final.eval_duration * ns if final.eval_duration else None
        if final.eval_count and final.eval_duration:
            t.tokens_per_s = final.eval_count / (final.eval_duration * ns)
        t.done_reason = final.done_reason
        self.done = True


@dataclass
class ChatResult:
    """A finished answer: text, model, citations (Hits in the prompt, [1] first), everything
    retrieved, timings and the prompt sent."""

    answer: str
    model: str
    citations: list[Hit]
    retrieved: list[Hit]
    timings: ChatTimings
    prompt: Prompt | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """``{answer, model, citations[], timings}`` for JSON output."""
        return {"answer": self.answer, "model": self.model,
                "citations": [citation_dict(i, h) for i, h in enumerate(self.citations, 1)],
                "timings": self.timings.as_dict()}


def ask_stream(
    question: str,
    *,
    settings: Settings,
    store: Any = None,
    embedder: Any,
    collection: str | None = None,
    top_k: int | None = None,
    model: str | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    history: Sequence[dict[str, str]] = (),
    mode: str = "rag",
    hits: Sequence[Hit] | None = None,
    search_mode: str | None = None,
) -> ChatStream:
    """Retrieve passages for ``question`` and prepare the streamed answer (the server is called
    when the returned :class:`ChatStream` is iterated).

    Retrieval: ``workbench.retrieval.search.search(question, collection=..., top_k=..., mode=search_mode)``
    (search_mode defaults to SEARCH_MODE: vector, keyword or hybrid) unless ``hits`` are given. mode: "rag" (default) or "retrieval" (no LLM call). model defaults
    to OLLAMA_MODEL, top_k to TOP_K, the budget to CONTEXT_WINDOW (also sent as ``num_ctx`` so
    Ollama does not silently truncate the prompt to its own default window).
    Raises ValueError for an empty question or unknown mode, ConfigError when the question does
    not fit CONTEXT_WINDOW, StoreError from retrieval.
    """
    if not question or not question.strip():
        raise InvalidRequestError("the question is empty")
    if mode not in ("rag", "retrieval"):
        raise InvalidRequestError(f"unknown chat mode {mode!r}; use 'rag' or 'retrieval'")
    t0 = time.perf_counter()
    if hits is None:


        hits = search(question, settings=settings, store=store, embedder=embedder,
                      collection=collection, top_k=top_k or settings.top_k,
                      mode=search_mode or settings.search_mode)
    retrieval_s = time.perf_counter() - t0
    prompt = build_messages(question, list(hits), history, embedder_or_token_counter=embedder,
                            context_window=settings.context_window)
    return ChatStream(settings=settings, model=model or settings.ollama_model, prompt=prompt,
                      retrieved=list(hits), temperature=temperature, mode=mode, retrieval_s=retrieval_s)


def answer(question: str, **kwargs: Any) -> ChatResult:
    """:func:`ask_stream` consumed to the end (same arguments). Raises OllamaCallError."""
    stream = ask_stream(question, **kwargs)
    for _ in stream:
        pass
    return ChatResult(stream.text, stream.model, stream.citations, stream.retrieved,
                      stream.timings, stream.prompt)
