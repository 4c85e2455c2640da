"""Dependencies as ``Annotated`` aliases, filled from ``app.state`` (set in create_app's lifespan).

Routes take ``store: StoreDep``, ``settings: SettingsDep``, ``jobs: JobsDep``. Tests swap the getters with
``app.dependency_overrides[get_store] = ...``.

Authentication: ``api_guard`` is mounted on every /api/v1 router by create_app, so no route can forget
it: when ``settings.api_key`` is set, every request that is not GET/HEAD/OPTIONS needs header
``X-API-Key`` (constant-time compare), and reads need it too when ``settings.api_key_for_reads``.
``WriteAuth`` / ``ReadAuth`` are the same checks for a route that wants to state it explicitly
(``_: WriteAuth``), e.g. a GET with side effects.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from edgeminer.indexer.store import Store
from edgeminer.service.errors import Forbidden, ServiceUnavailable, Unauthorized
from edgeminer.service.jobs import JobRunner
from edgeminer.service.settings import Settings

API_KEY_HEADER = "X-API-Key"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="Required for writes when the server has an API key; for reads too when configured.",
)


def _state(request: Request, name: str) -> Any:
    value = getattr(request.app.state, name, None)
    if value is None:
        raise ServiceUnavailable(f"the service is not started ({name} missing); retry in a moment")
    return value


def get_settings(request: Request) -> Settings:
    return _state(request, "settings")  # type: ignore[no-any-return]


def get_store(request: Request) -> Store:
    return _state(request, "store")  # type: ignore[no-any-return]


def get_jobs(request: Request) -> JobRunner:
    return _state(request, "jobs")  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
JobsDep = Annotated[JobRunner, Depends(get_jobs)]


def key_matches(expected: str, given: str | None) -> bool:
    if not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def _check(settings: Settings, given: str | None, *, write: bool) -> None:
    expected = settings.api_key
    if not expected:
        return
    if not write and not settings.api_key_for_reads:
        return
    if key_matches(expected, given):
        return
    what = "writes" if write else "reads"
    if not given:
        raise Unauthorized(f"this server requires header {API_KEY_HEADER} for {what}; send the API key")
    raise Unauthorized(f"the {API_KEY_HEADER} header does not match this server's API key")


def require_write(settings: SettingsDep, key: Annotated[str | None, Security(_api_key_scheme)] = None) -> None:
    _check(settings, key, write=True)


def require_read(settings: SettingsDep, key: Annotated[str | None, Security(_api_key_scheme)] = None) -> None:
    _check(settings, key, write=False)


def api_guard(
    request: Request, settings: SettingsDep, key: Annotated[str | None, Security(_api_key_scheme)] = None
) -> None:
    """Router-wide check: writes (any method but GET/HEAD/OPTIONS) need the key, reads when configured;
    a write a browser sends from another site (its ``Origin`` is neither this server nor a configured
    CORS origin) is refused even without a key, so a web page cannot drive a local server (CSRF)."""
    write = request.method.upper() not in READ_METHODS
    if write:
        check_origin(request, settings)
    _check(settings, key, write=write)


def check_origin(request: Request, settings: Settings) -> None:
    """A same-origin write (``Origin`` host equals ``Host``) is accepted: safe only because HostGuard
    (service/api/middleware.py) has already refused any Host that is not a name this server answers to,
    so a page that re-binds its own DNS name to this server (DNS rebinding) never gets here."""
    origin = request.headers.get("origin")
    if not origin:
        return  # not a browser's cross-site request (curl, SDKs, same-origin GET-initiated fetches)
    if origin in settings.cors_origins or "*" in settings.cors_origins:
        return
    netloc = urlsplit(origin).netloc if origin != "null" else ""
    if netloc and netloc == request.headers.get("host", ""):
        return
    raise Forbidden(
        f"cross-site request from {origin} refused; add that origin to EDGEMINER_CORS_ORIGINS to allow it",
        origin=origin,
    )


WriteAuth = Annotated[None, Depends(require_write)]
ReadAuth = Annotated[None, Depends(require_read)]
