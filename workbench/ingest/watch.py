"""Watch the knowledge-base folder and ingest what changes in it.

:class:`FolderWatcher` observes a folder with watchdog: OS events (inotify on Linux), or a
polling observer that compares ``stat`` snapshots every WATCH_POLL_SECONDS on mounts where
inotify never fires (network shares, FUSE, 9p/WSL and Docker Desktop shares; see
:func:`choose_polling`). Changes are debounced: the watcher waits until every changed path
keeps its size and mtime, and no new event arrives, for WATCH_SETTLE_SECONDS, so a file still
being copied is not read half-written. Then one run ingests the whole folder with prune
(``ingest_paths([folder], prune=True)``) as a job of the :class:`~workbench.ingest.jobs.JobRegistry`:
unchanged files are skipped by their ingest key, changed ones replaced, deleted ones pruned, and
the run shows on the Ingest page like any other job. Events that arrive during a run make the
next run; many events make one run.

One ingest per collection at a time still holds. While a job of this process runs on the
collection, or another process holds its ingest lock (:func:`~workbench.store.collection_lock`),
the watcher waits ("waiting-for-lock") and retries with exponential backoff (tenacity); it
never ingests unlocked.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

from tenacity import RetryError, Retrying, retry_if_exception_type, wait_exponential
from watchdog import events as wd
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from workbench.config import Settings
from workbench.errors import ConfigError, IngestBusyError
from workbench.store import collection_lock
from workbench.ingest.jobs import IngestJob, JobConflictError, JobRegistry

log = logging.getLogger(__name__)

#: Every ``WatchState.status``: idle (made, not started), watching (nothing pending), settling
#: (changes seen, waiting until they are stable), waiting-for-lock, ingesting, stopped, error.
WATCH_STATUSES = ("idle", "watching", "settling", "waiting-for-lock", "ingesting", "stopped", "error")

# Opened/closed events are left out: the ingest itself opens every file (it would wake the
# watcher forever), and a directory's "modified" only says that an entry in it changed.
_EVENT_TYPES = [wd.FileCreatedEvent, wd.FileModifiedEvent, wd.FileDeletedEvent, wd.FileMovedEvent, wd.DirCreatedEvent, wd.DirDeletedEvent, wd.DirMovedEvent]
_KINDS = frozenset({"created", "modified", "deleted", "moved"})

#: Filesystems whose changes made elsewhere (another machine, the host of a VM or of Docker
#: Desktop) never reach this kernel's inotify; any ``fuse.*`` type counts too.
POLLING_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "drvfs", "virtiofs", "fakeowner", "grpcfuse",
     "vboxsf", "prl_fs", "vmhgfs", "afs", "ceph", "glusterfs", "lustre", "davfs", "sshfs"}
)


class WatchEvent(NamedTuple):
    """One entry of :attr:`FolderWatcher.events`.

    time: epoch seconds. kind: a change seen in the folder ("created" | "modified" | "deleted"
    | "moved") or the outcome of a run for one file ("added" | "replaced" | "pruned" |
    "failed"). path: posix path relative to the folder ("old → new" for "moved").
    """

    time: float
    kind: str
    path: str


@dataclass(frozen=True)
class WatchState:
    """A snapshot of the watcher. ``status`` is one of :data:`WATCH_STATUSES`; ``message`` says
    why, in one line; ``since``: epoch seconds of the last change of status or message;
    ``observer``: "inotify" | "polling" | another watchdog backend; ``pending``: changed paths
    not yet ingested; ``last_job_id``: the newest job the watcher started (None before any)."""

    status: str
    message: str = ""
    since: float = 0.0
    observer: str = ""
    pending: int = 0
    last_job_id: int | None = None


class _Busy(Exception):
    """The collection is taken (a job here or another process's lock): wait and retry."""


def filesystem_type(path: Path, mountinfo: str | None = None) -> str | None:
    """The filesystem type (e.g. "ext4", "nfs4", "fuse.sshfs") of the mount holding ``path``,
    read from ``/proc/self/mountinfo`` (or the text given); None when unknown (not Linux)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for line in mountinfo.splitlines():
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or not rest:
            continue
        point = parts[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, rest.split()[0]
    return best_type


def choose_polling(mode: str, folder: Path, mountinfo: str | None = None) -> tuple[bool, str]:
    """Whether to poll ``folder`` for WATCH_POLLING ``mode`` ("auto" | "true" | "false"), and
    why (one line). "auto" polls when the folder sits on a filesystem in
    :data:`POLLING_FILESYSTEMS` (or any ``fuse.*``), or when watchdog has no native backend here."""
    if mode == "true":
        return True, "WATCH_POLLING=true"
    if mode == "false":
        return False, "WATCH_POLLING=false"
    if Observer is PollingObserver:
        return True, "no native file events on this platform"
    fs = filesystem_type(folder, mountinfo)
    if fs and (fs in POLLING_FILESYSTEMS or fs.startswith("fuse.") or fs.split(".")[-1] in POLLING_FILESYSTEMS):
        return True, f"{fs} mount: inotify may miss changes made on the other side"
    return False, f"native events on {fs or 'an unknown filesystem'}"


def _stat(path: str) -> tuple[int, int] | None:
    """(size in bytes, mtime in ns) of ``path``, None when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class _Handler(wd.FileSystemEventHandler):
    def __init__(self, watcher: FolderWatcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: wd.FileSystemEvent) -> None:
        self.watcher._on_fs_event(event)


class FolderWatcher:
    """Ingest ``folder`` (default KNOWLEDGE_BASE_PATH) into ``collection`` (default
    COLLECTION_NAME) whenever something in it changes; see the module docstring.

    ``settle_seconds`` / ``poll_seconds`` / ``polling`` default to WATCH_SETTLE_SECONDS /
    WATCH_POLL_SECONDS / WATCH_POLLING. ``retry_seconds``: the longest wait between two
    attempts while the collection is busy. ``initial_sync``: the first run starts right after
    :meth:`start` (catches up with what changed while nothing watched). Hidden entries (a part
    of the path starting with ".") are ignored, as ingestion ignores them.

    Thread-safe; :attr:`state` and :attr:`events` may be read from any thread.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store,
        embedder,
        jobs: JobRegistry,
        folder: Path | None = None,
        collection: str | None = None,
        settle_seconds: float | None = None,
        poll_seconds: float | None = None,
        polling: str | None = None,
        retry_seconds: float = 5.0,
        initial_sync: bool = True,
        max_events: int = 200,
    ) -> None:
        self.settings, self.store, self.embedder, self.jobs = settings, store, embedder, jobs
        self.folder = Path(folder or settings.knowledge_base_path).absolute()
        self._real_folder = self.folder.resolve()  # some backends report resolved paths
        self.collection = collection or settings.collection_name
        self.settle_seconds = settings.watch_settle_seconds if settle_seconds is None else settle_seconds
        self.poll_seconds = settings.watch_poll_seconds if poll_seconds is None else poll_seconds
        self.polling_mode = polling or settings.watch_polling
        self.retry_seconds = retry_seconds
        self.initial_sync = initial_sync
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._pending: set[str] = set()
        self._changes = 0  # relevant events seen so far
        self._events: collections.deque[WatchEvent] = collections.deque(maxlen=max_events)
        self._state = WatchState("idle", "not started", time.time())
        self._observer = None
        self._thread: threading.Thread | None = None

    # --- public ---------------------------------------------------------------------------
    @property
    def state(self) -> WatchState:
        """The current :class:`WatchState` (a snapshot)."""
        with self._lock:
            return replace(self._state, pending=len(self._pending))

    @property
    def events(self) -> list[WatchEvent]:
        """Recent events, oldest first (at most ``max_events``; repeats of the same kind on the
        same path, e.g. the many writes of one copy, count once with the newest time)."""
        with self._lock:
            return list(self._events)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> FolderWatcher:
        """Start observing and the worker thread (a no-op when running). Falls back to polling
        when the OS observer cannot start (e.g. inotify watch limit reached). Raises
        ConfigError when the folder does not exist (state "error")."""
        if self.running:
            return self
        if not self.folder.is_dir():
            message = f"KNOWLEDGE_BASE_PATH {self.folder} is not a folder; nothing to watch"
            self._set("error", message)
            raise ConfigError(message)
        self._stopping.clear()
        polling, reason = choose_polling(self.polling_mode, self.folder)
        try:
            self._observer = self._start_observer(polling)
        except OSError as exc:
            if polling:
                raise
            log.warning("native file events unavailable for %s (%s); polling every %s s", self.folder, exc, self.poll_seconds)
            reason = f"OS events unavailable ({exc})"
            self._observer = self._start_observer(True)
        kind = self._observer_kind()
        with self._lock:
            self._state = replace(self._state, observer=kind)
            if self.initial_sync:
                self._pending.add(str(self.folder))
                self._changes += 1
        self._set("watching", f"{kind}: {reason}")
        self._thread = threading.Thread(target=self._run, name="folder-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop observing; a run in progress is cancelled (its unfinished documents roll back).
        Waits up to ``timeout`` seconds for the threads. State becomes "stopped"."""
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
            self._observer = None
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._set("stopped", "not watching")

    def __enter__(self) -> FolderWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- observing ------------------------------------------------------------------------
    def _start_observer(self, polling: bool):
        observer = PollingObserver(timeout=self.poll_seconds) if polling else Observer()
        observer.schedule(_Handler(self), str(self.folder), recursive=True, event_filter=_EVENT_TYPES)
        observer.start()
        return observer

    def _observer_kind(self) -> str:
        name = type(self._observer).__name__
        return "polling" if isinstance(self._observer, PollingObserver) else name.removesuffix("Observer").lower() or name

    def _relative(self, path: str) -> str | None:
        """``path`` relative to the folder (posix), None for the folder itself, paths outside
        it and hidden entries."""
        rel = None
        for root in (self.folder, self._real_folder):
            try:
                rel = Path(path).relative_to(root)
                break
            except ValueError:
                continue
        if rel is None:
            return None
        if not rel.parts or any(part.startswith(".") for part in rel.parts):
            return None
        return rel.as_posix()

    def _on_fs_event(self, event: wd.FileSystemEvent) -> None:
        kind = event.event_type
        if kind not in _KINDS or (event.is_directory and kind == "modified"):
            return
        paths = [os.fsdecode(event.src_path)]
        if kind == "moved":
            paths.append(os.fsdecode(event.dest_path))
        names = [name for name in map(self._relative, paths) if name]
        if not names:
            return
        log.debug("%s %s", kind, " → ".join(names))
        with self._wake:
            self._pending.update(paths)
            self._changes += 1
            self._record(kind, " → ".join(names))
            self._wake.notify_all()

    def _record(self, kind: str, path: str) -> None:
        """Append an event (caller holds the lock); a repeat of the newest one updates its time."""
        event = WatchEvent(time.time(), kind, path)
        if self._events and self._events[-1][1:] == event[1:]:
            self._events[-1] = event
        else:
            self._events.append(event)

    def _set(self, status: str, message: str, job_id: int | None = None) -> None:
        with self._lock:
            old = self._state
            if (old.status, old.message) == (status, message) and job_id is None:
                return
            self._state = replace(old, status=status, message=message, since=time.time(), last_job_id=job_id or old.last_job_id)
        if old.status != status:
            log.info("watcher on %s: %s: %s", self.folder, status, message)

    # --- the worker -------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while self._wait_for_changes():
                counter = self._settle()
                if counter is None:
                    break
                job = self._start_job(counter)
                if job is not None:
                    self._follow(job)
        except Exception as exc:  # a bug, not a busy collection: say so, stop watching
            log.error("the folder watcher crashed", exc_info=exc)
            self._set("error", f"the watcher stopped: {type(exc).__name__}: {exc}")

    def _wait_for_changes(self) -> bool:
        """Block until a change is pending; False when stopping."""
        with self._wake:
            while not self._pending and not self._stopping.is_set():
                self._wake.wait(1.0)
        return not self._stopping.is_set()

    def _settle(self) -> int | None:
        """Wait until the pending paths keep their size and mtime, with no new event, for
        ``settle_seconds``. Returns the event counter at that moment, None when stopping."""
        while True:
            with self._lock:
                paths, counter = list(self._pending), self._changes
            initial = paths == [str(self.folder)]
            what = "initial scan" if initial else f"{len(paths)} changed path(s)"
            self._set("settling", f"{what}: waiting until nothing changes for {self.settle_seconds:g} s")
            before = {p: _stat(p) for p in paths}
            if self._stopping.wait(self.settle_seconds):
                return None
            with self._lock:
                quiet = self._changes == counter
            if quiet and all(_stat(p) == s for p, s in before.items()):
                return counter

    def _start_job(self, counter: int) -> IngestJob | None:
        """Start the ingest job once the collection is free, retrying while it is busy.
        None when stopping, when the folder is gone, or when new changes arrived meanwhile
        (they settle first)."""

        def attempt() -> IngestJob | None:
            with self._lock:
                if self._changes != counter:
                    return None
            busy = self.jobs.running_for(self.collection)
            if busy:
                raise _Busy(f"job {busy.id} ({busy.description}) is running on {self.collection!r}")
            try:
                with collection_lock(self.settings, self.collection):
                    pass
            except IngestBusyError as exc:
                raise _Busy(str(exc)) from None
            if not self.folder.is_dir():
                with self._lock:
                    self._pending.clear()
                self._set("error", f"{self.folder} is gone; nothing ingested")
                return None
            with self._lock:
                batch, self._pending = self._pending, set()
            try:
                return self.jobs.start_ingest(
                    [self.folder],
                    settings=self.settings,
                    store=self.store,
                    embedder=self.embedder,
                    collection=self.collection,
                    prune=True,
                    description=f"watch: {len(batch)} change(s) in {self.folder.name}",
                )
            except JobConflictError as exc:  # a job started between the check and here
                with self._lock:
                    self._pending |= batch
                raise _Busy(str(exc)) from None

        def waiting(retry_state) -> None:
            self._set("waiting-for-lock", str(retry_state.outcome.exception()))

        retrying = Retrying(
            retry=retry_if_exception_type(_Busy),
            wait=wait_exponential(multiplier=0.25, min=0.25, max=self.retry_seconds),
            stop=lambda _state: self._stopping.is_set(),
            sleep=self._stopping.wait,
            before_sleep=waiting,
        )
        try:
            return retrying(attempt)
        except RetryError:  # stopped while waiting
            return None

    def _follow(self, job: IngestJob) -> None:
        """Wait for the watcher's job (cancel it when stopping) and record its outcome."""
        self._set("ingesting", f"job {job.id}: {job.description}", job.id)
        while not job.wait(0.5):
            if self._stopping.is_set():
                job.cancel()
        summary = job.summary
        with self._lock:
            for result in summary.results if summary else []:
                if result.status != "unchanged":
                    self._record(result.status, result.source)
        if job.state == "done" and summary is not None:
            counts = ", ".join(f"{n} {summary.count(n)}" for n in ("added", "replaced", "pruned", "failed") if summary.count(n))
            self._set("watching", f"job {job.id}: {counts or 'nothing changed'} in {summary.seconds:.1f} s", job.id)
        elif job.state == "cancelled":
            self._set("watching", f"job {job.id} was cancelled; the next change starts a new run", job.id)
        else:
            self._set("error", f"job {job.id} failed: {job.error}", job.id)
            try:  # another process took the lock between the check and the ingest: run again
                with collection_lock(self.settings, self.collection):
                    pass
            except IngestBusyError:
                with self._wake:
                    self._pending.add(str(self.folder))
                    self._changes += 1
