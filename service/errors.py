"""The service's errors: one tree, one handler, every response ``application/problem+json`` (RFC 9457).

Our exceptions (status in brackets)::

    EdgeminerError [500]                  base: status, title, type, detail, extras
    ├── BadRequest [400]                  the request cannot be served as written
    │   ├── ValidationFailed [422]        a field of the request is wrong (``errors`` lists them)
    │   │   ├── InvalidFilter [422]       a structured filter's op / value does not fit its field
    │   │   ├── UnknownField [422]        a filter / sort field the dataset does not have (lists valid ones)
    │   │   └── BudgetTooLarge [422]      a budget above settings.max_budget
    │   ├── InvalidSource [422]           an ingest source the server cannot read
    │   └── Unsupported [422]             valid request the dataset cannot do (text query, non-CLIP)
    ├── Unauthorized [401]                missing or wrong X-API-Key
    ├── Forbidden [403]
    │   ├── MediaOutsideRoots [403]       a media file outside every allowed root (or a private URL)
    │   └── PathOutsideRoots [403]        a server path in a request outside settings.ingest_roots
    ├── NotFound [404]
    │   ├── DatasetNotFound               lists the known datasets
    │   ├── SampleNotFound
    │   ├── IssueNotFound
    │   ├── JobNotFound
    │   ├── ExportNotFound
    │   └── MediaNotFound                 the row exists, its image file does not
    ├── Conflict [409]
    │   └── DatasetExists
    ├── PayloadTooLarge [413]             a request body over settings.max_body_bytes (service/api/middleware.py)
    ├── DatasetUnreadable [500]           a data file is missing or damaged (the store's own error is only logged)
    └── ServiceUnavailable [503]          e.g. the job runner is shutting down

Errors raised elsewhere are mapped by :func:`to_problem` too: the store's (``DatasetNotFound`` -> 404,
``DatasetExists`` -> 409, ``InvalidDatasetName`` / ``SchemaMismatch`` -> 422, ``DocNotFound`` -> 404),
a source's ``SourceError`` and an embedder's ``NotSupported`` / ``EmbedderError`` -> 422, other
``ValueError``s (library validation that names the valid choices) -> 422, FastAPI's request
validation -> 422 with the field list, Starlette's HTTP errors (unknown route, wrong method) keep their
status. An error from the storage engine (lance / LanceDB: a missing or truncated data file) is a 500
``DatasetUnreadable`` naming the dataset and ``edgeminer check``, whichever exception carried it, so server
paths and rustc source locations never reach the client. Anything else is a 500 whose body says only
"internal error" and a reference to the log line; the traceback goes to the server log, never to the client.

Routes raise these exceptions; they never build error responses or raise ``HTTPException`` themselves.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

log = logging.getLogger("edgeminer.service")

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:edgeminer:problem:"


class EdgeminerError(Exception):
    """Base of the service's errors. ``detail`` says what happened and what to do about it."""

    status: int = 500
    title: str = "Internal error"
    slug: str = "internal-error"

    def __init__(self, detail: str = "", *, title: str | None = None, **extras: Any):
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        if title is not None:
            self.title = title
        self.extras: dict[str, Any] = extras

    @property
    def type(self) -> str:
        return TYPE_PREFIX + self.slug

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        for key, value in self.extras.items():
            if key not in body:
                body[key] = value
        return body


# -- 400 / 422 ----------------------------------------------------------------------------------


class BadRequest(EdgeminerError):
    status = 400
    title = "Bad request"
    slug = "bad-request"


class ValidationFailed(BadRequest):
    status = 422
    title = "Validation failed"
    slug = "validation-failed"

    def __init__(self, detail: str = "", *, errors: Sequence[Mapping[str, Any]] = (), **extras: Any):
        if errors:
            extras["errors"] = [dict(e) for e in errors]
        super().__init__(detail, **extras)


class InvalidFilter(ValidationFailed):
    title = "Invalid filter"
    slug = "invalid-filter"

    def __init__(self, detail: str, *, field: str | None = None, op: str | None = None, index: int | None = None):
        extras: dict[str, Any] = {}
        if field is not None:
            extras["field"] = field
        if op is not None:
            extras["op"] = op
        if index is not None:
            extras["filter_index"] = index
        super().__init__(detail, **extras)


class UnknownField(ValidationFailed):
    title = "Unknown field"
    slug = "unknown-field"

    def __init__(self, field: str, valid: Iterable[str], *, what: str = "field", index: int | None = None):
        self.field = field
        self.valid = sorted(valid)
        extras: dict[str, Any] = {"field": field, "valid_fields": self.valid}
        if index is not None:
            extras["filter_index"] = index
        super().__init__(f"unknown {what} {field!r}; valid: {', '.join(self.valid)}", **extras)


class BudgetTooLarge(ValidationFailed):
    title = "Budget too large"
    slug = "budget-too-large"

    def __init__(self, budget: int, max_budget: int):
        super().__init__(
            f"budget {budget} is above the server's limit of {max_budget}; ask for fewer rows "
            "(or raise EDGEMINER_MAX_BUDGET on the server)",
            budget=budget,
            max_budget=max_budget,
        )


class InvalidSource(BadRequest):
    status = 422
    title = "Invalid source"
    slug = "invalid-source"


class Unsupported(BadRequest):
    status = 422
    title = "Not supported"
    slug = "unsupported"


# -- 401 / 403 ----------------------------------------------------------------------------------


class Unauthorized(EdgeminerError):
    status = 401
    title = "Unauthorized"
    slug = "unauthorized"


class Forbidden(EdgeminerError):
    status = 403
    title = "Forbidden"
    slug = "forbidden"


class MediaOutsideRoots(Forbidden):
    title = "Media outside the allowed roots"
    slug = "media-outside-roots"


class PathOutsideRoots(Forbidden):
    """A request names a server path outside ``settings.ingest_roots`` (see :mod:`service.paths`)."""

    title = "Path outside the ingest roots"
    slug = "path-outside-roots"


# -- 404 ----------------------------------------------------------------------------------------


class NotFound(EdgeminerError):
    status = 404
    title = "Not found"
    slug = "not-found"


class DatasetNotFound(NotFound):
    title = "Dataset not found"
    slug = "dataset-not-found"

    def __init__(self, name: str, known: Sequence[str] = ()):
        hint = f"known datasets: {', '.join(known)}" if known else "no dataset exists yet (create one first)"
        super().__init__(f"dataset {name!r} does not exist; {hint}", dataset=name, known_datasets=list(known))


class SampleNotFound(NotFound):
    title = "Sample not found"
    slug = "sample-not-found"

    def __init__(self, dataset: str, sample_id: str):
        super().__init__(f"no sample {sample_id!r} in dataset {dataset!r}", dataset=dataset, sample_id=sample_id)


class IssueNotFound(NotFound):
    title = "Issue not found"
    slug = "issue-not-found"

    def __init__(self, dataset: str, issue_id: str):
        super().__init__(
            f"no issue {issue_id!r} in dataset {dataset!r}; list them with GET /api/v1/datasets/{dataset}/issues",
            dataset=dataset,
            issue_id=issue_id,
        )


class JobNotFound(NotFound):
    title = "Job not found"
    slug = "job-not-found"

    def __init__(self, job_id: str):
        super().__init__(f"no job {job_id!r}; list jobs with GET /api/v1/jobs", job_id=job_id)


class ExportNotFound(NotFound):
    title = "Export not found"
    slug = "export-not-found"

    def __init__(self, dataset: str, export_id: str):
        super().__init__(f"no export {export_id!r} in dataset {dataset!r}", dataset=dataset, export_id=export_id)


class MediaNotFound(NotFound):
    title = "Media not found"
    slug = "media-not-found"


# -- 409 / 503 ----------------------------------------------------------------------------------


class Conflict(EdgeminerError):
    status = 409
    title = "Conflict"
    slug = "conflict"


class DatasetExists(Conflict):
    title = "Dataset exists"
    slug = "dataset-exists"

    def __init__(self, name: str):
        super().__init__(f"dataset {name!r} already exists; pick another name or ingest into it", dataset=name)


class PayloadTooLarge(EdgeminerError):
    status = 413
    title = "Payload too large"
    slug = "payload-too-large"


class DatasetUnreadable(EdgeminerError):
    """The store failed reading a dataset's files (missing or truncated data file, damaged manifest)."""

    title = "Dataset unreadable"
    slug = "dataset-unreadable"

    def __init__(self, dataset: str | None, reference: str | None = None):
        if dataset:
            what, command = f"dataset {dataset!r} cannot be read", f"edgeminer check --dataset {dataset}"
        else:
            what, command = "the data store cannot be read", "edgeminer check --dataset <name>"
        where = f"reference {reference} in the server log" if reference else "details in the server log"
        extras: dict[str, Any] = {"dataset": dataset}
        if reference:
            extras["reference"] = reference
        super().__init__(
            f"{what}: one of its data files is missing or damaged; run `{command}` on the server ({where})",
            **extras,
        )


class ServiceUnavailable(EdgeminerError):
    status = 503
    title = "Service unavailable"
    slug = "service-unavailable"


# -- mapping ------------------------------------------------------------------------------------


def _mro_names(exc: BaseException) -> set[str]:
    return {c.__name__ for c in type(exc).__mro__}


#: text only the storage engine's errors carry (and that must not reach a client: server paths, the
#: rustc / cargo source locations lance appends to its messages).
_STORAGE_MARKERS = ("lance error", "LanceError", "/rustc/", ".cargo/registry", "__samples.lance", "__docs.lance")
_TABLE_MISSING = re.compile(r"Table '[^']*' was not found")
_TABLE_NAME = re.compile(r"([A-Za-z0-9][A-Za-z0-9_-]*?)__(?:samples|docs)\b")


def storage_failure(exc: BaseException) -> BaseException | None:
    """The storage engine's error behind ``exc`` (itself or what it was raised ``from``), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = current.detail if isinstance(current, EdgeminerError) else str(current)
        if any(marker in text for marker in _STORAGE_MARKERS):
            return current
        if not isinstance(current, EdgeminerError) and _TABLE_MISSING.search(text):
            return current  # LanceDB: the catalog lists the dataset, its table directory is gone
        current = current.__cause__
    return None


def scrub(text: str, dataset: str | None = None) -> str:
    """``text`` for a client: a storage-engine message becomes the generic unreadable-dataset one."""
    if any(marker in text for marker in _STORAGE_MARKERS) or _TABLE_MISSING.search(text):
        match = _TABLE_NAME.search(text)
        return DatasetUnreadable(dataset or (match.group(1) if match else None)).detail
    return text


def to_problem(exc: BaseException, *, dataset: str | None = None) -> EdgeminerError:
    """Map any exception to an :class:`EdgeminerError` (unknown ones become a logged 500). ``dataset``:
    the dataset the request was about, named in a :class:`DatasetUnreadable`."""
    failure = storage_failure(exc)
    if failure is not None:
        ref = uuid.uuid4().hex[:12]
        match = _TABLE_NAME.search(str(failure))
        log.error("dataset unreadable %s: %s: %s", ref, type(failure).__name__, failure, exc_info=exc)
        return DatasetUnreadable(dataset or (match.group(1) if match else None), ref)
    if isinstance(exc, EdgeminerError):
        return exc
    from edgeminer.indexer import store as st

    if isinstance(exc, st.DatasetNotFound):
        return DatasetNotFound(exc.name, exc.known)
    if isinstance(exc, st.DatasetExists):
        return DatasetExists(exc.name)
    if isinstance(exc, st.InvalidDatasetName):
        return ValidationFailed(str(exc), title="Invalid dataset name", field="name")
    if isinstance(exc, st.SchemaMismatch):
        return ValidationFailed(str(exc), title="Data does not fit the dataset")
    if isinstance(exc, st.DocNotFound):
        return NotFound(str(exc), title=f"{exc.kind.capitalize()} not found", kind=exc.kind, id=exc.doc_id)
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "message": e.get("msg", "")} for e in exc.errors()]
        summary = "; ".join(f"{'.'.join(e['loc']) or 'value'}: {e['message']}" for e in errors[:5])
        return ValidationFailed(f"invalid value: {summary}", errors=errors)
    names = _mro_names(exc)
    if "SourceError" in names:
        return InvalidSource(str(exc))
    if "NotSupported" in names:
        return Unsupported(str(exc))
    if "EmbedderError" in names:
        return ValidationFailed(str(exc), title="Embedder problem")
    if isinstance(exc, ValueError):
        # library validation (score options, budgets, sources...) says what is wrong and what is valid
        return ValidationFailed(str(exc) or type(exc).__name__)
    if isinstance(exc, (FileNotFoundError, PermissionError)):
        return InvalidSource(f"{exc.strerror or 'cannot read'}: {exc.filename}" if exc.filename else str(exc))
    ref = uuid.uuid4().hex[:12]
    log.error("internal error %s: %s: %s", ref, type(exc).__name__, exc, exc_info=exc)
    return EdgeminerError(f"internal error (reference {ref} in the server log)", reference=ref)


def problem_response(err: EdgeminerError, headers: Mapping[str, str] | None = None) -> Any:
    from fastapi.responses import JSONResponse

    hdrs = dict(headers or {})
    if err.status == 401:
        hdrs.setdefault("WWW-Authenticate", 'ApiKey header="X-API-Key"')
    return JSONResponse(err.to_dict(), status_code=err.status, media_type=PROBLEM_JSON, headers=hdrs)


def install_handlers(app: Any) -> None:
    """Register the one handler (plus the adapters for FastAPI's and Starlette's own errors)."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    async def on_error(request: Any, exc: Exception) -> Any:
        return problem_response(to_problem(exc, dataset=_dataset_of(request.scope)))

    async def on_validation(request: Any, exc: Exception) -> Any:
        assert isinstance(exc, RequestValidationError)
        errors = []
        for e in exc.errors():
            loc = [str(p) for p in e.get("loc", ())]
            errors.append({"loc": loc, "field": ".".join(loc[1:]) or ".".join(loc), "message": e.get("msg", "")})
        summary = "; ".join(f"{e['field'] or 'request'}: {e['message']}" for e in errors[:5])
        return problem_response(ValidationFailed(f"the request is not valid: {summary}", errors=errors))

    async def on_http(request: Any, exc: Exception) -> Any:
        assert isinstance(exc, StarletteHTTPException)
        titles = {
            400: "Bad request",
            401: "Unauthorized",
            404: "Not found",
            405: "Method not allowed",
            413: "Payload too large",
        }
        err = EdgeminerError(str(exc.detail), title=titles.get(exc.status_code, "HTTP error"))
        err.status = exc.status_code
        err.slug = err.title.lower().replace(" ", "-")
        if exc.status_code == 404 and exc.detail == "Not Found":
            err.detail = f"no route {request.method} {request.url.path}; the API is described at /docs"
        return problem_response(err, headers=getattr(exc, "headers", None))

    from edgeminer.indexer.store import StoreError

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(EdgeminerError, on_error)
    app.add_exception_handler(StoreError, on_error)
    app.add_exception_handler(Exception, on_error)  # last resort, in Starlette's ServerErrorMiddleware
    app.add_middleware(CatchAllMiddleware)


class CatchAllMiddleware:
    """Turn any exception a route lets through (a source's or an embedder's error, a bug) into a problem
    response before Starlette's server-error middleware would log it as a crash; 500s are logged once
    with their reference. If the response already started, the connection is closed as usual."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            if started:
                raise
            response = problem_response(to_problem(exc, dataset=_dataset_of(scope)))
            await response(scope, receive, send)


def _dataset_of(scope: Any) -> str | None:
    """The ``{dataset}`` path parameter of the route that failed, if it has one."""
    value = (scope.get("path_params") or {}).get("dataset")
    return value if isinstance(value, str) else None
