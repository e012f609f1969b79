"""Chat with retrieval (workbench.answer.chat + the `ask` CLI) against a fake Ollama server on loopback,
through the real `ollama` client, with a real Chroma store and the real MiniLM model."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_settings, stop_process, write_docs
from tests.fake_ollama import FakeOllama, last_user_message
from workbench.answer import chat
from workbench.answer import prompt as chat_prompt
from workbench.answer import ollama as ollama_api
from workbench.config import Settings
from workbench.documents import Hit
from workbench.errors import ConfigError, OllamaError

REPO = Path(__file__).resolve().parents[1]

def _filler(topic: str, n: int) -> str:
    """n distinct sentences about ``topic`` (distinct, so every chunk has its own text)."""
    # one short paragraph per entry: the chunker keeps paragraphs whole and joins small ones up
    # to CHUNK_SIZE, so a small CHUNK_SIZE gives several chunks per document
    return "\n\n" + "\n\n".join(f"In {1900 + 3 * i} the {topic} logbook recorded entry number {i * 7 + 1}." for i in range(n))


DOCS = {
    "harbor.md": "# Harbor\n\nThe harbor lighthouse keeper is named Marguerite Olsen. She lights the "
    "lamp every evening at dusk and records passing ships in a leather logbook. " + _filler("harbor", 12),
    "volcano.md": "# Volcano\n\nMount Kelvar last erupted in 1873, burying the village of Ostra under "
    "grey ash. " + _filler("volcano", 12),
    "bakery.md": "# Bakery\n\nThe sourdough at the corner bakery uses a dough hydration of 78 percent and "
    "rises for eighteen hours in a cold cellar before baking. " + _filler("bakery", 12),
}


def free_port() -> int:
    """A loopback port with nothing listening on it (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def kb(tmp_path_factory, embedder):
    """(settings, store, embedder) over a tmp Chroma holding the three DOCS, ingested for real."""
    from workbench.ingest.pipeline import ingest_paths
    from workbench.store.chroma import open_store

    root = tmp_path_factory.mktemp("chat")
    docs = write_docs(root / "docs", DOCS)
    settings = make_settings(root, knowledge_base_path=docs, collection_name="chat_test", chunk_size=48,
                             chunk_overlap=8, ollama_timeout=2.0)
    store = open_store(settings)
    summary = ingest_paths([docs], settings=settings, store=store, embedder=embedder)
    assert not summary.failures and summary.chunks_added >= 6
    return settings, store, embedder


@pytest.fixture
def fake():
    with FakeOllama(reply="Marguerite Olsen keeps the lighthouse [1].") as server:
        yield server


def on(settings: Settings, fake: FakeOllama | None = None, **update) -> Settings:
    url = fake.url if fake else f"http://127.0.0.1:{free_port()}"
    return settings.model_copy(update={"ollama_base_url": url, **update})


def make_hits(n: int, words: int = 60) -> list[Hit]:
    return [
        Hit(chunk_id=f"c{i}", score=0.9 - i * 0.05, document_id=f"d{i}", source=f"f{i}.md",
            file_name=f"f{i}.md", page=i + 1, chunk_index=0,
            text=f"Passage {i} unique-marker-{i}. " + " ".join(f"word{i}x{j}" for j in range(words)))
        for i in range(n)
    ]


# -- streaming and citations -------------------------------------------------------------------
def test_streamed_answer_is_assembled_from_pieces(kb, fake):
    settings, store, embedder = kb
    fake.token_delay = 0.001
    stream = chat.ask_stream("Who keeps the lighthouse?", settings=on(settings, fake), store=store,
                             embedder=embedder)
    pieces = list(stream)
    assert len(pieces) == 6  # one piece per word, as the fake streams
    assert "".join(pieces) == stream.text == "Marguerite Olsen keeps the lighthouse [1]."
    assert stream.done and stream.error is None
    assert stream.timings.eval_count == 6 and stream.timings.done_reason == "stop"
    assert stream.timings.first_token_s is not None and stream.timings.total_s >= stream.timings.first_token_s
    sent = fake.chat_requests()[-1]
    assert sent["stream"] is True and sent["model"] == settings.ollama_model
    assert sent["options"]["num_ctx"] == settings.context_window


def test_citations_are_the_chunks_put_in_the_prompt(kb, fake):
    settings, store, embedder = kb
    result = chat.answer("Who is the lighthouse keeper of the harbor?", settings=on(settings, fake),
                         store=store, embedder=embedder, top_k=4)
    prompt = last_user_message(fake.chat_requests()[-1])
    assert result.citations and result.citations[0].file_name == "harbor.md"
    assert "Marguerite Olsen" in result.citations[0].text
    assert [h.chunk_id for h in result.citations] == [h.chunk_id for h in result.prompt.hits]
    for n, hit in enumerate(result.citations, 1):
        assert f"[{n}] {hit.file_name}, page {hit.page}" in prompt
        assert hit.text.strip() in prompt
    # the messages sent are exactly the ones built, with the system prompt asking for citations
    messages = fake.chat_requests()[-1]["messages"]
    assert messages[0]["role"] == "system" and "[1]" in messages[0]["content"]
    assert [m["content"] for m in messages] == [m["content"] for m in result.prompt.messages]
    as_json = result.as_dict()
    assert set(as_json) == {"answer", "model", "citations", "timings"}
    assert as_json["citations"][0]["file"] == "harbor.md" and as_json["citations"][0]["n"] == 1


def test_prompt_stays_within_token_budget_and_drops_chunks(kb, fake):
    settings, store, embedder = kb
    small = on(settings, fake, context_window=512)
    stream = chat.ask_stream("Where does the sourdough rise?", settings=small, store=store,
                             embedder=embedder, top_k=12)
    list(stream)
    prompt = stream.prompt
    assert prompt.dropped, "a 512-token window must not hold 12 chunks"
    assert 1 <= len(stream.citations) < len(stream.retrieved)
    sent = fake.chat_requests()[-1]
    tokens = sum(embedder.count_tokens(m["content"]) + chat_prompt.MESSAGE_OVERHEAD_TOKENS for m in sent["messages"])
    assert tokens <= 512 - prompt.answer_tokens
    assert sent["options"]["num_ctx"] == 512 and sent["options"]["num_predict"] == prompt.answer_tokens
    text = last_user_message(sent)
    for hit in prompt.dropped:
        assert hit.text.strip() not in text
    assert stream.citations[0].file_name == "bakery.md"


def test_build_messages_skips_big_chunk_but_keeps_smaller_later_ones(kb):
    _, _, embedder = kb
    hits = make_hits(1, words=600) + make_hits(3, words=20)[1:]
    prompt = chat_prompt.build_messages("q?", hits, embedder_or_token_counter=embedder, context_window=1024)
    assert [h.chunk_id for h in prompt.dropped] == ["c0"]
    assert [h.chunk_id for h in prompt.hits] == ["c1", "c2"]
    assert "[1] f1.md, page 2" in prompt.messages[-1]["content"]  # renumbered from 1
    assert prompt.estimated_tokens <= prompt.budget


def test_batched_counts_match_count_tokens_and_plain_counters_work(kb):
    _, _, embedder = kb
    hits = make_hits(4, words=80)
    prompt = chat_prompt.build_messages("What is word2x3?", hits, embedder_or_token_counter=embedder, context_window=4096)
    expected = sum(embedder.count_tokens(m["content"]) for m in prompt.messages)
    # estimate = exact counts + per-message overhead + per-passage slack, never below the real count
    assert expected <= prompt.estimated_tokens <= expected + 2 * chat_prompt.MESSAGE_OVERHEAD_TOKENS + 3 * len(hits) + 2
    words = chat_prompt.build_messages("q?", hits, embedder_or_token_counter=lambda t: len(t.split()),
                                context_window=512, answer_tokens=128)
    assert 1 <= len(words.hits) < 4 and words.estimated_tokens <= words.budget == int(384 * chat_prompt.SAFETY_FACTOR)


def test_history_is_sent_newest_first_kept(kb):
    _, _, embedder = kb
    history = []
    for i in range(40):
        history += [{"role": "user", "content": f"old question {i} " + "filler " * 30},
                    {"role": "assistant", "content": f"old answer {i} " + "filler " * 30}]
    prompt = chat_prompt.build_messages("new question?", make_hits(2, 10), history,
                                 embedder_or_token_counter=embedder, context_window=2048)
    kept = prompt.messages[1:-1]
    assert 0 < prompt.history_used == len(kept) < len(history)
    assert kept[-1]["content"].startswith("old answer 39")  # newest kept, oldest dropped
    assert len(prompt.hits) == 2 and prompt.estimated_tokens <= prompt.budget


def test_question_too_long_for_window_is_a_config_error(kb):
    _, _, embedder = kb
    with pytest.raises(ConfigError, match="CONTEXT_WINDOW"):
        chat_prompt.build_messages("why " * 2000, [], embedder_or_token_counter=embedder, context_window=512)


def test_retrieval_only_mode_does_not_call_the_server(kb, fake):
    settings, store, embedder = kb
    stream = chat.ask_stream("When did Mount Kelvar erupt?", settings=on(settings, fake), store=store,
                             embedder=embedder, mode="retrieval")
    assert list(stream) == [] and stream.done
    assert stream.citations[0].file_name == "volcano.md"
    assert fake.chat_requests() == []


def test_list_models_version_and_context_length(kb, fake):
    settings, _, _ = kb
    s = on(settings, fake)
    assert ollama_api.list_models(s) == ["llama3.2:latest", "qwen2.5:0.5b"]
    assert ollama_api.server_version(s) == fake.version
    assert ollama_api.model_context_length(s, "llama3.2") == fake.context_length
    assert ollama_api.resolve_model("llama3.2", ollama_api.list_models(s)) == "llama3.2:latest"
    assert ollama_api.resolve_model("mistral", ollama_api.list_models(s)) is None


# -- failures: never a hang, always what failed and how to fix it -----------------------------
@pytest.mark.timeout(30)
def test_server_down_is_connection_refused_with_fixes(kb):
    settings, store, embedder = kb
    down = on(settings)  # a closed port
    with pytest.raises(OllamaError) as info:
        ollama_api.list_models(down)
    err = info.value
    assert err.kind == "connection_refused"
    message = str(err)
    assert "connection refused" in message and down.ollama_base_url in message
    for fix in ("ollama serve", "OLLAMA_HOST=172.17.0.1", "host.docker.internal:host-gateway", "172.17.0.1"):
        assert fix in message
    stream = chat.ask_stream("Who keeps the lighthouse?", settings=down, store=store, embedder=embedder)
    with pytest.raises(OllamaError, match="connection refused"):
        list(stream)
    assert stream.citations and stream.citations[0].file_name == "harbor.md"  # passages still there
    assert stream.error is not None and stream.text == ""


@pytest.mark.timeout(30)
def test_slow_server_times_out(kb, fake):
    settings, _, _ = kb
    fake.delay = 60
    with pytest.raises(OllamaError) as info:
        chat.answer("q?", settings=on(settings, fake, ollama_timeout=1.0), embedder=kb[2],
                    hits=make_hits(2, 10))
    assert info.value.kind == "timeout"
    assert "did not answer within 1 s (OLLAMA_TIMEOUT)" in str(info.value)
    assert "raise OLLAMA_TIMEOUT" in str(info.value) and "smaller model" in str(info.value)


@pytest.mark.timeout(30)
def test_stall_mid_stream_times_out_and_keeps_partial_text(kb, fake):
    settings, _, embedder = kb
    fake.token_delay = 60
    stream = chat.ask_stream("q?", settings=on(settings, fake, ollama_timeout=1.0), embedder=embedder,
                             hits=make_hits(1, 10))
    pieces = []
    with pytest.raises(OllamaError, match="did not answer within"):
        for piece in stream:
            pieces.append(piece)
    assert pieces == ["Marguerite "] and stream.text == "Marguerite "


def test_model_missing_says_ollama_pull(kb, fake):
    settings, _, embedder = kb
    s = on(settings, fake)
    with pytest.raises(OllamaError) as info:
        chat.answer("q?", settings=s, embedder=embedder, hits=make_hits(1), model="mistral:7b")
    assert info.value.kind == "model_missing" and "`ollama pull mistral:7b`" in str(info.value)
    with pytest.raises(OllamaError, match="ollama pull mistral"):
        ollama_api.model_context_length(s, "mistral")


def test_malformed_stream_is_a_clear_error(kb, fake):
    settings, _, embedder = kb
    fake.malformed = True
    stream = chat.ask_stream("q?", settings=on(settings, fake), embedder=embedder, hits=make_hits(1))
    with pytest.raises(OllamaError) as info:
        list(stream)
    assert info.value.kind == "malformed" and "malformed response" in str(info.value)
    assert stream.text.startswith("Marguerite")  # what arrived before the garbage line is kept


def test_error_record_mid_stream_and_http_500(kb, fake):
    settings, _, embedder = kb
    fake.stream_error = "model requires more system memory"
    with pytest.raises(OllamaError, match="more system memory") as info:
        chat.answer("q?", settings=on(settings, fake), embedder=embedder, hits=make_hits(1))
    assert info.value.kind == "server_error"
    fake.stream_error, fake.error_status = None, 500
    with pytest.raises(OllamaError, match="HTTP 500"):
        chat.answer("q?", settings=on(settings, fake), embedder=embedder, hits=make_hits(1))


def test_openai_style_v1_url_is_explained(kb, fake):
    settings, _, _ = kb
    with pytest.raises(OllamaError, match="no /v1 suffix"):
        ollama_api.list_models(settings.model_copy(update={"ollama_base_url": fake.url + "/v1"}))


# -- CLI -------------------------------------------------------------------------------------
@pytest.fixture
def cli_env(kb, monkeypatch):
    settings, _, _ = kb
    for key, value in {
        "CHROMA_PERSIST_PATH": settings.chroma_persist_path, "MODEL_CACHE_DIR": settings.model_cache_dir,
        "LOG_DIR": settings.log_dir, "COLLECTION_NAME": settings.collection_name,
        "CHUNK_SIZE": settings.chunk_size, "CHUNK_OVERLAP": settings.chunk_overlap,
        "OLLAMA_TIMEOUT": 2, "CHROMA_HOST": "",
    }.items():
        monkeypatch.setenv(key, str(value))
    return monkeypatch


def test_cli_ask_streams_answer_then_sources(cli_env, fake, capsys):
    from workbench.cli import main

    cli_env.setenv("OLLAMA_BASE_URL", fake.url)
    assert main(["ask", "Who keeps the harbor lighthouse?", "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Marguerite Olsen keeps the lighthouse [1].")
    assert "Sources:\n[1] harbor.md, page 1 (score " in out

    assert main(["ask", "Who keeps the harbor lighthouse?", "--json", "--model", "qwen2.5:0.5b"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["answer"] == "Marguerite Olsen keeps the lighthouse [1]." and data["model"] == "qwen2.5:0.5b"
    assert data["citations"][0]["file"] == "harbor.md" and data["timings"]["eval_count"] == 6
    assert fake.chat_requests()[-1]["model"] == "qwen2.5:0.5b"
    first = data["citations"][0]
    assert first["mode"] == "hybrid" and -1 <= first["vector_score"] <= 1 and first["keyword_score"] > 0  # SEARCH_MODE

    assert main(["ask", "Who keeps the harbor lighthouse?", "--json", "--search-mode", "vector"]) == 0
    first = json.loads(capsys.readouterr().out)["citations"][0]
    assert first["mode"] == "vector" and first["score"] == first["vector_score"] and "keyword_score" not in first


@pytest.mark.timeout(30)
def test_cli_ask_with_server_down_fails_first_and_retrieval_only_still_works(cli_env, capsys):
    from workbench.cli import main

    cli_env.setenv("OLLAMA_BASE_URL", f"http://127.0.0.1:{free_port()}")
    assert main(["ask", "When did Mount Kelvar erupt?"]) == 1
    captured = capsys.readouterr()
    assert "connection refused" in captured.err and "ollama serve" in captured.err
    assert "volcano.md" not in captured.out  # nothing retrieved: the server was checked first
    assert main(["ask", "When did Mount Kelvar erupt?", "--retrieval-only"]) == 0
    assert "[1] volcano.md, page 1" in capsys.readouterr().out


# -- the fake server by hand ------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_fake_server_runs_by_hand(kb):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.fake_ollama", "--port", str(port)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "listening on http://127.0.0.1:" in proc.stdout.readline()
        s = kb[0].model_copy(update={"ollama_base_url": f"http://127.0.0.1:{port}"})
        assert "llama3.2:latest" in ollama_api.list_models(s)
        result = chat.answer("q?", settings=s, embedder=kb[2], hits=make_hits(1, 30))
        assert "unique-marker-0" in result.answer  # the demo reply quotes passage [1]
    finally:
        stop_process(proc)


def test_ask_reports_a_down_ollama_before_loading_any_model(tmp_path):
    """`ask` asks Ollama for its version first (3 s at most), so a down server is the error even
    when the embedding model would not load at all."""
    import os

    port = free_port()
    env = {**os.environ, "OLLAMA_BASE_URL": f"http://127.0.0.1:{port}", "EMBEDDING_MODEL": str(tmp_path / "no-such-model"),
           "CHROMA_PERSIST_PATH": str(tmp_path / "db"), "LOG_DIR": str(tmp_path / "logs")}
    r = subprocess.run([sys.executable, "-m", "workbench", "ask", "what is a caldera?"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert f"127.0.0.1:{port}" in r.stderr and "refused" in r.stderr.lower(), r.stderr
    assert "no-such-model" not in r.stderr and "Traceback" not in r.stderr


@pytest.mark.timeout(30)
def test_a_silent_ollama_is_reported_by_the_quick_check(tmp_path):
    """A server that accepts connections and never answers (hung, or a proxy in front of a dead
    one) fails ``ensure_reachable`` after REACHABLE_TIMEOUT, named as the quick check's wait and
    not as the user's OLLAMA_TIMEOUT (60 s here, which was never waited for)."""
    import socket

    from workbench.answer.ollama import REACHABLE_TIMEOUT, ensure_reachable

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        settings = Settings(_env_file=None, ollama_base_url=f"http://127.0.0.1:{server.getsockname()[1]}", ollama_timeout=60)
        with pytest.raises(OllamaError) as info:
            ensure_reachable(settings)
    assert info.value.kind == "timeout"
    assert f"did not answer within {REACHABLE_TIMEOUT:g} s (quick metadata call)" in str(info.value)
    assert "(OLLAMA_TIMEOUT)" not in str(info.value)


def test_the_cli_loads_no_retrieval_or_model_code_to_start(tmp_path):
    """``python -m workbench`` builds its parser without the encoder, Chroma or the retrieval
    stack, so ``ask`` reaches its Ollama check (and a down server is reported) in well under a
    second of imports; they load inside the commands that need them."""
    code = ("import sys, workbench.cli; workbench.cli.build_parser(); "
            "print(sorted(m for m in ('chromadb', 'torch', 'sentence_transformers', 'workbench.retrieval', "
            "'workbench.ingest.pipeline', 'workbench.models.embeddings') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout


def test_a_streamed_answer_stops_at_its_deadline(kb, fake):
    """OLLAMA_ANSWER_TIMEOUT bounds a whole answer even while pieces keep coming."""
    settings, store, embedder = kb
    stream = chat.ask_stream("q?", settings=on(settings, fake, ollama_answer_timeout=1e-9), embedder=embedder,
                             hits=make_hits(1))
    with pytest.raises(OllamaError, match="OLLAMA_ANSWER_TIMEOUT"):
        for _ in stream:
            pass
    assert stream.error is not None and stream.error.kind == "timeout"
