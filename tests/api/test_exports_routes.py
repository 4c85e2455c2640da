"""Exports and labels over HTTP, against real servers on 127.0.0.1: the job flow, idempotence,
download, errors, the API key, labels upload, and a server killed mid-export (SIGKILL of a real
server process) whose restart finishes the export without duplicating or losing rows."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from exportdata import build_classification, build_detection
from servers import free_port

from edgeminer.indexer.store import Store
from edgeminer.service.export.common import ExportRequest
from edgeminer.service.export.runner import export_path, plan_export
from edgeminer.service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _wait_export(client: httpx.Client, url: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.get(url).json()
        if view["status"] in ("done", "failed", "interrupted", "cancelled"):
            return view
        time.sleep(0.05)
    raise AssertionError(f"export still {view['status']} after {timeout} s")


def test_export_job_flow(api_settings: Settings, live_server: Callable[..., str], tmp_path: Path) -> None:
    store = Store(api_settings.data_dir)
    cls = build_classification(store, tmp_path / "media" / "cls")
    base = live_server(api_settings)
    with httpx.Client(base_url=base + "/api/v1", timeout=30) as client:
        body = {"target": "label_studio", "ids": cls.ids, "media": "url", "chunk_size": 4}
        r = client.post("/datasets/cls/exports", json=body)
        assert r.status_code == 202, r.text
        first = r.json()
        view = _wait_export(client, f"/datasets/cls/exports/{first['id']}")
        assert view["status"] == "done" and view["rows_exported"] == len(cls.ids)
        assert view["job"]["status"] == "succeeded" and view["chunks_done"] == 3
        assert "path" not in view and view["zip"] == f"{first['id']}.zip"
        # the same request again: the same export and job, nothing new queued
        again = client.post("/datasets/cls/exports", json=body)
        assert again.status_code == 200 and again.json()["id"] == first["id"]
        assert again.json()["job_id"] == view["job_id"]
        forced = client.post("/datasets/cls/exports", json={**body, "force": True})
        assert forced.status_code == 202 and forced.json()["id"] != first["id"]
        _wait_export(client, f"/datasets/cls/exports/{forced.json()['id']}")
        listed = client.get("/datasets/cls/exports").json()
        assert [e["id"] for e in listed] == [forced.json()["id"], first["id"]] and "ids" not in listed[0]
        assert client.get(f"/datasets/cls/exports/{first['id']}", params={"ids": True}).json()["ids"] == cls.ids

        dl = client.get(f"/datasets/cls/exports/{first['id']}/download")
        assert dl.status_code == 200 and dl.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(dl.content)) as zf:
            assert sorted(zf.namelist()) == ["export.json", "labeling_config.xml", "tasks.json"]
            tasks = json.loads(zf.read("tasks.json"))
        # media by URL: this server's own media route, which serves the image
        image_url = tasks[0]["data"]["image"]
        assert image_url == f"{base}/api/v1/datasets/cls/media/{cls.ids[0]}?size=full"
        img = client.get(image_url)
        assert img.status_code == 200 and img.content == Path(cls.rows[cls.ids[0]]["uri"]).read_bytes()
    tags = store.get_samples("cls", cls.ids, columns=["exported"])["exported"].to_pylist()
    assert all(sorted(t) == sorted([first["id"], forced.json()["id"]]) for t in tags)


def test_export_errors(api_settings: Settings, live_server: Callable[..., str], tmp_path: Path) -> None:
    store = Store(api_settings.data_dir)
    cls = build_classification(store, tmp_path / "media" / "cls")
    build_detection(store, tmp_path / "media" / "det")
    pending, _ = plan_export(store, "cls", ExportRequest(target="csv", ids=cls.ids[:2]), data_dir=api_settings.data_dir)
    base = live_server(api_settings)
    with httpx.Client(base_url=base + "/api/v1", timeout=30) as client:
        cases = [
            ({"target": "csv", "ids": ["nope"]}, 422, "not in dataset 'cls'"),
            ({"target": "csv", "ids": cls.ids[:1], "issue": "x"}, 422, "exactly one selection"),
            ({"target": "csv", "issue": "no-such-issue"}, 404, "no-such-issue"),
            ({"target": "csv", "filter": [{"field": "nope", "value": 1}]}, 422, "unknown field 'nope'"),
            ({"target": "excel", "ids": cls.ids[:1]}, 422, "target"),
        ]
        for body, code, text in cases:
            r = client.post("/datasets/cls/exports", json=body)
            assert r.status_code == code and text in r.json()["detail"], (body, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
        r = client.post(
            "/datasets/det/exports", json={"target": "coco", "filter": [], "ids": ["photo-0#0"], "media": "url"}
        )
        assert r.status_code == 422 and "needs media_base_url" in r.json()["detail"]
        assert client.post("/datasets/nope/exports", json={"target": "csv", "ids": ["a"]}).status_code == 404
        assert client.get("/datasets/cls/exports/exp-000000000000").status_code == 404
        r = client.get(f"/datasets/cls/exports/{pending['id']}/download")
        assert r.status_code == 409 and "not done" in r.json()["detail"]
    # a document pointing outside the exports folder is never served
    doc = store.get_doc("cls", "export", pending["id"])
    doc.update(status="done", zip=str(Path(cls.rows[cls.ids[0]]["uri"])))
    store.put_doc("cls", "export", pending["id"], {k: v for k, v in doc.items() if not k.startswith("_")})
    with httpx.Client(base_url=base + "/api/v1", timeout=30) as client:
        assert client.get(f"/datasets/cls/exports/{pending['id']}/download").status_code == 404


def test_labels_upload_and_api_key(api_settings: Settings, live_server: Callable[..., str], tmp_path: Path) -> None:
    store = Store(api_settings.data_dir)
    cls = build_classification(store, tmp_path / "media" / "cls")
    pool = [i for i in cls.ids if not cls.rows[i]["labeled"]]
    base = live_server(api_settings, api_key="s3cret")
    csv_text = "id,label\n" + "".join(f"{i},bird\n" for i in pool[:3]) + "ghost,cat\n"
    with httpx.Client(base_url=base + "/api/v1", timeout=30) as client:
        files = {"file": ("labels.csv", csv_text.encode(), "text/csv")}
        assert client.post("/datasets/cls/labels", files=files).status_code == 401
        assert client.post("/datasets/cls/exports", json={"target": "csv", "ids": pool}).status_code == 401
        assert client.get("/datasets/cls/exports").status_code == 200  # reads stay open
        key = {"X-API-Key": "s3cret"}
        r = client.post("/datasets/cls/labels", files=files, data={"split": "val"}, headers=key)
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["matched"] == 3 and report["unmatched_count"] == 1 and report["format"] == "csv"
        assert report["labeled_after"] == report["labeled_before"] + 3 and report["job_id"]
        rows = store.get_samples("cls", pool[:3], columns=["label", "split", "labeled"]).to_pylist()
        assert rows == [{"label": "bird", "split": "val", "labeled": True}] * 3
        bad = client.post(
            "/datasets/cls/labels", files={"file": ("x.csv", b"name,label\nq,cat\n", "text/csv")}, headers=key
        )
        assert bad.status_code == 422 and "'id' or 'uri' column" in bad.json()["detail"]
        bad = client.post("/datasets/cls/labels", files={"file": ("x.json", b"{nope", "application/json")}, headers=key)
        assert bad.status_code == 422 and "not valid JSON" in bad.json()["detail"]


# -- killing a real server mid-export ------------------------------------------------------------



def _serve(data_dir: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "EDGEMINER_UI_DIR": str(log.parent / "no-ui")}
    return subprocess.Popen(
        [sys.executable, "-m", "edgeminer.service.cli", "--data-dir", data_dir, "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not come up")


def test_killed_server_resumes_the_export(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "db")
    store = Store(data_dir)
    n = 600  # 300 chunks: far more than the poll below can miss on a fast, quiet machine
    cls = build_classification(store, tmp_path / "media", n=n)
    log = tmp_path / "server.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    body = {"target": "coco", "ids": cls.ids, "media": "copy", "chunk_size": 2}
    proc = _serve(data_dir, port, log)
    try:
        _wait_up(url, proc)
        r = httpx.post(url + "/api/v1/datasets/cls/exports", json=body, timeout=30)
        assert r.status_code == 202, r.text
        export_id = r.json()["id"]
        deadline = time.monotonic() + 60
        while True:
            view = httpx.get(f"{url}/api/v1/datasets/cls/exports/{export_id}", timeout=10).json()
            if view["chunks_done"] >= 3:
                break
            assert time.monotonic() < deadline, "the export made no progress"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    killed_at = store.get_doc("cls", "export", export_id)
    assert killed_at["status"] == "running", "the export finished before the kill; make it longer"
    assert 3 <= killed_at["chunks_done"] < killed_at["chunks_total"]
    folder = export_path(killed_at, "path", data_dir=data_dir, dataset="cls")  # stored relative to the exports
    parts_before = len(list((folder / "parts").glob("*.jsonl")))
    assert parts_before >= 3

    proc = _serve(data_dir, port, log)
    try:
        _wait_up(url, proc)
        with httpx.Client(base_url=url + "/api/v1", timeout=30) as client:
            view = _wait_export(client, f"/datasets/cls/exports/{export_id}", timeout=120)
            assert view["status"] == "done", view
            assert view["chunks_resumed"] >= parts_before
            assert view["job"]["resumed_from"] == killed_at["job_id"]
            assert view["rows_exported"] == n and view["media_errors"] == 0
            again = client.post("/datasets/cls/exports", json=body)
            assert again.status_code == 200 and again.json()["id"] == export_id
            dl = client.get(f"/datasets/cls/exports/{export_id}/download")
            with zipfile.ZipFile(io.BytesIO(dl.content)) as zf:
                coco = json.loads(zf.read("annotations/instances_default.json"))
                images = [name for name in zf.namelist() if name.startswith("images/default/")]
        keys = [img["edgeminer_id"] for img in coco["images"]]
        assert sorted(keys) == sorted(cls.ids) and len(set(keys)) == n  # none lost, none twice
        assert len(images) == n
        preds = json.loads((folder / "predictions.json").read_text())
        assert len(preds) == n
        tags = store.get_samples("cls", cls.ids, columns=["exported"])["exported"].to_pylist()
        assert all(t == [export_id] for t in tags)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
