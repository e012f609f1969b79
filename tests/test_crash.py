"""Crash safety: a kill -9 in the middle of an ingest leaves nothing partial searchable, and the
next run repairs and finishes with no chunk duplicated or lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO, make_settings, write_docs
from workbench.ingest.pipeline import ingest_paths
from workbench.retrieval.search import search
from workbench.store.chroma import open_store

CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tests.conftest import make_settings
    from workbench.models.embeddings import get_embedder
    from workbench.ingest.pipeline import ingest_paths
    from workbench.store.chroma import open_store

    settings = make_settings(Path(sys.argv[1]), embedding_batch_size=8)  # flushes of 128 chunks
    store = open_store(settings)
    def progress(event):
        if event.kind == "chunks":
            print("FLUSHED", event.chunks_done, flush=True)
            time.sleep(30)  # a slow ingest: the parent kills us here
    ingest_paths([settings.knowledge_base_path], settings=settings, store=store,
                 embedder=get_embedder(settings), progress=progress)
    """
)


def long_doc(topic: str, paragraphs: int) -> str:
    return "\n\n".join(
        f"{topic} paragraph {i}. " + " ".join(f"The {topic} fact number {i}-{j} is recorded here." for j in range(12))
        for i in range(paragraphs)
    )


@pytest.mark.slow
def test_kill_9_mid_ingest_then_repair(tmp_path, embedder):
    settings = make_settings(tmp_path)
    write_docs(settings.knowledge_base_path, {"a-glaciers.md": long_doc("glacier", 120), "b-deserts.md": long_doc("desert", 40)})
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = child.stdout.readline()
    assert line.startswith("FLUSHED"), f"child did not start writing: {line!r}"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(30)

    store = open_store(settings)
    collection = store.get_collection("knowledge_base")
    written = collection.count()
    assert written > 0, "the killed run wrote nothing; the test did not hit the window"
    assert store.documents("knowledge_base") == [], "a partial document is listed as ingested"
    hits = search("glacier fact number", settings=settings, store=store, embedder=embedder, top_k=10)
    assert hits == [], "chunks of an unfinished document are searchable"

    summary = ingest_paths([settings.knowledge_base_path], settings=settings, store=store, embedder=embedder)
    assert summary.count("added") == 2 and not summary.failures
    docs = {d.source: d for d in store.documents("knowledge_base")}
    assert set(docs) == {"a-glaciers.md", "b-deserts.md"}
    # nothing duplicated or lost: the store holds exactly the chunks of a clean ingest
    clean = make_settings(tmp_path / "clean", knowledge_base_path=settings.knowledge_base_path)
    clean_store = open_store(clean)
    ingest_paths([clean.knowledge_base_path], settings=clean, store=clean_store, embedder=embedder)
    clean_docs = {d.source: d.chunks for d in clean_store.documents("knowledge_base")}
    assert {s: d.chunks for s, d in docs.items()} == clean_docs
    assert collection.count() == sum(clean_docs.values())
    ids = collection.get(include=[])["ids"]
    assert len(ids) == len(set(ids))
    assert all(m["complete"] for m in collection.get(include=["metadatas"])["metadatas"])


def test_repair_drops_uncommitted_and_stale_versions(tmp_path, embedder):
    settings = make_settings(tmp_path)
    kb = write_docs(settings.knowledge_base_path, {"x.md": long_doc("comet", 6), "y.md": long_doc("orbit", 6)})
    store = open_store(settings)
    ingest_paths([kb], settings=settings, store=store, embedder=embedder)
    collection = store.get_collection("knowledge_base")
    heads = collection.get(where={"chunk_index": 0}, include=["metadatas"])
    by_source = {m["source"]: (i, m) for i, m in zip(heads["ids"], heads["metadatas"])}
    # x.md: killed between the flips of its other chunks and of chunk 0 (not committed)
    collection.update(ids=[by_source["x.md"][0]], metadatas=[{"complete": False}])
    # y.md: a newer version was committed but the old one was not yet deleted
    old_id, old_meta = by_source["y.md"]
    got = collection.get(where={"source": "y.md"}, include=["embeddings", "documents", "metadatas"])
    stale = [{**m, "ingest_key": "0" * 64, "ingested_at": "2000-01-01T00:00:00+00:00"} for m in got["metadatas"]]
    collection.add(ids=[f"stale-{i}" for i in got["ids"]], embeddings=got["embeddings"], documents=got["documents"], metadatas=stale)
    removed = store.repair("knowledge_base")
    assert removed == by_source["x.md"][1]["doc_chunks"] + len(got["ids"])
    assert [d.source for d in store.documents("knowledge_base")] == ["y.md"]
    assert store.documents("knowledge_base")[0].ingest_key == old_meta["ingest_key"]
    assert store.repair("knowledge_base") == 0


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tests.conftest import make_settings
    from workbench.store import collection_lock

    with collection_lock(make_settings(Path(sys.argv[1])), "knowledge_base"):
        print("LOCKED", flush=True)
        time.sleep(120)
    """
)


def test_a_second_process_cannot_ingest_into_the_same_collection_until_the_first_dies(tmp_path, embedder):
    """Each ingest repairs (deletes uncommitted chunks) first, so two processes ingesting into one
    collection would delete each other's work: the second is refused, and a kill -9 of the first
    frees the collection."""
    from workbench.errors import IngestBusyError

    settings = make_settings(tmp_path)
    write_docs(settings.knowledge_base_path, {"a.md": long_doc("glacier", 3)})
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "LOCKED"
        store = open_store(settings)
        with pytest.raises(IngestBusyError, match=rf"collection 'knowledge_base' is busy: pid {holder.pid} is running an ingest"):
            ingest_paths([settings.knowledge_base_path], settings=settings, store=store, embedder=embedder)
        assert not store.has_collection("knowledge_base") or store.collection_info("knowledge_base").chunks == 0
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(30)
    summary = ingest_paths([settings.knowledge_base_path], settings=settings, store=store, embedder=embedder)
    assert [r.status for r in summary.results] == ["added"]


def test_start_up_recovers_an_interrupted_swap_and_hides_work_collections(tmp_path, embedder):
    """A kill between the two renames of a rebuild's swap leaves `X.previous` and `X.rebuild` but
    no `X`: start-up puts the rebuilt collection in place; leftovers of an import are deleted,
    and work collections are never listed."""
    from workbench.diagnostics import start_up
    from workbench.store import admin

    settings = make_settings(tmp_path)
    write_docs(settings.knowledge_base_path, {"a.md": long_doc("glacier", 3)})
    store = open_store(settings)
    ingest_paths([settings.knowledge_base_path], settings=settings, store=store, embedder=embedder)
    chunks = store.collection_info("knowledge_base").chunks
    admin.copy_collection(store, "knowledge_base", "knowledge_base.rebuild")  # the finished shadow
    admin.rename_collection(store, "knowledge_base", "spare")  # the first rename of the swap...
    store.client.get_collection("spare").modify(name="knowledge_base.previous")
    admin.copy_collection(store, "knowledge_base.rebuild", "other")
    store.client.get_collection("other").modify(name="notes.importing")  # an import killed half-way
    assert store.collection_names() == []  # work collections are hidden
    actions = start_up(settings, store)
    assert any("finished an interrupted swap" in a for a in actions), actions
    assert any("notes.importing" in a for a in actions), actions
    assert store.collection_names(include_work=True) == ["knowledge_base"]
    assert store.collection_info("knowledge_base").chunks == chunks
    assert search("glacier", settings=settings, store=store, embedder=embedder)
