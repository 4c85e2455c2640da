"""Typed documents: what each kind of row in a dataset's docs table holds.

``Store.put_doc(dataset, kind, id, doc)`` stores any JSON-able mapping; the types here say what each
kind holds, so the code that writes a kind and the code that reads it agree on its keys. They are
``TypedDict``\\ s (the documents stay plain dicts on disk and over the API). Keys marked
``NotRequired`` (or every key of a ``total=False`` type) may be absent: they are added later in the
document's life, or only by some writers.

Kinds (``DOC_KINDS``) and their types:

    run        :class:`RunDoc`        a job or a library run (ingest, analyze, export, labels_import);
                                      built by :func:`new_run_doc` only
    issue      :class:`IssueDoc`      a named collection of flagged sample ids
    export     :class:`ExportDoc`     an export: exact ids at one table version, progress, files
    analysis   :class:`AnalysisDoc`   id ``current``: the latest analysis (cluster summaries included);
               :class:`AnalysisStateDoc`  id ``state``: the fitted state of a remote store, base64
    decision   :class:`DecisionDoc`   one stream decision (send to labeling or not, and why)
    selection  :class:`SelectionDoc`  the ids a mine or select call returned, for exports
    model_versions :class:`ModelVersionsDoc`  id ``registry``: the dataset's model versions and which
                                      one is current (indexer/versions.py)

Reading a document back (``get_doc`` / ``list_docs``) adds the store's bookkeeping keys ``_created_at``
and ``_updated_at`` (and ``id`` when the document has none); readers drop ``_``-keys before showing one.

This module is the lowest layer (no project imports), so the indexer (pipeline, analysis) and the
service (jobs, exports, stream, routes) can all use it.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypeAlias, TypedDict, cast

__all__ = [
    "ANALYSIS",
    "DECISION",
    "DOC_KINDS",
    "EXPORT",
    "ISSUE",
    "RUN",
    "MODEL_VERSIONS",
    "SELECTION",
    "AnalysisDoc",
    "AnalysisStateDoc",
    "AnalysisStateRef",
    "DecisionDoc",
    "DecisionReason",
    "ExportDoc",
    "ExportRowError",
    "IssueDoc",
    "JSONObject",
    "NearestIssue",
    "RunDoc",
    "RunError",
    "RunProgress",
    "RunStatus",
    "ModelVersionEntry",
    "ModelVersionsDoc",
    "SelectionDoc",
    "new_run_doc",
    "now_iso",
]

#: A free-form JSON object: the open-ended parts of a document (request parameters, a job's result,
#: cluster summaries, slice checks), whose keys belong to the code that fills them, not to the document.
JSONObject: TypeAlias = dict[str, Any]

RUN = "run"
ISSUE = "issue"
EXPORT = "export"
ANALYSIS = "analysis"
DECISION = "decision"
SELECTION = "selection"
MODEL_VERSIONS = "model_versions"  # issue 14: indexer/versions.py
DOC_KINDS = (RUN, ISSUE, EXPORT, ANALYSIS, DECISION, SELECTION, MODEL_VERSIONS)


def now_iso() -> str:
    """The current UTC time as ISO 8601 with an offset (``2026-01-01T12:00:00.123456+00:00``): the form
    every document's timestamps take."""
    return dt.datetime.now(dt.UTC).isoformat()


# ----------------------------------------------------------------------------------------------
# run
# ----------------------------------------------------------------------------------------------

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class RunProgress(TypedDict):
    """How far a run is: ``done`` of ``total`` items (``total`` None while unknown) and a short message."""

    done: int
    total: int | None
    message: str | None


class RunError(TypedDict, total=False):
    """One item that failed while the run went on with the rest."""

    item: str  #: what failed (a sample id, a file...)
    message: str  #: why


class RunDoc(TypedDict):
    """A ``run`` document: one job (service/jobs.py) or one library run (a CLI ingest, an analysis).

    Every writer builds it with :func:`new_run_doc`, so the keys below are always there; the
    ``NotRequired`` ones are added later by the runner."""

    id: str  #: the run id (a job id for jobs)
    kind: str  #: ingest | analyze | export | labels_import | ...
    dataset: str  #: the dataset it works on
    params: JSONObject  #: what it was asked to do (the request, the analysis parameters...)
    status: str  #: a RunStatus; ``unknown`` for a stored doc without one
    progress: RunProgress  #: done / total / message
    counts: dict[str, int]  #: named counters (rows, ok, errors, clusters...)
    errors: list[RunError]  #: failed items, the first ``MAX_STORED_ERRORS`` (service/jobs.py)
    error_count: int  #: all failed items (``errors`` may hold only the first ones)
    error: str | None  #: why the run failed or was cancelled
    result: JSONObject | None  #: what the job function returned (minus the keys lifted to the doc)
    version_read: int | None  #: the samples table version when it started
    version_written: int | None  #: the table version it left behind (None: wrote nothing)
    created_at: str  #: ISO time it was created (queued)
    started_at: str | None  #: ISO time it started running
    finished_at: str | None  #: ISO time it finished (any final status)
    duration_s: float | None  #: seconds from start to finish
    pid: int  #: the process running it: a run left active by a dead process is interrupted
    host: str  #: socket.gethostname() of that process
    runner: str | None  #: the JobRunner (runner_id) owning it; None for library runs (CLI, analyze)
    interrupted: bool  #: failed because its process died (marked at the next start-up)
    error_type: NotRequired[str]  #: the exception class name of a failure
    status_before_restart: NotRequired[str]  #: queued | running, when a restart marked it failed
    resumed_from: NotRequired[str]  #: the interrupted run this one picks up
    resumed_by: NotRequired[str]  #: the run that picked this one up


def new_run_doc(
    kind: str,
    dataset: str,
    params: Mapping[str, Any] | None,
    *,
    run_id: str | None = None,
    status: RunStatus = "queued",
    created_at: str | None = None,
    version_read: int | None = None,
    runner: str | None = None,
    **extra: Any,
) -> RunDoc:
    """Build a new ``run`` document, every :class:`RunDoc` key set but the ``NotRequired`` ones: the one
    place run documents are made (the job runner, the CLI ingest and the analysis use it).

    Parameters
    ----------
    kind, dataset, params: what runs (ingest, analyze, export...), on which dataset, asked what (copied).
    run_id: the document id (default: a new random hex id).
    status: ``queued`` (a job waiting for its turn), or ``running`` / a final status for library code
        recording its own run; any status but ``queued`` sets ``started_at`` to ``created_at``.
    created_at, version_read: ISO creation time (default: now); the table version it starts from.
    runner: the owning JobRunner's id (None for library runs).
    **extra: more :class:`RunDoc` keys (e.g. ``resumed_from``), set last.

    Returns
    -------
    RunDoc: no errors, empty counts, progress 0 of unknown (message: the status), this process's
    ``pid`` and ``host`` (a run left active by a dead process is then seen as interrupted).
    """
    created = created_at or now_iso()
    doc: RunDoc = {
        "id": run_id or uuid.uuid4().hex,
        "kind": str(kind),
        "dataset": dataset,
        "params": dict(params or {}),
        "status": status,
        "progress": {"done": 0, "total": None, "message": status},
        "counts": {},
        "errors": [],
        "error_count": 0,
        "error": None,
        "result": None,
        "version_read": version_read,
        "version_written": None,
        "created_at": created,
        "started_at": None if status == "queued" else created,
        "finished_at": None,
        "duration_s": None,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "runner": runner,
        "interrupted": False,
    }
    return cast(RunDoc, {**doc, **extra}) if extra else doc


# ----------------------------------------------------------------------------------------------
# issue
# ----------------------------------------------------------------------------------------------


class IssueDoc(TypedDict):
    """An ``issue`` document: a named collection of flagged sample ids (mine seeds, export selections)."""

    id: str  #: 12 hex characters
    dataset: str  #: the dataset the ids belong to
    name: str  #: a short title ("person seen as chair")
    description: str  #: free text, may be empty
    sample_ids: list[str]  #: ids in the dataset, deduplicated, in the order they were added
    created_at: str  #: ISO time
    updated_at: str  #: ISO time of the last change


# ----------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------


class ExportRowError(TypedDict):
    """A row an export left out (its media could not be referenced or copied, or it was gone)."""

    id: str  #: the sample id
    message: str  #: why


class ExportDoc(TypedDict):
    """An ``export`` document (service/export/runner.py). ``plan_export`` writes every key but the
    ``NotRequired`` ones, which ``run_export`` adds."""

    id: str  #: ``exp-`` + a hash of the dataset and the request
    dataset: str
    name: str  #: given by the request, or "<target> export of <n> rows"
    request: JSONObject  #: ExportRequest.to_dict()
    status: str  #: queued | running | done | failed
    job_id: str | None  #: the job working on it
    version_read: int  #: the table version the rows are read at (time travel)
    ids: list[str]  #: the exact rows, in order
    count: int  #: len(ids)
    chunk_size: int  #: rows per chunk file
    chunks_total: int
    chunks_done: int
    rows_done: int
    media_errors: int  #: rows left out
    errors: list[ExportRowError]  #: the first MAX_DOC_ERRORS rows left out, and why
    path: str  #: the export folder, relative to the exports folder (``<dataset>/<export id>``)
    zip: str  #: the zip, relative to the exports folder (``<dataset>/<export id>.zip``)
    zip_bytes: int | None  #: once done
    files: list[str]  #: the files in the zip, once done
    rows_exported: int | None  #: rows in the target files, once done
    created_at: str  #: ISO time planned
    finished_at: str | None  #: ISO time done or failed
    started_at: NotRequired[str]  #: ISO time the last run started
    error: NotRequired[str | None]  #: why the last run failed
    chunks_resumed: NotRequired[int]  #: chunk files a resumed run found on disk
    version_written: NotRequired[int]  #: the table version after tagging the rows ``exported``


# ----------------------------------------------------------------------------------------------
# analysis
# ----------------------------------------------------------------------------------------------


class AnalysisStateRef(TypedDict, total=False):
    """Where an analysis' fitted state (PCA + UMAP + clusterer, pickled) is: a file or a document."""

    file: str  #: ``_analysis/<dataset>/state-<run id>.pkl``, relative to the data directory
    doc: str  #: the id of the ``analysis`` doc holding it base64-encoded (remote stores): ``state``
    bytes: int  #: the pickle's size


class AnalysisStateDoc(TypedDict):
    """The ``analysis`` document ``state`` (remote stores only): the fitted state itself."""

    run_id: str  #: the analysis run that fitted it
    b64: str  #: the pickle, base64-encoded


class AnalysisDoc(TypedDict):
    """The ``analysis`` document ``current`` (indexer/analysis/run.py): the latest analysis."""

    run_id: str  #: the analysis run that wrote it
    mode: str  #: fit | transform | recluster (a reuse writes nothing)
    params: JSONObject  #: AnalyzeParams as a dict
    seed: int  #: params' seed
    projection_key: str  #: digest of the projection parameters, dim and embedder (reuse / transform rule)
    clustering_key: str  #: digest of the clustering parameters (reuse / recluster rule)
    min_errors: int  #: params' min_errors (part of the reuse rule)
    method: str  #: the projection used (umap, or its fallback)
    pca_used: bool  #: whether PCA ran before the projection
    min_cluster_size: int  #: the clusterer's (resolved when auto)
    fitted_rows: int  #: rows the map was fitted on
    transformed_rows: int  #: rows placed on a saved map by this run
    version_read: int  #: the samples table version it read
    version_written: int  #: the table version after writing x, y, cluster (the reuse rule compares it)
    state: AnalysisStateRef  #: where the fitted state is
    truth_field: str | None  #: the metadata field of the slice check (``slice`` by default)
    slices: list[JSONObject]  #: per-slice quality check (clustering.slice_quality), or []
    duration_s: float
    timings: dict[str, float]  #: seconds per step (load, project, cluster, summarise, write)
    analyzed_at: str  #: ISO time
    # from clustering.summarize_clusters:
    base_error_rate: float  #: errors / judged over the whole dataset
    rows: int  #: rows analysed
    judged: int  #: labeled rows with a prediction
    errors: int  #: judged rows the model got wrong
    n_clusters: int  #: clusters, noise not counted
    n_failure_clusters: int
    clusters: list[JSONObject]  #: cluster summaries, failure clusters first by failure_rank


# ----------------------------------------------------------------------------------------------
# decision
# ----------------------------------------------------------------------------------------------


class NearestIssue(TypedDict):
    """The flagged example nearest to a stream sample."""

    issue: str  #: the issue id
    example: str  #: the sample id of the example
    distance: float  #: cosine distance, rounded to 6 places


class DecisionReason(TypedDict, total=False):
    """Why a stream sample is a candidate for labeling; keys beyond ``reason`` depend on it."""

    reason: str  #: low_confidence | high_uncertainty | near_issue
    value: float  #: the confidence or uncertainty score (low_confidence, high_uncertainty)
    score: str  #: the uncertainty column (high_uncertainty)
    threshold: float  #: the policy's threshold it crossed
    issue: str  #: near_issue: the issue id
    example: str  #: near_issue: the flagged sample id
    distance: float  #: near_issue: cosine distance


class DecisionDoc(TypedDict):
    """A ``decision`` document (service/stream.py): one stream sample, sent to labeling or not."""

    id: str  #: 16 hex characters
    sample_id: str  #: the sample stored in the unlabeled pool
    send: bool  #: sent to labeling (a candidate within the period's budget)
    candidate: bool  #: at least one reason
    reasons: list[DecisionReason]
    why: str  #: the decision in words
    scores: dict[str, float]  #: confidence and every uncertainty score
    pred_label: str | None  #: the model's top class
    nearest_issue: NearestIssue | None  #: None when no issue has an example with an embedding
    period_start: str  #: ISO start of the budget period
    period_seconds: int
    budget: int  #: labels per period
    budget_used: int  #: labels sent in this period, this one included
    budget_left: int
    decided_at: str  #: ISO time


# ----------------------------------------------------------------------------------------------
# selection
# ----------------------------------------------------------------------------------------------


class SelectionDoc(TypedDict, total=False):
    """A ``selection`` document (service/mining.py ``mine_record``, service/selection.py
    ``selection_record``): what a mine or select API call returned, so an export can name it."""

    kind: Literal["mine", "select"]  #: which call left it
    params: JSONObject  #: the request
    ids: list[str]  #: the returned ids, in rank order
    summary: JSONObject  #: MineResult / SelectionResult .summary()
    seeds: JSONObject  #: mine only: Seeds.describe()


# ----------------------------------------------------------------------------------------------
# model versions (issue 14)
# ----------------------------------------------------------------------------------------------


class ModelVersionEntry(TypedDict):
    """One model version of a dataset: its predictions are rows of the ``<ds>__predictions`` table."""

    name: str  #: the version's name (``v1``, ``retrained``...)
    model: str  #: what produced it: the embedder / model file description, or the manifest path
    kind: str  #: ingest (the first ingest's own predictions) | manifest | torchscript | coco
    source: str  #: the file it was read from ("" for the first ingest)
    rows: int  #: predictions stored
    errors: int  #: rows of the source that could not be used
    created_at: str  #: ISO time of the first write
    updated_at: str  #: ISO time of the latest write
    false_positives: NotRequired[int]  #: kind coco: detections that matched no object (not stored as rows)


class ModelVersionsDoc(TypedDict):
    """The ``model_versions`` document ``registry``: every version, in the order they were added."""

    current: str  #: the version whose values the samples table holds (map, clusters, scores, mining)
    ingest_version: str  #: the version an ordinary ingest's own predictions are recorded under
    versions: list[ModelVersionEntry]
