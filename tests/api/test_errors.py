"""Errors are problem+json everywhere (unknown routes, bad bodies, store errors, crashes) and never a
traceback or an HTML 500; plus the app shell: health, OpenAPI, CORS off unless configured, the UI."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

import edgeminer.service.errors as errors
from edgeminer.indexer import errors as domain
from edgeminer.indexer import store as st
from edgeminer.indexer.sources import SourceError
from edgeminer.service.api.app import create_app
from edgeminer.service.settings import Settings

SECRET = "db password is hunter2"


def crashing_app(settings: Settings) -> object:
    app = create_app(settings)
    boom = APIRouter()

    @boom.get("/api/v1/boom")
    def crash() -> None:
        raise RuntimeError(SECRET)

    @boom.get("/api/v1/source-problem")
    def source_problem() -> None:
        raise SourceError("manifest.csv row 4: no 'uri' column")

    @boom.get("/api/v1/bug")
    def bug() -> None:
        raise ValueError(SECRET)  # a library bug, not the caller's input

    @boom.get("/api/v1/store-problem")
    def store_problem() -> None:
        raise st.SchemaMismatch("embedding has 3 values, the dataset's dimension is 4")

    app.include_router(boom)
    # the catch-all route order: put ours before the UI mount at "/"
    app.router.routes.sort(key=lambda r: getattr(r, "path", "") == "")
    return app


def is_problem(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"].startswith("urn:")
    assert "Traceback" not in resp.text and "<html" not in resp.text.lower()
    return body


def test_common_http_errors(api_client: TestClient) -> None:
    assert "no route GET /api/v1/nope" in is_problem(api_client.get("/api/v1/nope"), 404)["detail"]
    is_problem(api_client.put("/api/v1/health"), 405)
    body = is_problem(
        api_client.post("/api/v1/datasets", content=b"{not json", headers={"content-type": "application/json"}),
        422,
    )
    assert body["errors"]
    body = is_problem(api_client.post("/api/v1/datasets", json={"name": "x"}), 422)
    assert body["errors"][0]["field"] == "dim" and "dim" in body["detail"]


def test_crashes_are_500_problems_without_internals(
    api_settings: Settings, live_server: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    base = live_server(crashing_app(api_settings))
    with caplog.at_level("ERROR", logger="edgeminer.service"):
        resp = httpx.get(base + "/api/v1/boom", timeout=30)
    body = is_problem(resp, 500)
    assert SECRET not in resp.text and "RuntimeError" not in resp.text
    ref = body["reference"]
    assert ref in body["detail"]
    # the server log has the whole story, under the same reference
    logged = [r for r in caplog.records if ref in r.getMessage()]
    assert logged and SECRET in logged[0].getMessage() and logged[0].exc_info
    assert httpx.get(base + "/api/v1/health", timeout=30).status_code == 200  # still serving


def test_store_and_library_errors_are_mapped(api_settings: Settings) -> None:
    with TestClient(crashing_app(api_settings), raise_server_exceptions=False) as client:
        body = is_problem(client.get("/api/v1/store-problem"), 422)
        assert "dimension is 4" in body["detail"]
        body = is_problem(client.get("/api/v1/source-problem"), 422)
        assert body["type"].endswith("invalid-source") and "row 4" in body["detail"]


def test_a_plain_value_error_is_a_bug_not_the_callers_fault(
    api_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(crashing_app(api_settings), raise_server_exceptions=False) as client:
        with caplog.at_level("ERROR", logger="edgeminer.service"):
            resp = client.get("/api/v1/bug")
    body = is_problem(resp, 500)
    assert body["type"].endswith("internal-error") and SECRET not in resp.text
    assert body["reference"] in body["detail"]
    logged = [r for r in caplog.records if body["reference"] in r.getMessage()]
    assert logged and SECRET in logged[0].getMessage() and logged[0].exc_info


def test_to_problem_mapping() -> None:
    assert errors.to_problem(st.DatasetNotFound("x", ["a", "b"])).to_dict()["known_datasets"] == ["a", "b"]
    assert errors.to_problem(st.DatasetExists("x")).status == 409
    assert errors.to_problem(st.InvalidDatasetName("a b")).status == 422
    doc = errors.to_problem(st.DocNotFound("issue", "i1"))
    assert doc.status == 404 and doc.to_dict()["kind"] == "issue"
    assert errors.to_problem(ValueError("budget must be positive")).status == 500  # a bug, not input
    assert errors.to_problem(KeyError("x")).status == 500
    assert errors.to_problem(domain.ValidationFailed("budget must be positive")).status == 422
    assert errors.to_problem(domain.DatasetUnreadable("x")).to_dict()["reference"]  # logged, with a reference
    assert errors.to_problem(errors.BudgetTooLarge(50_000, 10_000)).to_dict()["max_budget"] == 10_000
    unknown = errors.to_problem(errors.UnknownField("colour", ["split", "label"])).to_dict()
    assert unknown["valid_fields"] == ["label", "split"] and "label, split" in unknown["detail"]
    assert unknown["status"] == 422 and unknown["type"].endswith("unknown-field")


def _tree() -> list[type[domain.EdgeminerError]]:
    """Every class of the error tree, with the modules that define errors next to their code imported."""
    import edgeminer.indexer.embedders
    import edgeminer.indexer.pipeline
    import edgeminer.indexer.sources
    import edgeminer.service.export.labels
    import edgeminer.service.export.labelstudio_live
    import edgeminer.service.mining
    import edgeminer.service.selection
    import edgeminer.service.simulate
    import edgeminer.service.stream  # noqa: F401

    found: list[type[domain.EdgeminerError]] = []
    todo = [domain.EdgeminerError]
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("edgeminer.") and not cls.__name__.startswith("_"):
            found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def _drawn_parents(doc: str) -> dict[str, str | None]:
    """Class name -> the class drawn above it in a tree drawing (├── / └── lines, by indentation)."""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in doc.splitlines():
        match = re.match(r"^(\s*(?:[│ ]   )*)(?:[├└]── )?([A-Z]\w+)\b", line)
        if not match or not ("── " in line or line.strip().startswith("EdgeminerError")):
            continue
        depth, name = len(match.group(1)) + (4 if "── " in line else 0), match.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[name] = stack[-1][1] if stack else None
        stack.append((depth, name))
    return parents


def _tree_parent(cls: type) -> str | None:
    bases = [b for b in cls.__bases__ if issubclass(b, domain.EdgeminerError)]
    return bases[0].__name__ if bases else None


def test_the_drawings_are_the_tree() -> None:
    classes = _tree()
    assert len(classes) > 30
    for module in (domain, errors):  # the tree (what each error means) and the statuses (the same tree)
        drawn = _drawn_parents(module.__doc__ or "")
        for cls in classes:
            assert cls.__name__ in drawn, f"{cls.__name__} is not drawn in {module.__name__}"
            assert drawn[cls.__name__] == _tree_parent(cls), f"{cls.__name__} drawn under the wrong parent"
    doc = errors.__doc__ or ""
    drawn = _drawn_parents(doc)
    for cls in classes:  # the status drawn (on the class, else on its nearest drawn ancestor) is the table's
        name: str | None = cls.__name__
        status = None
        while name is not None and status is None:
            own = re.search(rf"\b{name} \[(\d+)\]", doc)
            status = int(own.group(1)) if own else None
            name = drawn.get(name)
        kind = errors.problem_type(cls)
        assert kind is not None and status == kind.status, (cls.__name__, status, kind)


def test_every_error_class_has_a_status_and_a_meaning() -> None:
    from starlette.exceptions import HTTPException

    base = errors.problem_type(domain.EdgeminerError)
    for cls in _tree():  # walks the tree: every class answers with a row of the table
        kind = errors.problem_type(cls)
        assert kind is not None and kind.slug and kind.title, cls.__name__
        if cls is not domain.EdgeminerError:
            assert kind != base, f"{cls.__name__} falls back to the base's 500: give its branch a row"
        assert not issubclass(cls, HTTPException), f"{cls.__name__} is an HTTP error"
        assert not issubclass(cls, ValueError) or issubclass(cls, domain.InputError), cls.__name__
        assert (cls.__doc__ or "").strip(), f"{cls.__name__} has no docstring"
    # the HTTP layer's own answers are documents, not exceptions (so never a ValueError either)
    assert not issubclass(errors.BadRequest, BaseException) and not issubclass(errors.PayloadTooLarge, BaseException)
    assert errors.problem_type(ValueError) is None and errors.problem_type(KeyError) is None


def test_cors_is_off_unless_configured(make_client: Callable[..., TestClient], api_settings: Settings) -> None:
    origin = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    plain = make_client(api_settings)
    assert "access-control-allow-origin" not in plain.get("/api/v1/health", headers=origin).headers
    assert "access-control-allow-origin" not in plain.options("/api/v1/datasets", headers=origin).headers
    cors = make_client(api_settings, cors_origins=["https://app.example"])
    ok = cors.options("/api/v1/datasets", headers={**origin, "Origin": "https://app.example"})
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in cors.get("/api/v1/health", headers=origin).headers


def test_shell_health_openapi_ui(
    make_client: Callable[..., TestClient], api_settings: Settings, tmp_path: Path
) -> None:
    client = make_client(api_settings)
    health = client.get("/api/v1/health").json()
    assert health["status"] == "ok" and health["datasets"] == 0 and health["auth"] == "none"
    spec = client.get("/openapi.json").json()
    assert "/api/v1/datasets/{dataset}/samples" in spec["paths"]
    assert "X-API-Key" in str(spec["components"]["securitySchemes"])
    assert "swagger" in client.get("/docs").text.lower()
    assert "not installed" in client.get("/").text  # no ui dir in these settings
    ui = tmp_path / "ui"
    ui.mkdir()
    (ui / "index.html").write_text("<!doctype html><title>edgeminer dashboard</title>")
    (ui / "app.js").write_text("console.log(1)")
    with_ui = make_client(api_settings, ui_dir=str(ui))
    assert "edgeminer dashboard" in with_ui.get("/").text
    assert with_ui.get("/app.js").text == "console.log(1)"
    is_problem(with_ui.get("/api/v1/nope"), 404)
    assert with_ui.get("/../../etc/passwd").status_code == 404


def test_dependencies_can_be_swapped(api_settings: Settings, tmp_path: Path) -> None:
    from edgeminer.service.api.deps import get_settings, get_store

    other = st.Store(tmp_path / "other")
    other.create_dataset("elsewhere", dim=2, embedder={"kind": "precomputed"})
    app = create_app(api_settings)
    app.dependency_overrides[get_store] = lambda: other
    app.dependency_overrides[get_settings] = lambda: api_settings.model_copy(update={"api_key": "k"})
    with TestClient(app) as client:
        assert [d["name"] for d in client.get("/api/v1/datasets").json()] == ["elsewhere"]
        assert client.post("/api/v1/datasets", json={"name": "x", "dim": 2}).status_code == 401
