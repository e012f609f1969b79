"""The spine over real files, the real MiniLM model and real Chroma."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from tests.conftest import REPO, SAMPLE_DOCS, make_settings, write_docs
from workbench.ingest.chunking import Chunker
from workbench.errors import CollectionMismatchError, ConfigError, DocumentError
from workbench.ingest.pipeline import SourceFile, ingest_paths
from workbench.ingest.loaders import iter_pages
from workbench.retrieval.search import search
from workbench.store.chroma import open_store


def ingest(settings, store, embedder, paths, **kw):
    return ingest_paths(paths, settings=settings, store=store, embedder=embedder, **kw)


def test_embeddings_shape_and_normalised(embedder):
    vectors = embedder.encode(["hello world", "a volcano erupts"])
    assert vectors.shape == (2, 384) and str(vectors.dtype) == "float32"
    assert abs(float((vectors**2).sum(axis=1).max()) - 1.0) < 1e-4
    assert embedder.max_seq_length == 256


def test_dimension_mismatch_is_a_clear_error(tmp_path):
    from workbench.models.embeddings import Embedder

    with pytest.raises(ConfigError, match="EMBEDDING_DIMENSIONS is 768.*384"):
        Embedder(make_settings(tmp_path, embedding_dimensions=768, embedding_backend="torch"))


def test_chunks_stay_within_the_model_limit(embedder):
    from workbench.documents import Page

    chunker = Chunker(embedder.backend_tokenizer, 200, 32, embedder.max_seq_length)
    text = "\n\n".join(f"Paragraph {i}. " + "Rivers carry sediment to the sea and shape valleys. " * 9 for i in range(12))
    chunks = list(chunker.chunk_pages(iter([Page(text, 3)]), document_id="d", source="s", file_name="f"))
    assert len(chunks) > 3
    for c in chunks:
        assert c.text == text[c.start : c.end]
        assert c.token_count <= 200
        assert embedder.count_tokens(c.text) == c.token_count
        assert c.page == 3
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    # paragraph boundaries are kept: no chunk starts inside a paragraph here
    assert all(text[c.start - 2 : c.start] == "\n\n" for c in chunks[1:])
    # inside one long paragraph, consecutive chunks overlap
    long = " ".join(f"Sentence {i} says the sediment moves downstream." for i in range(120))
    pieces = list(chunker.chunk_pages(iter([Page(long, 1)]), document_id="d", source="s", file_name="f"))
    assert len(pieces) > 2 and all(b.start < a.end for a, b in zip(pieces, pieces[1:]))
    with pytest.raises(ConfigError, match="CHUNK_SIZE 300"):
        Chunker(embedder.backend_tokenizer, 300, 32, embedder.max_seq_length)


def test_loaders_detect_encoding_and_formats(tmp_path, settings):
    latin = tmp_path / "latin.txt"
    french = (
        "La crème brûlée est un dessert français composé d'une crème à base de jaunes d'œufs, de sucre "
        "et de lait, parfumée à la vanille, recouverte d'une couche de sucre caramélisé. Elle se déguste "
        "froide, mais le caramel doit être préparé juste avant de servir. Déjà au dix-septième siècle, "
        "François Massialot en donnait une recette."
    )
    latin.write_bytes(french.encode("cp1252"))
    assert next(iter_pages(latin, settings)).text == french
    html = tmp_path / "page.html"
    html.write_text("<html><head><title>T</title><script>var x=1</script></head><body><h1>Hi</h1><p>Body text here.</p></body></html>")
    page = next(iter_pages(html, settings))
    assert "Body text here." in page.text and "var x" not in page.text
    import docx

    d = docx.Document()
    d.add_paragraph("A docx paragraph about glaciers.")
    d.save(tmp_path / "a.docx")
    assert "glaciers" in next(iter_pages(tmp_path / "a.docx", settings)).text


@pytest.mark.parametrize(
    "name,data,reason",
    [
        ("empty.txt", b"", "empty"),
        ("broken.pdf", b"%PDF-1.4\n%%EOF\n", "broken.pdf"),
        ("binary.md", bytes(range(256)) * 8, "binary.md"),
        ("table.ods", b"PK\x03\x04", "unsupported"),
    ],
)
def test_bad_files_fail_with_a_message_naming_them(tmp_path, settings, name, data, reason):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DocumentError) as info:
        list(iter_pages(path, settings))
    assert name in str(info.value) and reason in str(info.value)


def test_ingest_is_incremental_replaces_and_prunes(tmp_path, settings, store, embedder):
    kb = write_docs(tmp_path / "kb", SAMPLE_DOCS)
    (kb / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    events = []
    first = ingest(settings, store, embedder, [kb], progress=events.append)
    assert first.count("added") == 3 and first.count("failed") == 1
    assert "broken.pdf" in first.failures[0].message
    assert events[0].kind == "start" and events[-1].kind == "done" and events[-1].files_done == 4
    chunks_before = store.collection_info("knowledge_base").chunks

    second = ingest(settings, store, embedder, [kb])
    assert second.count("unchanged") == 3 and second.chunks_added == 0
    assert store.collection_info("knowledge_base").chunks == chunks_before

    (kb / "bread.txt").write_text("Sourdough uses a starter culture instead of commercial yeast and ferments slowly overnight.")
    third = ingest(settings, store, embedder, [kb])
    assert third.count("replaced") == 1 and third.count("unchanged") == 2
    hits = search("starter culture ferments overnight", settings=settings, store=store, embedder=embedder, top_k=10)
    assert hits[0].file_name == "bread.txt" and "Sourdough" in hits[0].text
    assert not any("kneaded" in h.text for h in hits), "old version of bread.txt is still searchable"

    (kb / "notes" / "rivers.md").unlink()
    fourth = ingest(settings, store, embedder, [kb], prune=True)
    assert fourth.count("pruned") == 1
    assert {d.source for d in store.documents("knowledge_base")} == {"volcanoes.md", "bread.txt"}


def test_search_scores_pages_and_file_filter(tmp_path, settings, store, embedder):
    kb = write_docs(tmp_path / "kb", SAMPLE_DOCS)
    ingest(settings, store, embedder, [kb])
    hits = search("Which river flows through ten countries?", settings=settings, store=store, embedder=embedder, top_k=3)
    assert hits[0].source == "notes/rivers.md" and hits[0].page == 1
    assert 0.3 < hits[0].score <= 1.0 and hits[0].score >= hits[-1].score
    only = search("river", settings=settings, store=store, embedder=embedder, file_name="bread.txt")
    assert only and {h.file_name for h in only} == {"bread.txt"}


def test_model_mismatch_is_refused_naming_both(tmp_path, settings, store, embedder):
    store.open_collection("kb-x", model="other-model", dimensions=768, chunk_size=200, chunk_overlap=32)
    with pytest.raises(CollectionMismatchError, match="other-model.*all-MiniLM-L6-v2"):
        ingest(settings, store, embedder, [write_docs(tmp_path / "kb", SAMPLE_DOCS)], collection="kb-x")


def test_uploaded_files_keep_their_names_and_cancel_rolls_back(tmp_path, settings, store, embedder):
    import threading

    kb = write_docs(tmp_path / "up", SAMPLE_DOCS)
    cancel = threading.Event()
    cancel.set()
    summary = ingest(settings, store, embedder, [SourceFile(kb / "bread.txt", "my-bread.txt")], cancel=cancel)
    assert summary.cancelled and store.collection_info("knowledge_base").chunks == 0
    summary = ingest(settings, store, embedder, [SourceFile(kb / "bread.txt", "my-bread.txt")])
    assert [d.source for d in store.documents("knowledge_base")] == ["my-bread.txt"]


def test_chroma_server_mode(tmp_path, chroma_server, embedder):
    host, port = chroma_server
    settings = make_settings(tmp_path, chroma_host=host, chroma_port=port, collection_name="server-kb")
    store = open_store(settings)
    assert settings.chroma_mode == "server"
    summary = ingest(settings, store, embedder, [write_docs(tmp_path / "kb", SAMPLE_DOCS)])
    assert summary.count("added") == 3
    hits = search("active volcano in Sicily", settings=settings, store=store, embedder=embedder)
    assert hits[0].file_name == "volcanoes.md"
    assert "server-kb" in [c.name for c in open_store(settings).list_collections()]


def run_cli(args, env_settings, cwd):
    env = {
        "PATH": "/usr/bin:/bin",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
        "CHROMA_PERSIST_PATH": str(env_settings.chroma_persist_path),
        "LOG_DIR": str(env_settings.log_dir),
        "MODEL_CACHE_DIR": str(env_settings.model_cache_dir),
        "KNOWLEDGE_BASE_PATH": str(env_settings.knowledge_base_path),
    }
    return subprocess.run([sys.executable, "-m", "workbench", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_cli_ingest_search_collections_verify_delete(tmp_path, settings, embedder, monkeypatch, capsys):
    """``python -m workbench`` in fresh processes for the model-loading ingest and search and the
    cheap commands; ``verify`` and the batch search go through the same ``main`` in this process
    (each fresh process loads the model again: ~10 s apiece here)."""
    from workbench.cli import main

    for key in ("CHROMA_PERSIST_PATH", "LOG_DIR", "MODEL_CACHE_DIR", "KNOWLEDGE_BASE_PATH"):
        monkeypatch.setenv(key, str(getattr(settings, key.lower())))
    monkeypatch.chdir(tmp_path)  # no .env applies

    def in_process(args):
        code = main(args)
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    write_docs(settings.knowledge_base_path, SAMPLE_DOCS)
    r = in_process(["verify"])
    assert r.returncode == 1 and "does not exist" in r.stdout
    r = run_cli(["ingest"], settings, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "added 3" in r.stdout
    r = run_cli(["search", "Danube Black Sea", "--json", "--top-k", "2"], settings, tmp_path)
    data = json.loads(r.stdout)
    assert data["results"][0]["file_name"] == "rivers.md" and len(data["results"]) == 2
    queries = tmp_path / "q.txt"
    queries.write_text("yeast and flour\nmagma chamber\n")
    r = in_process(["search", "--queries-file", str(queries)])
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["results"][0]["file_name"] for x in lines] == ["bread.txt", "volcanoes.md"]
    r = run_cli(["collections"], settings, tmp_path)
    assert "knowledge_base\t3 documents" in r.stdout
    r = in_process(["verify"])
    assert r.returncode == 0 and r.stdout.count("[OK]") == 5, r.stdout
    r = run_cli(["delete", "--collection", "knowledge_base", "--document", "bread.txt"], settings, tmp_path)
    assert r.returncode == 0 and "deleted bread.txt" in r.stdout
    assert "2 documents" in run_cli(["collections"], settings, tmp_path).stdout
    assert (settings.log_dir / "workbench.log").read_text()
    r = run_cli(["delete", "--collection", "nope"], settings, tmp_path)
    assert r.returncode == 1 and "error: collection 'nope' does not exist" in r.stderr and "Traceback" not in r.stderr


def test_errors_a_user_can_cause_are_workbench_errors(tmp_path):
    """Views show WorkbenchErrors as one line; a bad mode or an empty question is one too."""
    from workbench.answer.chat import ask_stream
    from workbench.errors import InvalidRequestError, WorkbenchError
    from workbench.retrieval.search import search as do_search

    settings = make_settings(tmp_path)
    with pytest.raises(WorkbenchError, match="unknown search mode 'fuzzy'; use one of vector, keyword, hybrid"):
        do_search("q", settings=settings, store=None, embedder=None, mode="fuzzy")
    with pytest.raises(InvalidRequestError, match="the question is empty"):
        ask_stream("  ", settings=settings, embedder=None)
