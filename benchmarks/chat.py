"""Chat overhead: question -> first token through ``workbench.answer.chat`` vs a direct
``ollama.Client.chat(stream=True)`` call to the same (fake, loopback) Ollama server.

Measured (median of N runs, seconds):
- direct_reused: a prompt already built, one reused ``ollama.Client`` (keep-alive connection);
- direct_fresh: same, with a new ``ollama.Client`` per question (what ``workbench.answer.chat`` does);
- ours_prompt: ``ask_stream(hits=...)``: token-budgeted prompt + new client, no retrieval;
- ours_full: ``ask_stream(...)`` with retrieval (query embedding + Chroma) from a real store.
The fake server answers at once, so these are pure client-side overheads; a real model adds its
own prompt-evaluation time on top of all of them.

Ollama down (issue 13, goal 5: reported within 3 s of the command): wall time of a whole
``python -m workbench ask`` process, from its start to its exit with the error, when OLLAMA_BASE_URL
is a loopback port nobody listens on ("refused") and when it is a loopback socket that accepts
connections and never answers ("silent", as a hung or firewalled server). Writes
benchmarks/results/chat.json.

Run: ``.venv/bin/python benchmarks/chat.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import ollama  # noqa: E402
from _common import write_result  # noqa: E402

from tests.fake_ollama import FakeOllama  # noqa: E402
from workbench.answer import chat  # noqa: E402
from workbench.config import Settings  # noqa: E402

QUESTION = "Which river flows through the most countries?"
TOPICS = ["rivers", "volcanoes", "bread", "harbors", "glaciers", "deserts", "forests", "islands"]


def first_token_s(fn) -> float:
    """Seconds from calling ``fn`` (question asked) to the first streamed piece; drains the rest."""
    t0 = time.perf_counter()
    iterator = fn()
    next(iter(iterator))
    elapsed = time.perf_counter() - t0
    for _ in iterator:  # drain, so every run ends the same way
        pass
    return elapsed


def interleaved_medians(variants: dict, runs: int) -> dict[str, float]:
    """Median first-token time of each variant, running them round-robin so that load from other
    processes on this shared machine hits every variant alike."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(runs):
        for name, fn in variants.items():
            times[name].append(first_token_s(fn))
    return {name: statistics.median(values) for name, values in times.items()}


def ollama_down() -> list[dict]:
    """Seconds from starting ``python -m workbench ask`` to its exit, Ollama refused or silent;
    ``reported`` says it exited non-zero naming Ollama on stderr."""
    cases = []
    for case in ("refused", "silent"):
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            port = server.getsockname()[1]
            if case == "silent":
                server.listen(16)  # accepts (the kernel does), never reads or answers
            else:
                server.close()
            env = {**os.environ, "OLLAMA_BASE_URL": f"http://127.0.0.1:{port}", "HF_HUB_OFFLINE": "1"}
            with tempfile.TemporaryDirectory() as tmp:
                env.update(CHROMA_PERSIST_PATH=str(Path(tmp) / "chroma"), LOG_DIR=str(Path(tmp) / "logs"))
                t0 = time.perf_counter()
                out = subprocess.run([sys.executable, "-m", "workbench", "ask", "Which river is longest?"], cwd=REPO, env=env,
                                     capture_output=True, text=True, timeout=120)
                seconds = time.perf_counter() - t0
        reported = out.returncode != 0 and "ollama" in out.stderr.lower()
        cases.append({"case": case, "seconds": round(seconds, 2), "exit_code": out.returncode, "reported": reported,
                      "message": out.stderr.strip().splitlines()[-1][:300] if out.stderr.strip() else ""})
        print(f"Ollama {case}: `ask` exited {out.returncode} after {seconds:.2f} s: {cases[-1]['message']}", flush=True)
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()

    from workbench.models.embeddings import get_embedder
    from workbench.ingest.pipeline import ingest_paths
    from workbench.store.chroma import open_store

    with tempfile.TemporaryDirectory() as tmp, FakeOllama(reply="The Danube [1] flows through ten countries.") as fake:
        tmp_path = Path(tmp)
        docs = tmp_path / "docs"
        docs.mkdir()
        for i, topic in enumerate(TOPICS):
            text = f"# {topic.title()}\n\n" + " ".join(
                f"Fact {j} about {topic}: the {topic} survey of {1950 + j} counted {i * 100 + j} sites." for j in range(40))
            (docs / f"{topic}.md").write_text(text, encoding="utf-8")
        settings = Settings(
            _env_file=None, chroma_persist_path=tmp_path / "chroma", log_dir=tmp_path / "logs",
            model_cache_dir=Path(os.environ.get("MODEL_CACHE_DIR", REPO / "models")), chroma_host=None,
            collection_name="bench_chat", ollama_base_url=fake.url, ollama_timeout=10,
        )
        store, embedder = open_store(settings), get_embedder(settings)
        ingest_paths([docs], settings=settings, store=store, embedder=embedder)

        warm = chat.ask_stream(QUESTION, settings=settings, store=store, embedder=embedder)
        list(warm)  # warm-up: model, store, connection
        hits, messages = warm.retrieved, warm.prompt.messages
        timeout = httpx.Timeout(settings.ollama_timeout, connect=5)
        reused = ollama.Client(host=fake.url, timeout=timeout)

        def direct_reused():
            return reused.chat(model=settings.ollama_model, messages=messages, stream=True)

        def direct_fresh():
            client = ollama.Client(host=fake.url, timeout=timeout)
            return client.chat(model=settings.ollama_model, messages=messages, stream=True)

        def ours_prompt():
            return chat.ask_stream(QUESTION, settings=settings, embedder=embedder, hits=hits)

        def ours_full():
            return chat.ask_stream(QUESTION, settings=settings, store=store, embedder=embedder)

        results = interleaved_medians({"direct_reused": direct_reused, "direct_fresh": direct_fresh,
                                       "ours_prompt": ours_prompt, "ours_full": ours_full}, args.runs)
        reused.close()

    out = {
        "runs": args.runs,
        "chunks_in_prompt": len(hits),
        "median_first_token_s": {k: round(v, 5) for k, v in results.items()},
        "ratio_ours_prompt_vs_direct_reused": round(results["ours_prompt"] / results["direct_reused"], 2),
        "ratio_ours_prompt_vs_direct_fresh": round(results["ours_prompt"] / results["direct_fresh"], 2),
        "ratio_ours_full_vs_direct_reused": round(results["ours_full"] / results["direct_reused"], 2),
        "overhead_full_minus_direct_ms": round((results["ours_full"] - results["direct_reused"]) * 1000, 2),
        "note": "fake Ollama on loopback answering at once; client-side overhead only",
        "ollama_down": ollama_down(),
    }
    for name, value in results.items():
        print(f"{name:>14}: {value * 1000:8.2f} ms to first token (median of {args.runs})")
    print(f"ours (prompt only) / direct reused client: {out['ratio_ours_prompt_vs_direct_reused']}x; "
          f"ours with retrieval / direct: {out['ratio_ours_full_vs_direct_reused']}x "
          f"(+{out['overhead_full_minus_direct_ms']} ms)")
    write_result("chat", out, embedder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
