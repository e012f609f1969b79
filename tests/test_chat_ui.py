"""The Chat page (views/chat.py) in Streamlit's AppTest, against the fake Ollama server, a real
Chroma store and the real embedding model."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import SAMPLE_DOCS, make_settings, write_docs
from tests.fake_ollama import FakeOllama

REPO = Path(__file__).resolve().parents[1]
REPLY = "Mount Etna in Sicily is one of the most active volcanoes [1]."


@pytest.fixture(scope="module")
def kb(tmp_path_factory, embedder):
    from workbench.ingest.pipeline import ingest_paths
    from workbench.store.chroma import open_store

    root = tmp_path_factory.mktemp("chat-ui")
    docs = write_docs(root / "docs", SAMPLE_DOCS)
    settings = make_settings(root, knowledge_base_path=docs, collection_name="chat_ui")
    summary = ingest_paths([docs], settings=settings, store=open_store(settings), embedder=embedder)
    assert not summary.failures
    return settings


@pytest.fixture
def fake():
    with FakeOllama(reply=REPLY, token_delay=0.001) as server:
        yield server


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def open_chat(kb, monkeypatch, ollama_url: str, query_params: dict | None = None) -> AppTest:
    """The app on the Chat page, with settings from the environment pointing at kb and Ollama;
    ``query_params`` are the page URL's (``{"conversation": id}`` reopens a conversation)."""
    import streamlit as st

    import ui

    for key, value in {
        "CHROMA_PERSIST_PATH": kb.chroma_persist_path, "MODEL_CACHE_DIR": kb.model_cache_dir,
        "LOG_DIR": kb.log_dir, "COLLECTION_NAME": kb.collection_name, "CHROMA_HOST": "",
        "OLLAMA_BASE_URL": ollama_url, "OLLAMA_TIMEOUT": "3", "OLLAMA_MODEL": "llama3.2",
    }.items():
        monkeypatch.setenv(key, str(value))
    ui.get_settings.clear()
    ui.get_store.clear()
    st.cache_data.clear()  # the page's cached model list
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("views/chat.py")
    at.query_params.update(query_params or {})
    at.run()
    assert not at.exception, at.exception
    return at


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def plain(markdown: str) -> str:
    """Markdown source with its backslash escapes removed (the text a reader sees)."""
    return re.sub(r"\\(.)", r"\1", markdown)


def test_streamed_answer_and_citations_reach_the_page(kb, fake, monkeypatch):
    at = open_chat(kb, monkeypatch, fake.url)
    model = at.selectbox(key="chat-model")
    assert model.options == ["llama3.2:latest", "qwen2.5:0.5b"] and model.value == "llama3.2:latest"
    assert not at.error

    at.chat_input[0].set_value("Which volcano in Sicily is active?").run()
    assert not at.exception and not at.error
    assert [m.name for m in at.chat_message] == ["user", "assistant"]
    assert REPLY in plain(texts(at.chat_message[1].markdown))  # shown as stored, escaped
    labels = [e.label for e in at.chat_message[1].expander]
    assert at.radio(key="chat-search-mode").value == "hybrid"  # SEARCH_MODE
    assert labels[0].startswith("[1] volcanoes") and "fused rank 1" in labels[0] and "BM25" in labels[0]
    assert "Mount Etna" in at.chat_message[1].expander[0].text[0].value  # chunk text shown as text
    sent = fake.chat_requests()[-1]
    assert sent["model"] == "llama3.2:latest" and "Mount Etna" in sent["messages"][-1]["content"]

    # a second question carries the first exchange as history; "New" starts another conversation
    at.chat_input[0].set_value("And which river crosses ten countries?").run()
    messages = fake.chat_requests()[-1]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == "Which volcano in Sicily is active?" and messages[2]["content"] == REPLY
    assert len(at.chat_message) == 4
    at.button(key="chat-new").click().run()
    assert len(at.chat_message) == 0 and not at.exception

    # keyword retrieval: the citations carry BM25 scores only
    at.radio(key="chat-search-mode").set_value("keyword").run()
    at.chat_input[0].set_value("Which volcano in Sicily is active?").run()
    labels = [e.label for e in at.chat_message[1].expander]
    assert labels and labels[0].startswith("[1] volcanoes") and "BM25" in labels[0] and "cosine" not in labels[0]


@pytest.mark.timeout(120)
def test_server_down_shows_error_and_still_the_passages(kb, monkeypatch):
    at = open_chat(kb, monkeypatch, closed_port_url())
    assert "connection refused" in texts(at.error)  # said up front, before any question
    assert at.text_input(key="chat-model-name").value == "llama3.2"

    at.chat_input[0].set_value("How long does bread dough rise?").run()
    assert not at.exception
    answer = at.chat_message[1]
    message = plain(texts(answer.error))
    assert "connection refused" in message and "ollama serve" in message
    assert "host.docker.internal:host-gateway" in message
    assert answer.expander and answer.expander[0].label.startswith("[1] bread")
    assert "flour" in answer.expander[0].text[0].value


def test_retrieval_only_mode_shows_passages_without_calling_ollama(kb, fake, monkeypatch):
    at = open_chat(kb, monkeypatch, fake.url)
    at.toggle(key="chat-retrieval-only").set_value(True).run()
    at.chat_input[0].set_value("Which river flows through ten countries?").run()
    assert not at.exception and not at.error
    label = at.chat_message[1].expander[0].label
    assert label.startswith("[1] ") and "rivers" in label
    assert fake.chat_requests() == []
