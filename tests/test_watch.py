"""The folder watcher (workbench.ingest.watch) on real files, the real model and an embedded Chroma:
a file copied slowly is ingested once, whole; a deleted file is pruned; the polling observer
sees changes too and batches them; a collection busy in another process or in this process's
JobRegistry makes the watcher wait, then ingest; the Ingest page shows the watcher."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, make_settings, write_docs
from tests.test_ui import open_app, texts, ui  # noqa: F401  (ui: the AppTest fixture)
from workbench.ingest.jobs import JobRegistry
from workbench.retrieval.search import search
from workbench.store.chroma import open_store
from workbench.ingest.watch import FolderWatcher, choose_polling, filesystem_type

PART1 = "# Lunar notes\n\nThe quokka observatory records the lunar tides every night from its hilltop dome.\n"
PART2 = "\nThe final paragraph mentions a zebra-striped saxophone left in the telescope room.\n"


def wait_until(predicate, timeout: float = 60.0, step: float = 0.2, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy (returned) or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def hits_for(query: str, source: str, w: FolderWatcher) -> list:
    if not w.store.has_collection(w.collection):
        return []
    hits = search(query, settings=w.settings, store=w.store, embedder=w.embedder, top_k=5, mode="vector")
    return [h for h in hits if h.source == source]


def results_of(jobs: JobRegistry, source: str) -> list[str]:
    """Every status ``source`` got in the registry's finished jobs, oldest job first."""
    return [r.status for j in reversed(jobs.jobs()) if j.summary for r in j.summary.results if r.source == source]


def idle(w: FolderWatcher) -> bool:
    state = w.state
    return state.status == "watching" and not state.pending and not w.jobs.running_for(w.collection)


@pytest.fixture
def make_watcher(tmp_path, embedder):
    """``make_watcher(**settings)``: a FolderWatcher on ``tmp_path/kb`` (created empty) with
    settle 1 s, its own JobRegistry; stopped at the end."""
    made: list[FolderWatcher] = []

    def make(retry_seconds: float = 1.0, **overrides) -> FolderWatcher:
        values = dict(watch_settle_seconds=1.0, watch_poll_seconds=0.3)
        values.update(overrides)
        settings = make_settings(tmp_path, **values)
        settings.knowledge_base_path.mkdir(parents=True, exist_ok=True)
        watcher = FolderWatcher(settings, store=open_store(settings), embedder=embedder, jobs=JobRegistry(), retry_seconds=retry_seconds)
        made.append(watcher)
        return watcher

    yield make
    for watcher in made:
        watcher.stop()


def test_slow_copy_is_ingested_once_whole_then_pruned_when_deleted(make_watcher):
    w = make_watcher(watch_polling="false", watch_settle_seconds=2.0).start()
    assert w.state.observer == "inotify"
    wait_until(lambda: idle(w) and w.state.last_job_id, 30, what="the initial scan")
    kb = w.folder

    # A slow copy: half the file, a pause (1.2 s) shorter than the settle time (2 s), the rest.
    with open(kb / "lunar.md", "w", encoding="utf-8") as f:
        f.write(PART1)
        f.flush()
        os.fsync(f.fileno())
        time.sleep(0.6)
        assert w.state.status == "settling", w.state
        (kb / ".lunar.md.swp").write_text("editor swap file")  # hidden: ignored
        time.sleep(0.6)
        f.write(PART2)
    assert not w.jobs.running_for(w.collection) and results_of(w.jobs, "lunar.md") == []

    hits = wait_until(lambda: hits_for("quokka observatory lunar tides", "lunar.md", w), 60, what="lunar.md searchable")
    assert "zebra-striped saxophone" in " ".join(h.text for h in hits)
    wait_until(lambda: idle(w), 30, what="the run to end")
    assert results_of(w.jobs, "lunar.md") == ["added"]  # never ingested half-written, then replaced
    stored = w.store.get_collection(w.collection).get(where={"source": "lunar.md"}, include=["documents"])
    assert stored["documents"] and "zebra-striped saxophone" in " ".join(stored["documents"])
    assert [d.source for d in w.store.documents(w.collection)] == ["lunar.md"]

    (kb / "lunar.md").unlink()
    wait_until(lambda: "pruned" in results_of(w.jobs, "lunar.md"), 60, what="lunar.md pruned")
    assert w.store.documents(w.collection) == []
    assert hits_for("quokka observatory lunar tides", "lunar.md", w) == []

    kinds = [(e.kind, e.path) for e in w.events]
    for expected in [("created", "lunar.md"), ("added", "lunar.md"), ("deleted", "lunar.md"), ("pruned", "lunar.md")]:
        assert expected in kinds, kinds
    assert not any(".swp" in e.path for e in w.events)
    w.stop()
    assert w.state.status == "stopped" and not w.running


def test_polling_observer_batches_changes_into_one_run(make_watcher):
    w = make_watcher(watch_polling="true").start()
    assert w.state.observer == "polling"
    wait_until(lambda: idle(w) and w.state.last_job_id, 30, what="the initial scan")
    first = w.state.last_job_id
    write_docs(w.folder, {
        "alpha.md": "# Alpha\n\nThe alpha note is about copper kettles in the bakery.\n",
        "sub/beta.txt": "The beta note describes a lighthouse keeper who paints seashells.\n",
    })
    wait_until(lambda: hits_for("lighthouse keeper paints seashells", "sub/beta.txt", w), 60, what="beta searchable")
    wait_until(lambda: idle(w), 30, what="the run to end")
    runs = [j for j in w.jobs.jobs() if j.id > first]
    assert len(runs) == 1, [(j.description, j.summary and [(r.source, r.status) for r in j.summary.results]) for j in runs]
    assert sorted((r.source, r.status) for r in runs[0].summary.results) == [("alpha.md", "added"), ("sub/beta.txt", "added")]

    # A change is seen by polling too: the file is replaced, not duplicated.
    (w.folder / "alpha.md").write_text("# Alpha\n\nThe alpha note now talks about brass trumpets.\n", encoding="utf-8")
    wait_until(lambda: "replaced" in results_of(w.jobs, "alpha.md"), 60, what="alpha replaced")
    assert sorted(d.source for d in w.store.documents(w.collection)) == ["alpha.md", "sub/beta.txt"]
    assert any(h.source == "alpha.md" for h in search("brass trumpets", settings=w.settings, store=w.store, embedder=w.embedder, top_k=3))


HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tests.conftest import make_settings
    from workbench.store import collection_lock

    with collection_lock(make_settings(Path(sys.argv[1])), "knowledge_base"):
        print("LOCKED", flush=True)
        sys.stdin.readline()  # hold the lock until the test says so
    """
)


def test_waits_while_another_process_holds_the_collection_lock(make_watcher, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "LOCKED"
        w = make_watcher()
        write_docs(w.folder, {"comet.md": "# Comets\n\nA comet named Vespertine grazed the orbit of Neptune in the story.\n"})
        w.start()
        state = wait_until(lambda: w.state if w.state.status == "waiting-for-lock" else None, 30, what="waiting-for-lock")
        assert f"pid {holder.pid}" in state.message
        time.sleep(2.5)  # a few retries: still waiting, nothing started, nothing written
        assert w.state.status == "waiting-for-lock" and w.jobs.jobs() == []
        assert not w.store.has_collection(w.collection)
    finally:
        holder.stdin.close()  # releases the lock
        holder.wait(30)
    wait_until(lambda: hits_for("comet Vespertine Neptune", "comet.md", w), 60, what="comet.md searchable after the lock is freed")
    wait_until(lambda: idle(w), 30, what="the run to end")  # searchable at commit, before the job ends
    assert results_of(w.jobs, "comet.md") == ["added"]


def test_waits_for_a_running_job_of_this_process(make_watcher):
    import threading

    w = make_watcher()
    release = threading.Event()
    blocker = w.jobs.start_task(lambda progress, cancel: release.wait(60) and "released", collection=w.collection, description="a manual job")
    write_docs(w.folder, {"moth.md": "The luna moth lands on the greenhouse window at dusk.\n"})
    w.start()
    state = wait_until(lambda: w.state if w.state.status == "waiting-for-lock" else None, 30, what="waiting-for-lock")
    assert f"job {blocker.id} (a manual job)" in state.message
    assert [j.id for j in w.jobs.jobs()] == [blocker.id]
    release.set()
    wait_until(lambda: hits_for("luna moth greenhouse window", "moth.md", w), 60, what="moth.md searchable")
    wait_until(lambda: idle(w), 30, what="the run to end")
    assert blocker.state == "done" and results_of(w.jobs, "moth.md") == ["added"]


def test_the_embedder_is_safe_to_share_between_threads(embedder):
    """The watcher's runs encode in a job thread while pages search: concurrent calls must not
    fail (OpenVINO's single infer request raised "Infer Request is busy") nor mix results."""
    from concurrent.futures import ThreadPoolExecutor

    texts = [[f"thread {t} sentence {i} about harbour cranes" for i in range(24)] for t in range(6)]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(embedder.encode, texts))
    for batch, vectors in zip(texts, together):
        assert vectors.shape == (24, embedder.dimension)
        assert float((vectors * embedder.encode(batch)).sum(axis=1).min()) > 0.9999


def test_missing_folder_is_an_error_state(tmp_path, embedder):
    from workbench.errors import ConfigError

    settings = make_settings(tmp_path)
    w = FolderWatcher(settings, store=None, embedder=embedder, jobs=JobRegistry())
    with pytest.raises(ConfigError, match="is not a folder"):
        w.start()
    assert w.state.status == "error" and not w.running


def test_auto_polling_follows_the_filesystem_of_the_folder(tmp_path):
    mountinfo = textwrap.dedent(
        """\
        22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
        40 22 0:35 / /mnt/kb rw,relatime shared:20 - nfs4 server:/export rw,vers=4.2
        41 22 0:36 / /mnt/my\\040docs rw,relatime - fuse.sshfs host:/docs rw
        42 22 0:37 / /mnt/kbx rw,relatime - ext4 /dev/sdb1 rw
        """
    )
    assert filesystem_type(Path("/mnt/kb/sub"), mountinfo) == "nfs4"
    assert filesystem_type(Path("/mnt/kbx"), mountinfo) == "ext4"  # a prefix of the name is not the mount
    assert filesystem_type(Path("/mnt/my docs/a"), mountinfo) == "fuse.sshfs"
    assert choose_polling("auto", Path("/mnt/kb/sub"), mountinfo)[0] is True
    assert choose_polling("auto", Path("/mnt/my docs"), mountinfo)[0] is True
    assert choose_polling("auto", Path("/home/x"), mountinfo)[0] is False
    assert choose_polling("false", Path("/mnt/kb"), mountinfo)[0] is False
    assert choose_polling("true", Path("/home/x"), mountinfo)[0] is True
    assert filesystem_type(tmp_path) is not None  # this machine's real mount table parses


def test_ingest_page_shows_the_watcher_when_enabled(ui, monkeypatch):  # noqa: F811  (ui: the AppTest fixture)
    import ui as app_ui

    monkeypatch.setenv("WATCH_KNOWLEDGE_BASE", "true")
    monkeypatch.setenv("WATCH_SETTLE_SECONDS", "0.5")
    watcher = None
    try:
        at = open_app()  # the Ingest page is the first page
        assert "Ingest" in at.title[0].value
        watcher = app_ui.get_watcher()  # the one the app started (cached)
        assert watcher is not None and watcher.running and watcher.folder == ui.docs.absolute()
        assert "Folder watcher" in texts(at.subheader)
        assert f"Watching {ui.docs.name}" in texts(at.sidebar.caption)
        wait_until(lambda: idle(watcher) and watcher.state.last_job_id, 120, what="the initial scan")
        name = "odd_[name]*.md"
        (ui.docs / name).write_text("The *odd* file about a copper_kettle.\n", encoding="utf-8")
        wait_until(lambda: any(e.kind == "added" and e.path == name for e in watcher.events), 60, what="odd file added")
        at.run()
        assert not at.exception, at.exception
        assert "**watching**" in texts(at.markdown) and "uitest" in texts(at.caption)
        tables = [d.value for d in at.dataframe if "event" in d.value.columns]
        assert tables and ("added", name) in set(zip(tables[0]["event"], tables[0]["path"]))
        assert name not in texts(at.markdown) + texts(at.caption)  # a file name is never live markdown
    finally:
        if watcher is not None:
            watcher.stop()
