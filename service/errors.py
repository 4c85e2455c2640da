"""The HTTP side of edgeminer's errors: every error response is ``application/problem+json`` (RFC 9457).

The errors themselves are one tree without HTTP in it (indexer/errors.py, drawn there with what each
means). Here is only how the API answers them: one table, :data:`problem_table`, gives each class its
status, title and type, and an error takes the row of the nearest class in its MRO (so a subclass gets
its parent's status unless it has a row of its own). The statuses, by the same tree::

    EdgeminerError [500]              an error of ours without a better class: its detail is shown
    ├── InputError [422]              what the caller sent cannot be used as given
    │   ├── ValidationFailed          (and FastAPI's request validation, pydantic's ValidationError)
    │   │   └── SimulationError       service/simulate.py
    │   ├── InvalidFilter
    │   ├── UnknownField
    │   ├── BudgetTooLarge
    │   ├── InvalidDatasetName
    │   ├── SchemaMismatch
    │   ├── InvalidProbabilities
    │   ├── InvalidSource
    │   │   └── SourceError           indexer/sources/base.py
    │   ├── ImageLoadError
    │   ├── EmbedderError
    │   ├── MiningError               service/mining/errors.py
    │   │   ├── SelectionError
    │   │   └── StreamError
    │   └── ExportError
    │       ├── LabelImportError
    │       │   └── UnknownLabels
    │       └── LabelStudioError      service/export/labelstudio_live.py (raised in the push / pull jobs)
    ├── NotSupported [422]            a valid request this dataset cannot serve (text query, non-CLIP)
    │   └── EmbeddingUnavailable
    ├── NotFound [404]
    │   ├── DatasetNotFound           lists the known datasets
    │   ├── DocNotFound               titled by its kind ("Issue not found")
    │   ├── SampleNotFound
    │   ├── IssueNotFound
    │   ├── JobNotFound
    │   ├── ExportNotFound
    │   ├── MediaNotFound
    │   └── SeedsNotFound
    ├── Conflict [409]
    │   └── DatasetExists
    ├── Unauthorized [401]            with ``WWW-Authenticate``
    ├── PermissionDenied [403]
    │   ├── PathOutsideRoots
    │   └── MediaOutsideRoots
    ├── DatasetUnreadable [500]       logged with a reference; its detail names the dataset and the fix
    └── Unavailable [503]

    HTTP only (answers the HTTP layer builds itself, never raised):
    BadRequest [400]                  e.g. a Host header the server does not answer to
    PayloadTooLarge [413]             a request body over settings.max_body_bytes

Starlette's own HTTP errors (unknown route, wrong method) keep their status. A storage-engine error
(lance / LanceDB: a missing or truncated data file), whatever exception carried it, is answered as
:class:`DatasetUnreadable` naming the dataset and ``edgeminer check``, so server paths and rustc source
locations never reach the client. Anything else -- a ``ValueError``, ``TypeError`` or ``KeyError`` too --
is a bug: a 500 whose body says only "internal error" and a reference to the log line with the traceback.

Routes raise the tree's errors; they never build error responses or raise ``HTTPException`` themselves.
The names of the tree stay importable from here (plus the older ``Forbidden``, ``ServiceUnavailable``
and ``Unsupported``).
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeminer.indexer.errors import (
    BudgetTooLarge,
    Conflict,
    DatasetExists,
    DatasetNotFound,
    DatasetUnreadable,
    DocNotFound,
    EdgeminerError,
    ExportNotFound,
    InputError,
    InvalidDatasetName,
    InvalidFilter,
    InvalidProbabilities,
    InvalidSource,
    IssueNotFound,
    JobNotFound,
    MediaNotFound,
    MediaOutsideRoots,
    NotFound,
    NotSupported,
    PathOutsideRoots,
    PermissionDenied,
    SampleNotFound,
    SchemaMismatch,
    Unauthorized,
    Unavailable,
    UnknownField,
    ValidationFailed,
    dataset_in_text,
    is_storage_text,
    storage_failure,
    unreadable_error,
)

__all__ = [
    "BadRequest",
    "BudgetTooLarge",
    "Conflict",
    "DatasetExists",
    "DatasetNotFound",
    "DatasetUnreadable",
    "DocNotFound",
    "EdgeminerError",
    "ExportNotFound",
    "Forbidden",
    "InputError",
    "InvalidDatasetName",
    "InvalidFilter",
    "InvalidProbabilities",
    "InvalidSource",
    "IssueNotFound",
    "JobNotFound",
    "MediaNotFound",
    "MediaOutsideRoots",
    "NotFound",
    "NotSupported",
    "PathOutsideRoots",
    "PayloadTooLarge",
    "PermissionDenied",
    "Problem",
    "ProblemType",
    "SampleNotFound",
    "SchemaMismatch",
    "ServiceUnavailable",
    "Unauthorized",
    "Unavailable",
    "UnknownField",
    "Unsupported",
    "ValidationFailed",
    "install_handlers",
    "problem_response",
    "problem_table",
    "problem_type",
    "scrub",
    "storage_failure",
    "to_problem",
]

log = logging.getLogger("edgeminer.service")

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:edgeminer:problem:"

#: the names these classes had when they were HTTP errors
Forbidden = PermissionDenied
ServiceUnavailable = Unavailable
Unsupported = NotSupported


# -- the problem document -------------------------------------------------------------------------


@dataclass(frozen=True)
class ProblemType:
    """How the API answers one class of error: its status, a short title and the slug of its ``type``."""

    status: int
    title: str
    slug: str


INTERNAL = ProblemType(500, "Internal error", "internal-error")
VALIDATION = ProblemType(422, "Validation failed", "validation-failed")


class Problem:
    """One problem+json answer. ``extras`` become members of the body (``known_datasets``, ``field``...)."""

    status: int = INTERNAL.status
    title: str = INTERNAL.title
    slug: str = INTERNAL.slug

    def __init__(
        self,
        detail: str = "",
        *,
        status: int | None = None,
        title: str | None = None,
        slug: str | None = None,
        **extras: Any,
    ):
        if status is not None:
            self.status = status
        if title is not None:
            self.title = title
        if slug is not None:
            self.slug = slug
        self.detail = detail or self.title
        self.extras: dict[str, Any] = extras

    @property
    def type(self) -> str:
        return TYPE_PREFIX + self.slug

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status, "detail": self.detail}
        for key, value in self.extras.items():
            if key not in body:
                body[key] = value
        return body

    def __repr__(self) -> str:
        return f"Problem({self.status} {self.slug}: {self.detail!r})"


class BadRequest(Problem):
    """A request the HTTP layer refuses before any route runs (e.g. a Host header it does not answer to)."""

    status = 400
    title = "Bad request"
    slug = "bad-request"


class PayloadTooLarge(Problem):
    """A request body over ``settings.max_body_bytes`` (service/api/middleware.py)."""

    status = 413
    title = "Payload too large"
    slug = "payload-too-large"


# -- the one table --------------------------------------------------------------------------------


@functools.cache
def problem_table() -> dict[type[BaseException], ProblemType]:
    """Error class -> how the API answers it. Looked up along the error's MRO (:func:`problem_type`):
    a class without a row answers as its nearest ancestor that has one. Built on first use, so this module
    imports none of the modules that define errors next to their code (they may import it)."""
    from edgeminer.indexer.embedders import EmbedderError
    from edgeminer.indexer.pipeline import ImageLoadError
    from edgeminer.service.export.common import ExportError
    from edgeminer.service.export.labels import LabelImportError, UnknownLabels
    from edgeminer.service.mining import EmbeddingUnavailable, MiningError, SeedsNotFound

    return {
        EdgeminerError: INTERNAL,
        # the caller's input: 422
        InputError: ProblemType(422, "Invalid input", "invalid-input"),
        ValidationFailed: VALIDATION,
        InvalidFilter: ProblemType(422, "Invalid filter", "invalid-filter"),
        UnknownField: ProblemType(422, "Unknown field", "unknown-field"),
        BudgetTooLarge: ProblemType(422, "Budget too large", "budget-too-large"),
        InvalidDatasetName: ProblemType(422, "Invalid dataset name", "invalid-dataset-name"),
        SchemaMismatch: ProblemType(422, "Data does not fit the dataset", "schema-mismatch"),
        InvalidProbabilities: ProblemType(422, "Invalid probabilities", "invalid-probabilities"),
        InvalidSource: ProblemType(422, "Invalid source", "invalid-source"),
        ImageLoadError: ProblemType(422, "Unreadable image", "unreadable-image"),
        EmbedderError: ProblemType(422, "Embedder problem", "embedder-problem"),
        MiningError: ProblemType(422, "Invalid mining request", "invalid-mining-request"),
        ExportError: ProblemType(422, "Invalid export request", "invalid-export"),
        LabelImportError: ProblemType(422, "Invalid labels file", "invalid-labels"),
        UnknownLabels: ProblemType(422, "Unknown labels", "unknown-labels"),
        NotSupported: ProblemType(422, "Not supported", "unsupported"),
        EmbeddingUnavailable: ProblemType(422, "Not supported", "unsupported"),
        # what the request names does not exist: 404
        NotFound: ProblemType(404, "Not found", "not-found"),
        DatasetNotFound: ProblemType(404, "Dataset not found", "dataset-not-found"),
        SampleNotFound: ProblemType(404, "Sample not found", "sample-not-found"),
        IssueNotFound: ProblemType(404, "Issue not found", "issue-not-found"),
        JobNotFound: ProblemType(404, "Job not found", "job-not-found"),
        ExportNotFound: ProblemType(404, "Export not found", "export-not-found"),
        MediaNotFound: ProblemType(404, "Media not found", "media-not-found"),
        SeedsNotFound: ProblemType(404, "Seed not found", "seeds-not-found"),
        # the rest
        Conflict: ProblemType(409, "Conflict", "conflict"),
        DatasetExists: ProblemType(409, "Dataset exists", "dataset-exists"),
        Unauthorized: ProblemType(401, "Unauthorized", "unauthorized"),
        PermissionDenied: ProblemType(403, "Forbidden", "forbidden"),
        PathOutsideRoots: ProblemType(403, "Path outside the ingest roots", "path-outside-roots"),
        MediaOutsideRoots: ProblemType(403, "Media outside the allowed roots", "media-outside-roots"),
        DatasetUnreadable: ProblemType(500, "Dataset unreadable", "dataset-unreadable"),
        Unavailable: ProblemType(503, "Service unavailable", "service-unavailable"),
    }


def problem_type(cls: type[BaseException]) -> ProblemType | None:
    """The row of the nearest class in ``cls``'s MRO that has one; None: not one of our errors (a bug)."""
    table = problem_table()
    for klass in cls.__mro__:
        found = table.get(klass)
        if found is not None:
            return found
    return None


# -- mapping --------------------------------------------------------------------------------------


def scrub(text: str, dataset: str | None = None) -> str:
    """``text`` for a client: a storage-engine message becomes the generic unreadable-dataset one."""
    if is_storage_text(text):
        return DatasetUnreadable(dataset or dataset_in_text(text)).detail
    return text


def to_problem(exc: BaseException, *, dataset: str | None = None) -> Problem:
    """The answer to ``exc``: its row of the table; a storage-engine failure as :class:`DatasetUnreadable`;
    anything else as a logged 500 with a reference. ``dataset``: the dataset the request was about."""
    unreadable = unreadable_error(exc, dataset)
    if unreadable is not None and unreadable.reference is None:
        ref = uuid.uuid4().hex[:12]
        cause = storage_failure(exc) or exc
        log.error(
            "dataset unreadable %s: %s: %s", ref, type(cause).__name__, unreadable.reason or cause, exc_info=exc
        )
        exc = DatasetUnreadable(unreadable.dataset or dataset, ref)
    elif unreadable is not None:
        exc = unreadable
    kind = problem_type(type(exc))
    if kind is not None:
        extras = dict(getattr(exc, "extras", None) or {})
        title = getattr(exc, "title", None) or kind.title
        return Problem(str(exc) or kind.title, status=kind.status, title=title, slug=kind.slug, **extras)
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):  # a model validated inside a route: the caller's values
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "message": e.get("msg", "")} for e in exc.errors()]
        summary = "; ".join(f"{'.'.join(e['loc']) or 'value'}: {e['message']}" for e in errors[:5])
        return _problem(VALIDATION, f"invalid value: {summary}", errors=errors)
    ref = uuid.uuid4().hex[:12]
    log.error("internal error %s: %s: %s", ref, type(exc).__name__, exc, exc_info=exc)
    return _problem(INTERNAL, f"internal error (reference {ref} in the server log)", reference=ref)


def _problem(kind: ProblemType, detail: str, **extras: Any) -> Problem:
    return Problem(detail, status=kind.status, title=kind.title, slug=kind.slug, **extras)


def problem_response(err: Problem | BaseException, headers: Mapping[str, str] | None = None) -> Any:
    """The problem+json response for ``err`` (an exception is mapped by :func:`to_problem` first)."""
    from fastapi.responses import JSONResponse

    problem = err if isinstance(err, Problem) else to_problem(err)
    hdrs = dict(headers or {})
    if problem.status == 401:
        hdrs.setdefault("WWW-Authenticate", 'ApiKey header="X-API-Key"')
    return JSONResponse(problem.to_dict(), status_code=problem.status, media_type=PROBLEM_JSON, headers=hdrs)


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
        return problem_response(_problem(VALIDATION, f"the request is not valid: {summary}", errors=errors))

    async def on_http(request: Any, exc: Exception) -> Any:
        assert isinstance(exc, StarletteHTTPException)
        titles = {
            400: "Bad request",
            401: "Unauthorized",
            404: "Not found",
            405: "Method not allowed",
            413: "Payload too large",
        }
        title = titles.get(exc.status_code, "HTTP error")
        detail = str(exc.detail)
        if exc.status_code == 404 and exc.detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}; the API is described at /docs"
        problem = Problem(detail, status=exc.status_code, title=title, slug=title.lower().replace(" ", "-"))
        return problem_response(problem, headers=getattr(exc, "headers", None))

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(EdgeminerError, on_error)
    app.add_exception_handler(Exception, on_error)  # last resort, in Starlette's ServerErrorMiddleware
    app.add_middleware(CatchAllMiddleware)


class CatchAllMiddleware:
    """Turn any exception a route lets through (a bug included) into a problem response before Starlette's
    server-error middleware would log it as a crash; 500s are logged once with their reference. If the
    response already started, the connection is closed as usual."""

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
