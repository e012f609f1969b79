"""The Ollama server: the official ``ollama`` client with timeouts, and what each failure means.

Talks to an Ollama server (``OLLAMA_BASE_URL``: ``http://localhost:11434`` on a bare machine,
``http://host.docker.internal:11434`` from a container) always with timeouts: connect
``min(3, OLLAMA_TIMEOUT)`` s (so "Ollama is down" is known within 3 s), every read ``OLLAMA_TIMEOUT`` s. Every failure of the server
becomes an :class:`OllamaCallError` (an ``OllamaError``) whose message says what failed and how
to fix it (the troubleshooting of the hybrid Docker setup).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlparse

import httpx
import ollama
import pydantic

from workbench.config import Settings
from workbench.errors import OllamaError


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
        "on Linux Ollama listens on 127.0.0.1 only: let it listen on the docker bridge, not every "
        "interface: `OLLAMA_HOST=172.17.0.1 ollama serve` (systemd: `systemctl edit ollama`, "
        "Environment=\"OLLAMA_HOST=172.17.0.1\"; the address of `ip addr show docker0`), so containers "
        "reach it and the network does not"
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
            f"no connection to Ollama at {url} within {min(CONNECT_TIMEOUT, timeout):g} s (host unreachable, or a "
            "firewall drops the packets)",
            [running, bind, container],
        )
    if isinstance(inner, httpx.TimeoutException):
        return OllamaCallError(
            "timeout",
            f"Ollama at {url} did not answer within {read:g} s"
            + (" (OLLAMA_TIMEOUT)" if read_timeout is None else " (quick metadata call)")
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
METADATA_TIMEOUT = 3.0  # seconds; /api/tags, /api/version and /api/show answer at once
#: Seconds to open a connection: a running Ollama accepts at once, so a down or unreachable
#: server is reported within this time.
CONNECT_TIMEOUT = 3.0
#: Seconds :func:`ensure_reachable` waits to connect and for /api/version's answer (a running
#: Ollama answers in milliseconds). 1.5 s, so that ``python -m workbench ask`` reports a silent
#: server within 3 s of the command, process start (~0.8-1.1 s) included (benchmarks/chat.py:
#: 3.08 s with 2 s on a loaded 2-core machine).
REACHABLE_TIMEOUT = 1.5
_CLIENTS: dict[tuple[str, float, float], ollama.Client] = {}
_CLIENTS_LOCK = threading.Lock()


def make_client(settings: Settings, *, read_timeout: float | None = None) -> ollama.Client:
    """The ``ollama.Client`` for OLLAMA_BASE_URL, with timeouts: connect ``min(CONNECT_TIMEOUT, OLLAMA_TIMEOUT)``
    seconds, read/write ``read_timeout`` (default OLLAMA_TIMEOUT) seconds per network read, so a
    streamed answer may take longer in total as long as tokens keep coming. One client per
    (URL, timeouts) is shared by the process (httpx clients are thread-safe): building one costs
    ~40 ms (SSL context) and reuse keeps the connection alive (benchmarks/chat.py)."""
    t = float(settings.ollama_timeout)
    read = t if read_timeout is None else float(read_timeout)
    key = (settings.ollama_base_url, read, min(CONNECT_TIMEOUT, t))
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            client = ollama.Client(host=settings.ollama_base_url, timeout=httpx.Timeout(read, connect=key[2]))
            _CLIENTS[key] = client
        return client


def _call(settings: Settings, fn: Callable[[ollama.Client], Any], model: str | None = None) -> Any:
    """Run a quick metadata call (tags/version/show): reads wait at most min(METADATA_TIMEOUT,
    OLLAMA_TIMEOUT) s, so a page that lists models knows within 3 s that Ollama is down."""
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


def ensure_reachable(settings: Settings) -> str:
    """Ask Ollama for its version, waiting at most REACHABLE_TIMEOUT seconds: call it before
    anything slow (loading models, retrieval) so a down or unreachable server is reported at
    once. Returns the version; raises OllamaCallError saying what failed and how to fix it."""
    quick = settings.model_copy(update={"ollama_timeout": min(float(settings.ollama_timeout), REACHABLE_TIMEOUT)})
    return server_version(quick)
