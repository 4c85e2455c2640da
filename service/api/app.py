"""The FastAPI application: ``create_app(settings) -> FastAPI``.

Everything the app needs comes from ``settings`` (no module globals). The lifespan opens the store
and the job runner (which marks jobs a dead process left running as failed) and puts them on
``app.state``; routes reach them through the ``Annotated`` dependencies in ``service/api/deps.py``.

Routers: each area is a module of ``service/api/routes/`` exposing ``router``, imported here and
included by ``_include_routers`` under ``/api/v1``: health without a guard, every other one behind the
API-key guard (writes need the key when one is configured, reads when ``api_key_for_reads``). To add an
area, import its module and include its router there.
The dashboard (``settings.ui_dir``) is served at ``/``; OpenAPI at ``/openapi.json``, docs at ``/docs``.

In front of all of it (service/api/middleware.py): ``HostGuard`` answers 400 to a ``Host`` header that is
not a loopback name, the ``host`` setting or in ``settings.allowed_hosts`` (DNS rebinding), and
``BodyLimit`` answers 413 to a body over ``settings.max_body_bytes`` before it is read.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse

from edgeminer.service.api.deps import api_guard
from edgeminer.service.api.middleware import BodyLimit, HostGuard, allowed_host_names
from edgeminer.service.api.routes import analysis, datasets, exports, health, issues, media, mining, samples
from edgeminer.service.api.routes import compare as compare_routes
from edgeminer.service.api.routes import jobs as jobs_routes
from edgeminer.service.api.routes import slices as slices_routes
from edgeminer.service.errors import install_handlers
from edgeminer.service.settings import Settings

log = logging.getLogger("edgeminer.service")

API_PREFIX = "/api/v1"


def create_app(settings: Settings | None = None, *, store: Any = None, jobs: Any = None) -> FastAPI:
    """Build the app.

    Parameters: ``settings`` (default ``Settings()``); ``store`` / ``jobs`` may be passed in (tests, an
    embedding program), otherwise the lifespan opens ``Store(settings.data_dir)`` and a ``JobRunner`` on
    it and closes the runner at exit.
    Returns: the FastAPI app, its middleware, routers, dashboard and problem documentation in place.
    """
    settings = settings or Settings()
    app = FastAPI(
        title="edgeminer",
        version=_version(),
        summary="Find where a vision model fails, and which unlabeled images to label next.",
        lifespan=_lifespan(settings, store, jobs),
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    # inside CatchAllMiddleware (added by install_handlers), so even a BodyTooLarge escaping a route is a 413
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    install_handlers(app)
    _add_cors(app, settings)
    _include_routers(app)
    _mount_ui(app, settings)
    _document_problems(app)
    # outermost: a request for a host name this server does not answer to reaches nothing else
    app.add_middleware(HostGuard, allowed=allowed_host_names(settings))
    return app


def _lifespan(settings: Settings, store: Any, jobs: Any) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: opens the store and job runner unless given, caps BLAS threads, and undoes
    both (closing only a runner it opened) at exit."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from edgeminer.indexer.store import Store
        from edgeminer.service.jobs import JobRunner

        own_jobs = jobs is None
        app.state.settings = settings
        app.state.store = store if store is not None else Store(settings.data_dir)
        app.state.jobs = jobs if jobs is not None else JobRunner(app.state.store)
        blas = _limit_blas_threads(settings.blas_threads)
        try:
            yield
        finally:
            if own_jobs:
                app.state.jobs.close(timeout=5.0)
            if blas is not None:
                blas.restore_original_limits()

    return lifespan


def _add_cors(app: FastAPI, settings: Settings) -> None:
    """Allow cross-origin calls from ``settings.cors_origins`` (nothing when there are none)."""
    if not settings.cors_origins:
        return
    from fastapi.middleware.cors import CORSMiddleware

    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Content-Type", "X-API-Key"],
    )


def _include_routers(app: FastAPI) -> None:
    """Include every area's router under ``/api/v1``: health unguarded, the rest behind the API-key guard."""
    app.include_router(health.router, prefix=API_PREFIX)
    guarded = [Depends(api_guard)]
    for area in (
        datasets,
        samples,
        media,
        issues,
        jobs_routes,
        analysis,
        mining,
        exports,
        compare_routes,
        slices_routes,
    ):
        app.include_router(area.router, prefix=API_PREFIX, dependencies=guarded)


def _limit_blas_threads(n: int) -> Any:
    """Cap BLAS (numpy's OpenBLAS) threads while the server runs: requests already run in parallel on
    the thread pool, and OpenBLAS's own threads spin-wait between calls. Measured on the demo (2 cores):
    one mine request cost 125 ms of CPU with 2 BLAS threads, 59 ms with 1. ``0`` leaves BLAS alone.
    Returns the limiter to restore at shutdown."""
    if n <= 0:
        return None
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n, user_api="blas")


def _document_problems(app: FastAPI) -> None:
    """Make the OpenAPI schema say what the server sends: every 4xx/5xx response (FastAPI's automatic
    422 included) is ``application/problem+json`` with the Problem schema."""
    from fastapi.openapi.utils import get_openapi

    from edgeminer.service.api.models import Problem

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for path, path_item in schema.get("paths", {}).items():
            for method, operation in path_item.items():
                if not isinstance(operation, dict) or "responses" not in operation:
                    continue
                responses = operation["responses"]
                # a body that cannot be parsed (problem+json from us) or a request the HTTP server
                # itself refuses, e.g. a request line over its size limit (text/plain from uvicorn)
                responses.setdefault(
                    "400", {"description": "Bad request: malformed or oversized request, or a Host not allowed"}
                )
                if "requestBody" in operation:  # settings.max_body_bytes
                    responses.setdefault("413", {"description": "Request body over the server's limit"})
                if "{" in path:  # an unknown dataset / sample / job...
                    responses.setdefault("404", {"description": "Not found"})
                if operation.get("security"):  # behind the API-key guard
                    responses.setdefault("401", {"description": "Missing or wrong X-API-Key"})
                    if method.upper() not in ("GET", "HEAD", "OPTIONS"):
                        responses.setdefault("403", {"description": "Cross-site request refused"})
                for code, response in operation["responses"].items():
                    if str(code)[0] in "45":
                        response["content"] = dict(problem)
                        if str(code) == "400":
                            response["content"]["text/plain"] = {"schema": {"type": "string"}}
                        if str(code) == "422":
                            response["description"] = "Validation failed"
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _mount_ui(app: FastAPI, settings: Settings) -> None:
    ui_dir = Path(settings.ui_dir)
    if (ui_dir / "index.html").is_file():
        from fastapi.staticfiles import StaticFiles

        app.mount("/", StaticFiles(directory=str(ui_dir), html=True), name="ui")
        return

    @app.get("/", include_in_schema=False)
    def no_ui() -> HTMLResponse:
        return HTMLResponse(
            "<!doctype html><title>edgeminer</title><p>The dashboard files are not installed "
            "(settings.ui_dir has no index.html). The API is running: see <a href='/docs'>/docs</a>.</p>"
        )


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("edgeminer")
    except Exception:  # noqa: BLE001 - not installed as a distribution (source checkout)
        return "0.0.0"
