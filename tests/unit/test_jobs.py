"""service/jobs.py: one writer per dataset, persisted status and progress, failures and item errors
recorded, restart marking (a real process killed mid-job), resume, cancel."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edgeminer.indexer.errors import InvalidSource
from edgeminer.indexer.store import Store
from edgeminer.service.errors import JobNotFound
from edgeminer.service.jobs import INTERRUPTED, JobRunner

ROOT = Path(__file__).resolve().parents[2]


def make_ds(store: Store, *names: str) -> None:
    for name in names:
        store.create_dataset(name, dim=2, embedder={"kind": "precomputed"})


@pytest.fixture
def runner(store: Store) -> Any:
    make_ds(store, "a", "b")
    r = JobRunner(store, progress_interval=0.05)
    yield r
    r.close(timeout=10)


def test_jobs_of_one_dataset_run_in_order_one_at_a_time(runner: JobRunner) -> None:
    log: list[tuple[str, str]] = []
    lock = threading.Lock()
    b_running = threading.Event()
    overlap: list[bool] = []

    def job(name: str) -> Any:
        def fn(ctx: Any) -> dict[str, Any]:
            with lock:
                log.append(("start", name))
            if name == "b0":
                b_running.set()
            if name == "a2":  # a's last job sees b running: datasets do not wait for each other
                overlap.append(b_running.wait(10))
            time.sleep(0.1)
            with lock:
                log.append(("end", name))
            return {"name": name}

        return fn

    docs = [runner.submit("a", "test", {"n": n}, job(f"a{n}")) for n in range(3)]
    other = runner.submit("b", "test", {}, job("b0"))
    assert all(d["status"] == "queued" for d in docs)
    results = [runner.wait(d["id"], timeout=20) for d in [*docs, other]]
    assert [r["status"] for r in results] == ["succeeded"] * 4
    a_events = [e for e in log if e[1].startswith("a")]
    assert a_events == [("start", "a0"), ("end", "a0"), ("start", "a1"), ("end", "a1"), ("start", "a2"), ("end", "a2")]
    # b ran alongside a (different dataset): it started before a's last job ended
    assert overlap == [True] and log.index(("start", "b0")) < log.index(("end", "a2"))
    assert results[0]["result"] == {"name": "a0"} and results[0]["params"] == {"n": 0}


def test_status_progress_counts_and_versions_are_persisted(runner: JobRunner, store: Store) -> None:
    gate = threading.Event()

    def fn(ctx: Any) -> dict[str, Any]:
        ctx.progress(1, 4, "first")
        gate.wait(10)
        store.upsert_samples("a", [{"id": "r1", "embedding": [1.0, 0.0]}])
        ctx.count("written", 1)
        ctx.error("row-7", "bad image")
        ctx.progress(4, 4, "last")
        return {"counts": {"rows": 1}, "note": "fine"}

    doc = runner.submit("a", "ingest", {"source": "x"}, fn)
    deadline = time.monotonic() + 10
    while runner.get(doc["id"])["progress"]["done"] != 1:  # the job is inside fn, at the gate
        assert time.monotonic() < deadline
        time.sleep(0.02)
    live = runner.get(doc["id"])
    assert live["status"] == "running" and live["progress"]["total"] == 4 and live["progress"]["message"] == "first"
    assert store.get_doc("a", "run", doc["id"])["status"] == "running"
    gate.set()
    done = runner.wait(doc["id"], timeout=10)
    stored = store.get_doc("a", "run", doc["id"])
    for d in (done, stored):
        assert d["status"] == "succeeded"
        assert d["progress"] == {"done": 4, "total": 4, "message": "done"}
        assert d["counts"] == {"written": 1, "rows": 1}
        assert d["errors"] == [{"item": "row-7", "message": "bad image"}] and d["error_count"] == 1
        assert d["result"] == {"note": "fine"}
        assert d["version_written"] == store.version("a") and d["version_read"] < d["version_written"]
        assert d["started_at"] and d["finished_at"] and d["pid"] == os.getpid()
    fresh = JobRunner(store)  # another runner (as after a restart) reads it from the store
    assert fresh.get(doc["id"])["status"] == "succeeded"
    fresh.close()


def test_progress_writes_are_throttled(store: Store) -> None:
    make_ds(store, "a")
    runner = JobRunner(store, progress_interval=10.0)
    writes: list[int] = []
    real_put = store.put_doc

    def counting_put(*args: Any, **kwargs: Any) -> None:
        writes.append(1)
        real_put(*args, **kwargs)

    store.put_doc = counting_put  # type: ignore[method-assign]

    def fn(ctx: Any) -> None:
        for i in range(500):
            ctx.progress(i, 1000)

    doc = runner.submit("a", "test", {}, fn)
    runner.wait(doc["id"], timeout=20)
    runner.close()
    # queued + running + at most one throttled progress write + finished
    assert len(writes) <= 4


def test_a_failing_job_is_recorded_and_the_queue_goes_on(runner: JobRunner) -> None:
    def boom(ctx: Any) -> None:
        raise InvalidSource("manifest row 3: probs has 2 values, expected 3")

    bad = runner.submit("a", "ingest", {}, boom)
    good = runner.submit("a", "ingest", {}, lambda ctx: {"ok": True})
    bad_doc = runner.wait(bad["id"], timeout=10)
    assert bad_doc["status"] == "failed"
    assert bad_doc["error"] == "manifest row 3: probs has 2 values, expected 3"
    assert runner.wait(good["id"], timeout=10)["status"] == "succeeded"

    for error in (KeyError("internal"), ValueError("internal")):  # bugs, whatever their class

        def bug(ctx: Any, error: Exception = error) -> None:
            raise error

        crashed = runner.wait(runner.submit("a", "x", {}, bug)["id"], timeout=10)
        assert crashed["status"] == "failed" and "reference" in crashed["error"]  # no internals leaked
        assert "internal" not in crashed["error"].replace("internal error", "")


def test_unknown_jobs_and_listing(runner: JobRunner) -> None:
    with pytest.raises(JobNotFound):
        runner.get("nope")
    ids = [runner.submit("a" if n % 2 else "b", f"k{n % 2}", {}, lambda ctx: None)["id"] for n in range(4)]
    for i in ids:
        runner.wait(i, timeout=10)
    listed = runner.list()
    assert {d["id"] for d in listed} == set(ids)
    assert [d["created_at"] for d in listed] == sorted((d["created_at"] for d in listed), reverse=True)
    assert {d["id"] for d in runner.list(dataset="a")} == set(ids[1::2])
    assert {d["id"] for d in runner.list(kind="k0")} == set(ids[0::2])
    assert len(runner.list(limit=1)) == 1


def test_cancel_a_queued_job(runner: JobRunner) -> None:
    gate = threading.Event()
    first = runner.submit("a", "slow", {}, lambda ctx: gate.wait(10))
    ran: list[bool] = []
    second = runner.submit("a", "never", {}, lambda ctx: ran.append(True))
    cancelled = runner.cancel(second["id"])
    assert cancelled["status"] == "cancelled"
    gate.set()
    runner.wait(first["id"], timeout=10)
    time.sleep(0.1)
    assert ran == [] and runner.get(second["id"])["status"] == "cancelled"


CHILD = textwrap.dedent(
    """
    import sys, time
    from edgeminer.indexer.store import Store
    from edgeminer.service.jobs import JobRunner
    store = Store(sys.argv[1])
    runner = JobRunner(store, mark_interrupted=False)
    started = runner.submit("a", "export", {"target": "coco"}, lambda ctx: (ctx.progress(1, 10), time.sleep(600)))
    queued = runner.submit("a", "export", {"target": "yolo"}, lambda ctx: None)
    while store.get_doc("a", "run", started["id"]).get("status") != "running":
        time.sleep(0.02)
    print(started["id"], queued["id"], flush=True)
    time.sleep(600)
    """
)


def test_jobs_of_a_killed_process_are_marked_failed_and_can_resume(store: Store, tmp_path: Path) -> None:
    make_ds(store, "a")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, store.uri], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    try:
        line = child.stdout.readline() if child.stdout else ""
        assert line, "the child process did not start its jobs"
        running_id, queued_id = line.split()
        assert store.get_doc("a", "run", running_id)["status"] == "running"
        # a live process's jobs are left alone
        JobRunner(store).close()
        assert store.get_doc("a", "run", running_id)["status"] == "running"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        if child.stdout:
            child.stdout.close()
    runner = JobRunner(store)  # "restart"
    try:
        marked = {d["id"]: d for d in runner.marked_at_start}
        assert set(marked) == {running_id, queued_id}
        for job_id in (running_id, queued_id):
            doc = runner.get(job_id)
            assert doc["status"] == "failed" and doc["error"] == INTERRUPTED and doc["interrupted"] is True
        assert runner.get(running_id)["progress"]["done"] == 1
        assert marked[queued_id]["status_before_restart"] == "queued"
        # the restart updated the documents the dead process wrote, never added a second copy
        ids = [d["id"] for d in store.list_docs("a", "run")]
        assert sorted(ids) == sorted(set(ids))

        seen: list[dict[str, Any]] = []

        def factory(old: dict[str, Any]) -> Any:
            if old["params"]["target"] != "coco":
                return None  # leave this one failed
            seen.append(old)
            return lambda ctx: {"resumed": ctx.params["target"]}

        resumed = runner.resume(["export"], factory)
        assert len(resumed) == 1 and resumed[0]["resumed_from"] == running_id
        assert runner.wait(resumed[0]["id"], timeout=10)["result"] == {"resumed": "coco"}
        assert runner.get(running_id)["resumed_by"] == resumed[0]["id"]
        assert [d["id"] for d in runner.interrupted(["export"])] == [queued_id]
        assert runner.resume(["export"], factory) == []  # never resumed twice
    finally:
        runner.close()
    again = JobRunner(store)
    assert again.marked_at_start == []  # nothing left active
    again.close()


def test_library_run_docs_under_the_job_id_leave_the_job_doc_alone(runner: JobRunner, store: Store) -> None:
    seen: dict[str, Any] = {}

    def fn(ctx: Any) -> None:
        # what indexer.pipeline.ingest(..., run_id=ctx.job_id) does from inside a job
        ctx.store.put_doc("a", "run", ctx.job_id, {"kind": "ingest", "status": "running"})
        ctx.store.put_doc("a", "export", "e1", {"status": "running"})  # other docs pass through
        seen["stored"] = store.get_doc("a", "run", ctx.job_id)
        seen["version"] = ctx.store.version("a")  # everything else is the store itself

    doc = runner.wait(runner.submit("a", "ingest", {}, fn)["id"], timeout=10)
    assert doc["status"] == "succeeded"
    assert seen["stored"]["pid"] == os.getpid() and seen["stored"]["runner"] == runner.runner_id
    assert seen["stored"]["dataset"] == "a" and seen["version"] == store.version("a")
    assert store.get_doc("a", "export", "e1")["status"] == "running"


def test_finished_jobs_leave_memory_but_stay_readable(runner: JobRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    import edgeminer.service.jobs as jobs_module

    monkeypatch.setattr(jobs_module, "MAX_JOBS_IN_MEMORY", 2)
    ids = [runner.submit("a", "t", {"n": n}, lambda ctx: None)["id"] for n in range(5)]
    for job_id in ids:
        runner.wait(job_id, timeout=10)
    assert len(runner._jobs) <= 3
    assert [runner.get(i)["params"]["n"] for i in ids] == [0, 1, 2, 3, 4]  # from the store
