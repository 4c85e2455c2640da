"""Model versions and their comparison (issue 14).

- ``GET  /datasets/{ds}/versions``                   the model versions, which one is current, rows each
- ``POST /datasets/{ds}/versions``                   a new version's predictions (manifest or TorchScript
                                                      model on the server), as a job (202)
- ``POST /datasets/{ds}/versions/current``           make a version current (job, 202): its predictions
                                                      and scores are copied into the rows everything reads
- ``GET  /datasets/{ds}/compare?base=&new=``         accuracy before / after with bootstrap intervals,
                                                      fixed / broken, per cluster, class, metadata value
- ``GET  /datasets/{ds}/compare/rows?base=&new=``    rows and their outcome (fixed, broken...), paged
- ``GET  /datasets/{ds}/compare/points?base=&new=``  the outcome code of each map point, in /points order

The logic is in ``indexer/versions.py`` and ``service/compare.py``; an unknown version is a 404 naming
the known ones, ``base == new`` a 422.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field

from edgeminer.indexer.errors import ValidationFailed
from edgeminer.service.api.deps import JobsDep, SettingsDep, StoreDep
from edgeminer.service.api.models import UNDER_INGEST_ROOTS, JobPublic, problems
from edgeminer.service.api.routes.jobs import public_job
from edgeminer.service.compare import MAX_RESAMPLES, ROW_OUTCOMES, CompareOptions, compare, outcome_page, point_outcomes
from edgeminer.service.paths import require_under_roots

router = APIRouter(tags=["compare"])

VersionQuery = Annotated[str, Query(min_length=1, max_length=64, description="a model version name")]
SplitQuery = Annotated[str | None, Query(max_length=200, description="only rows of this split (e.g. val)")]


# -- shapes -----------------------------------------------------------------------------------------


class ModelVersion(BaseModel):
    name: str
    model: str = Field(description="what produced it: the model file or the manifest")
    kind: str = Field(description="ingest (the first ingest's own predictions), manifest or torchscript")
    source: str
    rows: int = Field(description="predictions stored")
    errors: int = Field(description="rows of the source that could not be used")
    created_at: str
    updated_at: str


class VersionList(BaseModel):
    current: str = Field(description="the version the map, clusters, scores, mining and selection read")
    ingest_version: str = Field(description="the version an ordinary ingest records its predictions under")
    versions: list[ModelVersion]


class VersionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, description="the new version's name (letters, digits, . _ -)")
    source: str | None = Field(
        None, description="a manifest of predictions (id/uri + probs or pred_label+score)" + UNDER_INGEST_ROOTS
    )
    coco_results: str | None = Field(
        None,
        description="detection datasets: the new detector's COCO results; source is then the ground-truth "
        "annotations file" + UNDER_INGEST_ROOTS,
    )
    image_root: str | None = Field(None, description="manifest: folder relative uris start from" + UNDER_INGEST_ROOTS)
    classes: list[str] | None = Field(None, description="manifest: the order of its probs")
    model_file: str | None = Field(
        None, description="a TorchScript model returning (embedding, logits), run over the images" + UNDER_INGEST_ROOTS
    )
    mc_passes: int = Field(0, ge=0, le=100, description="model_file: MC-dropout passes")
    batch_size: int = Field(64, ge=1, le=4096)
    make_current: bool = False


class SetCurrent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)


class Interval(BaseModel):
    value: float | None
    low: float | None
    high: float | None


class CompareGroup(BaseModel):
    model_config = ConfigDict(extra="allow")
    key: str = Field(description="overall, cluster, label, or a metadata field")
    value: Any = Field(description="the cluster id, class or metadata value (null for overall)")
    n: int = Field(description="rows judged in both versions")
    still_right: int
    fixed: int = Field(description="wrong in base, right in new")
    broken: int = Field(description="right in base, wrong in new")
    still_wrong: int
    accuracy_base: Interval
    accuracy_new: Interval
    delta: Interval = Field(description="accuracy_new - accuracy_base")
    p_value: float | None = Field(description="exact McNemar test of fixed vs broken")
    verdict: str = Field(description="regression (interval of delta below 0), improvement, no_change, no_data")
    failure_rank: int | None = Field(None, description="clusters: the analysis's failure rank")


class Regression(BaseModel):
    key: str
    value: Any
    n: int
    delta: Interval
    fixed: int
    broken: int


class CompareReport(BaseModel):
    dataset: str
    base: str
    new: str
    split: str | None
    resamples: int
    seed: int
    confidence: float
    rows: dict[str, int] = Field(description="rows per outcome: " + ", ".join(ROW_OUTCOMES))
    overall: CompareGroup
    regressions: list[Regression] = Field(description="groups where new is significantly worse, worst first")
    analysis: dict[str, Any] | None = Field(description="run_id, analyzed_at, stale of the analysis clustered on")
    clusters: list[CompareGroup] = Field(description="regressions first, then failure clusters by rank")
    classes: list[CompareGroup]
    metadata: dict[str, list[CompareGroup]] = Field(description="per categorical metadata field")
    slices: list[CompareGroup] = Field(description="metadata field 'slice' when the dataset has one")
    skipped_fields: list[str] = Field(description="metadata fields not broken down (float, timestamp, too many values)")
    task: str = Field(description="classification or detection")
    detection: dict[str, Any] | None = Field(
        description="detection: transitions {base outcome: {new outcome: objects}} and false_positives per version"
    )


class CompareRow(BaseModel):
    id: str
    outcome: str
    label: str | None
    base_pred: str | None
    new_pred: str | None
    base_confidence: float | None
    new_confidence: float | None
    cluster: int | None
    split: str | None


class CompareRowsPage(BaseModel):
    items: list[CompareRow]
    total: int
    limit: int
    offset: int
    counts: dict[str, int] = Field(description="rows per outcome under the cluster / field filters")


class ComparePoints(BaseModel):
    version: int = Field(description="the samples table version (the /points header's)")
    count: int
    outcomes: list[str] = Field(description="outcome names by code")
    codes: list[int] = Field(description="one code per point, in the order of GET /points")


# -- routes -----------------------------------------------------------------------------------------


@router.get("/datasets/{dataset}/versions", response_model=VersionList, responses=problems(401, 404))
def get_versions(dataset: str, store: StoreDep) -> Any:
    """The dataset's model versions (empty for one ingested before versions existed)."""
    from edgeminer.indexer.versions import list_versions

    return list_versions(store, dataset)


@router.post(
    "/datasets/{dataset}/versions",
    response_model=JobPublic,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problems(401, 403, 404, 422),
)
def add_version(dataset: str, body: VersionCreate, store: StoreDep, jobs: JobsDep, settings: SettingsDep) -> Any:
    """Store a model's predictions for the dataset's rows as a new version (or refresh one), as a job:
    from a manifest (rows matched by id) or a TorchScript model run over the images. Embeddings and labels
    are not touched. Paths must lie under the server's ingest roots (403 otherwise)."""
    from edgeminer.indexer.versions import check_version_name, ingest_predictions

    store.get_dataset(dataset)
    check_version_name(body.name)
    if (body.source is None) == (body.model_file is None):
        raise ValidationFailed("give exactly one of source (a predictions manifest) and model_file", field="source")
    roots = list(settings.ingest_roots)
    for name in ("source", "coco_results", "image_root", "model_file"):
        value = getattr(body, name)
        if value is not None:
            require_under_roots(value, roots, field=name)
    source = None
    if body.source is not None:
        from edgeminer.indexer.sources import open_source

        source = open_source(
            body.source,
            kind="coco" if body.coco_results else "manifest",
            coco_results=body.coco_results,
            image_root=body.image_root,
            classes=body.classes,
            allowed_roots=roots,
        )

    def run(ctx: Any) -> dict[str, Any]:
        report = ingest_predictions(
            ctx.store,
            dataset,
            body.name,
            source=source,
            model_file=body.model_file,
            mc_passes=body.mc_passes,
            device=settings.device,
            batch_size=body.batch_size,
            make_current=body.make_current,
            on_progress=ctx.progress,
        )
        errors = [{"item": e["id"], "message": e["error"]} for e in report.errors]
        return {"counts": {"rows": report.rows, "errors": report.error_count}, "errors": errors,
                "error_count": report.error_count, "version": report.version, "current": report.current}  # fmt: skip

    params = body.model_dump(mode="json", exclude_none=True)
    return public_job(jobs.submit(dataset, "model_version", params, run))


@router.post(
    "/datasets/{dataset}/versions/current",
    response_model=JobPublic,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problems(401, 404, 422),
)
def set_current_version(dataset: str, body: SetCurrent, store: StoreDep, jobs: JobsDep) -> Any:
    """Make ``name`` the current version (a job): its predictions and scores are copied into the rows the
    map, clusters, mining, selection and exports read. Re-run the analysis to re-rank the clusters."""
    from edgeminer.indexer.versions import require_version, set_current

    require_version(store, dataset, body.name)  # 404 naming the known versions before a job is made

    def run(ctx: Any) -> dict[str, Any]:
        return set_current(ctx.store, dataset, body.name)

    return public_job(jobs.submit(dataset, "set_current_version", {"name": body.name}, run))


def _options(split: str | None, resamples: int, seed: int, confidence: float) -> CompareOptions:
    return CompareOptions(split=split, resamples=resamples, seed=seed, confidence=confidence)


@router.get("/datasets/{dataset}/compare", response_model=CompareReport, responses=problems(401, 404, 422))
def get_compare(
    dataset: str,
    store: StoreDep,
    base: VersionQuery,
    new: VersionQuery,
    split: SplitQuery = None,
    resamples: Annotated[int, Query(ge=100, le=MAX_RESAMPLES)] = 1000,
    seed: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    confidence: Annotated[float, Query(ge=0.5, lt=1.0)] = 0.95,
) -> Any:
    """What ``new`` fixed and broke against ``base`` on the labeled rows (of ``split``): accuracy of each
    with a paired bootstrap interval, fixed / broken counts, overall, per cluster of the current analysis,
    per class and per categorical metadata value; regressions (significantly worse groups) first."""
    return compare(store, dataset, base, new, _options(split, resamples, seed, confidence))


@router.get("/datasets/{dataset}/compare/rows", response_model=CompareRowsPage, responses=problems(401, 404, 422))
def get_compare_rows(
    dataset: str,
    store: StoreDep,
    base: VersionQuery,
    new: VersionQuery,
    outcome: Annotated[str | None, Query(description="one of " + ", ".join(ROW_OUTCOMES))] = None,
    cluster: Annotated[int | None, Query(ge=-1)] = None,
    field: Annotated[str | None, Query(max_length=100, description="label or a metadata field")] = None,
    value: Annotated[str | None, Query(max_length=1000, description="the field's value (as text)")] = None,
    split: SplitQuery = None,
    limit: Annotated[int, Query(ge=0, le=10_000)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Any:
    """Rows with their outcome (fixed, broken, still_right, still_wrong, unlabeled, no_prediction), by id:
    a cluster's, a class's or a metadata value's fixed and broken examples."""
    return outcome_page(
        store, dataset, base, new, outcome=outcome, cluster=cluster, field=field, value=value, split=split,
        limit=limit, offset=offset,
    )  # fmt: skip


@router.get("/datasets/{dataset}/compare/points", response_model=ComparePoints, responses=problems(401, 404, 422))
def get_compare_points(dataset: str, store: StoreDep, base: VersionQuery, new: VersionQuery) -> Any:
    """The outcome code of every map point, in the order of ``GET /points`` (ok rows with coordinates,
    by id): colour the map by fixed / broken / still wrong / still right."""
    return point_outcomes(store, dataset, base, new)
