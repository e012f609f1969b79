"""A process-level registry of background ingestion jobs.

A job runs in its own thread, outside any page's script run, so its progress and log survive a
browser refresh or a page switch. One job per collection at a time: a second one is refused
(``JobConflictError``) rather than racing. Cancelling sets the run's cancel event; ingestion
rolls back unfinished documents, so the store stays consistent.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from workbench.config import Settings
from workbench.documents import IngestEvent, IngestSummary
from workbench.errors import CancelledError, WorkbenchError
from workbench.ingest.pipeline import SourceFile, ingest_paths

log = logging.getLogger(__name__)


def _record_failure(job: "IngestJob", exc: Exception) -> None:
    """Mark ``job`` failed with a one-line reason and log it (a traceback when the error was not
    raised on purpose): the reason of a crashed job is never lost."""
    job.state = "failed"
    if isinstance(exc, WorkbenchError):
        job.error = str(exc)
        log.warning("job %s (%s) failed: %s", job.id, job.description, exc)
    else:
        job.error = f"{type(exc).__name__}: {exc}"
        log.error("job %s (%s) crashed", job.id, job.description, exc_info=exc)


class JobConflictError(WorkbenchError):
    """Another ingestion job is already running on that collection."""


@dataclass
class IngestJob:
    """One background ingestion. ``state`` is "running" | "done" | "cancelled" | "failed"."""

    id: int
    collection: str
    description: str
    started_at: float = field(default_factory=time.time)
    state: str = "running"
    last_event: IngestEvent | None = None
    log: list[str] = field(default_factory=list)
    summary: IngestSummary | None = None
    error: str = ""
    result: str = ""
    cancel_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    cleanup: Path | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    def cancel(self) -> None:
        """Ask the job to stop after its current batch."""
        self.cancel_event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (or ``timeout`` seconds); True when it has ended."""
        if self.thread:
            self.thread.join(timeout)
        return not self.running

    def on_event(self, event: IngestEvent) -> None:
        self.last_event = event
        if event.kind == "file_done":
            line = f"{event.current_file or ''} {event.status}".strip()
            if event.message:
                line += f": {event.message}"
            self.log.append(line)


class JobRegistry:
    """Thread-safe registry of ingestion jobs (keep one per process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[int, IngestJob] = {}
        self._ids = itertools.count(1)

    def jobs(self) -> list[IngestJob]:
        """All jobs, newest first."""
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.id, reverse=True)

    def get(self, job_id: int) -> IngestJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def running_for(self, collection: str) -> IngestJob | None:
        with self._lock:
            return next((j for j in self._jobs.values() if j.collection == collection and j.running), None)

    def start_ingest(
        self,
        paths: Iterable[Path | SourceFile],
        *,
        settings: Settings,
        store,
        embedder,
        collection: str,
        prune: bool = False,
        description: str = "",
        cleanup: Path | None = None,
        on_done: Callable[[IngestJob], None] | None = None,
    ) -> IngestJob:
        """Start ingesting ``paths`` into ``collection`` in a thread and return the job.

        ``cleanup`` is a folder deleted when the job ends (uploaded files).
        Raises JobConflictError when a job on that collection is still running.
        """
        items = list(paths)
        with self._lock:
            busy = next((j for j in self._jobs.values() if j.collection == collection and j.running), None)
            if busy:
                raise JobConflictError(
                    f"an ingestion into {collection!r} is already running (job {busy.id}); wait for it or cancel it"
                )
            job = IngestJob(next(self._ids), collection, description or f"{len(items)} item(s)", cleanup=cleanup)
            self._jobs[job.id] = job

        def work() -> None:
            try:
                job.summary = ingest_paths(
                    items,
                    settings=settings,
                    store=store,
                    embedder=embedder,
                    collection=collection,
                    progress=job.on_event,
                    prune=prune,
                    cancel=job.cancel_event,
                )
                job.state = "cancelled" if job.summary.cancelled else "done"
            except Exception as exc:
                _record_failure(job, exc)
            finally:
                if job.cleanup:
                    shutil.rmtree(job.cleanup, ignore_errors=True)
                if on_done:
                    on_done(job)

        job.thread = threading.Thread(target=work, name=f"ingest-{job.id}", daemon=True)
        job.thread.start()
        return job

    def start_task(
        self,
        work: Callable[[Callable[[IngestEvent], None], threading.Event], str],
        *,
        collection: str,
        description: str,
    ) -> IngestJob:
        """Run another long job on ``collection`` (e.g. a rebuild) under the same one-job-per-
        collection rule. ``work(progress, cancel)`` reports IngestEvents and returns a one-line
        result (kept in ``job.result``); a CancelledError ends the job as "cancelled".
        Raises JobConflictError when a job on that collection is still running."""
        with self._lock:
            busy = next((j for j in self._jobs.values() if j.collection == collection and j.running), None)
            if busy:
                raise JobConflictError(
                    f"a job on {collection!r} is already running (job {busy.id}: {busy.description}); wait for it or cancel it"
                )
            job = IngestJob(next(self._ids), collection, description)
            self._jobs[job.id] = job

        def run() -> None:
            try:
                job.result = work(job.on_event, job.cancel_event) or ""
                job.state = "done"
            except CancelledError as exc:
                job.error, job.state = str(exc), "cancelled"
            except Exception as exc:
                _record_failure(job, exc)

        job.thread = threading.Thread(target=run, name=f"task-{job.id}", daemon=True)
        job.thread.start()
        return job
