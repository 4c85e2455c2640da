"""Background jobs (ingest, analyze, export): threads, one writer per dataset, status persisted.

``JobRunner(store)`` runs ``fn(ctx) -> dict | None`` functions in background threads. Jobs of one
dataset run one after the other in submission order (the store wants one writer per dataset); jobs of
different datasets run side by side, at most ``max_parallel`` at once.

A job is a ``run`` document in its dataset's docs table (``store.put_doc(ds, "run", id, doc)``)::

    id, kind, dataset, params, status (queued | running | succeeded | failed | cancelled),
    progress {done, total, message}, counts {...}, errors [{item, message}] (first 200), error_count,
    error (why it failed), result {...}, version_read, version_written, created_at, started_at,
    finished_at, duration_s, pid, host, runner, interrupted (bool), resumed_from / resumed_by

(``indexer.documents.RunDoc``; built by ``indexer.documents.new_run_doc``, like the run documents the
CLI ingest and the analysis write themselves.)

Progress writes are throttled (at most one per ``progress_interval`` seconds; state changes always
write). When a runner starts, jobs that a dead process left ``queued`` or ``running`` are marked
``failed`` with ``error = "interrupted by a restart"`` and ``interrupted = true``; a job kind that can
pick up where it stopped (an export) is restarted with ``runner.resume(kinds, fn_factory)``.

The function gets a :class:`JobContext`: ``ctx.progress(done, total, message)``, ``ctx.error(item,
message)`` for an item that failed (the rest of the batch carries on), ``ctx.count(name, n)``,
``ctx.cancelled`` (a cooperative flag set by ``runner.cancel``), ``ctx.store`` (the store, except that
a library writing a ``run`` doc under the job's own id leaves it to the runner). Whatever dict it returns becomes
``result``; the keys ``counts``, ``errors``, ``error_count``, ``version_read`` and ``version_written``
of that dict are lifted to the job document.
"""

from __future__ import annotations

import builtins
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from edgeminer.indexer.documents import JSONObject, RunDoc, RunError, new_run_doc, now_iso
from edgeminer.indexer.errors import JobNotFound, Unavailable
from edgeminer.indexer.store import DatasetNotFound, Store, StoreError

log = logging.getLogger("edgeminer.jobs")

RUN_KIND = "run"
ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "cancelled")
INTERRUPTED = "interrupted by a restart"
MAX_STORED_ERRORS = 200
MAX_JOBS_IN_MEMORY = 500

JobFn = Callable[["JobContext"], "Mapping[str, Any] | None"]

#: ids of the runners alive in this process: a job this process started is orphaned only if its
#: runner is gone (several runners can share one process, e.g. in tests).
_LIVE_RUNNERS: set[str] = set()


_now = now_iso


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError, OverflowError):
        return False
    return True


def is_orphaned(doc: Mapping[str, Any]) -> bool:
    """True when an active job's process (or runner) no longer exists."""
    if doc.get("status") not in ACTIVE:
        return False
    pid = doc.get("pid")
    if pid is None:
        return False  # written by code that does not say which process owns it: cannot tell
    if doc.get("host") not in (None, socket.gethostname()):
        return True  # another machine (or container) started it; this one restarted after it
    if pid == os.getpid():
        return doc.get("runner") is not None and doc.get("runner") not in _LIVE_RUNNERS
    return not _pid_alive(pid)


class JobCancelled(Exception):
    """Raised by ``ctx.check_cancelled()`` inside a job that was asked to stop."""


@dataclass
class _Job:
    doc: RunDoc
    fn: JobFn
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


class JobStoreView:
    """The store as a job function sees it: everything passes through, except that library code
    recording its own ``run`` document under the job's id (``ingest(..., run_id=ctx.job_id)``) defers to
    the runner, which owns that document (and keeps the fields a restart needs: pid, host, runner)."""

    def __init__(self, store: Store, job_id: str):
        self._store = store
        self._job_id = job_id

    def put_doc(self, dataset: str, kind: str, doc_id: str, doc: Mapping[str, Any], *, name: str = "") -> None:
        if kind == RUN_KIND and doc_id == self._job_id:
            return
        self._store.put_doc(dataset, kind, doc_id, doc, name=name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class JobContext:
    """What a job function sees: its id, dataset, params, the store, and the progress reporters."""

    def __init__(self, runner: JobRunner, job: _Job):
        self._runner = runner
        self._job = job
        self.job_id: str = job.doc["id"]
        self.dataset: str = job.doc["dataset"]
        self.kind: str = job.doc["kind"]
        self.params: dict[str, Any] = dict(job.doc.get("params") or {})
        self.store: Any = JobStoreView(runner.store, self.job_id)
        self._last_write = 0.0

    @property
    def cancelled(self) -> bool:
        return self._job.cancel.is_set()

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise JobCancelled(f"job {self.job_id} was cancelled")

    def progress(self, done: int, total: int | None = None, message: str | None = None) -> None:
        with self._runner._lock:
            prog = self._job.doc["progress"]
            prog["done"] = int(done)
            if total is not None:
                prog["total"] = int(total)
            if message is not None:
                prog["message"] = str(message)
            goal = prog["total"]
            finished = goal is not None and prog["done"] >= goal
        now = time.monotonic()
        if finished or now - self._last_write >= self._runner.progress_interval:
            self._last_write = now
            self._runner._persist(self._job)

    def error(self, item: Any, message: str) -> None:
        """Record one failed item; the job goes on with the rest."""
        with self._runner._lock:
            doc = self._job.doc
            doc["error_count"] = int(doc.get("error_count", 0)) + 1
            if len(doc["errors"]) < MAX_STORED_ERRORS:
                doc["errors"].append({"item": str(item), "message": str(message)})

    def count(self, name: str, n: int = 1) -> None:
        with self._runner._lock:
            counts = self._job.doc["counts"]
            counts[name] = int(counts.get(name, 0)) + int(n)


def _apply_result(doc: RunDoc, returned: Any) -> None:
    """Fold what a job function returned into its document (status ``succeeded``): ``counts``,
    ``errors``, ``error_count``, ``version_read`` and ``version_written`` are lifted to the document,
    the rest becomes ``result``."""
    if returned is None:
        result: JSONObject = {}
    elif isinstance(returned, Mapping):
        result = dict(returned)
    else:
        result = {"value": returned}
    if result.get("version_read") is not None:
        doc["version_read"] = result.pop("version_read")
    if result.get("version_written") is not None:
        doc["version_written"] = result.pop("version_written")
    for name, n in dict(result.pop("counts", None) or {}).items():
        doc["counts"][name] = n
    for err in list(result.pop("errors", None) or []):
        doc["error_count"] = int(doc.get("error_count", 0)) + 1
        if len(doc["errors"]) < MAX_STORED_ERRORS:
            doc["errors"].append(cast(RunError, dict(err)) if isinstance(err, Mapping) else {"message": str(err)})
    if result.get("error_count") is not None:  # the full count when ``errors`` is a sample
        doc["error_count"] = max(int(doc["error_count"]), int(result.pop("error_count")))
    doc["result"] = result
    doc["status"] = "succeeded"
    doc["progress"]["message"] = "done"


class JobRunner:
    """Background job threads with persisted status; see the module docstring."""

    def __init__(
        self,
        store: Store,
        *,
        max_parallel: int = 2,
        progress_interval: float = 1.0,
        mark_interrupted: bool = True,
    ):
        self.store = store
        self.progress_interval = float(progress_interval)
        self.runner_id = uuid.uuid4().hex
        self._lock = threading.RLock()
        self._queues: dict[str, deque[_Job]] = {}
        self._workers: dict[str, threading.Thread] = {}
        self._jobs: dict[str, _Job] = {}
        self._slots = threading.BoundedSemaphore(max(1, int(max_parallel)))
        self._closed = False
        _LIVE_RUNNERS.add(self.runner_id)
        self.marked_at_start: list[RunDoc] = self.mark_interrupted() if mark_interrupted else []

    # -- submitting ---------------------------------------------------------------------------

    def submit(self, dataset: str, kind: str, params: Mapping[str, Any] | None, fn: JobFn, **extra: Any) -> RunDoc:
        """Queue ``fn`` for ``dataset``.

        Parameters
        ----------
        dataset:
            The dataset the job works on (jobs of one dataset run one after the other).
        kind:
            The job kind (``ingest``, ``analyze``, ``export``...).
        params:
            What the job was asked to do, recorded in the document.
        fn:
            ``fn(ctx) -> dict | None``, run in a background thread with a :class:`JobContext`.
        **extra:
            More document keys (e.g. ``resumed_from``).

        Returns
        -------
        RunDoc
            A copy of the job document, status ``queued``.

        Raises
        ------
        Unavailable
            The runner is closed (the server is shutting down).
        DatasetNotFound
            ``dataset`` does not exist.
        """
        if self._closed:
            raise Unavailable("the server is shutting down and takes no new jobs; retry after restart")
        self.store.dataset(dataset)  # DatasetNotFound before anything is queued
        doc = new_run_doc(kind, dataset, params, runner=self.runner_id, **extra)
        job = _Job(doc=doc, fn=fn)
        with self._lock:
            self._jobs[doc["id"]] = job
            self._queues.setdefault(dataset, deque()).append(job)
            self._persist(job)
            if dataset not in self._workers:
                worker = threading.Thread(
                    target=self._drain, args=(dataset,), name=f"edgeminer-jobs-{dataset}", daemon=True
                )
                self._workers[dataset] = worker
                worker.start()
        return self._public(job)

    def _drain(self, dataset: str) -> None:
        while True:
            with self._lock:
                queue = self._queues.get(dataset)
                if not queue:
                    self._workers.pop(dataset, None)
                    return
                job = queue.popleft()
            if job.cancel.is_set():
                continue
            with self._slots:
                self._run(job)

    def _run(self, job: _Job) -> None:
        doc = job.doc
        ctx = JobContext(self, job)
        start = time.monotonic()
        with self._lock:
            doc["status"] = "running"
            doc["started_at"] = _now()
            doc["progress"]["message"] = "running"
        try:
            doc["version_read"] = self.store.version(doc["dataset"])
        except StoreError:
            pass
        self._persist(job)
        try:
            returned = job.fn(ctx)
            with self._lock:
                _apply_result(doc, returned)
        except JobCancelled as exc:
            with self._lock:
                doc["status"] = "cancelled"
                doc["error"] = str(exc)
        except Exception as exc:  # noqa: BLE001 - a job's failure is recorded, never lost
            from edgeminer.service.errors import to_problem

            problem = to_problem(exc, dataset=doc.get("dataset"))  # logs internal errors with a reference
            with self._lock:
                doc["status"] = "failed"
                doc["error"] = problem.detail if problem.status >= 500 else str(exc) or type(exc).__name__
                doc["error_type"] = type(exc).__name__
        finally:
            with self._lock:
                doc["finished_at"] = _now()
                doc["duration_s"] = round(time.monotonic() - start, 3)
                if doc.get("version_written") is None:
                    try:
                        after = self.store.version(doc["dataset"])
                        if after != doc.get("version_read"):
                            doc["version_written"] = after
                    except StoreError:
                        pass
            self._persist(job)
            job.done.set()
            self._forget_old()

    def _forget_old(self) -> None:
        """Keep at most ``MAX_JOBS_IN_MEMORY`` finished jobs in memory (the store keeps them all)."""
        with self._lock:
            finished = [j for j, job in self._jobs.items() if job.done.is_set()]
            for job_id in finished[: max(0, len(finished) - MAX_JOBS_IN_MEMORY)]:
                del self._jobs[job_id]

    def _persist(self, job: _Job) -> None:
        with self._lock:
            snapshot = self._public(job)
        try:
            self.store.put_doc(snapshot["dataset"], RUN_KIND, snapshot["id"], snapshot, name=snapshot["kind"])
        except DatasetNotFound:
            pass  # the dataset was dropped under the job: the in-memory copy still answers GETs
        except Exception:  # noqa: BLE001 - a status write must never kill the job
            log.exception("could not persist job %s", snapshot["id"])

    @staticmethod
    def _public(job: _Job) -> RunDoc:
        doc = job.doc
        return {
            **doc,
            "params": dict(doc["params"]),
            "progress": doc["progress"].copy(),
            "counts": dict(doc["counts"]),
            "errors": [e.copy() for e in doc["errors"]],
        }

    # -- reading ------------------------------------------------------------------------------

    def get(self, job_id: str, dataset: str | None = None) -> RunDoc:
        """The job's document: the live copy for a job of this runner, else the stored one (searched in
        ``dataset``, or every dataset). Raises JobNotFound."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                return self._public(job)
        datasets = [dataset] if dataset else [d.name for d in self.store.list_datasets()]
        for name in datasets:
            try:
                return _clean(self.store.get_doc(name, RUN_KIND, job_id), name)
            except (StoreError, KeyError):
                continue
        raise JobNotFound(job_id)

    def list(
        self,
        *,
        dataset: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[RunDoc]:
        """Jobs newest first (live copies for this runner's jobs, stored docs for the rest)."""
        if dataset is not None:
            self.store.dataset(dataset)  # DatasetNotFound, not an empty list
        names = [dataset] if dataset else [d.name for d in self.store.list_datasets()]
        found: dict[str, RunDoc] = {}
        for name in names:
            try:
                for doc in self.store.list_docs(name, RUN_KIND):
                    found[doc["id"]] = _clean(doc, name)
            except DatasetNotFound:
                continue
        with self._lock:
            for job_id, job in self._jobs.items():
                if job.doc["dataset"] in names:
                    found[job_id] = self._public(job)
        out = [
            d
            for d in found.values()
            if (kind is None or d.get("kind") == kind) and (status is None or d.get("status") == status)
        ]
        out.sort(key=lambda d: (d.get("created_at") or "", d["id"]), reverse=True)
        return out[:limit] if limit is not None else out

    def wait(self, job_id: str, timeout: float | None = None) -> RunDoc:
        """Block until the job finishes (for the CLI and tests); returns its document."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            return self.get(job_id)
        if not job.done.wait(timeout):
            raise TimeoutError(f"job {job_id} still {job.doc['status']} after {timeout} s")
        return self.get(job_id)

    def cancel(self, job_id: str) -> RunDoc:
        """Cancel a queued job now; ask a running one to stop (it checks ``ctx.cancelled``)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                doc = self.get(job_id)  # JobNotFound if unknown
                return doc
            job.cancel.set()
            if job.doc["status"] == "queued":
                queue = self._queues.get(job.doc["dataset"])
                if queue is not None and job in queue:
                    queue.remove(job)
                job.doc["status"] = "cancelled"
                job.doc["error"] = "cancelled before it started"
                job.doc["finished_at"] = _now()
                job.done.set()
        self._persist(job)
        return self.get(job_id)

    # -- restarts -----------------------------------------------------------------------------

    def mark_interrupted(self) -> builtins.list[RunDoc]:
        """Mark jobs a dead process left queued/running as failed; returns the docs it changed."""
        changed: builtins.list[RunDoc] = []
        try:
            datasets = [d.name for d in self.store.list_datasets()]
        except StoreError:
            return []
        for name in datasets:
            try:
                docs = self.store.list_docs(name, RUN_KIND)
            except StoreError:
                continue
            for doc in docs:
                if not is_orphaned(doc):
                    continue
                run = _clean(doc, name)
                run.update(
                    {
                        "status": "failed",
                        "error": INTERRUPTED,
                        "interrupted": True,
                        "finished_at": _now(),
                        "status_before_restart": run["status"],
                    }
                )
                self.store.put_doc(name, RUN_KIND, run["id"], run, name=run["kind"])
                changed.append(run)
                log.warning("job %s (%s on %s) was interrupted by a restart", run["id"], run["kind"], name)
        return changed

    def interrupted(self, kinds: Iterable[str] | None = None, dataset: str | None = None) -> builtins.list[RunDoc]:
        """Jobs failed by a restart that nobody resumed yet, oldest first."""
        wanted = set(kinds) if kinds is not None else None
        docs = [
            d
            for d in self.list(dataset=dataset, status="failed")
            if d.get("interrupted") and not d.get("resumed_by") and (wanted is None or d.get("kind") in wanted)
        ]
        return sorted(docs, key=lambda d: d.get("created_at") or "")

    def resume(self, kinds: Iterable[str], fn_factory: Callable[[RunDoc], JobFn | None]) -> builtins.list[RunDoc]:
        """Resubmit interrupted jobs of ``kinds``: ``fn_factory(old_doc)`` returns the function to run
        (or None to leave that job failed). The new job has the old params and ``resumed_from``."""
        started: builtins.list[RunDoc] = []
        for old in self.interrupted(kinds):
            fn = fn_factory(old)
            if fn is None:
                continue
            try:
                new = self.submit(old["dataset"], old["kind"], old.get("params"), fn, resumed_from=old["id"])
            except StoreError:
                continue
            old = {**old, "resumed_by": new["id"]}
            self.store.put_doc(old["dataset"], RUN_KIND, old["id"], old, name=old["kind"])
            started.append(new)
        return started

    # -- shutdown -----------------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Take no new jobs, cancel the queued ones, give running ones ``timeout`` seconds. A job still
        running after that is left to its (daemon) thread; the next start marks it interrupted."""
        with self._lock:
            self._closed = True
            queued = [job for q in self._queues.values() for job in q]
            for q in self._queues.values():
                q.clear()
            workers = list(self._workers.values())
        for job in queued:
            with self._lock:
                job.doc.update(
                    {"status": "cancelled", "error": "the server shut down before it started", "finished_at": _now()}
                )
                job.done.set()
            self._persist(job)
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        if not any(w.is_alive() for w in workers):
            _LIVE_RUNNERS.discard(self.runner_id)


def _clean(doc: Mapping[str, Any], dataset: str | None = None) -> RunDoc:
    """A stored run doc in the job shape (docs written before ``new_run_doc`` existed may lack fields);
    store bookkeeping keys (``_created_at``...) dropped."""
    out = {k: v for k, v in doc.items() if not k.startswith("_")}
    if dataset is not None:
        out.setdefault("dataset", dataset)
    out.setdefault("kind", "")
    out.setdefault("status", "unknown")
    out.setdefault("params", {})
    out.setdefault("counts", {})
    out.setdefault("errors", [])
    out.setdefault("error_count", len(out.get("errors") or []))
    out.setdefault("created_at", out.get("started_at") or doc.get("_created_at"))
    if not isinstance(out.get("progress"), Mapping):
        out["progress"] = {"done": 0, "total": None, "message": None}
    return cast(RunDoc, out)
