"""Kept conversations (workbench.answer.conversations): a real SQLite file in tmp_path, concurrent
writers (threads and processes), gone-chunk marking against a real embedded Chroma with the real
MiniLM model, the CLI (`ask --conversation`, `conversations`) against the fake Ollama server, and
the Chat page surviving a reload in Streamlit's AppTest."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_DOCS, make_settings, write_docs
from tests.fake_ollama import FakeOllama
from workbench.answer import chat
from workbench.answer.conversations import (MAX_QUESTION_CHARS, MAX_TITLE_CHARS, SCHEMA_VERSION,
                                     ConversationError, ConversationNotFoundError, ConversationStore,
                                     TextTooLongError, mark_missing, migrate)
from workbench.answer.conversation_export import export_json, export_markdown
from workbench.documents import Hit
from workbench.errors import WorkbenchError

REPLY = "Mount Etna in Sicily is one of the most active volcanoes [1]."


def hit(i: int, **kw) -> Hit:
    values = dict(chunk_id=f"doc{i}-key-{i:06d}", score=0.9 - i / 10, text=f"Passage {i}: see [here](http://x.test/{i}) ![img](http://x.test/{i}.png)",
                  document_id=f"doc{i}", source=f"notes/f{i}.md", file_name=f"f{i}.md", page=i + 1, chunk_index=i + 2,
                  mode="hybrid", vector_score=0.5 + i / 100, keyword_score=2.5 + i, rank=i + 1, section="Intro")
    values.update(kw)
    return Hit(**values)


@pytest.fixture
def conversations(settings) -> ConversationStore:
    return ConversationStore.open(settings)


# -- the core ----------------------------------------------------------------------------------
def test_create_list_rename_delete(conversations):
    question = "How long does the dough rise in a cold kitchen when the starter is young and slow to wake up?"
    first = conversations.create(title=question, collection="kb", model="llama3.2", search_mode="hybrid")
    assert len(first.id) == 12 and first.id.replace("-", "").replace("_", "").isalnum()
    assert first.title.endswith("…") and len(first.title) <= 81 and question.startswith(first.title[:-1])
    second = conversations.create(collection="kb", model="qwen2.5:0.5b", search_mode="vector")
    assert second.title == "" and second.id != first.id

    conversations.append_turn(second.id, "Where is Etna?\nIn Sicily?", answer="In Sicily [1].", citations=[hit(0)])
    conversations.append_turn(first.id, question, answer="About an hour [1][2].", citations=[hit(0), hit(1)])
    listed = conversations.list()
    assert [(c.id, c.turn_count) for c in listed] == [(first.id, 1), (second.id, 1)]  # newest update first
    assert listed[1].title == "Where is Etna? In Sicily?"  # an untitled one takes its first question
    assert conversations.list(limit=1)[0].id == first.id and not listed[0].turns

    renamed = conversations.rename(second.id, "  Volcanoes\n of Italy ")
    assert renamed.title == "Volcanoes of Italy" and renamed.turn_count == 1
    assert conversations.get(second.id).title == "Volcanoes of Italy"

    conversations.delete(second.id)
    assert [c.id for c in conversations.list()] == [first.id]
    for call in (lambda: conversations.get(second.id), lambda: conversations.delete(second.id),
                 lambda: conversations.rename(second.id, "x"), lambda: conversations.append_turn(second.id, "q?")):
        with pytest.raises(ConversationNotFoundError, match=second.id) as info:
            call()
        assert isinstance(info.value, WorkbenchError)
    with sqlite3.connect(conversations.path) as db:  # its turns went with it
        assert db.execute("SELECT COUNT(*) FROM turns WHERE conversation_id = ?", (second.id,)).fetchone() == (0,)
    with pytest.raises(ConversationNotFoundError, match="does not exist"):
        conversations.get("../../etc/passwd")


def test_size_caps_are_named_errors(conversations):
    conv = conversations.create(title="t")
    with pytest.raises(TextTooLongError, match=f"limit is {MAX_TITLE_CHARS}"):
        conversations.rename(conv.id, "x" * (MAX_TITLE_CHARS + 1))
    assert conversations.rename(conv.id, "x" * MAX_TITLE_CHARS).title == "x" * MAX_TITLE_CHARS
    with pytest.raises(ConversationError, match="title is empty"):
        conversations.rename(conv.id, " \n ")
    with pytest.raises(TextTooLongError, match="10,000"):
        conversations.append_turn(conv.id, "q" * (MAX_QUESTION_CHARS + 1))
    with pytest.raises(ConversationError, match="question is empty"):
        conversations.append_turn(conv.id, "   ")
    assert conversations.append_turn(conv.id, "q" * MAX_QUESTION_CHARS).number == 1
    assert conversations.get(conv.id).turn_count == 1


def test_turn_keeps_a_chat_result_exactly(conversations):
    hits = [hit(0), hit(1, mode="vector", keyword_score=None, vector_score=0.61, score=0.61)]
    timings = chat.ChatTimings(retrieval_s=0.12, first_token_s=0.5, total_s=1.5, eval_count=6, tokens_per_s=12.5,
                               done_reason="stop")
    result = chat.ChatResult("The dough rises [1].", "llama3.2:latest", hits, hits + [hit(2)], timings)
    conv = conversations.create(title="q", collection="kb", model="llama3.2", search_mode="hybrid")
    turn = conversations.append_turn(conv.id, "How long?", result)
    error = chat.OllamaCallError("connection_refused", "connection refused by Ollama at http://x", ["ollama serve", "check the URL"])
    conversations.append_turn(conv.id, "And now?", answer="partial", error=error, collection="other", search_mode="keyword")

    got = conversations.get(conv.id)
    assert got.turns[0] == turn and [t.number for t in got.turns] == [1, 2]
    first, failed = got.turns
    assert first.answer == "The dough rises [1]." and first.model == "llama3.2:latest" and first.error is None
    assert first.timings == timings.as_dict()
    assert [c.number for c in first.citations] == [1, 2]
    for c, h in zip(first.citations, hits):
        assert (c.chunk_id, c.document_id, c.file_name, c.source, c.page, c.chunk_index, c.text, c.score, c.mode,
                c.vector_score, c.keyword_score, c.rank, c.section) == (
            h.chunk_id, h.document_id, h.file_name, h.source, h.page, h.chunk_index, h.text, h.score, h.mode,
            h.vector_score, h.keyword_score, h.rank, h.section)
        assert c.present is None  # not checked yet
    assert failed.error == "connection refused by Ollama at http://x" and failed.error_fixes == ("ollama serve", "check the URL")
    assert failed.answer == "partial" and failed.collection == "other" and failed.search_mode == "keyword"
    assert failed.model == "llama3.2:latest"  # the conversation's, which followed the first turn
    assert got.collection == "other" and got.search_mode == "keyword"
    assert got.messages() == [{"role": "user", "content": "How long?"}, {"role": "assistant", "content": "The dough rises [1]."}]


def test_export_markdown_and_json(conversations):
    conv = conversations.create(title="Bread [and] volcanoes", collection="kb", model="llama3.2", search_mode="hybrid")
    conversations.append_turn(conv.id, "How long does it rise?", answer="About an hour [1], sometimes longer [2].",
                              citations=[hit(0), hit(1)], timings={"retrieval_s": 0.1})
    conversations.append_turn(conv.id, "Which volcano?", error="connection refused")
    got = conversations.get(conv.id)
    first, second = got.turns
    gone = replace(got, turns=(replace(first, citations=(first.citations[0], replace(first.citations[1], present=False))), second))

    md = export_markdown(gone)
    assert md.startswith("# Bread \\[and\\] volcanoes\n")
    assert "## 1. Question\n\n> How long does it rise?" in md
    assert "About an hour [1], sometimes longer [2]." in md  # the answer as written, citations numbered
    assert "**Sources**" in md
    assert "1. \\[1\\] f0.md, page 1, chunk 2 (score 0.900, hybrid)\n" in md
    assert "2. \\[2\\] f1.md, page 2, chunk 3 (score 0.800, hybrid) — *no longer in the collection*" in md
    assert "> Passage 0: see \\[here\\]\\(http://x.test/0\\) \\!\\[img\\]" in md  # cited text quoted, inert
    assert "](http" not in md.replace("\\]\\(", "")
    assert "## 2. Question" in md and "**Error:** connection refused" in md

    data = json.loads(export_json(gone))
    assert data["format"] == "rag-workbench-conversation" and data["schema"] == SCHEMA_VERSION
    assert data["id"] == conv.id and data["title"] == "Bread [and] volcanoes" and data["turn_count"] == 2
    first = data["turns"][0]
    assert first["question"] == "How long does it rise?" and first["timings"] == {"retrieval_s": 0.1}
    assert [c["number"] for c in first["citations"]] == [1, 2]
    assert first["citations"][0] == {"number": 1, "chunk_id": "doc0-key-000000", "document_id": "doc0", "file_name": "f0.md",
                                     "source": "notes/f0.md", "page": 1, "chunk_index": 2, "text": hit(0).text,
                                     "score": 0.9, "mode": "hybrid", "vector_score": 0.5, "keyword_score": 2.5,
                                     "rank": 1, "section": "Intro", "present": None}
    assert first["citations"][1]["present"] is False
    assert data["turns"][1]["error"] == "connection refused" and data["turns"][1]["answer"] == ""


def test_schema_version_wal_and_migration(tmp_path, settings):
    store = ConversationStore.open(settings)
    assert store.path == settings.chroma_persist_path / "conversations.sqlite3"
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (1,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    ConversationStore.open(settings)  # opening again migrates nothing
    conn = sqlite3.connect(store.path, isolation_level=None)
    assert migrate(conn) == SCHEMA_VERSION
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ConversationError, match="newer than this workbench"):
        ConversationStore.open(settings)

    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    with pytest.raises(ConversationError, match="CONVERSATIONS_DB"):
        ConversationStore.open(make_settings(tmp_path, conversations_db=blocked / "c.sqlite3"))


def test_database_path_setting(tmp_path, monkeypatch):
    base = make_settings(tmp_path)
    assert ConversationStore.path_for(base) == tmp_path / "chroma_db" / "conversations.sqlite3"
    server = make_settings(tmp_path, chroma_host="chroma", chroma_port=8000)
    assert ConversationStore.path_for(server) == tmp_path / "chroma_db" / "conversations.sqlite3"  # still local
    monkeypatch.setenv("CONVERSATIONS_DB", str(tmp_path / "elsewhere" / "chats.sqlite3"))
    from workbench.config import Settings

    chosen = Settings(_env_file=None, chroma_persist_path=tmp_path / "chroma_db")
    assert ConversationStore.path_for(chosen) == tmp_path / "elsewhere" / "chats.sqlite3"
    assert ConversationStore.open(chosen).path.is_file()
    monkeypatch.setenv("CONVERSATIONS_DB", "")
    assert Settings(_env_file=None).conversations_db is None


# -- two writers lose nothing ----------------------------------------------------------------------
TURNS_EACH = 50


def _write_turns(db_path: str, conversation_id: str, writer: str, start, n: int = TURNS_EACH) -> None:
    """Append n turns, each in its own transaction; ``start`` (a barrier) lines the writers up."""
    store = ConversationStore(Path(db_path))
    start.wait(60)
    for i in range(n):
        store.append_turn(conversation_id, f"{writer} question {i}", answer=f"{writer} answer {i} [1]",
                          citations=[hit(i % 3)], timings={"retrieval_s": 0.01})
        time.sleep(0.01)  # a user does not ask back to back: let the other writer in


def _check_all_kept(store: ConversationStore, conversation_id: str, writers: tuple[str, str]) -> None:
    got = store.get(conversation_id)
    assert got.turn_count == len(got.turns) == 2 * TURNS_EACH
    assert [t.number for t in got.turns] == list(range(1, 2 * TURNS_EACH + 1))
    assert sorted(t.question for t in got.turns) == sorted(f"{w} question {i}" for w in writers for i in range(TURNS_EACH))
    for w in writers:  # each writer's turns are in its own order, with their own answers
        mine = [t for t in got.turns if t.question.startswith(w)]
        assert [t.answer for t in mine] == [f"{w} answer {i} [1]" for i in range(TURNS_EACH)]
    assert store.list()[0].turn_count == 2 * TURNS_EACH
    order = [t.question[0] for t in got.turns]
    assert sum(a != b for a, b in zip(order, order[1:])) >= 2, "the writers did not overlap in time"


@pytest.mark.timeout(120)
def test_two_threads_append_to_one_conversation(conversations):
    conv = conversations.create(title="threads")
    start = threading.Barrier(2)
    threads = [threading.Thread(target=_write_turns, args=(str(conversations.path), conv.id, w, start)) for w in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    _check_all_kept(conversations, conv.id, ("A", "B"))


@pytest.mark.timeout(180)
def test_two_processes_append_to_one_conversation(conversations):
    conv = conversations.create(title="processes")
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters, as two app servers / a CLI would be
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_write_turns, args=(str(conversations.path), conv.id, w, start)) for w in ("P", "Q")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    _check_all_kept(conversations, conv.id, ("P", "Q"))


# -- citations of chunks that are gone -------------------------------------------------------------
def test_gone_chunks_are_marked_and_keep_their_text(settings, store, embedder, tmp_path, conversations):
    from workbench.ingest.pipeline import ingest_paths
    from workbench.retrieval.search import search

    docs = write_docs(tmp_path / "docs", SAMPLE_DOCS)
    ingest_paths([docs], settings=settings, store=store, embedder=embedder, collection="gone_test")
    cited = {}
    for query, name in (("Mount Etna volcano", "volcanoes.md"), ("flour water yeast dough", "bread.txt"),
                        ("Danube river countries", "rivers.md")):
        cited[name] = next(h for h in search(query, settings=settings, store=store, embedder=embedder,
                                             collection="gone_test", top_k=3, mode="vector") if h.file_name == name)
    conv = conversations.create(title="gone", collection="gone_test")
    conversations.append_turn(conv.id, "three facts?", answer="[1] [2] [3]", citations=list(cited.values()))
    assert [c.present for c in conversations.get(conv.id, store=store).turns[0].citations] == [True, True, True]

    # bread.txt changes and is re-ingested (new chunk ids); volcanoes.md is deleted
    (docs / "bread.txt").write_text("Rye bread needs a sour starter and rests overnight.\n", encoding="utf-8")
    ingest_paths([docs], settings=settings, store=store, embedder=embedder, collection="gone_test")
    assert store.delete_document("gone_test", cited["volcanoes.md"].document_id) > 0

    got = conversations.get(conv.id, store=store)
    marks = {c.file_name: c.present for c in got.turns[0].citations}
    assert marks == {"volcanoes.md": False, "bread.txt": False, "rivers.md": True}
    texts = {c.file_name: c.text for c in got.turns[0].citations}
    assert texts == {name: h.text for name, h in cited.items()}  # the text as it was cited
    assert "Mount Etna" in texts["volcanoes.md"] and "yeast" in texts["bread.txt"]
    assert "no longer in the collection" in export_markdown(got)

    store.delete_collection("gone_test")  # a deleted collection: every citation is gone
    assert [c.present for c in mark_missing(got, store).turns[0].citations] == [False, False, False]


# -- CLI --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kb(tmp_path_factory, embedder):
    from workbench.ingest.pipeline import ingest_paths
    from workbench.store.chroma import open_store

    root = tmp_path_factory.mktemp("conversations")
    docs = write_docs(root / "docs", SAMPLE_DOCS)
    settings = make_settings(root, knowledge_base_path=docs, collection_name="conv_test")
    summary = ingest_paths([docs], settings=settings, store=open_store(settings), embedder=embedder)
    assert not summary.failures
    return settings


@pytest.fixture
def fake():
    with FakeOllama(reply=REPLY, token_delay=0.001) as server:
        yield server


def test_cli_ask_conversation_list_and_export(kb, fake, monkeypatch, capsys, tmp_path):
    from workbench.cli import main

    db = tmp_path / "chats" / "kept.sqlite3"
    for key, value in {"CHROMA_PERSIST_PATH": kb.chroma_persist_path, "MODEL_CACHE_DIR": kb.model_cache_dir,
                       "LOG_DIR": kb.log_dir, "COLLECTION_NAME": kb.collection_name, "CHROMA_HOST": "",
                       "OLLAMA_BASE_URL": fake.url, "OLLAMA_TIMEOUT": "3", "CONVERSATIONS_DB": db}.items():
        monkeypatch.setenv(key, str(value))

    assert main(["ask", "Which volcano in Sicily is active?", "--conversation", "new"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(REPLY) and "Sources:" in captured.out
    conv_id = captured.err.split("conversation: ", 1)[1].split()[0]
    assert db.is_file()

    assert main(["ask", "And which river crosses ten countries?", "--conversation", conv_id, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["conversation"] == conv_id and data["answer"] == REPLY
    sent = fake.chat_requests()[-1]["messages"]  # the kept turn went along as history
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[1]["content"] == "Which volcano in Sicily is active?" and sent[2]["content"] == REPLY

    assert main(["conversations", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(c["id"], c["turn_count"], c["title"]) for c in listed] == [(conv_id, 2, "Which volcano in Sicily is active?")]
    assert listed[0]["collection"] == "conv_test" and listed[0]["search_mode"] == "hybrid"
    assert main(["conversations"]) == 0
    assert conv_id in capsys.readouterr().out

    out = tmp_path / "conv.md"
    assert main(["conversations", "export", conv_id, "--output", str(out)]) == 0
    md = out.read_text(encoding="utf-8")
    assert md.startswith("# Which volcano in Sicily is active?")
    assert "> Which volcano in Sicily is active?" in md and "> And which river crosses ten countries?" in md
    assert md.count(REPLY) == 2 and md.count("**Sources**") == 2
    assert "1. \\[1\\] volcanoes.md, page 1, chunk 0" in md and "*no longer in the collection*" not in md
    assert main(["conversations", "export", conv_id, "--format", "json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert [t["question"] for t in exported["turns"]] == ["Which volcano in Sicily is active?",
                                                          "And which river crosses ten countries?"]
    first = exported["turns"][0]["citations"][0]
    assert first["file_name"] == "volcanoes.md" and "Mount Etna" in first["text"] and first["present"] is True
    assert exported["turns"][0]["timings"]["eval_count"] == len(REPLY.split())

    requests = len(fake.chat_requests())
    assert main(["ask", "Anything?", "--conversation", "nope123"]) == 1
    assert "conversation 'nope123' does not exist" in capsys.readouterr().err
    assert len(fake.chat_requests()) == requests  # checked before the model is asked
    assert main(["conversations", "export", "nope123"]) == 1


# -- the Chat page survives a reload ------------------------------------------------------------------
def test_chat_page_conversation_survives_a_reload(kb, fake, monkeypatch):
    from tests.test_chat_ui import open_chat, plain, texts

    at = open_chat(kb, monkeypatch, fake.url)
    at.chat_input[0].set_value("Which volcano in Sicily is active?").run()
    assert not at.exception and not at.error
    conv_id = at.query_params["conversation"]
    assert conv_id and REPLY in plain(texts(at.chat_message[1].markdown))

    # a reload: a new session (new AppTest) with only the URL's query parameter
    again = open_chat(kb, monkeypatch, fake.url, {"conversation": conv_id})
    assert not again.exception and not again.error
    assert [m.name for m in again.chat_message] == ["user", "assistant"]
    assert plain(texts(again.chat_message[0].markdown)) == "Which volcano in Sicily is active?"
    assert REPLY in plain(texts(again.chat_message[1].markdown))
    label = again.chat_message[1].expander[0].label
    assert label.startswith("[1] volcanoes") and "no longer" not in label
    assert "Mount Etna" in again.chat_message[1].expander[0].text[0].value
    assert again.button(key=f"chat-open-{conv_id}").label.startswith("Which volcano in Sicily is active?")

    # a follow-up in the reopened conversation carries the kept turn as history
    again.chat_input[0].set_value("Is it in Italy?").run()
    assert [m["role"] for m in fake.chat_requests()[-1]["messages"]] == ["system", "user", "assistant", "user"]
    assert len(again.chat_message) == 4 and again.query_params["conversation"] == conv_id

    # rename from the sidebar; the list shows the new title
    again.text_input(key=f"chat-title-{conv_id}").set_value("Etna questions").run()
    assert not again.exception and again.button(key=f"chat-open-{conv_id}").label.startswith("Etna questions")
    assert {b.label for b in again.download_button} >= {"MD", "JSON"}

    # delete: the conversation is gone from the list and the page starts empty
    again.button(key="chat-delete").click().run()
    assert not again.exception and "conversation" not in again.query_params
    assert len(again.chat_message) == 0 and not [b for b in again.button if b.key == f"chat-open-{conv_id}"]


def test_chat_page_shows_gone_chunks_and_keeps_stored_text_inert(kb, fake, monkeypatch):
    from tests.test_chat_ui import open_chat, texts

    conversations = ConversationStore.open(kb)
    conv = conversations.create(title="Injected ![x](http://evil.test/t.png)", collection=kb.collection_name)
    gone = hit(0, chunk_id="volcanoes-gone-000000", file_name="old [v1](http://evil.test).md",
               text="Old text about Etna, cited before the document was re-ingested.")
    conversations.append_turn(conv.id, "Look at [this](http://evil.test/q)", citations=[gone],
                              answer="See ![img](http://evil.test/a.png) and <img src=x> and [1]\n\n- a **list** item")

    at = open_chat(kb, monkeypatch, fake.url, {"conversation": conv.id})
    assert not at.exception
    question, answer = texts(at.chat_message[0].markdown), texts(at.chat_message[1].markdown)
    assert "\\[this\\]\\(http\\:" in question
    assert "\\!\\[img\\](http\\://evil.test/a.png)" in answer and "\\<img src=x\\>" in answer
    assert "- a **list** item" in answer  # formatting kept
    expander = at.chat_message[1].expander[0]
    assert expander.label.endswith("no longer in the collection") and "\\[v1\\]" in expander.label
    assert "no longer in the collection" in texts(expander.caption)
    assert expander.text[0].value == "Old text about Etna, cited before the document was re-ingested."
    assert "\\!\\[x\\]" in at.button(key=f"chat-open-{conv.id}").label


def test_safe_markdown_keeps_formatting_and_code_but_no_live_links():
    from ui import safe_markdown

    text = ("**Etna** [1]: see ![x](http://e.test/x.png), <b>hi</b>, $x$, www.e.test and https://e.test\n"
            "- item\n\n`code [a](b)` and\n```\n![keep](as/is)\n```\n")
    out = safe_markdown(text)
    assert out.startswith("**Etna** \\[1\\]: see \\!\\[x\\](http\\://e.test/x.png), \\<b\\>hi\\</b\\>, \\$x\\$")
    assert "www\\.e.test and https\\://e.test\n- item" in out
    assert "`code [a](b)`" in out and "```\n![keep](as/is)\n```" in out  # code is literal already
