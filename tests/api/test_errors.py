"""Errors are problem+json everywhere (unknown routes, bad bodies, store errors, crashes) and never a
traceback or an HTML 500; plus the app shell: health, OpenAPI, CORS off unless configured, the UI."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

import edgeminer.service.errors as errors
from edgeminer.indexer import store as st
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
        class SourceError(ValueError):
            pass

        raise SourceError("manifest.csv row 4: no 'uri' column")

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


def test_to_problem_mapping() -> None:
    assert errors.to_problem(st.DatasetNotFound("x", ["a", "b"])).to_dict()["known_datasets"] == ["a", "b"]
    assert errors.to_problem(st.DatasetExists("x")).status == 409
    assert errors.to_problem(st.InvalidDatasetName("a b")).status == 422
    doc = errors.to_problem(st.DocNotFound("issue", "i1"))
    assert doc.status == 404 and doc.to_dict()["kind"] == "issue"
    assert errors.to_problem(ValueError("budget must be positive")).status == 422
    assert errors.to_problem(KeyError("x")).status == 500
    assert errors.BudgetTooLarge(50_000, 10_000).to_dict()["max_budget"] == 10_000
    unknown = errors.UnknownField("colour", ["split", "label"]).to_dict()
    assert unknown["valid_fields"] == ["label", "split"] and "label, split" in unknown["detail"]


def test_the_docstring_draws_every_error_class() -> None:
    doc = errors.__doc__ or ""
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.EdgeminerError)]
    assert len(classes) > 15
    for cls in classes:
        assert cls.__name__ in doc, cls.__name__
        assert f"[{cls.status}]" in doc or cls.__base__.status == cls.status, cls.__name__


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
