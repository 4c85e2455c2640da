"""The Export tab's "Send to Label Studio" / "Pull labels" (issue 13), in Debian Chromium against a real
`edgeminer serve`: without a Label Studio configured the actions are disabled with a hint naming the
settings; with one, the rows just mined are pushed (predictions as pre-labels), pushed again (nothing
duplicated), answered, and pulled back into the dataset.

The Label Studio here is a FAKE: a small stdlib ``http.server`` on 127.0.0.1 implementing only the calls
``service/export/labelstudio_live.py`` makes (projects list / create / update, tasks list, import,
local-files storages, JSON export), checking the token. It stands in for the server so the dashboard can
be tested without Label Studio installed; the round trip against a real Label Studio is
tests/integration/test_labelstudio_live.py. Data: a private copy of the analyzed demo."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from e2e_support import Server, mine_from_cluster, start_server, stop_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

READY = "window.edgeminer && window.edgeminer.ready"
TOKEN = "fake-ls-token-7f3a"
PROJECT = "demo e2e round 1"


class FakeLabelStudio:
    """Projects and tasks in memory, served as Label Studio's REST API answers them (the subset edgeminer
    uses). ``requests`` records (method, path) of every call; ``tokens`` the Authorization headers seen."""

    def __init__(self) -> None:
        self.projects: list[dict[str, Any]] = []
        self.tasks: dict[int, list[dict[str, Any]]] = {}
        self.storages: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.tokens: set[str] = set()
        self.lock = threading.Lock()
        self.next_task = 1
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                fake.handle(self, "GET")

            def do_POST(self) -> None:
                fake.handle(self, "POST")

            def do_PATCH(self) -> None:
                fake.handle(self, "PATCH")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeLabelStudio:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def project(self, title: str) -> dict[str, Any]:
        return next(p for p in self.projects if p["title"] == title)

    def handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(req.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        length = int(req.headers.get("Content-Length") or 0)
        body = json.loads(req.rfile.read(length)) if length else None
        with self.lock:
            self.requests.append((method, parts.path))
            self.tokens.add(req.headers.get("Authorization", ""))
            if req.headers.get("Authorization") != f"Token {TOKEN}":
                status, answer = 401, {"detail": "Authentication credentials were not provided."}
            else:
                status, answer = self.route(method, parts.path.rstrip("/").split("/")[1:], query, body)
        data = json.dumps(answer).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def route(self, method: str, path: list[str], query: dict[str, str], body: Any) -> tuple[int, Any]:
        if path == ["api", "projects"]:
            if method == "POST":
                proj = {"id": len(self.projects) + 1, "title": body["title"], "label_config": body["label_config"]}
                self.projects.append(proj)
                self.tasks[proj["id"]] = []
                return 201, proj
            return 200, {"count": len(self.projects), "next": None, "previous": None, "results": self.projects}
        if path[:2] == ["api", "projects"] and len(path) == 3 and method == "PATCH":
            proj = self.projects[int(path[2]) - 1]
            proj.update(body)
            return 200, proj
        if path[:2] == ["api", "projects"] and len(path) == 4 and path[3] == "import":
            return 201, {"task_count": self.import_tasks(int(path[2]), body)}
        if path[:2] == ["api", "projects"] and len(path) == 4 and path[3] == "export":
            assert query.get("exportType") == "JSON"
            return 200, [t for t in self.tasks[int(path[2])] if t["annotations"]]
        if path == ["api", "tasks"]:
            tasks = self.tasks[int(query["project"])]
            page, size = int(query.get("page", 1)), int(query.get("page_size", 100))
            chunk = [{"id": t["id"], "data": t["data"]} for t in tasks[(page - 1) * size : page * size]]
            return 200, {"total": len(tasks), "tasks": chunk}
        if path == ["api", "storages", "localfiles"]:
            if method == "POST":
                self.storages.append(body)
                return 201, body
            return 200, [s for s in self.storages if str(s["project"]) == query.get("project")]
        return 404, {"detail": f"the fake Label Studio has no {method} /{'/'.join(path)}"}

    def import_tasks(self, pid: int, tasks: list[dict[str, Any]]) -> int:
        for task in tasks:
            self.tasks[pid].append({**task, "id": self.next_task, "annotations": []})
            self.next_task += 1
        return len(tasks)

    def answer(self, pid: int, edgeminer_id: str, label: str) -> None:
        """A labeler's annotation: the task's pre-label with ``label`` chosen instead."""
        with self.lock:
            task = next(t for t in self.tasks[pid] if t["data"]["edgeminer_id"] == edgeminer_id)
            result = [{**r, "value": {"choices": [label]}} for r in task["predictions"][0]["result"]]
            ann = {"id": 1000 + task["id"], "result": result, "was_cancelled": False, "updated_at": "2026-01-01"}
            task["annotations"] = [ann]


@pytest.fixture(scope="module")
def demo_copy_mod(browser_ok: None, demo_env: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return demo_env.copy(tmp_path_factory.mktemp("labelstudio-e2e"))


@contextmanager
def serve(demo: Any, log: Path, ls_url: str | None) -> Iterator[Server]:
    """`edgeminer serve` on the demo copy, with the Label Studio settings in its environment or without."""
    with pytest.MonkeyPatch.context() as mp:
        for var in ("EDGEMINER_LABEL_STUDIO_URL", "EDGEMINER_LABEL_STUDIO_TOKEN"):
            mp.delenv(var, raising=False)
        if ls_url:
            mp.setenv("EDGEMINER_LABEL_STUDIO_URL", ls_url)
            mp.setenv("EDGEMINER_LABEL_STUDIO_TOKEN", TOKEN)
        srv = start_server(demo.data_dir, log, media_roots=(demo.demo_dir,))
    try:
        yield srv
    finally:
        stop_server(srv)


def open_dataset(page: Any, url: str) -> None:
    page.goto(f"{url}/?dataset=demo")
    page.wait_for_function(READY, timeout=60_000)
    page.wait_for_function("edgeminer.state.labelStudio !== null", timeout=10_000)


def mine_from_top_cluster(page: Any, budget: int = 8) -> list[str]:
    cid = page.locator("#cluster-table tbody tr").first.get_attribute("data-cluster")
    return mine_from_cluster(page, int(cid), budget)


def wait_card(page: Any, attr: str, n: int) -> str:
    """The text of the n-th Label Studio job card (1: the oldest) once it ended (`data-<attr>` set or failed)."""
    sel = f"#export-jobs .ls-job:nth-last-child({n})"
    page.wait_for_selector(f"{sel}[data-{attr}], {sel}.failed", timeout=120_000)
    return page.inner_text(sel)  # type: ignore[no-any-return]


def assert_no_js_errors(page: Any) -> None:
    errors = [e for e in page.js_errors if "favicon" not in e]
    assert not errors, "\n".join(errors)


def test_without_label_studio_the_actions_are_disabled_with_a_hint(
    demo_copy_mod: Any, page: Any, tmp_path: Path, artifacts: Path
) -> None:
    with serve(demo_copy_mod, tmp_path / "serve.log", None) as srv:
        assert httpx.get(srv.api("/health")).json()["label_studio"] is False
        open_dataset(page, srv.url)
        page.click(".tabs button[data-tab=export]")
        assert page.is_disabled("#ls-push") and page.is_disabled("#ls-pull")
        assert page.is_disabled("#ls-form input[name=project]")
        assert page.is_enabled("#export-form button[type=submit]")  # the file export still works
        hint = page.inner_text("#ls-hint")
        assert page.is_visible("#ls-hint")
        assert "EDGEMINER_LABEL_STUDIO_URL" in hint and "EDGEMINER_LABEL_STUDIO_TOKEN" in hint
        page.screenshot(path=str(artifacts / "labelstudio-disabled.png"))
        assert_no_js_errors(page)


def test_push_the_mined_rows_then_pull_the_answers(
    demo_copy_mod: Any, page: Any, tmp_path: Path, artifacts: Path
) -> None:
    with FakeLabelStudio() as ls, serve(demo_copy_mod, tmp_path / "serve.log", ls.url) as srv:
        assert httpx.get(srv.api("/health")).json()["label_studio"] is True
        open_dataset(page, srv.url)
        mined = mine_from_top_cluster(page)
        assert mined
        page.click(".tabs button[data-tab=export]")
        assert page.input_value("#export-form select[name=source]") == "mined"
        assert page.is_hidden("#ls-hint") and page.is_enabled("#ls-push")
        assert page.input_value("#ls-form input[name=project]") == "demo round 1"  # nothing used yet
        page.fill("#ls-form input[name=project]", PROJECT)
        with page.expect_request(lambda r: r.url.endswith("/label_studio/push") and r.method == "POST") as req:
            page.click("#ls-push")
        body = req.value.post_data_json
        assert body["project"] == PROJECT and sorted(body["ids"]) == sorted(mined) and body["media"] == "url"
        text = wait_card(page, "pushed", 1)
        assert f"{len(mined)} tasks created, 0 already there, no batch refused" in text, text
        page.screenshot(path=str(artifacts / "labelstudio-pushed.png"))

        # the fake received every mined row once, with the model's prediction as the pre-label
        pid = ls.project(PROJECT)["id"]
        tasks = ls.tasks[pid]
        assert sorted(t["data"]["edgeminer_id"] for t in tasks) == sorted(mined)
        for task in tasks:
            (pred,) = task["predictions"]
            assert pred["result"] and pred["result"][0]["value"]["choices"]
            assert task["data"]["image"].startswith(f"{srv.url}/api/v1/datasets/demo/media/")
        assert ls.tokens == {f"Token {TOKEN}"}

        # again: nothing is duplicated
        page.click("#ls-push")
        text = wait_card(page, "pushed", 2)
        assert f"0 tasks created, {len(mined)} already there" in text, text
        assert len(ls.tasks[pid]) == len(mined)

        # labelers answer three rows (a class the model did not predict), the dashboard pulls them
        classes = httpx.get(srv.api("/datasets/demo")).json()["classes"]
        answers = {}
        for task in tasks[:3]:
            predicted = task["predictions"][0]["result"][0]["value"]["choices"][0]
            answers[task["data"]["edgeminer_id"]] = next(c for c in classes if c != predicted)
            ls.answer(pid, task["data"]["edgeminer_id"], answers[task["data"]["edgeminer_id"]])
        page.reload()
        page.wait_for_function(READY, timeout=60_000)
        page.wait_for_function("edgeminer.state.labelStudio === true", timeout=10_000)
        page.click(".tabs button[data-tab=export]")
        assert page.input_value("#ls-form input[name=project]") == PROJECT  # the project last used
        page.click("#ls-pull")
        text = wait_card(page, "matched", 1)
        assert "3 annotated tasks: 3 rows labeled" in text, text
        assert page.locator("#export-jobs .ls-job button", has_text="Reload the dataset").count() == 1
        page.screenshot(path=str(artifacts / "labelstudio-pulled.png"))
        for sid, label in answers.items():
            row = httpx.get(srv.api(f"/datasets/demo/samples/{sid}")).json()
            assert row["labeled"] is True and row["label"] == label, row
        # a project Label Studio does not have: the card fails and says so
        page.fill("#ls-form input[name=project]", "no such project")
        page.click("#ls-pull")
        text = wait_card(page, "matched", 2)
        assert page.locator("#export-jobs .ls-job.failed").count() == 1
        assert "has no project titled 'no such project'" in text, text
        page.wait_for_selector(".toast.error")
        page.js_errors[:] = [e for e in page.js_errors if "no project titled" not in e]  # showError logs it
        assert TOKEN not in httpx.get(srv.api("/jobs"), params={"dataset": "demo"}).text
        assert_no_js_errors(page)
