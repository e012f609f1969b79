"""workbench.store.admin on a real embedded Chroma with the real model: create, rename, copy,
export/import archives (and bad ones), rebuild into a shadow collection and swap."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import MODEL_CACHE, SAMPLE_DOCS, make_settings, write_docs
from workbench.ingest import rebuild
from workbench.store import admin
from workbench.store import archive as wa
from workbench.errors import CancelledError, CollectionMismatchError, StoreError
from workbench.ingest.pipeline import ingest_paths
from workbench.retrieval.search import search

#: A document long enough for several chunks at chunk_size 200 and many at 48.
LONG_DOC = "# Lighthouses\n\n" + "\n\n".join(
    f"Paragraph {i}. The lighthouse at cape {name} was built in {1800 + i * 7} from {stone} and its lamp "
    f"could be seen {10 + i} nautical miles out at sea, guiding ships past the {hazard}."
    for i, (name, stone, hazard) in enumerate(
        [("Wrath", "granite", "reefs"), ("Race", "iron plates", "fog banks"), ("Hatteras", "brick", "shoals"),
         ("Agulhas", "limestone", "currents"), ("Horn", "concrete", "storms"), ("Palliser", "cast iron", "rocks")] * 3
    )
)
DOCS = {**SAMPLE_DOCS, "lighthouses.md": LONG_DOC}


@pytest.fixture
def kb(tmp_path, settings, store, embedder):
    folder = write_docs(tmp_path / "docs", DOCS)
    summary = ingest_paths([folder], settings=settings, store=store, embedder=embedder, collection="lib")
    assert not summary.failures and summary.count("added") == len(DOCS)
    return folder


def snapshot(store, name):
    """Every record of a collection: {id: (text, metadata, vector)}."""
    got = store.get_collection(name).get(include=["documents", "metadatas", "embeddings"])
    return {i: (d, m, np.asarray(e, dtype=np.float32)) for i, d, m, e in zip(got["ids"], got["documents"], got["metadatas"], got["embeddings"])}


def top_source(name, query, settings, store, embedder):
    hits = search(query, settings=settings, store=store, embedder=embedder, collection=name, top_k=1)
    return hits[0].source if hits else None


# --- create / rename / copy -----------------------------------------------------------------
def test_create_then_refuse_duplicate_and_bad_names(store, embedder):
    info = admin.create_collection(store, "fresh", model=embedder.name, dimensions=384, chunk_size=200, chunk_overlap=32)
    assert (info.name, info.documents, info.chunks, info.embedding_model, info.chunk_size) == ("fresh", 0, 0, embedder.name, 200)
    with pytest.raises(StoreError, match="already exists"):
        admin.create_collection(store, "fresh", model=embedder.name, dimensions=384, chunk_size=200, chunk_overlap=32)
    with pytest.raises(StoreError, match="invalid collection name"):
        admin.create_collection(store, "a b", model=embedder.name, dimensions=384, chunk_size=200, chunk_overlap=32)


def test_rename_keeps_records_and_search(kb, settings, store, embedder):
    before = snapshot(store, "lib")
    info = admin.rename_collection(store, "lib", "lib-renamed")
    assert store.collection_names() == ["lib-renamed"]
    assert info.documents == len(DOCS)
    after = snapshot(store, "lib-renamed")
    assert after.keys() == before.keys()
    assert top_source("lib-renamed", "active volcano in Sicily", settings, store, embedder) == "volcanoes.md"
    admin.create_collection(store, "other", model=embedder.name, dimensions=384, chunk_size=200, chunk_overlap=32)
    with pytest.raises(StoreError, match="already exists"):
        admin.rename_collection(store, "lib-renamed", "other")
    with pytest.raises(StoreError, match="does not exist"):
        admin.rename_collection(store, "missing", "whatever")


def test_copy_is_independent(kb, store):
    admin.copy_collection(store, "lib", "lib-copy")
    assert snapshot(store, "lib-copy").keys() == snapshot(store, "lib").keys()
    doc = store.documents("lib-copy")[0]
    store.delete_document("lib-copy", doc.document_id)
    assert len(store.documents("lib")) == len(DOCS) and len(store.documents("lib-copy")) == len(DOCS) - 1
    assert store.get_collection("lib-copy").metadata["embedding_model"] == store.get_collection("lib").metadata["embedding_model"]


# --- export / import --------------------------------------------------------------------------
def test_export_import_round_trip(kb, tmp_path, settings, store, embedder):
    archive = wa.export_collection(store, "lib", tmp_path / "lib.zip")
    manifest = wa.read_manifest(archive)
    assert manifest["name"] == "lib" and manifest["embedding_model"] == embedder.name
    assert manifest["embedding_dimensions"] == 384 and manifest["chunk_size"] == settings.chunk_size
    assert manifest["count"] == store.get_collection("lib").count() and manifest["documents"] == len(DOCS)

    # import into another store, as a person moving a collection between machines would
    other_settings = make_settings(tmp_path / "other")
    from workbench.store.chroma import open_store

    other = open_store(other_settings)
    info = wa.import_collection(other, archive, name="lib-imported")
    assert info.documents == len(DOCS) and info.embedding_model == embedder.name
    original, imported = snapshot(store, "lib"), snapshot(other, "lib-imported")
    assert imported.keys() == original.keys()
    for chunk_id, (text, meta, vector) in original.items():
        assert imported[chunk_id][0] == text and imported[chunk_id][1] == meta
        np.testing.assert_allclose(imported[chunk_id][2], vector, rtol=0, atol=1e-6)
    assert top_source("lib-imported", "how long does dough rise", other_settings, other, embedder) == "bread.txt"
    assert [d.source for d in other.documents("lib-imported")] == [d.source for d in store.documents("lib")]
    # default name comes from the manifest; an existing name is refused
    assert wa.import_collection(other, archive).name == "lib"
    with pytest.raises(StoreError, match="already exists"):
        wa.import_collection(other, archive)


def _rewrite(archive: Path, target: Path, **members: bytes) -> Path:
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(target, "w") as dst:
        for item in src.infolist():
            dst.writestr(item.filename, members.get(item.filename.replace(".", "_"), src.read(item.filename)))
    return target


def test_bad_archives_are_refused_and_leave_nothing(kb, tmp_path, store):
    archive = wa.export_collection(store, "lib", tmp_path / "lib.zip")
    names_before = store.collection_names()

    not_zip = tmp_path / "notes.zip"
    not_zip.write_text("just text")
    with pytest.raises(wa.ArchiveError, match=r"notes\.zip: not a collection archive \(not a zip file\)"):
        wa.import_collection(store, not_zip, name="x-notzip")

    partial = tmp_path / "partial.zip"
    with zipfile.ZipFile(partial, "w") as zf:
        zf.writestr("manifest.json", "{}")
    with pytest.raises(wa.ArchiveError, match=r"partial\.zip: not a collection archive \(missing embeddings\.npy, records\.jsonl\)"):
        wa.import_collection(store, partial, name="x-partial")

    manifest = json.loads(zipfile.ZipFile(archive).read("manifest.json"))
    with zipfile.ZipFile(archive) as zf:
        records = zf.read("records.jsonl").decode()
    tampered = _rewrite(archive, tmp_path / "tampered.zip", records_jsonl=records.replace("Etna", "Fuji").encode())
    with pytest.raises(wa.ArchiveError, match=r"tampered\.zip: records\.jsonl does not match its checksum"):
        wa.import_collection(store, tampered, name="x-tampered")

    wrong_version = _rewrite(archive, tmp_path / "v9.zip", manifest_json=json.dumps({**manifest, "format_version": 9}).encode())
    with pytest.raises(wa.ArchiveError, match="format version 9 is not supported"):
        wa.import_collection(store, wrong_version, name="x-v9")

    # consistent checksums but a count that disagrees with the vectors
    wrong_count = _rewrite(archive, tmp_path / "count.zip", manifest_json=json.dumps({**manifest, "count": manifest["count"] + 1}).encode())
    with pytest.raises(wa.ArchiveError, match=r"embeddings\.npy holds float32 \(\d+, 384\), expected float32 \(\d+, 384\)"):
        wa.import_collection(store, wrong_count, name="x-count")

    # a record line that is not a chunk record, with checksums recomputed so only the content is wrong
    import hashlib

    bad_records = ("{\"id\": 5}\n" + records.split("\n", 1)[1]).encode()
    sums = {**manifest["sha256"], "records.jsonl": hashlib.sha256(bad_records).hexdigest()}
    bad = _rewrite(archive, tmp_path / "badrec.zip", records_jsonl=bad_records, manifest_json=json.dumps({**manifest, "sha256": sums}).encode())
    with pytest.raises(wa.ArchiveError, match=r"badrec\.zip: records\.jsonl line 1 is not a chunk record"):
        wa.import_collection(store, bad, name="x-badrec")

    assert store.collection_names() == names_before  # no half-imported or staging collection left


# --- rebuild ------------------------------------------------------------------------------------
def test_rebuild_with_smaller_chunks_swaps_and_old_stays_usable(kb, settings, store, embedder):
    old_chunks = store.get_collection("lib").count()
    seen = {}

    def progress(event):
        if event.kind == "chunks" and "during" not in seen:
            # mid-rebuild: the old collection is untouched and searchable, the shadow exists
            seen["during"] = (
                store.collection_info("lib").chunk_size,
                top_source("lib", "active volcano in Sicily", settings, store, embedder),
                store.has_collection("lib.rebuild"),
            )
        seen["last"] = event

    new = rebuild.settings_for_rebuild(settings, chunk_size=48, chunk_overlap=8)
    info = rebuild.rebuild(store, "lib", new, progress, embedder=embedder)
    assert seen["during"] == (settings.chunk_size, "volcanoes.md", True)
    assert seen["last"].kind == "done" and seen["last"].files_done == len(DOCS)
    assert (info.chunk_size, info.chunk_overlap, info.documents) == (48, 8, len(DOCS))
    assert info.chunks > old_chunks
    assert store.collection_names() == ["lib"]  # no .rebuild / .previous left behind
    chunks = store.document_chunks("lib", next(d.document_id for d in store.documents("lib") if d.source == "lighthouses.md"))
    assert [c.chunk_index for c in chunks] == list(range(len(chunks))) and len(chunks) > 3
    window = rebuild.embedded_token_counts(store, "lib", chunks[0].document_id, embedder.count_tokens)
    assert set(window) == {c.chunk_id for c in chunks}
    assert all(c.token_count <= window[c.chunk_id] <= embedder.max_seq_length - 2 for c in chunks)
    assert top_source("lib", "which lighthouse was built from granite", new, store, embedder) == "lighthouses.md"
    # the rebuilt collection is what an ingest with the new settings produces: nothing to redo
    again = ingest_paths([kb], settings=new, store=store, embedder=embedder, collection="lib")
    assert again.count("unchanged") == len(DOCS), [(r.source, r.status) for r in again.results]


def test_rebuild_without_source_files_rechunks_stored_text(kb, settings, store, embedder):
    for path in kb.rglob("*"):
        if path.is_file():
            path.unlink()
    new = rebuild.settings_for_rebuild(settings, chunk_size=64, chunk_overlap=0)
    info = rebuild.rebuild(store, "lib", new, embedder=embedder)
    assert info.documents == len(DOCS) and info.chunk_size == 64
    doc = next(d for d in store.documents("lib") if d.source == "lighthouses.md")
    text = " ".join(c.text for c in store.document_chunks("lib", doc.document_id))
    assert " ".join(text.split()) == " ".join(LONG_DOC.split())  # overlap 0: the chunks tile the page


def test_reconstruct_pages_recovers_page_text(kb, store):
    doc = next(d for d in store.documents("lib") if d.source == "lighthouses.md")
    pages = rebuild.reconstruct_pages(rebuild._doc_records(store, store.get_collection("lib"), doc))
    assert len(pages) == 1 and pages[0].section == "Lighthouses"
    assert " ".join(pages[0].text.split()) == " ".join(LONG_DOC.split())


def test_rebuild_with_another_model_records_it(kb, tmp_path, settings, store, embedder):
    alt = tmp_path / "models" / "minilm-copy"
    alt.parent.mkdir()
    os.symlink(embedder.path, alt)
    new = rebuild.settings_for_rebuild(settings, embedding_model=str(alt), embedding_backend="torch", model_cache_dir=MODEL_CACHE)
    before = snapshot(store, "lib")
    info = rebuild.rebuild(store, "lib", new)
    assert info.embedding_model == str(alt) and info.documents == len(DOCS)
    after = snapshot(store, "lib")
    # same chunking: the stored chunk texts are re-embedded, not re-split
    assert sorted(t for t, _, _ in after.values()) == sorted(t for t, _, _ in before.values())
    assert not before.keys() & after.keys()  # ids carry the new ingest key
    with pytest.raises(CollectionMismatchError):
        store.open_collection("lib", model=embedder.name, dimensions=384, chunk_size=settings.chunk_size, chunk_overlap=settings.chunk_overlap)


def test_rebuild_cancelled_leaves_collection_unchanged(kb, settings, store, embedder):
    import threading

    before = snapshot(store, "lib").keys()
    cancel = threading.Event()

    def progress(event):
        if event.kind == "chunks":
            cancel.set()

    with pytest.raises(CancelledError):
        rebuild.rebuild(store, "lib", rebuild.settings_for_rebuild(settings, chunk_size=48, chunk_overlap=8), progress, embedder=embedder, cancel=cancel)
    assert store.collection_names() == ["lib"] and snapshot(store, "lib").keys() == before


def test_rebuild_refuses_to_swap_when_collection_changed(kb, settings, store, embedder):
    victim = store.documents("lib")[0]

    def progress(event):
        if event.kind == "file_done" and event.files_done == 1:
            store.delete_document("lib", victim.document_id)  # a concurrent change

    with pytest.raises(StoreError, match="changed during the rebuild"):
        rebuild.rebuild(store, "lib", rebuild.settings_for_rebuild(settings, chunk_size=48, chunk_overlap=8), progress, embedder=embedder)
    info = store.collection_info("lib")
    assert store.collection_names() == ["lib"] and info.chunk_size == settings.chunk_size and info.documents == len(DOCS) - 1


def test_rebuild_rejects_chunk_size_above_model_limit(kb, settings, store, embedder):
    from workbench.errors import ConfigError

    with pytest.raises(ConfigError, match="CHUNK_SIZE 300"):
        rebuild.rebuild(store, "lib", rebuild.settings_for_rebuild(settings, chunk_size=300), embedder=embedder)
    assert store.collection_names() == ["lib"]


def test_rebuild_notices_a_same_size_replacement(kb, settings, store, embedder):
    """A document replaced by a version with as many chunks leaves count() unchanged; the
    store's generation still changes, so the rebuild refuses to swap (the change would be lost)."""
    from workbench.store import records as rec

    victim = store.documents("lib")[0]
    chroma = store.get_collection("lib")

    def progress(event):
        if event.kind == "file_done" and event.files_done == 1:  # a writer that ignores the lock
            rows = store.version_records(chroma, victim.document_id, victim.ingest_key, embeddings=True)
            key = "f" * 64
            ids = [rec.chunk_id(victim.document_id, key, int(m["chunk_index"])) for _, _, m, _ in rows]
            metas = [dict(m, ingest_key=key) for _, _, m, _ in rows]
            chroma.add(ids=ids, documents=[t for _, t, _, _ in rows], metadatas=metas, embeddings=[e for *_, e in rows])
            store.delete_version(chroma, victim.document_id, victim.ingest_key)

    before = chroma.count()
    with pytest.raises(StoreError, match="changed during the rebuild"):
        rebuild.rebuild(store, "lib", rebuild.settings_for_rebuild(settings, chunk_size=48, chunk_overlap=8), progress, embedder=embedder)
    assert store.get_collection("lib").count() == before
    assert store.collection_names() == ["lib"]
