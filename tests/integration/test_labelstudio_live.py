"""Label Studio, live, against a real Label Studio 1.23 on 127.0.0.1 (tests/labelstudio_server.py).

A selection is pushed (CLI, images through Label Studio's local files), the project holds one task per
row with the model's prediction as pre-label, a second push adds nothing, the tasks are answered
through Label Studio's API as a labeler would, and `labels pull` labels the rows in edgeminer. The API
route pair does the same with images served by edgeminer's own media route (a live edgeminer server).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from exportdata import CLASSES, build_classification
from labelstudio_server import LabelStudio
from servers import LiveServer

from edgeminer.indexer.store import Store
from edgeminer.service.cli import main
from edgeminer.service.export.labelstudio_live import (
    LabelStudioClient,
    PullResult,
    PushReport,
    Server,
    _send_batches,
    pull,
    watch,
)

pytestmark = pytest.mark.slow
TOKEN_VAR = "EDGEMINER_TEST_LS_TOKEN"


def _project(ls: LabelStudio, title: str) -> dict[str, Any]:
    with ls.client() as c:
        found = [p for p in c.get("/api/projects/", params={"page_size": 100}).json()["results"] if p["title"] == title]
    assert len(found) == 1, f"projects titled {title!r}: {len(found)}"
    return dict(found[0])


def _tasks(ls: LabelStudio, project_id: int) -> list[dict[str, Any]]:
    with ls.client() as c:
        body = c.get("/api/tasks/", params={"project": project_id, "page_size": 1000, "fields": "all"}).json()
    return list(body["tasks"])


def _answer(ls: LabelStudio, task_id: int, label: str) -> None:
    """What the labeling UI sends when a labeler picks ``label`` and submits."""
    result = [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]
    with ls.client() as c:
        resp = c.post(f"/api/tasks/{task_id}/annotations/", json={"result": result, "lead_time": 2.5})
    assert resp.status_code == 201, resp.text


def _cli(store: Store, *args: str) -> int:
    return main(["--data-dir", str(store.uri), *args])


def test_push_answer_pull_through_the_cli(
    label_studio: LabelStudio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ls = label_studio
    monkeypatch.setenv(TOKEN_VAR, ls.token)
    store = Store(tmp_path / "db")
    built = build_classification(store, ls.document_root / "cli-cls")  # images under LOCAL_FILES_DOCUMENT_ROOT
    unlabeled = [i for i in built.ids if not built.rows[i]["labeled"]]
    push = ["export", "--dataset", "cls", "--target", "label_studio", "--media", "relative"]
    push += ["--media-root", str(ls.document_root), "--to-server", ls.url, "--project", "edgeminer cli"]
    push += ["--token-env", TOKEN_VAR, "--batch-size", "2", "--quiet"]

    assert _cli(store, *push, "--ids", ",".join(unlabeled[:4])) == 0
    out = capsys.readouterr()
    assert "4 tasks sent to Label Studio project 'edgeminer cli'" in out.out
    assert f"LOCAL_FILES_DOCUMENT_ROOT={ls.document_root.resolve()}" in out.out
    project = _project(ls, "edgeminer cli")
    assert all(f'<Choice value="{c}"/>' in project["label_config"] for c in CLASSES)

    # again, with two more rows: only those two are new, nothing is duplicated
    assert _cli(store, *push, "--ids", ",".join(unlabeled)) == 0
    assert "2 tasks sent to Label Studio project 'edgeminer cli' (id" in (text := capsys.readouterr().out)
    assert "4 already there" in text
    assert _cli(store, *push, "--ids", ",".join(unlabeled), "--json") == 0
    again = json.loads(capsys.readouterr().out)
    assert again["pushed"] == 0 and again["skipped_existing"] == len(unlabeled)
    tasks = _tasks(ls, project["id"])
    assert sorted(t["data"]["edgeminer_id"] for t in tasks) == sorted(unlabeled)

    # the pre-labels are the model's predictions, and Label Studio serves every image to the labelers
    with ls.client() as c:
        for task in tasks:
            row = built.rows[task["data"]["edgeminer_id"]]
            (pred,) = task["predictions"]
            assert pred["model_version"] == "m-1"
            assert pred["result"][0]["value"]["choices"] == [row["pred_label"]]
            image = c.get(task["data"]["image"])
            assert image.status_code == 200 and image.headers["content-type"] == "image/png"
            assert image.content == Path(row["uri"]).read_bytes()

    # labelers answer (the truth is the class the id's number gives; some differ from the model)
    truth = {sid: CLASSES[(int(sid[-3:]) + 1) % 3] for sid in unlabeled}
    by_id = {t["data"]["edgeminer_id"]: t["id"] for t in tasks}
    for sid in unlabeled[:5]:
        _answer(ls, by_id[sid], truth[sid])

    assert _cli(store, "labels", "pull", "--dataset", "cls", "--project", "edgeminer cli", "--from-server", ls.url,
                "--token-env", TOKEN_VAR, "--split", "train") == 0  # fmt: skip
    out = capsys.readouterr()
    assert "5 annotated tasks, 5 new; 5 rows labeled from 5 entries" in out.out
    assert ls.token not in out.out + out.err
    rows = {r["id"]: r for r in Store(store.uri).get_samples("cls", unlabeled).to_pylist()}
    for sid in unlabeled[:5]:
        assert rows[sid]["labeled"] and rows[sid]["label"] == truth[sid] and rows[sid]["split"] == "train"
        assert rows[sid]["correct"] == (truth[sid] == rows[sid]["pred_label"])
    assert not rows[unlabeled[5]]["labeled"]  # not answered yet

    # background sync: the second poll imports only the task answered in between
    server = Server(ls.url, ls.token)
    seen: list[PullResult] = []

    def between(result: PullResult) -> None:
        seen.append(result)
        if len(seen) == 1:
            _answer(ls, by_id[unlabeled[5]], truth[unlabeled[5]])

    polls = watch(lambda s: pull(store, "cls", server, "edgeminer cli", seen=s), 0.1, polls=2, on_result=between)
    assert polls == 2 and [r.new_tasks for r in seen] == [5, 1]
    assert seen[1].report is not None and seen[1].report.matched == 1
    assert Store(store.uri).get_samples("cls", [unlabeled[5]]).to_pylist()[0]["label"] == truth[unlabeled[5]]
    # the same sync from the command line: the first poll imports every annotated task, the next none
    capsys.readouterr()
    assert _cli(store, "labels", "pull", "--dataset", "cls", "--project", "edgeminer cli", "--from-server", ls.url,
                "--token-env", TOKEN_VAR, "--watch", "0.1", "--polls", "2", "--json") == 0  # fmt: skip
    text, decoder, results = capsys.readouterr().out, json.JSONDecoder(), []
    while text.strip():
        obj, end = decoder.raw_decode(text.lstrip())
        results.append(obj)
        text = text.lstrip()[end:]
    assert [(r["annotated_tasks"], r["new_tasks"]) for r in results] == [(6, 6), (6, 0)]
    assert results[0]["report"]["changed"] == 0 and results[1]["report"] is None  # labels already in
    docs = json.dumps([Store(store.uri).dataset("cls").list_docs(k) for k in ("export", "run")], default=str)
    assert ls.token not in docs


def test_a_refused_batch_is_reported_and_the_rest_lands(label_studio: LabelStudio) -> None:
    ls = label_studio
    with LabelStudioClient(ls.url, ls.token) as client:
        config = '<View><Image name="image" value="$image"/><Choices name="label" toName="image">'
        config += '<Choice value="cat"/></Choices></View>'
        pid = int(client.create_project("edgeminer batches", config)["id"])
        good = [{"data": {"image": f"http://127.0.0.1:9/{k}.png", "edgeminer_id": f"r{k}"}} for k in range(5)]
        bad = {"data": {"edgeminer_id": "no-image"}}  # no $image: Label Studio refuses the batch holding it
        report = PushReport("ds", "edgeminer batches", pid, "", "exp", True)
        _send_batches(client, pid, [*good[:2], bad, *good[2:]], 2, report, None)
        assert report.batches == 3 and report.pushed == 4 and report.failed == 2
        (failed,) = report.failed_batches
        assert failed["batch"] == 2 and failed["first_id"] == "no-image" and failed["last_id"] == "r2"
        assert failed["message"].startswith("Label Studio answered 400 to POST /api/projects/")
        assert sorted(str(t["data"]["edgeminer_id"]) for t in client.tasks(pid)) == ["r0", "r1", "r3", "r4"]


def _wait_job(base: str, job_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{base}/api/v1/jobs/{job_id}", timeout=30).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return dict(job)
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def test_push_and_pull_through_the_api_with_edgeminer_media_urls(label_studio: LabelStudio, tmp_path: Path) -> None:
    from edgeminer.service.api.app import create_app
    from edgeminer.service.settings import Settings

    ls = label_studio
    store = Store(tmp_path / "db")
    built = build_classification(store, tmp_path / "media")
    settings = Settings(
        data_dir=str(tmp_path / "db"),
        cache_dir=str(tmp_path / "cache"),
        ui_dir=str(tmp_path / "no-ui"),
        label_studio_url=ls.url,
        label_studio_token=ls.token,
    )
    server = LiveServer(create_app(settings, store=store))
    server.start()
    try:
        ids = built.ids[6:9]
        resp = httpx.post(
            f"{server.url}/api/v1/datasets/cls/label_studio/push", json={"project": "edgeminer api", "ids": ids}
        )
        assert resp.status_code == 202, resp.text
        job = _wait_job(server.url, resp.json()["id"])
        assert job["status"] == "succeeded", job
        assert job["counts"] == {"pushed": 3, "skipped_existing": 0, "failed": 0}
        tasks = _tasks(ls, _project(ls, "edgeminer api")["id"])
        assert len(tasks) == 3
        for task in tasks:  # option (a): the labelers' browsers load edgeminer's media route
            sid = task["data"]["edgeminer_id"]
            assert task["data"]["image"] == f"{server.url}/api/v1/datasets/cls/media/{sid}?size=full"
            image = httpx.get(task["data"]["image"], timeout=30)
            assert image.status_code == 200 and image.headers["content-type"].startswith("image/")
        _answer(ls, tasks[0]["id"], "bird")
        resp = httpx.post(f"{server.url}/api/v1/datasets/cls/label_studio/pull", json={"project": "edgeminer api"})
        assert resp.status_code == 202, resp.text
        job = _wait_job(server.url, resp.json()["id"])
        assert job["status"] == "succeeded", job
        assert job["counts"] == {"matched": 1, "unmatched": 0}
        row = Store(store.uri).get_samples("cls", [tasks[0]["data"]["edgeminer_id"]]).to_pylist()[0]
        assert row["labeled"] and row["label"] == "bird"
        jobs = httpx.get(f"{server.url}/api/v1/jobs", params={"dataset": "cls"}, timeout=30).text
        assert ls.token not in jobs and "label_studio_push" in jobs
    finally:
        server.stop()
