"""Analysis over HTTP: the 2-D map, failure clusters, distributions, and the analyze job.

- ``GET  /datasets/{ds}/points``            the map as one binary blob (format below);
- ``GET  /datasets/{ds}/points/ids``        the sample ids of the map's points, in the same order;
- ``GET  /datasets/{ds}/analysis``          the current analysis: params, run, counts, per-slice check;
- ``GET  /datasets/{ds}/clusters``          cluster summaries, failure clusters first (ranked), and the
                                            analysis' ``freshness`` against the data now;
- ``GET  /datasets/{ds}/clusters/{id}``     one cluster's summary;
- ``GET  /datasets/{ds}/stats/labels``      ground-truth and predicted label counts per split;
- ``GET  /datasets/{ds}/stats/metadata/{field}``  a field's distribution by outcome, error rate per bin;
- ``GET  /datasets/{ds}/stats/confusion``   confusion matrix and top-2 confusion pairs;
- ``POST /datasets/{ds}/analyze``           run the analysis as a background job (poll /jobs/{id}).

The binary map format (magic, JSON header, column arrays) is defined, encoded and decoded in
indexer/analysis/points.py. Points are the ok rows that have coordinates, sorted by id;
``/points/ids?version=v`` returns the ids of the same rows in the same order (pass the header's
``version`` so both read the same table version).
Before the first analysis the map is empty (``count`` 0, ``analyzed`` false); rows ingested since the
last analysis have no coordinates yet and are absent until the next analyze.
"""

from __future__ import annotations

from typing import Annotated, Any

import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from edgeminer.indexer.analysis import stats
from edgeminer.indexer.analysis.freshness import analysis_freshness
from edgeminer.indexer.analysis.points import POINT_COLUMNS, encode_points
from edgeminer.indexer.analysis.run import (
    AnalyzeParams,
    analyze,
    common_trait,
    get_cluster,
    load_analysis,
    report_result,
)
from edgeminer.indexer.store import Dataset, Store, sql_quote
from edgeminer.indexer.where import HAS_EMBEDDING, is_null, not_null, ok_and
from edgeminer.service.api.deps import JobsDep, SettingsDep, StoreDep
from edgeminer.service.api.models import JobPublic, problems
from edgeminer.service.api.routes.jobs import public_job
from edgeminer.service.errors import NotFound, UnknownField, ValidationFailed

router = APIRouter(tags=["analysis"])


# ----------------------------------------------------------------------------------------------
# The map
# ----------------------------------------------------------------------------------------------


#: largest table version a request may name (LanceDB versions are unsigned 64-bit; beyond this they
#: overflow the engine instead of failing cleanly).
MAX_VERSION = 2**63 - 1


def _points_table(ds: Dataset, version: int | None) -> tuple[pa.Table, int]:
    dataset = ds.name
    latest = ds.version
    v = latest if version is None else int(version)
    if not 1 <= v <= latest:
        raise ValidationFailed(
            f"table version {v} of dataset {dataset!r} does not exist: versions go from 1 to {latest} (the "
            "latest); omit version for the latest, or pass the version from the points header",
            field="version",
            latest_version=latest,
        )
    try:
        table = ds.query(
            where=ok_and(not_null("x", "y")),
            columns=["id", *POINT_COLUMNS],
            version=None if v == latest else v,  # the latest through the store's cached reader
        )
    except (ValueError, TypeError, OverflowError, OSError, RuntimeError) as exc:
        raise NotFound(f"table version {v} of dataset {dataset!r} cannot be read: {exc}") from exc
    if table.num_rows:
        table = table.take(pc.sort_indices(table, sort_keys=[("id", "ascending")]))
    return table, v


@router.get(
    "/datasets/{dataset}/points",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "the map (binary, see the docstring)"},
        **problems(401, 404, 422),
    },
)
def get_points(
    dataset: str,
    store: StoreDep,
    version: Annotated[
        int | None, Query(ge=0, le=MAX_VERSION, description="read this table version (default: latest)")
    ] = None,
) -> Response:
    """The 2-D map: x, y, cluster and outcome code of every analyzed row, as one binary blob.

    Layout (little-endian): ``b"EMPT"``, uint32 header length H, H bytes of JSON header (padded to a
    4-byte boundary), then float32 x[n], float32 y[n], int32 cluster[n], uint8 outcome[n]; the header
    lists each column's byte offset from the end of the header. Outcome codes: 0 unlabeled, 1 correct,
    2 wrong_class, 3 false_positive, 4 false_negative, 5 labeled without a prediction. Points are sorted
    by sample id; ``GET /points/ids?version=<header.version>`` gives their ids in the same order.
    """
    table, v = _points_table(store.dataset(dataset), version)
    doc = load_analysis(store, dataset)
    blob = encode_points(table, version=v, run_id=(doc or {}).get("run_id"))
    return Response(blob, media_type="application/octet-stream", headers={"Cache-Control": "no-store"})


class PointIds(BaseModel):
    version: int
    count: int
    ids: list[str]


@router.get("/datasets/{dataset}/points/ids", response_model=PointIds, responses=problems(401, 404, 422))
def get_point_ids(
    dataset: str,
    store: StoreDep,
    version: Annotated[
        int | None, Query(ge=0, le=MAX_VERSION, description="the version from the points header")
    ] = None,
) -> dict[str, Any]:
    """Sample ids of the map's points, in the order of ``GET /points`` at the same ``version``."""
    table, v = _points_table(store.dataset(dataset), version)
    ids = table.column("id").to_pylist()
    return {"version": v, "count": len(ids), "ids": ids}


# ----------------------------------------------------------------------------------------------
# Analysis and clusters
# ----------------------------------------------------------------------------------------------


def _analysis_or_404(store: Store, dataset: str) -> dict[str, Any]:
    store.dataset(dataset)  # DatasetNotFound, not "not analyzed yet"
    doc = load_analysis(store, dataset)
    if doc is None:
        raise NotFound(
            f"dataset {dataset!r} has not been analyzed yet: POST /api/v1/datasets/{dataset}/analyze "
            f"or run `edgeminer analyze --dataset {dataset}`",
            title="No analysis yet",
        )
    return doc


@router.get("/datasets/{dataset}/analysis", responses=problems(401, 404))
def get_analysis(dataset: str, store: StoreDep) -> dict[str, Any]:
    """The current analysis without the cluster list: run id, mode, params, counts, table versions,
    timings and the per-slice quality check (``slices``, when the dataset has a ``slice`` field)."""
    doc = _analysis_or_404(store, dataset)
    out = {k: v for k, v in doc.items() if k not in ("clusters", "state") and not k.startswith("_")}
    out["stale_rows"] = store.count(dataset, ok_and(HAS_EMBEDDING, is_null("x")))
    out["current_version"] = store.version(dataset)
    out["freshness"] = analysis_freshness(store.dataset(dataset), doc)
    return out


@router.get("/datasets/{dataset}/clusters", responses=problems(401, 404))
def list_clusters(
    dataset: str,
    store: StoreDep,
    failures_only: Annotated[bool, Query(description="only the ranked failure clusters")] = False,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
) -> dict[str, Any]:
    """Cluster summaries: failure clusters first in rank order (most excess errors, then lift), then
    the rest by size, noise (id -1) last. Each: size, labeled / unlabeled counts, errors, error_rate,
    lift, excess_errors, dominant label and prediction, top confusions, mean uncertainty, centroid,
    typical members and worst failures (sample ids), metadata highlights, failure_rank."""
    doc = _analysis_or_404(store, dataset)
    clusters = [c for c in doc.get("clusters", []) if c.get("is_failure") or not failures_only]
    if limit is not None:
        clusters = clusters[:limit]
    keys = (
        "run_id",
        "analyzed_at",
        "base_error_rate",
        "rows",
        "judged",
        "errors",
        "n_clusters",
        "n_failure_clusters",
        "version_written",
    )
    fresh = analysis_freshness(store.dataset(dataset), doc)
    clusters = [{**c, "common_trait": common_trait(c)} for c in clusters]
    return {**{k: doc.get(k) for k in keys}, "freshness": fresh, "clusters": clusters}


@router.get("/datasets/{dataset}/clusters/{cluster_id}", responses=problems(401, 404))
def get_one_cluster(dataset: str, store: StoreDep, cluster_id: Annotated[int, Path(ge=-1)]) -> dict[str, Any]:
    """One cluster's summary (``-1`` is the noise points). Its members: filter samples on ``cluster``."""
    doc = _analysis_or_404(store, dataset)
    found = get_cluster(store, dataset, cluster_id)
    if found is None:
        known = sorted(c["id"] for c in doc.get("clusters", []))
        raise NotFound(
            f"cluster {cluster_id} does not exist in the current analysis of {dataset!r} "
            f"(clusters: {', '.join(map(str, known)) or 'none'})"
        )
    return {**found, "common_trait": common_trait(found), "run_id": doc.get("run_id")}


# ----------------------------------------------------------------------------------------------
# Stats
# ----------------------------------------------------------------------------------------------


def _split_where(split: str | None) -> str | None:
    return None if split is None else f"split = {sql_quote(split)}"


SplitQuery = Annotated[str | None, Query(max_length=128, description="only rows of this split")]


@router.get("/datasets/{dataset}/stats/labels", responses=problems(401, 404))
def stats_labels(dataset: str, store: StoreDep, split: SplitQuery = None) -> dict[str, Any]:
    """Ground-truth labels (labeled rows) and predicted labels (every row with a prediction), per split
    and in total; every class of the dataset appears in every count."""
    return stats.label_distribution_for(store, dataset, where=_split_where(split))


@router.get("/datasets/{dataset}/stats/metadata/{field}", responses=problems(401, 404, 422))
def stats_metadata(
    dataset: str,
    field: str,
    store: StoreDep,
    split: SplitQuery = None,
    bins: Annotated[int, Query(ge=1, le=200)] = 10,
    scale: Annotated[str, Query(pattern="^(auto|linear|log)$")] = "auto",
    edges: Annotated[list[float] | None, Query(description="explicit bin edges (repeat the parameter)")] = None,
    max_categories: Annotated[int, Query(ge=1, le=1000)] = 30,
) -> dict[str, Any]:
    """A metadata field (``slice``) or a numeric / categorical column (``area``, ``confidence``,
    ``split``...) by outcome: per bin the counts of correct, wrong, unlabeled and no-prediction rows and
    the error rate. Numeric fields use ``bins`` histogram bins (log-spaced when ``scale=log``, or
    ``auto`` and the values span over two decades) or explicit ``edges``; rows without a value are
    counted in ``missing``."""
    info = store.get_dataset(dataset)
    try:
        stats.resolve_field(store, dataset, field)
    except ValueError:
        raise UnknownField(field, [*sorted(info.metadata_fields), *sorted(stats.CORE_FIELDS)]) from None
    try:
        return stats.metadata_distribution_for(
            store,
            dataset,
            field,
            where=_split_where(split),
            bins=bins,
            scale=scale,
            edges=edges,
            max_categories=max_categories,
        )
    except ValueError as exc:
        raise ValidationFailed(str(exc)) from exc


@router.get("/datasets/{dataset}/stats/confusion", responses=problems(401, 404))
def stats_confusion(
    dataset: str,
    store: StoreDep,
    split: SplitQuery = None,
    top_pairs: Annotated[int, Query(ge=0, le=1000)] = 20,
) -> dict[str, Any]:
    """The ground-truth x prediction matrix (labeled rows with a prediction), its largest off-diagonal
    cells (``top_errors``) and the top-2 confusion pairs (first, second, count, mean margin p1 - p2)."""
    return stats.confusion_for(store, dataset, where=_split_where(split), top_pairs=top_pairs)


# ----------------------------------------------------------------------------------------------
# The analyze job
# ----------------------------------------------------------------------------------------------


class AnalyzeRequest(BaseModel):
    """Parameters of an analysis; omitted ones keep their defaults. Same parameters on unchanged data
    reuse the previous result; new rows are placed on the saved map unless ``refit``."""

    model_config = ConfigDict(extra="forbid")
    refit: bool = Field(False, description="fit the map again on every row")
    truth_field: str | None = Field(None, description="metadata field with known slices to check clusters against")
    n_neighbors: int = Field(15, ge=2, le=500)
    min_dist: float = Field(0.1, ge=0.0, le=1.0)
    metric: str = Field("cosine", pattern="^(cosine|euclidean)$")
    pca: str = Field("auto", pattern="^(auto|on|off)$")
    pca_components: int = Field(50, ge=2, le=1024)
    n_epochs: int | None = Field(None, ge=1, le=5000)
    min_cluster_size: int | None = Field(None, ge=2)
    min_samples: int | None = Field(None, ge=1)
    backend: str = Field("hdbscan", pattern="^(hdbscan|sklearn)$")
    min_errors: int = Field(3, ge=1)
    clusters: str = Field(
        "failure",
        pattern="^(failure|density)$",
        description="failure: density clusters refined where the model's errors concentrate; density: plain HDBSCAN",
    )
    seed: int = 0
    sample_rows: int | None = Field(
        None,
        ge=16,
        description="fit the map and clusters on a seeded sample of this many rows, place the others (default: "
        "the server's analysis_sample_rows setting, 50,000); a table no larger is fitted whole",
    )


@router.post(
    "/datasets/{dataset}/analyze",
    response_model=JobPublic,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problems(401, 404, 422),
)
def start_analyze(
    dataset: str, store: StoreDep, jobs: JobsDep, settings: SettingsDep, body: AnalyzeRequest | None = None
) -> Any:
    """Project (UMAP), cluster (HDBSCAN) and summarise the dataset as a background job; poll
    ``GET /api/v1/jobs/{id}``. The job's ``result`` has the mode (fit, transform, recluster, reuse),
    counts, versions and the per-slice check."""
    body = body or AnalyzeRequest()
    info = store.get_dataset(dataset)
    values = body.model_dump(exclude={"refit", "truth_field"})
    values["sample_rows"] = body.sample_rows or settings.analysis_sample_rows
    params = AnalyzeParams.from_dict(values)
    truth = body.truth_field
    if truth is not None:
        name = truth[5:] if truth.startswith("meta_") else truth
        if name not in info.metadata_fields:
            raise UnknownField(truth, sorted(info.metadata_fields), what="truth field")

    def run(ctx: Any) -> dict[str, Any]:
        report = analyze(
            store,
            dataset,
            params,
            refit=body.refit,
            truth_field=truth,
            progress=lambda done, total, message: ctx.progress(done, total, message),
            record_run=False,
            run_id=ctx.job_id,
        )
        return report_result(report)

    return public_job(jobs.submit(dataset, "analyze", body.model_dump(), run))  # no pid / host / runner
