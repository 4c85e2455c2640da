"""Jobs over HTTP: get, list with filters, cancel, unknown ids, and a job left running by a dead
server shown as failed after a restart."""

from __future__ import annotations

import threading
from collections.abc import Callable

from fastapi.testclient import TestClient

from edgeminer.indexer.store import Store
from edgeminer.service.jobs import INTERRUPTED
from edgeminer.service.settings import Settings


def test_get_list_cancel(api_settings: Settings, make_client: Callable[..., TestClient]) -> None:
    store = Store(api_settings.data_dir)
    store.create_dataset("d", dim=2, embedder={"kind": "precomputed"})
    client = make_client(api_settings)
    jobs = client.app.state.jobs  # type: ignore[attr-defined]
    gate = threading.Event()
    slow = jobs.submit(
        "d", "analyze", {"seed": 1}, lambda ctx: {"waited": (ctx.progress(2, 5, "umap"), gate.wait(10))[1]}
    )
    queued = jobs.submit("d", "export", {"target": "csv"}, lambda ctx: {"rows": 3})
    try:
        got = client.get(f"/api/v1/jobs/{slow['id']}").json()
        assert got["kind"] == "analyze" and got["params"] == {"seed": 1} and got["dataset"] == "d"
        listed = client.get("/api/v1/jobs").json()
        assert [j["id"] for j in listed] == [queued["id"], slow["id"]]
        assert [j["id"] for j in client.get("/api/v1/jobs", params={"kind": "export"}).json()] == [queued["id"]]
        assert client.get("/api/v1/jobs", params={"status": "succeeded"}).json() == []
        cancelled = client.post(f"/api/v1/jobs/{queued['id']}/cancel").json()
        assert cancelled["status"] == "cancelled"
    finally:
        gate.set()
    done = jobs.wait(slow["id"], timeout=10)
    assert done["status"] == "succeeded"
    assert client.get(f"/api/v1/jobs/{slow['id']}").json()["progress"]["message"] == "done"


def test_unknown_jobs(api_client: TestClient) -> None:
    resp = api_client.get("/api/v1/jobs/nope")
    assert resp.status_code == 404 and resp.json()["type"].endswith("job-not-found")
    assert api_client.post("/api/v1/jobs/nope/cancel").status_code == 404
    assert api_client.get("/api/v1/jobs", params={"dataset": "nope"}).status_code == 404
    assert api_client.get("/api/v1/jobs").json() == []
    assert api_client.get("/api/v1/jobs", params={"limit": 0}).status_code == 422


def test_a_restart_marks_jobs_of_a_dead_server_failed(
    api_settings: Settings, make_client: Callable[..., TestClient]
) -> None:
    store = Store(api_settings.data_dir)
    store.create_dataset("d", dim=2, embedder={"kind": "precomputed"})
    # what a server killed mid-ingest leaves behind: a running job owned by a process that is gone
    store.put_doc(
        "d",
        "run",
        "j1",
        {
            "id": "j1",
            "kind": "ingest",
            "dataset": "d",
            "status": "running",
            "pid": 2**22 + 12345,
            "host": __import__("socket").gethostname(),
            "runner": "old",
            "created_at": "2026-01-01T00:00:00+00:00",
        },
    )
    client = make_client(api_settings)
    job = client.get("/api/v1/jobs/j1").json()
    assert job["status"] == "failed" and job["error"] == INTERRUPTED and job["interrupted"] is True
