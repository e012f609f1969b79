"""A small Ollama look-alike HTTP server for tests and demos (loopback only).

It follows the documented Ollama REST API (https://github.com/ollama/ollama/blob/main/docs/api.md)
closely enough for the official ``ollama`` Python client:

- ``GET /api/version`` -> ``{"version": "..."}``
- ``GET /api/tags`` -> ``{"models": [{"name", "model", "modified_at", "size", "digest", "details"}]}``
- ``POST /api/show`` ``{"model"}`` -> model details with ``model_info["<arch>.context_length"]``
- ``POST /api/chat`` ``{"model", "messages", "stream", "options"}``: with ``stream`` (the default,
  as in Ollama) NDJSON chunks ``{"model", "created_at", "message": {"role": "assistant",
  "content": piece}, "done": false}`` then one final record with ``"done": true``,
  ``done_reason``, ``total_duration``, ``load_duration``, ``prompt_eval_count``,
  ``prompt_eval_duration``, ``eval_count``, ``eval_duration`` (durations in nanoseconds);
  with ``"stream": false`` one JSON object holding the whole message and those stats.
- An unknown model gives HTTP 404 ``{"error": "model 'x' not found, try pulling it first"}``,
  as Ollama does.

Behaviours tests can switch on (attributes of :class:`FakeOllama`, changeable while it runs):
``models``, ``reply`` (a string or ``f(request_json) -> str``), ``token_delay`` (seconds between
streamed pieces), ``delay`` (seconds to sleep before answering /api/chat: a "slow" server),
``malformed`` (send a garbage line in the middle of the stream), ``error_status`` (answer
/api/chat with that HTTP status and ``{"error": ...}``), ``stream_error`` (send an
``{"error": ...}`` record mid-stream, as Ollama does when generation fails). Every request is
recorded in ``requests`` (:class:`Recorded`) so tests can inspect the prompt that was sent.

By hand: ``python -m tests.fake_ollama --port 11434`` then point ``OLLAMA_BASE_URL`` at it.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

Reply = str | Callable[[dict[str, Any]], str]

FAKE_VERSION = "0.12.6"


@dataclass
class Recorded:
    """One request the fake server received: method, path and decoded JSON body (or None)."""

    method: str
    path: str
    body: dict[str, Any] | None
    at: float = field(default_factory=time.monotonic)


def normalise_model(name: str) -> str:
    """Ollama's name rule: a model name without a tag means ``:latest``."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def split_pieces(text: str) -> list[str]:
    """Split ``text`` into stream pieces the way an LLM streams: one word plus its trailing
    whitespace per piece. Joining the pieces gives ``text`` back exactly."""
    pieces = re.findall(r"\s*\S+\s*", text) or ([text] if text else [])
    return pieces


def last_user_message(request: dict[str, Any]) -> str:
    """Content of the last ``user`` message of a /api/chat request ("" if none)."""
    for message in reversed(request.get("messages") or []):
        if message.get("role") == "user":
            return str(message.get("content") or "")
    return ""


def demo_reply(request: dict[str, Any]) -> str:
    """Default reply: a short fake answer that cites passage [1] and quotes its first words, so
    a demo shows that the retrieved context reached the model."""
    prompt = last_user_message(request)
    match = re.search(r"^\[1\][^\n]*\n(.+?)(?:\n\n\[2\]|\n\nQuestion:|\Z)", prompt, re.S | re.M)
    if match:
        words = " ".join(match.group(1).split()[:25])
        return f"(fake-ollama) According to the first passage [1]: \"{words} ...\""
    return "(fake-ollama) I found no numbered context in the prompt, so I cannot answer."


class FakeOllama:
    """A threaded fake Ollama server on ``127.0.0.1``.

    Use as a context manager (``with FakeOllama() as fake: fake.url``) or call
    :meth:`start` / :meth:`stop`. ``port=0`` picks a free port.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        models: list[str] | None = None,
        reply: Reply = demo_reply,
        token_delay: float = 0.0,
        delay: float = 0.0,
        malformed: bool = False,
        error_status: int | None = None,
        stream_error: str | None = None,
        context_length: int = 131072,
        version: str = FAKE_VERSION,
    ) -> None:
        self.port = port
        self.models = list(models if models is not None else ["llama3.2:latest", "qwen2.5:0.5b"])
        self.reply = reply
        self.token_delay = token_delay
        self.delay = delay
        self.malformed = malformed
        self.error_status = error_status
        self.stream_error = stream_error
        self.context_length = context_length
        self.version = version
        self.requests: list[Recorded] = []
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL for OLLAMA_BASE_URL, e.g. ``http://127.0.0.1:40123``."""
        if self._server is None:
            raise RuntimeError("FakeOllama is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FakeOllama":
        handler = type("Handler", (_Handler,), {"fake": self})
        server = _Server(("127.0.0.1", self.port), handler)
        server.daemon_threads = True
        server.block_on_close = False  # a "slow" handler must not block stop()
        self._server = server
        self._stopping.clear()
        self._thread = threading.Thread(target=server.serve_forever, name="fake-ollama", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in delay/token_delay
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeOllama":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers for tests ----------------------------------------------------------------------
    def chat_requests(self) -> list[dict[str, Any]]:
        """Bodies of every /api/chat request received, oldest first."""
        return [r.body or {} for r in self.requests if r.path == "/api/chat"]

    def has_model(self, name: str) -> bool:
        return normalise_model(name) in {normalise_model(m) for m in self.models}

    def reply_text(self, request: dict[str, Any]) -> str:
        return self.reply(request) if callable(self.reply) else str(self.reply)

    def sleep(self, seconds: float) -> bool:
        """Sleep unless the server stops; True when it is stopping."""
        return self._stopping.wait(seconds) if seconds > 0 else self._stopping.is_set()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)  # clients hanging up are normal


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOllama  # set on the per-server subclass
    protocol_version = "HTTP/1.1"
    server_version = "fake-ollama"
    disable_nagle_algorithm = True  # TCP_NODELAY, as Go's net/http (Ollama) sets it

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output clean

    # -- plumbing -------------------------------------------------------------------------------
    def _body(self) -> dict[str, Any] | None:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return None
        raw = self.rfile.read(length)
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            return {"_raw": raw.decode("utf-8", "replace")}
        return data if isinstance(data, dict) else {"_raw": data}

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _record(self, body: dict[str, Any] | None) -> None:
        self.fake.requests.append(Recorded(self.command, self.path, body))

    # -- routes ---------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._record(None)
        if self.path == "/api/version":
            self._json(200, {"version": self.fake.version})
        elif self.path == "/api/tags":
            self._json(200, {"models": [_model_entry(m) for m in self.fake.models]})
        elif self.path in ("/", ""):
            data = b"Ollama is running"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self._not_found()

    def do_HEAD(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802
        body = self._body()
        self._record(body)
        if self.path == "/api/show":
            self._show(body or {})
        elif self.path == "/api/chat":
            self._chat(body or {})
        else:
            self._not_found()

    def _not_found(self) -> None:
        data = b"404 page not found"  # what Ollama's router answers for unknown paths
        self.send_response(404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _missing(self, model: str) -> None:
        self._json(404, {"error": f"model '{model}' not found, try pulling it first"})

    def _show(self, body: dict[str, Any]) -> None:
        model = str(body.get("model") or body.get("name") or "")
        if not self.fake.has_model(model):
            self._missing(model)
            return
        self._json(
            200,
            {
                "modelfile": f"FROM {model}\n",
                "parameters": "stop \"<|eot_id|>\"",
                "template": "{{ .Prompt }}",
                "details": _details(),
                "model_info": {
                    "general.architecture": "llama",
                    "general.parameter_count": 3212749888,
                    "llama.context_length": self.fake.context_length,
                    "llama.embedding_length": 3072,
                },
                "capabilities": ["completion"],
                "modified_at": _now(),
            },
        )

    def _chat(self, body: dict[str, Any]) -> None:
        fake = self.fake
        model = str(body.get("model") or "")
        if fake.sleep(fake.delay):
            return
        if not model:
            self._json(400, {"error": "model is required"})
            return
        if not fake.has_model(model):
            self._missing(model)
            return
        if fake.error_status:
            self._json(fake.error_status, {"error": f"fake server error {fake.error_status}"})
            return
        started = time.perf_counter_ns()
        text = fake.reply_text(body)
        pieces = split_pieces(text)
        prompt_chars = sum(len(str(m.get("content") or "")) for m in body.get("messages") or [])
        if not body.get("stream", True):
            self._json(200, {**_base(model, text), **_stats(started, prompt_chars, len(pieces))})
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for i, piece in enumerate(pieces):
                if i and fake.sleep(fake.token_delay):
                    return
                self._chunk((json.dumps({**_base(model, piece), "done": False}) + "\n").encode())
                if i == len(pieces) // 2:
                    if fake.malformed:
                        self._chunk(b"<html>this is not JSON</html>\n")
                    if fake.stream_error:
                        self._chunk((json.dumps({"error": fake.stream_error}) + "\n").encode())
            final = {**_base(model, ""), **_stats(started, prompt_chars, len(pieces))}
            self._chunk((json.dumps(final) + "\n").encode())
            self._chunk(b"")  # end of chunked body
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (e.g. it timed out)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _details() -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "3.2B",
        "quantization_level": "Q4_K_M",
    }


def _model_entry(name: str) -> dict[str, Any]:
    full = normalise_model(name)
    return {
        "name": full,
        "model": full,
        "modified_at": _now(),
        "size": 2019393189,
        "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        "details": _details(),
    }


def _base(model: str, content: str) -> dict[str, Any]:
    return {
        "model": model,
        "created_at": _now(),
        "message": {"role": "assistant", "content": content},
    }


def _stats(started_ns: int, prompt_chars: int, pieces: int) -> dict[str, Any]:
    total = max(time.perf_counter_ns() - started_ns, 1)
    return {
        "done": True,
        "done_reason": "stop",
        "total_duration": total,
        "load_duration": 1000,
        "prompt_eval_count": max(1, prompt_chars // 4),  # a fake count: ~4 chars per token
        "prompt_eval_duration": total // 3,
        "eval_count": pieces,
        "eval_duration": max(total - total // 3, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fake_ollama", description="Run a fake Ollama server on 127.0.0.1."
    )
    parser.add_argument("--port", type=int, default=11434, help="port (0 = any free port)")
    parser.add_argument(
        "--models", default="llama3.2:latest,qwen2.5:0.5b", help="comma-separated model names"
    )
    parser.add_argument("--reply", default=None, help="fixed reply text (default: quote passage [1])")
    parser.add_argument("--token-delay", type=float, default=0.03, help="seconds between pieces")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each chat answer")
    parser.add_argument("--malformed", action="store_true", help="send a garbage line mid-stream")
    args = parser.parse_args(argv)
    fake = FakeOllama(
        port=args.port,
        models=[m.strip() for m in args.models.split(",") if m.strip()],
        reply=args.reply if args.reply is not None else demo_reply,
        token_delay=args.token_delay,
        delay=args.delay,
        malformed=args.malformed,
    )
    fake.start()
    print(f"fake Ollama listening on {fake.url} (models: {', '.join(fake.models)}); Ctrl+C stops")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
