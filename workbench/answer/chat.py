"""Chat with retrieval: ask a question, retrieve chunks, stream an Ollama answer with citations.

Talks to an Ollama server (``OLLAMA_BASE_URL``: ``http://localhost:11434`` on a bare machine,
``http://host.docker.internal:11434`` from a container) through the official ``ollama`` client,
always with timeouts: connect ``min(5, OLLAMA_TIMEOUT)`` s, every read ``OLLAMA_TIMEOUT`` s.
Every failure of the server becomes an :class:`OllamaCallError` (an ``OllamaError``) whose
message says what failed and how to fix it (the troubleshooting of the hybrid Docker setup).

Typical use (a view)::

    stream = ask_stream(question, settings=s, store=store, embedder=emb)
    for piece in stream:          # text pieces as the model produces them
        print(piece, end="")
    stream.citations, stream.timings   # the chunks put in the prompt; timings when done
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlparse

import httpx
import ollama
import pydantic

from workbench.config import Settings
from workbench.types import Hit
from workbench.errors import ConfigError, OllamaError

SYSTEM_PROMPT = (
    "You are a careful assistant that answers questions about the user's documents.\n"
    "Answer ONLY from the numbered context passages in the user's message; do not use outside "
    "knowledge and do not guess.\n"
    "Cite the passages you used with their numbers in square brackets right after the "
    "statement they support, like [1] or [2][3].\n"
    "If the passages do not contain the answer, say that the documents do not answer the "
    "question.\n"
    "Answer concisely, in the language of the question."
)

DEFAULT_TEMPERATURE = 0.1  # low: answers should stick to the retrieved text
MESSAGE_OVERHEAD_TOKENS = 8  # role markers of a chat template (Llama 3 uses 4-5 per message)
SAFETY_FACTOR = 0.9  # WordPiece counts are an estimate of the chat model's tokens: keep 10% spare


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------
class OllamaCallError(OllamaError):
    """A failed call to Ollama.

    kind: "connection_refused" | "connect_failed" | "dns" | "connect_timeout" | "timeout" |
    "model_missing" | "http" | "server_error" | "malformed" | "disconnected" | "bad_url".
    what: one sentence saying what failed; fixes: what the user can do, in order.
    ``str(error)`` is one line: ``what. To fix: fix1; fix2``.
    """

    def __init__(self, kind: str, what: str, fixes: Sequence[str] = ()):
        self.kind = kind
        self.what = what
        self.fixes = list(fixes)
        super().__init__(what + (". To fix: " + "; ".join(self.fixes) if self.fixes else ""))


def _in_container() -> bool:
    return os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")


def classify_error(exc: BaseException, *, settings: Settings, model: str | None = None,
                   read_timeout: float | None = None) -> OllamaCallError:
    """Turn an exception from the ``ollama`` client / httpx into an :class:`OllamaCallError`
    naming what failed (connection refused, DNS, timeout, model not pulled, HTTP status,
    malformed response) and how to fix it. ``read_timeout``: the read timeout that was used
    (default OLLAMA_TIMEOUT), named in timeout messages."""
    if isinstance(exc, OllamaCallError):
        return exc
    url = settings.ollama_base_url
    host = urlparse(url if "://" in url else f"http://{url}").hostname or url
    timeout = settings.ollama_timeout
    read = timeout if read_timeout is None else read_timeout
    running = f"start Ollama on the host with `ollama serve` and check `curl {url}/api/tags` answers"
    bind = (
        "on Linux Ollama listens on 127.0.0.1 only: start it with `OLLAMA_HOST=0.0.0.0 ollama serve` "
        "(systemd: `systemctl edit ollama`, Environment=\"OLLAMA_HOST=0.0.0.0\") so containers reach it"
    )
    container = (
        "from a container use OLLAMA_BASE_URL=http://host.docker.internal:11434 (localhost is the "
        "container itself); docker compose on Linux needs `extra_hosts: "
        "[\"host.docker.internal:host-gateway\"]` on the service, or use the bridge address "
        "http://172.17.0.1:11434"
    )
    check_url = "check that OLLAMA_BASE_URL points at Ollama itself, e.g. http://localhost:11434 (no /v1 suffix)"
    pull = f"run `ollama pull {model}` on the Ollama host, or pick an installed model (`ollama list`)"

    # ollama's ConnectionError hides the httpx error in __context__
    inner = exc.__context__ if isinstance(exc, ConnectionError) and exc.__context__ else exc
    text = str(inner)
    if isinstance(inner, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return OllamaCallError("bad_url", f"OLLAMA_BASE_URL={url!r} is not a usable http(s) URL ({text})",
                               [check_url])
    if isinstance(inner, httpx.ConnectTimeout):
        return OllamaCallError(
            "connect_timeout",
            f"no connection to Ollama at {url} within {min(5.0, timeout):g} s (host unreachable, or a "
            "firewall drops the packets)",
            [running, bind, container],
        )
    if isinstance(inner, httpx.TimeoutException):
        return OllamaCallError(
            "timeout",
            f"Ollama at {url} did not answer within {read:g} s"
            + (" (OLLAMA_TIMEOUT)" if read == timeout else " (quick metadata call)")
            + (f" for model {model!r}" if model else ""),
            [
                "the model may still be loading into memory or be too slow for this machine: retry, "
                "raise OLLAMA_TIMEOUT, or choose a smaller model",
                running,
            ],
        )
    if isinstance(inner, (httpx.ConnectError, ConnectionError)):
        low = text.lower()
        if any(s in low for s in ("name or service not known", "nodename nor servname",
                                  "name resolution", "getaddrinfo failed", "no address associated")):
            return OllamaCallError(
                "dns", f"cannot resolve the host {host!r} of OLLAMA_BASE_URL={url}",
                [container, "outside a container use http://localhost:11434"],
            )
        fixes = [running, bind, container]
        if host in ("localhost", "127.0.0.1", "::1") and _in_container():
            fixes = ["this app runs in a container, where localhost is not the host: " + container,
                     running, bind]
        kind = "connection_refused" if "refused" in low else "connect_failed"
        what = (f"connection refused by Ollama at {url} (nothing listens there)" if kind == "connection_refused"
                else f"cannot connect to Ollama at {url} ({text})")
        return OllamaCallError(kind, what, fixes)
    if isinstance(inner, ollama.ResponseError):
        status, error = inner.status_code, str(inner.error)
        if status == 404 and "not found" in error.lower() and "model" in error.lower():
            return OllamaCallError("model_missing",
                                   f"model {model!r} is not pulled on the Ollama server at {url} ({error})", [pull])
        if status == 404:
            return OllamaCallError("http", f"{url} answered HTTP 404 ({error[:80]}): not the Ollama API",
                                   [check_url])
        if status == -1:
            return OllamaCallError("server_error", f"Ollama reported an error while answering: {error}",
                                   ["see the `ollama serve` log; a model too big for the memory fails "
                                    "this way: choose a smaller model"])
        return OllamaCallError("http", f"Ollama at {url} answered HTTP {status}: {error[:200]}",
                               ["see the `ollama serve` log on the host", check_url])
    if isinstance(inner, (json.JSONDecodeError, pydantic.ValidationError, UnicodeDecodeError, KeyError, TypeError)):
        return OllamaCallError(
            "malformed",
            f"Ollama at {url} sent a malformed response, not the JSON/NDJSON its API documents "
            f"({type(inner).__name__}: {str(inner).splitlines()[0][:120]})",
            [check_url, "if a proxy sits in between, bypass it for this host (NO_PROXY)",
             "update Ollama"],
        )
    if isinstance(inner, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return OllamaCallError("disconnected", f"the connection to Ollama at {url} broke mid-answer ({text})",
                               ["see the `ollama serve` log on the host (out of memory?)", running])
    return OllamaCallError("http", f"call to Ollama at {url} failed: {type(inner).__name__}: {text}",
                           [running, check_url])


# --------------------------------------------------------------------------------------------
# server calls
# --------------------------------------------------------------------------------------------
METADATA_TIMEOUT = 10.0  # seconds; /api/tags, /api/version and /api/show answer at once
_CLIENTS: dict[tuple[str, float, float], ollama.Client] = {}
_CLIENTS_LOCK = threading.Lock()


def make_client(settings: Settings, *, read_timeout: float | None = None) -> ollama.Client:
    """The ``ollama.Client`` for OLLAMA_BASE_URL, with timeouts: connect ``min(5, OLLAMA_TIMEOUT)``
    seconds, read/write ``read_timeout`` (default OLLAMA_TIMEOUT) seconds per network read, so a
    streamed answer may take longer in total as long as tokens keep coming. One client per
    (URL, timeouts) is shared by the process (httpx clients are thread-safe): building one costs
    ~40 ms (SSL context) and reuse keeps the connection alive (benchmarks/chat.py)."""
    t = float(settings.ollama_timeout)
    read = t if read_timeout is None else float(read_timeout)
    key = (settings.ollama_base_url, read, min(5.0, t))
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            client = ollama.Client(host=settings.ollama_base_url, timeout=httpx.Timeout(read, connect=key[2]))
            _CLIENTS[key] = client
        return client


def _call(settings: Settings, fn: Callable[[ollama.Client], Any], model: str | None = None) -> Any:
    """Run a quick metadata call (tags/version/show): reads wait at most min(10, OLLAMA_TIMEOUT) s."""
    read = min(METADATA_TIMEOUT, settings.ollama_timeout)
    try:
        return fn(make_client(settings, read_timeout=read))
    except Exception as exc:
        raise classify_error(exc, settings=settings, model=model, read_timeout=read) from exc


def list_models(settings: Settings) -> list[str]:
    """Names of the models pulled on the Ollama server (``GET /api/tags``), sorted, e.g.
    ``["llama3.2:latest"]``. Raises OllamaCallError."""
    response = _call(settings, lambda c: c.list())
    return sorted(m.model for m in response.models if m.model)


def server_version(settings: Settings) -> str:
    """Ollama server version (``GET /api/version``), e.g. ``"0.12.6"``. Raises OllamaCallError."""
    data = _call(settings, lambda c: c._request_raw("GET", "/api/version").json())
    if not isinstance(data, dict) or "version" not in data:
        raise classify_error(KeyError("version"), settings=settings)
    return str(data["version"])


def model_context_length(settings: Settings, model: str) -> int | None:
    """The context length the model was trained with (``POST /api/show``,
    ``model_info["<arch>.context_length"]``), or None if the server does not say.
    Raises OllamaCallError (kind "model_missing" when the model is not pulled)."""
    info = _call(settings, lambda c: c.show(model), model=model).modelinfo or {}
    for key, value in info.items():
        if key.endswith(".context_length") and isinstance(value, int):
            return value
    return None


def resolve_model(requested: str, available: Sequence[str]) -> str | None:
    """Match a model name against the server's list with Ollama's rule that no tag means
    ``:latest``; returns the listed name or None."""
    def norm(name: str) -> str:
        return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"
    wanted = norm(requested)
    return next((m for m in available if norm(m) == wanted), None)


# --------------------------------------------------------------------------------------------
# prompt
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prompt:
    """Messages for ``/api/chat`` and what went into them.

    hits: the chunks put in the context, in the order of their numbers [1], [2], ...
    dropped: retrieved chunks left out because they did not fit the budget.
    history_used: number of history messages kept (the oldest are dropped first).
    estimated_tokens: estimated prompt size in tokens; budget: tokens the prompt may use
    (= (context_window - answer_tokens) * SAFETY_FACTOR).
    """

    messages: list[dict[str, str]]
    hits: list[Hit]
    dropped: list[Hit]
    history_used: int
    estimated_tokens: int
    budget: int
    context_window: int
    answer_tokens: int


def _batch_counter(embedder_or_token_counter: Any) -> Callable[[list[str]], list[int]]:
    """texts -> token counts. An Embedder's tokenizer is called once for the whole list (one
    call per text costs ~1 ms each); a plain function ``text -> int`` is called per text."""
    tokenizer = getattr(embedder_or_token_counter, "tokenizer", None)
    if tokenizer is not None and callable(tokenizer):
        def batch(texts: list[str]) -> list[int]:
            if not texts:
                return []
            return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
        return batch
    single = getattr(embedder_or_token_counter, "count_tokens", embedder_or_token_counter)
    if not callable(single):
        raise TypeError("expected an Embedder (with .count_tokens) or a function text -> token count")
    return lambda texts: [int(single(t)) for t in texts]


def passage_header(number: int, hit: Hit) -> str:
    """``[n] file.pdf, page 3 — section``."""
    return f"[{number}] {hit.file_name}, page {hit.page}" + (f" — {hit.section}" if hit.section else "")


def format_passage(number: int, hit: Hit) -> str:
    """The passage header, then the chunk text on the next line."""
    return f"{passage_header(number, hit)}\n{hit.text.strip()}"


def build_messages(
    question: str,
    hits: Sequence[Hit],
    history: Sequence[dict[str, str]] = (),
    *,
    embedder_or_token_counter: Any,
    context_window: int,
    answer_tokens: int | None = None,
    system_prompt: str = SYSTEM_PROMPT,
) -> Prompt:
    """Build the ``/api/chat`` messages: system prompt, earlier turns, then one user message
    holding the numbered passages and the question, fitted into ``context_window`` by tokens.

    Token counts come from the *embedding* model's tokenizer (``Embedder.count_tokens``, MiniLM
    WordPiece; a Hit's stored ``token_count`` is used when set), an approximation of the chat model's own tokenizer, which the Ollama API does not
    expose; for English prose the two agree within ~10-15 %, so only ``SAFETY_FACTOR`` (90 %) of
    the budget is used and each message is charged ``MESSAGE_OVERHEAD_TOKENS`` for its
    chat-template markers.

    Budget: ``(context_window - answer_tokens) * SAFETY_FACTOR`` tokens, ``answer_tokens``
    defaulting to ``min(1024, context_window // 4)`` reserved for the reply. The system prompt and
    question always go in; history (``[{"role": "user"|"assistant", "content": str}]``) keeps its
    newest messages within half of what is left; passages then fill the rest in rank order
    (a passage that does not fit is dropped and smaller later ones may still go in).

    Raises ConfigError when the question and system prompt alone exceed the budget.
    """
    count = _batch_counter(embedder_or_token_counter)
    answer_tokens = min(1024, context_window // 4) if answer_tokens is None else answer_tokens
    budget = int((context_window - answer_tokens) * SAFETY_FACTOR)
    head, tail = "Context passages:\n\n", f"\n\nQuestion: {question.strip()}"
    history = list(history)
    hits = list(hits)
    # One tokenizer call for everything. A hit from the store carries its chunk's token_count
    # (same tokenizer), so only its header is counted; others are counted whole. Passages are
    # counted with their rank as number and charged one token more in case renumbering (after
    # a drop) changes the header's tokens.
    counts = count([system_prompt, head, tail, *(m["content"] for m in history),
                    *(passage_header(i, h) if h.token_count > 0 else format_passage(i, h)
                      for i, h in enumerate(hits, 1))])
    counts[3 + len(history):] = [c + max(h.token_count, 0) for c, h in zip(counts[3 + len(history):], hits)]
    fixed, history_costs, hit_costs = counts[:3], counts[3:3 + len(history)], counts[3 + len(history):]
    used = sum(fixed) + 2 * MESSAGE_OVERHEAD_TOKENS
    if used > budget:
        raise ConfigError(
            f"the question needs about {used} tokens but CONTEXT_WINDOW={context_window} leaves "
            f"{budget} for the prompt; shorten the question or raise CONTEXT_WINDOW"
        )

    kept: list[dict[str, str]] = []
    history_budget = (budget - used) // 2
    history_used_tokens = 0
    for message, tokens in zip(reversed(history), reversed(history_costs)):
        cost = tokens + MESSAGE_OVERHEAD_TOKENS
        if history_used_tokens + cost > history_budget:
            break
        kept.insert(0, {"role": message["role"], "content": message["content"]})
        history_used_tokens += cost
    used += history_used_tokens

    chosen: list[Hit] = []
    dropped: list[Hit] = []
    blocks: list[str] = []
    for hit, tokens in zip(hits, hit_costs):
        cost = tokens + 1 + 2  # renumbering slack + the blank line between passages
        if used + cost <= budget:
            chosen.append(hit)
            blocks.append(format_passage(len(chosen), hit))
            used += cost
        else:
            dropped.append(hit)
    body = "\n\n".join(blocks) if blocks else "(no passages were found in the documents)"
    messages = [{"role": "system", "content": system_prompt}, *kept,
                {"role": "user", "content": head + body + tail}]
    return Prompt(messages, chosen, dropped, len(kept), used, budget, context_window, answer_tokens)


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
        try:
            stream = client.chat(
                model=self.model, messages=self.prompt.messages, stream=True,
                options={"temperature": self.temperature, "num_ctx": self.prompt.context_window,
                         "num_predict": self.prompt.answer_tokens},
            )
            for part in stream:
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
        raise ValueError("the question is empty")
    if mode not in ("rag", "retrieval"):
        raise ValueError(f"unknown chat mode {mode!r}; use 'rag' or 'retrieval'")
    t0 = time.perf_counter()
    if hits is None:
        from workbench.retrieval.search import search

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
