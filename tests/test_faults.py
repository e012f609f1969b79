"""Faults, end to end ("Nothing lost, no one in"): real processes, real files, the real model and
an embedded Chroma in tmp_path.

- kill -9 at random points (fixed seed) of ``python -m workbench`` ingest (200 small files, every
  one revised each run; 3 kills), rebuild (3), import (3), delete a document (3), rename (2) and
  delete a collection (2); after each kill a fresh process searches BEFORE any repair, then runs
  the ``recover`` command (the CLI's ``main``) and searches AFTER it. Every hit must be of a
  committed, current version (checked against the raw head records, not through the search
  code), never two versions of a document; nothing of a collection is lost; finishing the
  operation gives a clean run's counts. Plus one fixed kill point: between a swap's renames,
  followed by an ingest before recover.
- two processes ingest different folders into one collection (the second retries on
  IngestBusyError) while a third searches and deletes: exact counts, no exception.
- a batch of hostile files beside good ones: every bad file named with its reason, every good one
  searchable, the child's peak RSS under RSS_BOUND_MB.

The searching processes get the query vectors from the parent (the same model, encoded once)
instead of loading the model again: a model load costs ~10 s here, and the search code path is
otherwise the CLI's. Each test prints its figures (kills, phases, timings) as one FIGURES line.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import MODEL_CACHE, REPO, make_settings
from workbench.ingest import rebuild
from workbench.ingest.loaders import file_hash
from workbench.ingest.pipeline import ingest_key_for, ingest_paths
from workbench.store import archive
from workbench.store.chroma import open_store

pytestmark = pytest.mark.slow

SEED = 20261202
NOTES = 200
#: A bound on the peak RSS of an ingest child fed hostile files (the model alone is ~1.1 GB).
RSS_BOUND_MB = 1500
WORDS = ["glacier", "river", "desert", "volcano", "forest", "ocean", "canyon", "meadow", "tundra", "island", "harbour", "valley", "summit", "marsh"]
#: Notes with a sentence no other file has, and the query that must find each.
MARKED = {
    "n007.md": ("The lighthouse keeper lit the amber signal lamp at dusk.", "lighthouse keeper amber signal lamp"),
    "n123.md": ("The beekeeper harvested clover honey from twelve hives.", "beekeeper clover honey hives"),
    "alpha-05.md": ("The glassblower shaped a cobalt vase in the furnace.", "glassblower cobalt vase furnace"),
    "beta-11.md": ("The cartographer inked a map of the northern fjords.", "cartographer map of northern fjords"),
}
QUERIES = [q for _, q in MARKED.values()] + ["survey of the canyon marks", "field note revision 3"]
WORK_SUFFIXES = (".rebuild", ".previous", ".importing")


# --- files -----------------------------------------------------------------------------------------
def note_text(name: str, i: int, rev: int) -> str:
    """A small note (40-300 tokens; the size depends on the revision, so chunk counts change)."""
    rng = random.Random(i * 1000 + rev)
    count = 3 + 12 * (i % 4 == 0) + 2 * ((i + rev) % 3)
    sentences = [f"The {rng.choice(WORDS)} survey of site {i} (revision {rev}) found {rng.choice(WORDS)} marks number {j}." for j in range(count)]
    if name in MARKED:
        sentences.insert(1, MARKED[name][0])
    half = len(sentences) // 2
    return f"# Field note {i}\n\n" + " ".join(sentences[:half]) + "\n\n" + " ".join(sentences[half:]) + "\n"


def write_notes(folder: Path, rev: int, prefix: str = "n", count: int = NOTES, width: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        name = f"{prefix}{i:0{width}d}.md"
        (folder / name).write_text(note_text(name, i, rev), encoding="utf-8")
    return folder


# --- child processes -------------------------------------------------------------------------------
def child_env(root: Path, **extra: str) -> dict:
    """The environment of a CLI child: settings on folders under ``root`` (run with cwd=root, so
    no .env applies), offline, small encode batches (several flushes and commits per ingest)."""
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "CHROMA_PERSIST_PATH": str(root / "chroma_db"),
        "CHROMA_HOST": "",
        "BM25_INDEX_PATH": "",
        "LOG_DIR": str(root / "logs"),
        "MODEL_CACHE_DIR": str(MODEL_CACHE),
        "OCR_CACHE_DIR": str(root / "ocr-cache"),
        "KNOWLEDGE_BASE_PATH": str(root / "kb"),
        "COLLECTION_NAME": "knowledge_base",
        "EMBEDDING_BATCH_SIZE": "4",
        **extra,
    }


def wb(root: Path, *args: str, ok: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m workbench ARGS`` to the end; with ``ok`` it must exit 0."""
    done = subprocess.run([sys.executable, "-m", "workbench", *args], cwd=root, env=child_env(root), capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0 or not ok, f"workbench {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def kill_at_random(root: Path, args: list[str], *, lock: str, delay: float) -> bool:
    """Run ``python -m workbench ARGS``; once it holds the lock of collection ``lock`` (the
    operation has begun), wait ``delay`` s and kill -9 it. Returns True when it was killed, False
    when it finished first (exit 0 required)."""
    lock_file = root / "chroma_db" / "locks" / f"{lock}.lock"
    with open(root / "child.err", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "workbench", *args], cwd=root, env=child_env(root), stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 180
            while f"pid {proc.pid} " not in _read(lock_file) and proc.poll() is None:
                assert time.monotonic() < deadline, f"{args} never took the lock of {lock}"
                time.sleep(0.005)
            end = time.monotonic() + delay
            while proc.poll() is None and time.monotonic() < end:
                time.sleep(0.002)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(30)
                return True
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}: {_read(root / 'child.err')[-3000:]}"
    return False


COMMON = textwrap.dedent(
    '''
    import json, sys, time
    from pathlib import Path
    import numpy as np
    from workbench.config import Settings
    from workbench.retrieval.search import search
    from workbench.store import open_store

    class QueryVectors:
        """The real model's vectors of the fixed queries, encoded by the parent."""
        def __init__(self, table):
            self.table = table
        def encode(self, texts):
            return np.asarray([self.table[t] for t in texts], dtype=np.float32)

    def bad_hits(collection, hits):
        """Problems of one result list, judged from the raw head records (not search's filter):
        a chunk twice, two versions of a document, a hit whose version is not the committed,
        current one (the newest committed head by ingested_at, then ingest key)."""
        problems = []
        ids = [h.chunk_id for h in hits]
        if len(ids) != len(set(ids)):
            problems.append(f"duplicate chunk ids {ids}")
        got = collection.get(ids=ids, include=["metadatas"]) if ids else {"ids": [], "metadatas": []}
        metas = dict(zip(got["ids"], got["metadatas"]))
        versions = {}
        for cid in ids:
            meta = metas.get(cid)
            if meta is None:
                continue  # deleted since the search (only when another process deletes)
            versions.setdefault(meta["document_id"], set()).add(meta["ingest_key"])
        for doc, keys in versions.items():
            if len(keys) > 1:
                problems.append(f"document {doc} twice, ingest keys {sorted(keys)}")
            heads = collection.get(where={"$and": [{"document_id": doc}, {"chunk_index": 0}]}, include=["metadatas"])["metadatas"]
            committed = [m for m in heads if m.get("complete") is True]
            current = max(committed, key=lambda m: (m["ingested_at"], m["ingest_key"]))["ingest_key"] if committed else None
            for key in keys - {current}:
                problems.append(f"document {doc}: hit from version {key[:12]} (current committed: {current and current[:12]})")
        return problems
    '''
)

CHECK = COMMON + textwrap.dedent(
    '''
    spec = json.loads(Path(sys.argv[1]).read_text())
    settings = Settings()
    vectors = QueryVectors(spec["vectors"])

    def state():
        store = open_store(settings)
        names = store.collection_names(include_work=True)
        out = {"names": names, "collections": {}}
        for name in names:
            if name.endswith((".rebuild", ".previous", ".importing")) or (spec["only"] and name not in spec["only"]):
                continue
            collection = store.get_collection(name)
            problems, found = [], {}
            for mode in ("vector", "keyword"):
                for query in spec["vectors"]:
                    hits = search(query, settings=settings, store=store, embedder=vectors, collection=name, top_k=spec["top_k"], mode=mode)
                    problems += [f"{mode} {query!r}: {p}" for p in bad_hits(collection, hits)]
                    found[f"{mode}:{query}"] = [h.source for h in hits[:3]]
            docs = store.documents(name)
            out["collections"][name] = {
                "documents": len(docs),
                "sources": {d.source: [d.ingest_key, d.chunks] for d in docs},
                "chunks": len(store.committed_ids(collection)),
                "records": collection.count(),
                "uncommitted": len(collection.get(where={"complete": False}, include=[])["ids"]),
                "problems": problems,
                "found": found,
            }
        return out

    if spec["before"]:  # the store as the kill left it: nothing repaired yet
        print("STATE " + json.dumps(state()), flush=True)
    if spec["recover"]:  # `python -m workbench recover`, then search in the same process
        from workbench.cli import main
        assert main(["recover"]) == 0
        print(flush=True)
    print("STATE " + json.dumps(state()))
    '''
)


def _check_states(root: Path, ref, names: list[str] | None, *, recover: bool, before: bool) -> list[dict]:
    """Run CHECK in a fresh process; its states in order (the last with the ``"recover"`` lines)."""
    spec = root / "check.json"
    spec.write_text(json.dumps({"vectors": ref.vectors, "top_k": 20, "only": names, "recover": recover, "before": before}))
    done = subprocess.run([sys.executable, "-c", CHECK, str(spec)], cwd=root, env=child_env(root), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"the checking search failed:\n{done.stderr[-4000:]}"
    lines = done.stdout.splitlines()
    states = [json.loads(line[len("STATE "):]) for line in lines if line.startswith("STATE ")]
    states[-1]["recover"] = [line for line in lines if line and not line.startswith("STATE ")]
    return states


def check(root: Path, ref, names: list[str] | None = None, *, recover: bool = False) -> dict:
    """In a fresh process: search the collections ``names`` (default all) of the store at
    ``root`` (vector and keyword, each query) and report counts and problems (see
    ``bad_hits``). With ``recover``, that process first runs the ``recover`` command (the CLI's
    ``main``, as ``python -m workbench recover`` does); its lines are in ``"recover"``."""
    return _check_states(root, ref, names, recover=recover, before=False)[-1]


def kill_then_recover(root: Path, ref, args: list[str], *, lock: str, delay: float, names: list[str]) -> SimpleNamespace | None:
    """:func:`kill_at_random`, then in one fresh process (each costs ~3 s of imports and store
    opening) a search BEFORE any repair, the ``recover`` command and a search AFTER it, of the
    collections ``names``. None when the child finished first."""
    if not kill_at_random(root, args, lock=lock, delay=delay):
        return None
    before, after = _check_states(root, ref, names, recover=True, before=True)
    return SimpleNamespace(before=before, actions=after["recover"], after=after)


def assert_sound(state: dict, name: str, *, repaired: bool) -> dict:
    """``name`` exists; no search problem; after a repair nothing but committed current chunks."""
    assert name in state["collections"], f"collection {name} is missing: {state['names']}"
    c = state["collections"][name]
    assert c["problems"] == [], c["problems"][:5]
    assert c["chunks"] == sum(chunks for _, chunks in c["sources"].values())
    if repaired:
        assert c["uncommitted"] == 0 and c["records"] == c["chunks"], (c["uncommitted"], c["records"], c["chunks"])
        assert not [n for n in state["names"] if n.endswith(WORK_SUFFIXES)], state["names"]
    return c


def figures(name: str, **values) -> None:
    print(f"FIGURES {name} " + json.dumps(values), flush=True)


# --- the clean runs ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ref(tmp_path_factory, embedder):
    """Clean runs in this process: the 200 notes (revision 0) ingested (chunk size 200), exported
    to ``notes.zip``, then rebuilt at chunk size 120; the alpha/beta folders ingested. Their
    per-document (ingest key, chunks) are what interrupted runs must end with."""
    root = tmp_path_factory.mktemp("faults-ref")
    settings = make_settings(root)
    store = open_store(settings)
    kb = write_notes(root / "kb", 0)
    t0 = time.perf_counter()
    summary = ingest_paths([kb], settings=settings, store=store, embedder=embedder, collection="notes")
    ingest_s = time.perf_counter() - t0
    assert summary.count("added") == NOTES and not summary.failures
    docs200 = {d.source: [d.ingest_key, d.chunks] for d in store.documents("notes")}
    zip_path = archive.export_collection(store, "notes", root / "notes.zip")
    t0 = time.perf_counter()
    rebuild.rebuild(store, "notes", rebuild.settings_for_rebuild(settings, chunk_size=120), embedder=embedder)
    rebuild_s = time.perf_counter() - t0
    docs120 = {d.source: [d.ingest_key, d.chunks] for d in store.documents("notes")}
    alpha, beta = write_notes(root / "alpha", 0, "alpha-", 25, 2), write_notes(root / "beta", 0, "beta-", 25, 2)
    pair = ingest_paths([alpha, beta], settings=settings, store=store, embedder=embedder, collection="pair")
    assert pair.count("added") == 50
    return SimpleNamespace(
        root=root, settings=settings, embedder=embedder, kb=kb, zip=zip_path, alpha=alpha, beta=beta,
        docs200=docs200, docs120=docs120, pair={d.source: [d.ingest_key, d.chunks] for d in store.documents("pair")},
        chunks200=sum(c for _, c in docs200.values()), chunks120=sum(c for _, c in docs120.values()),
        ingest_s=ingest_s, rebuild_s=rebuild_s,
        vectors={q: v.tolist() for q, v in zip(QUERIES, embedder.encode(QUERIES))},
    )


def assert_finds_marked(c: dict, sources) -> None:
    """Each marked note present is in the keyword top 3 of its query (BM25 is exact; vector
    search is approximate, see ``vector_misses``)."""
    for source, (_, query) in MARKED.items():
        if source in sources:
            assert source in c["found"][f"keyword:{query}"], (query, c["found"])


def vector_misses(c: dict, sources) -> int:
    """Marked notes present that vector search did not put in its top 3 (HNSW is approximate:
    counted, not asserted)."""
    return sum(source not in c["found"][f"vector:{query}"] for source, (_, query) in MARKED.items() if source in sources)


def import_notes(ref, store_root: Path, name: str) -> dict:
    """Put the clean notes (revision 0, chunk size 200) into ``name`` with the CLI; returns
    their ``{source: [ingest key, chunks]}``."""
    wb(store_root, "import", str(ref.zip), "--collection", name)
    return dict(ref.docs200)


# --- kill -9 ---------------------------------------------------------------------------------------
def test_kill_9_during_ingest_of_200_revised_files(tmp_path, ref):
    rng = random.Random(SEED + 1)
    import_notes(ref, tmp_path, "notes")  # revision 0 in place: every run below replaces all 200
    kb, kills, window, rev = tmp_path / "kb", [], 2 * ref.ingest_s, 0  # a replace run takes ~2x the clean add
    previous = {s: k for s, (k, _) in ref.docs200.items()}  # each document's key before the run
    while len(kills) < 3:
        rev += 1
        assert rev < 12, "the ingest kept finishing before its kill"
        write_notes(kb, rev)
        new = {s: ingest_key_for(file_hash(kb / s), ref.settings, ref.embedder.name, ref.embedder.dimension) for s in previous}
        delay = rng.uniform(0, window)
        run = kill_then_recover(tmp_path, ref, ["ingest", str(kb), "--collection", "notes"], lock="notes", delay=delay, names=["notes"])
        if run is None:
            window *= 0.6
            previous = new
            continue
        before = assert_sound(run.before, "notes", repaired=False)
        after = assert_sound(run.after, "notes", repaired=True)
        for state in (before, after):  # every document there, at its old version or the new
            assert state["documents"] == NOTES, "a document vanished mid-replace"
            for source, (key, _) in state["sources"].items():
                assert key in (previous[source], new[source]), source
            assert_finds_marked(state, state["sources"])
        replaced = sum(after["sources"][s][0] != previous[s] for s in previous)
        previous = {s: k for s, (k, _) in after["sources"].items()}
        kills.append({
            "rev": rev, "delay_s": round(delay, 2), "replaced": replaced, "left_behind": before["records"] - before["chunks"],
            "recover": run.actions, "vector_misses": [vector_misses(before, previous), vector_misses(after, previous)],
        })
    wb(tmp_path, "ingest", str(kb), "--collection", "notes")  # finish the last run
    clean = make_settings(tmp_path / "clean")
    ingest_paths([kb], settings=clean, store=open_store(clean), embedder=ref.embedder, collection="notes")
    expected = {d.source: [d.ingest_key, d.chunks] for d in open_store(clean).documents("notes")}
    final = assert_sound(check(tmp_path, ref, ["notes"]), "notes", repaired=True)
    assert final["sources"] == expected and final["records"] == sum(c for _, c in expected.values())
    assert_finds_marked(final, expected)
    figures("ingest", kills=kills, runs=rev, chunks=final["chunks"], vector_misses=vector_misses(final, expected))


def test_kill_9_during_rebuild(tmp_path, ref):
    rng = random.Random(SEED + 2)
    import_notes(ref, tmp_path, "notes")
    assert ref.chunks200 != ref.chunks120, "the two chunk sizes must give different counts"
    clean = {200: ref.docs200, 120: ref.docs120}
    kills, window, attempts, size = [], 1.3 * ref.rebuild_s, 0, 200
    while len(kills) < 3:  # each run rebuilds to the other chunk size: 200 -> 120 -> 200 ...
        attempts += 1
        assert attempts < 8, "the rebuild kept finishing before its kill"
        target = 120 if size == 200 else 200
        delay = rng.uniform(0, window)
        run = kill_then_recover(tmp_path, ref, ["rebuild", "notes", "--chunk-size", str(target)], lock="notes", delay=delay, names=["notes"])
        if run is None:
            window *= 0.6
            size = target
            continue
        if "notes" in run.before["collections"]:  # the old collection or the new, whole
            before = assert_sound(run.before, "notes", repaired=False)
            assert before["sources"] in (clean[size], clean[target])
            phase = "after the swap" if before["sources"] == clean[target] else "building the shadow"
        else:  # killed between the swap's two renames: recover finishes the swap
            assert {"notes.previous", "notes.rebuild"} <= set(run.before["names"]), run.before["names"]
            phase = "mid-swap"
        after = assert_sound(run.after, "notes", repaired=True)  # never missing after recover
        assert after["sources"] in (clean[size], clean[target])
        size = target if after["sources"] == clean[target] else size
        kills.append({"delay_s": round(delay, 2), "to": target, "phase": phase, "recover": run.actions})
    target = kills[-1]["to"]
    if size != target:
        wb(tmp_path, "rebuild", "notes", "--chunk-size", str(target))  # finish the interrupted one
    final = assert_sound(check(tmp_path, ref, ["notes"]), "notes", repaired=True)
    assert final["sources"] == clean[target] and final["records"] == sum(c for _, c in clean[target].values())
    assert_finds_marked(final, clean[target])
    figures("rebuild", kills=kills)


SWAP_KILLED = textwrap.dedent(
    '''
    import os, signal
    from workbench.config import Settings
    from workbench.store import admin, open_store

    store = open_store(Settings())
    admin.copy_collection(store, "notes", "notes.rebuild")  # a complete shadow, as a rebuild leaves it
    rename = admin._rename

    def rename_then_die(store, old, new):
        rename(store, old, new)
        os.kill(os.getpid(), signal.SIGKILL)  # between the swap's two renames

    admin._rename = rename_then_die
    with admin.locked(store, "notes", what="a rebuild"):
        admin.swap(store, "notes", "notes.rebuild")
    '''
)


def test_an_ingest_after_a_swap_killed_midway_loses_nothing(tmp_path, ref):
    """A rebuild killed between the swap's renames leaves only notes.previous and notes.rebuild.
    An ingest into notes before any recover (the CLI, the folder watcher) must not create an empty
    notes beside them, which recover would then take for a finished swap and delete both: it
    finishes the swap first (it holds the lock), or at least refuses and names recover."""
    import_notes(ref, tmp_path, "notes")
    done = subprocess.run([sys.executable, "-c", SWAP_KILLED], cwd=tmp_path, env=child_env(tmp_path), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    state = check(tmp_path, ref)
    assert "notes" not in state["names"] and {"notes.previous", "notes.rebuild"} <= set(state["names"]), state["names"]
    extra = write_notes(tmp_path / "extra", 0, "extra-", 1)
    done = wb(tmp_path, "ingest", str(extra), "--collection", "notes", ok=False)
    how = "the ingest finished the swap"
    if done.returncode:
        assert "run `python -m workbench recover`" in done.stderr, done.stderr[-3000:]
        how = "the ingest refused, naming recover"
        wb(tmp_path, "recover")
        wb(tmp_path, "ingest", str(extra), "--collection", "notes")
    after = check(tmp_path, ref, ["notes"], recover=True)
    c = assert_sound(after, "notes", repaired=True)
    assert {s: v for s, v in c["sources"].items() if s in ref.docs200} == ref.docs200, "documents lost"
    assert sorted(set(c["sources"]) - set(ref.docs200)) == ["extra-000.md"]
    figures("swap-then-ingest", how=how, recover=after["recover"], documents=c["documents"])


def test_kill_9_during_import_delete_and_rename(tmp_path, ref):
    rng = random.Random(SEED + 3)
    kills, pool, attempt, window = [], [], 0, 0.6
    while len(kills) < 3:  # import: complete or absent, never partial
        attempt += 1
        assert attempt <= 12, "the import kept finishing before its kill"
        name = f"imp{attempt}"
        delay = rng.uniform(0, window)
        run = kill_then_recover(tmp_path, ref, ["import", str(ref.zip), "--collection", name], lock=name, delay=delay, names=[name])
        pool.append(name)
        if run is None:
            window *= 0.6
            continue
        if name in run.before["collections"]:
            assert assert_sound(run.before, name, repaired=False)["sources"] == ref.docs200
        assert f"{name}.importing" not in run.after["names"], run.after["names"]
        after, phase = run.after, "imported" if name in run.after["collections"] else "not yet"
        if phase == "not yet":
            wb(tmp_path, "import", str(ref.zip), "--collection", name)  # finish it
            after = check(tmp_path, ref, [name])
        c = assert_sound(after, name, repaired=True)
        assert c["sources"] == ref.docs200 and c["records"] == ref.chunks200
        kills.append({"op": "import", "delay_s": round(delay, 2), "phase": phase, "recover": run.actions})

    docs, expected = pool.pop(0), dict(ref.docs200)
    candidates, window = sorted(s for s in ref.docs200 if s not in MARKED), 0.15
    while sum(k["op"] == "delete document" for k in kills) < 3:  # a document: whole or gone
        assert len(expected) > NOTES - 12, "the delete kept finishing before its kill"
        source = rng.choice(candidates)
        candidates.remove(source)
        delay = rng.uniform(0, window)
        run = kill_then_recover(tmp_path, ref, ["delete", "--collection", docs, "--document", source], lock=docs, delay=delay, names=[docs])
        whole = expected.pop(source)
        if run is None:
            window *= 0.6
            continue
        for state in (run.before, run.after):
            c = assert_sound(state, docs, repaired=state is run.after)
            assert {s: v for s, v in c["sources"].items() if s != source} == expected  # the others untouched
            assert c["sources"].get(source, whole) == whole
        if source in run.after["collections"][docs]["sources"]:
            wb(tmp_path, "delete", "--collection", docs, "--document", source)  # finish it
        phase = "deleted" if source not in run.before["collections"][docs]["sources"] else "not yet"
        orphans = run.before["collections"][docs]["records"] - run.before["collections"][docs]["chunks"]
        kills.append({"op": "delete document", "delay_s": round(delay, 2), "phase": phase, "orphans_before_recover": orphans})

    window, attempt = 0.15, 0
    while sum(k["op"] == "rename" for k in kills) < 2:  # never missing, never both
        attempt += 1
        assert attempt <= 8, "the rename kept finishing before its kill"
        old = pool.pop(0)
        new = f"{old}-renamed"
        delay = rng.uniform(0, window)
        run = kill_then_recover(tmp_path, ref, ["rename", old, new], lock=old, delay=delay, names=[old, new])
        pool.append(new)
        if run is None:
            window *= 0.6
            continue
        for state in (run.before, run.after):
            present = [n for n in (old, new) if n in state["collections"]]
            assert len(present) == 1, state["names"]
            assert assert_sound(state, present[0], repaired=state is run.after)["sources"] == ref.docs200
        if old in run.after["collections"]:
            wb(tmp_path, "rename", old, new)  # finish it
        kills.append({"op": "rename", "delay_s": round(delay, 2), "phase": "renamed" if new in run.before["collections"] else "not yet"})

    window, deleted, attempt = 0.15, 0, 0
    while deleted < 2:  # a collection: whole or gone
        attempt += 1
        assert attempt <= 8, "the delete kept finishing before its kill"
        if len(pool) < 2:
            pool.append(f"spare{attempt}")
            import_notes(ref, tmp_path, pool[-1])
        name = pool.pop(0)
        delay = rng.uniform(0, window)
        run = kill_then_recover(tmp_path, ref, ["delete", "--collection", name], lock=name, delay=delay, names=[name])
        if run is None:
            window *= 0.6
            continue
        for state in (run.before, run.after):
            if name in state["collections"]:
                assert assert_sound(state, name, repaired=state is run.after)["sources"] == ref.docs200
        if name in run.after["collections"]:
            wb(tmp_path, "delete", "--collection", name)  # finish it
        deleted += 1
        kills.append({"op": "delete collection", "delay_s": round(delay, 2), "phase": "deleted" if name not in run.before["collections"] else "not yet"})

    final = check(tmp_path, ref)
    assert sorted(final["collections"]) == sorted([docs, *pool]), final["names"]
    assert_sound(final, docs, repaired=True)
    assert final["collections"][docs]["sources"] == expected
    assert final["collections"][docs]["records"] == sum(c for _, c in expected.values())
    for name in pool:
        assert assert_sound(final, name, repaired=True)["sources"] == ref.docs200
    figures("import-delete-rename", kills=kills, collections=len(final["collections"]))


# --- concurrent writers and a searcher -------------------------------------------------------------
INGESTER = textwrap.dedent(
    '''
    import json, sys, time
    from pathlib import Path
    from workbench.config import Settings
    from workbench.errors import IngestBusyError
    from workbench.ingest.pipeline import ingest_paths
    from workbench.models.embeddings import get_embedder
    from workbench.store import open_store

    folder, collection, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    settings = Settings()
    store, embedder = open_store(settings), get_embedder(settings)
    print("READY", flush=True)
    while not go.exists():
        time.sleep(0.02)
    busy, deadline = 0, time.monotonic() + 240
    while True:  # the second writer waits: retry while the collection is busy
        try:
            summary = ingest_paths([folder], settings=settings, store=store, embedder=embedder, collection=collection)
            break
        except IngestBusyError:
            busy += 1
            assert time.monotonic() < deadline, "still busy after 240 s"
            time.sleep(0.1)
    print(json.dumps({"busy": busy, "added": summary.count("added"), "failed": len(summary.failures)}), flush=True)
    '''
)

SEARCHER = COMMON + textwrap.dedent(
    '''
    from workbench.errors import IngestBusyError
    from workbench.store import admin
    spec = json.loads(Path(sys.argv[1]).read_text())
    settings = Settings()
    store = open_store(settings)
    vectors = QueryVectors(spec["vectors"])
    go, stop, name = Path(spec["go"]), Path(spec["stop"]), spec["collection"]
    while not go.exists():
        time.sleep(0.02)
    todo, searches, busy, deleted, problems = list(spec["delete"]), 0, 0, 0, []
    while True:
        collection = store.get_collection(name)
        for mode in ("vector", "keyword"):
            for query in spec["vectors"]:
                hits = search(query, settings=settings, store=store, embedder=vectors, collection=name, top_k=10, mode=mode)
                problems += bad_hits(collection, hits)
                searches += 1
        if todo:
            try:
                deleted += bool(admin.delete_document(store, name, todo[0]))
                todo.pop(0)
            except IngestBusyError:
                busy += 1
        elif stop.exists():
            break
    print(json.dumps({"searches": searches, "deleted": deleted, "busy": busy, "problems": problems}))
    '''
)


def test_two_writers_and_a_searching_deleter_at_once(tmp_path, ref):
    expected = dict(import_notes(ref, tmp_path, "shared"))
    doomed = sorted(random.Random(SEED + 5).sample(sorted(s for s in ref.docs200 if s not in MARKED), 20))
    ids = {d["source"]: d["document_id"] for d in json.loads(wb(tmp_path, "documents", "--collection", "shared", "--json").stdout)}
    go_a, go_b, stop = tmp_path / "go-a", tmp_path / "go-b", tmp_path / "stop"
    spec = tmp_path / "searcher.json"
    spec.write_text(json.dumps({"vectors": ref.vectors, "go": str(go_a), "stop": str(stop), "collection": "shared", "delete": [ids[s] for s in doomed]}))
    env = child_env(tmp_path)

    def start(*argv: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", *argv], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    a = start(INGESTER, str(ref.alpha), "shared", str(go_a))
    b = start(INGESTER, str(ref.beta), "shared", str(go_b))
    c = start(SEARCHER, str(spec))
    procs = (a, b, c)
    try:
        assert a.stdout.readline().strip() == "READY" and b.stdout.readline().strip() == "READY"
        t0 = time.perf_counter()
        go_a.touch()  # A and the searcher start; B once A holds the lock, so B must wait
        lock = tmp_path / "chroma_db" / "locks" / "shared.lock"
        while f"pid {a.pid} " not in _read(lock):
            assert a.poll() is None, a.stderr.read()[-3000:]
            time.sleep(0.002)
        go_b.touch()
        outs = {}
        for name, proc in (("a", a), ("b", b)):
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0 and "Traceback" not in err, err[-3000:]
            outs[name] = json.loads(out.splitlines()[-1])
        stop.touch()
        out, err = c.communicate(timeout=300)
        assert c.returncode == 0 and "Traceback" not in err, err[-3000:]
        outs["searcher"] = json.loads(out.splitlines()[-1])
        seconds = time.perf_counter() - t0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    assert outs["a"]["added"] == 25 and outs["a"]["failed"] == 0, outs
    assert outs["b"]["added"] == 25 and outs["b"]["failed"] == 0 and outs["b"]["busy"] >= 1, outs
    assert outs["searcher"]["problems"] == [] and outs["searcher"]["deleted"] == 20, outs["searcher"]
    for source in doomed:
        expected.pop(source)
    expected.update(ref.pair)
    final = assert_sound(check(tmp_path, ref), "shared", repaired=True)  # no recover ran: nothing left behind
    assert final["sources"] == expected and final["records"] == sum(c for _, c in expected.values())
    assert final["documents"] == NOTES - 20 + 50
    assert_finds_marked(final, expected)
    figures("concurrent", seconds=round(seconds, 1), **{k: {x: v for x, v in o.items() if x != "problems"} for k, o in outs.items()})


# --- hostile inputs --------------------------------------------------------------------------------
def write_hostile_files(folder: Path) -> dict[str, str]:
    """The bad files, each with a regex its failure message must match."""
    from fpdf import FPDF
    from pypdf import PdfWriter

    folder.mkdir(parents=True, exist_ok=True)
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for page in range(3):
        pdf.add_page()
        for _ in range(6):
            pdf.multi_cell(0, 8, f"The orchard ledger lists pear and quince harvests, page {page + 1}.", new_x="LMARGIN", new_y="NEXT")
    good_pdf = pdf.output()
    (folder / "good-orchard.pdf").write_bytes(good_pdf)
    (folder / "truncated.pdf").write_bytes(bytes(good_pdf[: len(good_pdf) // 2]))
    (folder / "random-bytes.pdf").write_bytes(random.Random(SEED).randbytes(64 * 1024))
    (folder / "empty.txt").write_bytes(b"")
    writer = PdfWriter(clone_from=folder / "good-orchard.pdf")
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="AES-256")
    writer.write(folder / "encrypted.pdf")
    with zipfile.ZipFile(folder / "bomb.docx", "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        with zf.open("word/document.xml", "w") as member:  # 200 MB of zeros, ~200 KB packed
            block = bytes(1 << 20)
            for _ in range(200):
                member.write(block)
    huge = FPDF(unit="pt", format=(14400, 14400))  # one blank 200 x 200 inch page: OCR would render it
    huge.add_page()
    huge.output(str(folder / "huge-page.pdf"))
    with open(folder / "sparse-1gb.txt", "wb") as handle:
        handle.truncate(1 << 30)
    return {
        "truncated.pdf": r"truncated\.pdf: not a readable PDF",
        "random-bytes.pdf": r"random-bytes\.pdf: not a readable PDF",
        "empty.txt": r"empty\.txt: file is empty",
        "encrypted.pdf": r"encrypted\.pdf: PDF is encrypted",
        "bomb.docx": r"bomb\.docx: refused, .*zip bomb",
        "huge-page.pdf": r"huge-page\.pdf: page 1 is 200x200 inches, too large",
        "sparse-1gb.txt": r"sparse-1gb\.txt: 1,024 MB is above MAX_FILE_MB",
    }


def test_hostile_files_fail_alone_with_reasons_within_a_memory_bound(tmp_path, embedder):
    import docx
    import psutil

    folder = tmp_path / "inbox"
    bad = write_hostile_files(folder)
    (folder / "good-notes.md").write_text(note_text("n007.md", 7, 0), encoding="utf-8")
    document = docx.Document()
    document.add_paragraph("The cooper bound oak barrels with iron hoops for the cider press.")
    document.save(folder / "good-cooper.docx")
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench", "ingest", str(folder), "--collection", "inbox", "--json"],
        cwd=tmp_path, env=child_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    peak, over = 0, threading.Event()

    def sample():
        nonlocal peak
        p = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                peak = max(peak, p.memory_info().rss)
            except psutil.Error:
                return
            if peak > RSS_BOUND_MB * 2**20:
                over.set()
                proc.kill()  # never let a missing cap take the machine's memory
                return
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    t0 = time.perf_counter()
    sampler.start()
    out, err = proc.communicate(timeout=600)
    sampler.join(5)
    seconds = time.perf_counter() - t0
    assert not over.is_set(), f"peak RSS above {RSS_BOUND_MB} MB"
    assert proc.returncode == 0 and "Traceback" not in err, err[-3000:]
    results = {r["source"]: r for r in json.loads(out)["results"]}
    for source, reason in bad.items():
        assert results[source]["status"] == "failed", results[source]
        assert re.search(reason, results[source]["message"]), results[source]["message"]
    good = {"good-orchard.pdf", "good-notes.md", "good-cooper.docx"}
    assert {s for s, r in results.items() if r["status"] == "added"} == good
    assert set(results) == set(bad) | good
    spec = {"lighthouse keeper amber signal lamp": "good-notes.md", "pear and quince harvests in the orchard ledger": "good-orchard.pdf", "cooper oak barrels iron hoops": "good-cooper.docx"}
    vectors = {q: v.tolist() for q, v in zip(spec, embedder.encode(list(spec)))}
    state = check(tmp_path, SimpleNamespace(vectors=vectors))
    c = assert_sound(state, "inbox", repaired=True)
    assert sorted(c["sources"]) == sorted(good)
    for query, source in spec.items():
        assert c["found"][f"vector:{query}"][0] == source, (query, c["found"])
    assert peak < RSS_BOUND_MB * 2**20
    figures("hostile", inputs=sorted(bad), good=sorted(good), peak_rss_mb=round(peak / 2**20), bound_mb=RSS_BOUND_MB, seconds=round(seconds, 1))
