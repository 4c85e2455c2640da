"""edgeminer's errors: one tree, raised by every layer (store, sources, embedders, mining, export, labels,
jobs), with no transport in it. The REST API maps it to HTTP statuses in one table (service/errors.py),
the CLI to exit codes in another (service/cli.py); nothing here knows about either.

The tree (``*``: defined in the module named, next to the code that raises it)::

    EdgeminerError                    base: ``detail`` says what went wrong and what to do; ``extras``
    │                                 carries the structured facts (field, valid values, ids...)
    ├── InputError                    what the caller sent cannot be used as given (also a ValueError)
    │   ├── ValidationFailed          a value is not valid: an option, a parameter, a request field
    │   │   └── SimulationError*      service/simulate.py: a simulation that cannot run as asked
    │   ├── InvalidFilter             a structured filter's op / value does not fit its field
    │   ├── UnknownField              a field the dataset does not have (lists the valid ones)
    │   ├── BudgetTooLarge            a budget above the server's limit
    │   ├── InvalidDatasetName        a dataset name the store cannot use
    │   ├── SchemaMismatch            data that does not fit the dataset (vector size, metadata type...)
    │   ├── InvalidProbabilities      class probabilities that cannot be scored (NaN, negative, shape)
    │   ├── InvalidSource             an ingest source that cannot be read as given
    │   │   └── SourceError*          indexer/sources/base.py: what a source finds wrong before reading
    │   ├── ImageLoadError*           indexer/pipeline.py: bytes or a file that is not a readable image
    │   ├── EmbedderError*            indexer/embedders.py: an embedder cannot be built or run as configured
    │   ├── MiningError*              service/mining/errors.py: a mining request that cannot be served
    │   │   ├── SelectionError*       service/selection.py: a selection request
    │   │   └── StreamError*          service/stream.py: a stream sample that cannot be decided as sent
    │   └── ExportError*              service/export/common.py: an export request or its data
    │       ├── LabelImportError*     service/export/labels.py: a labels file refused whole
    │       │   └── UnknownLabels*    labels that are not classes of the dataset
    │       └── LabelStudioError*     service/export/labelstudio_live.py: a Label Studio server unreachable or refusing
    ├── NotSupported                  a valid request this dataset or installation cannot serve
    │   └── EmbeddingUnavailable*     service/mining/errors.py: e.g. a text seed on a non-CLIP dataset
    ├── NotFound                      something the request names does not exist
    │   ├── DatasetNotFound           lists the known datasets
    │   ├── DocNotFound               a document of a dataset (issue, export, run...) by kind and id
    │   ├── SampleNotFound
    │   ├── IssueNotFound
    │   ├── JobNotFound
    │   ├── ExportNotFound
    │   ├── MediaNotFound             the row exists, its image file does not
    │   └── SeedsNotFound*            service/mining/errors.py: seed ids the dataset does not have
    ├── Conflict                      the request clashes with what exists
    │   └── DatasetExists
    ├── Unauthorized                  the caller did not prove who it is (a missing or wrong API key)
    ├── PermissionDenied              the caller may not reach this
    │   ├── PathOutsideRoots          a server path outside the configured ingest roots
    │   └── MediaOutsideRoots         a media file outside every media root (or a URL not allowed)
    ├── DatasetUnreadable             a data file of a dataset is missing or damaged: run ``edgeminer check``
    └── Unavailable                   cannot be served now (the job runner is shutting down...)

Rules:

* Raise the most specific class; the message is a sentence for the person who has to fix it.
* An error of the caller is one of these; a plain ``ValueError`` / ``TypeError`` / ``KeyError`` is a bug
  and the front ends report it as one (HTTP 500 with a log reference, CLI exit 2).
* :class:`InputError` is also a ``ValueError`` (like ``json.JSONDecodeError``), so code that validates
  with ``except ValueError`` keeps catching it; nothing maps a bare ``ValueError`` to a user error.
* The storage engine (lance / LanceDB) raises plain ``OSError`` / ``ValueError`` / ``RuntimeError`` whose
  only mark is their text; :func:`unreadable_error` recognises them (the exception or any it was raised
  from) as a :class:`DatasetUnreadable`, for the front ends to report without the engine's paths.

Not part of the tree: ``JobCancelled`` (service/jobs.py), the signal that stops a cancelled job.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "BudgetTooLarge",
    "Conflict",
    "DatasetExists",
    "DatasetNotFound",
    "DatasetUnreadable",
    "DocNotFound",
    "EdgeminerError",
    "ExportNotFound",
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
    "PermissionDenied",
    "SampleNotFound",
    "SchemaMismatch",
    "Unauthorized",
    "Unavailable",
    "UnknownField",
    "ValidationFailed",
    "storage_failure",
    "unreadable_error",
]


class EdgeminerError(Exception):
    """Base of every error edgeminer raises on purpose.

    ``detail``: what went wrong and what to do about it (also ``str(exc)``). ``title``: an optional short
    summary for this one error (the front ends have one per class otherwise). ``extras``: structured
    facts a client can act on (the field, the valid values, the missing ids...), JSON-serialisable.
    """

    title: str | None = None

    def __init__(self, detail: str = "", *, title: str | None = None, **extras: Any):
        detail = detail or title or _words(type(self).__name__)
        super().__init__(detail)
        self.detail = detail
        if title is not None:
            self.title = title
        self.extras: dict[str, Any] = extras

    def __str__(self) -> str:
        return self.detail


def _words(class_name: str) -> str:
    """``DatasetNotFound`` -> ``dataset not found``."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", class_name).lower()


# -- input --------------------------------------------------------------------------------------


class InputError(EdgeminerError, ValueError):
    """What the caller sent (a request, a file, an option) cannot be used as given; fixing the input fixes
    it. ``errors``: the individual problems, when there are several (each a mapping such as ``loc`` /
    ``field`` and ``message``)."""

    def __init__(
        self, detail: str = "", *, title: str | None = None, errors: Sequence[Mapping[str, Any]] = (), **extras: Any
    ):
        if errors:
            extras["errors"] = [dict(e) for e in errors]
        super().__init__(detail, title=title, **extras)


class ValidationFailed(InputError):
    """A value is not valid: an option or parameter outside its range, a request field. The message names
    what is accepted."""


class InvalidFilter(InputError):
    """A structured filter whose op or value does not fit its field."""

    def __init__(self, detail: str, *, field: str | None = None, op: str | None = None, index: int | None = None):
        extras: dict[str, Any] = {}
        if field is not None:
            extras["field"] = field
        if op is not None:
            extras["op"] = op
        if index is not None:
            extras["filter_index"] = index
        super().__init__(detail, **extras)


class UnknownField(InputError):
    """A filter / sort / stats field the dataset does not have; lists the valid ones."""

    def __init__(
        self,
        field: str,
        valid: Iterable[str],
        *,
        what: str = "field",
        index: int | None = None,
        dataset: str | None = None,
    ):
        self.field = field
        self.valid = sorted(valid)
        extras: dict[str, Any] = {"field": field, "valid_fields": self.valid}
        if index is not None:
            extras["filter_index"] = index
        where = f" for dataset {dataset!r}" if dataset else ""
        super().__init__(f"unknown {what} {field!r}{where}; valid: {', '.join(self.valid)}", **extras)


class BudgetTooLarge(InputError):
    """A budget above the server's limit (``settings.max_budget``)."""

    def __init__(self, budget: int, max_budget: int):
        super().__init__(
            f"budget {budget} is above the server's limit of {max_budget}; ask for fewer rows "
            "(or raise EDGEMINER_MAX_BUDGET on the server)",
            budget=budget,
            max_budget=max_budget,
        )


class InvalidDatasetName(InputError):
    """A dataset name the store cannot use."""

    def __init__(self, name: str):
        self.name = name
        super().__init__(
            f"invalid dataset name {name!r}: use 1-63 letters, digits, '-' or '_' "
            "(starting with a letter or digit, no '__')",
            field="name",
        )


class SchemaMismatch(InputError):
    """Data that does not fit the dataset (wrong vector dimension, a metadata type clash...)."""


class InvalidProbabilities(InputError):
    """Class probabilities that cannot be scored: NaN / infinite / negative values, a zero row, the wrong
    shape or number of classes. The message names the row."""


class InvalidSource(InputError):
    """An ingest source that cannot be read as given (a missing file, a manifest without a ``uri`` column,
    an option that does not apply...)."""


# -- not supported ------------------------------------------------------------------------------


class NotSupported(EdgeminerError):
    """A valid request this dataset or installation cannot serve (a text query on a dataset whose embedder
    has no text tower, a check without pylance...)."""


# -- not found ----------------------------------------------------------------------------------


class NotFound(EdgeminerError):
    """Something the request names does not exist."""


class DatasetNotFound(NotFound):
    """A dataset that does not exist; ``known`` lists the ones that do."""

    def __init__(self, name: str, known: Sequence[str] = ()):
        self.name = name
        self.known = list(known)
        hint = f" Known datasets: {', '.join(self.known)}." if self.known else " No dataset exists yet."
        super().__init__(f"dataset {name!r} does not exist.{hint}", dataset=name, known_datasets=self.known)


class DocNotFound(NotFound):
    """A document of a dataset (an issue, an export, a run...) by kind and id."""

    def __init__(self, kind: str, doc_id: str):
        self.kind = kind
        self.doc_id = doc_id
        super().__init__(f"{kind} {doc_id!r} not found", title=f"{kind.capitalize()} not found", kind=kind, id=doc_id)


class SampleNotFound(NotFound):
    """A sample id the dataset does not have."""

    def __init__(self, dataset: str, sample_id: str):
        super().__init__(f"no sample {sample_id!r} in dataset {dataset!r}", dataset=dataset, sample_id=sample_id)


class IssueNotFound(NotFound):
    """An issue id the dataset does not have."""

    def __init__(self, dataset: str, issue_id: str):
        super().__init__(
            f"no issue {issue_id!r} in dataset {dataset!r}; list them with GET /api/v1/datasets/{dataset}/issues",
            dataset=dataset,
            issue_id=issue_id,
        )


class JobNotFound(NotFound):
    """A job id no dataset has a run for."""

    def __init__(self, job_id: str):
        super().__init__(f"no job {job_id!r}; list jobs with GET /api/v1/jobs", job_id=job_id)


class ExportNotFound(NotFound):
    """An export id the dataset does not have."""

    def __init__(self, dataset: str, export_id: str):
        super().__init__(f"no export {export_id!r} in dataset {dataset!r}", dataset=dataset, export_id=export_id)


class MediaNotFound(NotFound):
    """The sample exists, its image file does not (moved or deleted since ingest)."""


# -- conflict -----------------------------------------------------------------------------------


class Conflict(EdgeminerError):
    """The request clashes with what exists (a name taken, a job still running...)."""


class DatasetExists(Conflict):
    """A dataset with that name exists already."""

    def __init__(self, name: str):
        self.name = name
        super().__init__(f"dataset {name!r} already exists; pick another name or ingest into it", dataset=name)


# -- access -------------------------------------------------------------------------------------


class Unauthorized(EdgeminerError):
    """The caller did not prove who it is: the API key is missing or wrong."""


class PermissionDenied(EdgeminerError):
    """The caller may not reach this (a path outside the configured roots, a cross-site write...)."""


class PathOutsideRoots(PermissionDenied):
    """A request names a server path outside ``settings.ingest_roots`` (see service/paths.py)."""


class MediaOutsideRoots(PermissionDenied):
    """A media file outside every allowed media root, or a URL the server may not fetch."""


# -- the data and the service -------------------------------------------------------------------


class DatasetUnreadable(EdgeminerError):
    """A data file of a dataset is missing or damaged (truncated file, deleted fragment, lost table).
    ``dataset`` None: the store's catalog itself. ``reason``: the store's or the engine's own words, which
    may name server paths (for logs and the CLI, never in ``detail``). ``reference``: where a server logged
    them."""

    def __init__(self, dataset: str | None, reference: str | None = None, *, reason: str | None = None):
        self.dataset = dataset
        self.reference = reference
        self.reason = reason
        if dataset:
            what, command = f"dataset {dataset!r} cannot be read", f"edgeminer check --dataset {dataset}"
        else:
            what, command = "the data store cannot be read", "edgeminer check --dataset <name>"
        where = f" (reference {reference} in the server log)" if reference else ""
        extras: dict[str, Any] = {"dataset": dataset}
        if reference:
            extras["reference"] = reference
        super().__init__(
            f"{what}: one of its data files is missing or damaged; run `{command}` on the server{where}",
            **extras,
        )


class Unavailable(EdgeminerError):
    """The request cannot be served now (the job runner is shutting down, the service is starting)."""


# -- the storage engine's errors ----------------------------------------------------------------

#: text only the storage engine's errors carry (and that must not reach a client: server paths, the
#: rustc / cargo source locations lance appends to its messages).
STORAGE_MARKERS = ("lance error", "LanceError", "/rustc/", ".cargo/registry", "__samples.lance", "__docs.lance")
_TABLE_MISSING = re.compile(r"Table '[^']*' was not found")
_TABLE_NAME = re.compile(r"([A-Za-z0-9][A-Za-z0-9_-]*?)__(?:samples|docs)\b")


def is_storage_text(text: str) -> bool:
    """Whether ``text`` is (or quotes) a storage-engine error message."""
    return any(marker in text for marker in STORAGE_MARKERS) or _TABLE_MISSING.search(text) is not None


def dataset_in_text(text: str) -> str | None:
    """The dataset a storage-engine message names (by its ``<dataset>__samples`` / ``__docs`` table)."""
    match = _TABLE_NAME.search(text)
    return match.group(1) if match else None


def storage_failure(exc: BaseException) -> BaseException | None:
    """The storage engine's error behind ``exc`` (itself or what it was raised ``from``), if any; also one
    of ours whose message quotes an engine error (its paths must not reach a client either)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, EdgeminerError):
            if any(marker in current.detail for marker in STORAGE_MARKERS):
                return current
        elif is_storage_text(str(current)):  # LanceDB: the catalog lists the dataset, its table is gone
            return current
        current = current.__cause__
    return None


def unreadable_error(
    exc: BaseException, dataset: str | None = None, *, reference: str | None = None
) -> DatasetUnreadable | None:
    """``exc`` as a :class:`DatasetUnreadable` when it is (or was raised from) a storage-engine failure;
    ``dataset``: the dataset the caller was reading (else the one the engine's message names)."""
    if isinstance(exc, DatasetUnreadable):
        return exc
    failure = storage_failure(exc)
    if failure is None:
        return None
    text = str(failure)
    return DatasetUnreadable(dataset or dataset_in_text(text), reference, reason=" ".join(text.split()))
