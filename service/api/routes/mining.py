"""Mining, selection and stream decisions over HTTP.

- ``POST /datasets/{ds}/mine``: seeds -> nearest unlabeled neighbours (service/mining/);
- ``POST /datasets/{ds}/select``: uncertainty / random selection under a budget (service/selection.py);
- ``POST /datasets/{ds}/stream``: decide whether a new production sample goes to labeling now
  (service/stream.py); ``GET /datasets/{ds}/stream/decisions`` lists the recorded decisions.

Images travel as base64 in the JSON body (``image_base64``), so every request is one JSON document.
Mine and select calls are recorded as ``selection`` documents (``selection_id`` in the response) that
an export can take as its input, by the library's ``record_selection`` (service/selection.py), the
same call ``edgeminer mine`` / ``select`` make.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from edgeminer.indexer.documents import DecisionDoc
from edgeminer.indexer.store import Dataset, DocNotFound
from edgeminer.indexer.where import and_
from edgeminer.service.api.deps import SettingsDep, StoreDep
from edgeminer.service.api.models import Filter, Page, problems
from edgeminer.service.errors import (
    BudgetTooLarge,
    IssueNotFound,
    NotFound,
    Unsupported,
    ValidationFailed,
)
from edgeminer.service.filters import build_where
from edgeminer.service.mining import (
    DEFAULT_MODE_WEIGHTING,
    MAX_SEEDS,
    Aggregation,
    Diversity,
    EmbeddingUnavailable,
    MiningError,
    ModeWeighting,
    Seeds,
    SeedsNotFound,
    mine,
)
from edgeminer.service.mining.seeds import seed_candidate_where
from edgeminer.service.selection import Strategy, record_selection, select
from edgeminer.service.settings import Settings
from edgeminer.service.stream import (
    PERIODS,
    STREAM_UPLOADS,
    StreamBudget,
    StreamPolicy,
    StreamSample,
    decide,
    list_decisions,
)

router = APIRouter(tags=["mining"])

Uncertainty = Literal["least_confidence", "margin", "ratio", "entropy", "mc_variance", "bald"]

MAX_IMAGE_BYTES = 20 * 1024 * 1024
T = TypeVar("T")


# -- models ---------------------------------------------------------------------------------------


class ConfusionCell(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = Field(min_length=1, max_length=500, description="ground truth class")
    pred_label: str = Field(min_length=1, max_length=500, description="predicted class")


class SeedSpec(BaseModel):
    """What to mine around; parts combine (ids + issue + selector rows + text + image). The selector
    parts (cluster, confusion, pair, failures, split) pick the rows matching all of them."""

    model_config = ConfigDict(extra="forbid")
    ids: list[Annotated[str, Field(max_length=1000)]] = Field(default_factory=list, max_length=MAX_SEEDS)
    issue: str | None = Field(None, max_length=200, description="an issue id: its sample_ids are the seeds")
    cluster: int | None = Field(None, ge=-1, le=2**31 - 1, description="rows of this analysis cluster")
    confusion: ConfusionCell | None = Field(None, description="rows with this label predicted as pred_label")
    pair: list[Annotated[str, Field(max_length=500)]] | None = Field(
        None, min_length=2, max_length=2, description="top-2 confusion pair [a, b]: pred_label/pred_label2"
    )
    failures: bool = Field(False, description="only rows the model got wrong (correct = false)")
    split: str | None = Field(None, max_length=200, description="only rows of this split")
    text: str | None = Field(None, min_length=1, max_length=2000, description="open_clip datasets only")
    image_base64: str | None = Field(None, max_length=MAX_IMAGE_BYTES * 4 // 3 + 4)
    slice: int | None = Field(
        None, ge=1, le=100, description="a metadata slice (GET /slices): its failures seed, its rows are the candidates"
    )
    label_issues: bool = Field(False, description="the likely label mistakes (GET /label-issues) are seeds")


class MineRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seeds: SeedSpec
    budget: int = Field(100, ge=1, description="rows to return (min(budget, matching rows) come back)")
    k: int | None = Field(None, ge=1, le=10_000, description="neighbours per seed that count as found by it")
    aggregation: Aggregation = "modes"
    filters: list[Filter] = Field(default_factory=list, max_length=64)
    include_labeled: bool = False
    include_exported: bool = False
    dedup_distance: float | None = Field(None, ge=0.0, lt=2.0, description="near-duplicate cosine distance")
    columns: list[Annotated[str, Field(max_length=200)]] | None = Field(None, max_length=200)
    record: bool = Field(True, description="save the result as a selection document")
    diversity: Diversity | None = Field(
        None,
        description="spread each failure mode's share over its pool_factor x share nearest rows, balancing the "
        "predicted classes; cover: over its whole failure cluster, away from the cluster's training rows "
        "(None: the nearest rows only)",
    )
    pool_factor: int = Field(4, ge=1, le=100, description="with diversity: the pool is this many times the share")
    balance_classes: bool = Field(True, description="with diversity: cap the rows per predicted class in a mode")
    uncertain_share: float = Field(
        0.0, ge=0.0, le=1.0,
        description="share of the budget taken after the mined rows by the uncertainty score: the most uncertain "
        "candidates not mined (0: mining only; 0.5 with diversity cover is edgeminer's pick for labeling)",
    )
    uncertainty: Literal["margin", "least_confidence", "ratio", "entropy"] = Field(
        "margin", description="the score uncertain_share ranks by"
    )
    mode_weighting: ModeWeighting = Field(
        DEFAULT_MODE_WEIGHTING,
        description="how failure modes (aggregation modes) share the budget: learnable_error_rate (error rate on "
        "held-out rows near the seeds times how well the model fits the training rows there), local_error_rate, "
        "cluster_error_rate or size",
    )


class ModeInfo(BaseModel):
    mode: int
    size: int
    share: int
    found: int
    cluster: int | None
    seeds: list[str]


class MineResponse(BaseModel):
    dataset: str
    aggregation: str
    budget: int
    k: int
    returned: int
    candidates: int = Field(description="rows matching the candidate filter")
    engine: str = Field(description="exact or index")
    seeds: int
    seed_ids: list[str]
    modes: list[ModeInfo]
    dedup_removed: int
    uncertain: int = Field(0, description="rows picked by the uncertainty score (uncertain_share), ranked last")
    version: int
    took_ms: float
    selection_id: str | None
    items: list[dict[str, Any]]


class SelectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    strategy: Strategy = "least_confidence"
    budget: int = Field(100, ge=1)
    explore: float = Field(0.0, ge=0.0, le=1.0, description="share of the budget picked at random")
    per_class_cap: int | None = Field(None, ge=1, description="most rows per predicted class")
    filters: list[Filter] = Field(default_factory=list, max_length=64)
    include_labeled: bool = False
    include_exported: bool = False
    seed: int = Field(0, ge=0, le=2**63 - 1)
    columns: list[Annotated[str, Field(max_length=200)]] | None = Field(None, max_length=200)
    record: bool = True


class SelectResponse(BaseModel):
    dataset: str
    strategy: str
    budget: int
    explore: float
    returned: int
    candidates: int
    counts: dict[str, int] = Field(description="rows per part: the strategy's name, explore (or random)")
    skipped_no_score: int
    per_class_cap: int | None
    seed: int
    version: int
    selection_id: str | None
    items: list[dict[str, Any]]


class StreamRequest(BaseModel):
    """One production sample (exactly one of image_base64 / uri / embedding) and the policy."""

    model_config = ConfigDict(extra="forbid")
    image_base64: str | None = Field(None, max_length=MAX_IMAGE_BYTES * 4 // 3 + 4)
    uri: str | None = Field(None, max_length=4096, description="an image file under the media roots")
    embedding: list[float] | None = Field(None, max_length=65_536)
    probs: list[float] | None = Field(
        None, max_length=100_000, description="class probabilities in the dataset's class order"
    )
    mc_probs: list[list[float]] | None = Field(None, max_length=1000, description="MC-dropout passes (T, C)")
    id: str | None = Field(None, min_length=1, max_length=500)
    metadata: dict[str, str | int | float | bool | None] = Field(default_factory=dict, max_length=200)
    model_version: str | None = Field(None, max_length=200)
    confidence_below: float | None = Field(0.5, ge=0.0, le=1.0)
    uncertainty: Uncertainty = "entropy"
    uncertainty_above: float | None = Field(None, ge=0.0)
    issue_distance: float | None = Field(0.1, ge=0.0, le=2.0)
    issues: list[Annotated[str, Field(max_length=200)]] | None = Field(None, max_length=1000)
    budget: int = Field(100, ge=0, le=10_000_000, description="labels per period")
    period: Literal["hour", "day", "week"] | Annotated[int, Field(ge=1, le=366 * 86400)] = "day"


class DecisionPublic(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    sample_id: str
    send: bool
    candidate: bool
    reasons: list[dict[str, Any]]
    why: str
    scores: dict[str, float]
    pred_label: str | None
    nearest_issue: dict[str, Any] | None
    period_start: str
    period_seconds: int
    budget: int
    budget_used: int
    budget_left: int
    decided_at: str


# -- helpers --------------------------------------------------------------------------------------


def _domain(dataset: str, fn: Callable[[], T]) -> T:
    """Run library code, turning its errors into the service's error tree."""
    try:
        return fn()
    except SeedsNotFound as exc:
        raise NotFound(str(exc), title="Seed not found", dataset=dataset, missing_ids=exc.missing[:100]) from exc
    except EmbeddingUnavailable as exc:
        raise Unsupported(str(exc)) from exc
    except MiningError as exc:
        raise ValidationFailed(str(exc)) from exc
    except DocNotFound as exc:
        if exc.kind == "issue":
            raise IssueNotFound(dataset, exc.doc_id) from exc
        raise


def _check_budget(budget: int, settings: Settings) -> None:
    if budget > settings.max_budget:
        raise BudgetTooLarge(budget, settings.max_budget)


def _where(ds: Dataset, filters: list[Filter]) -> str | None:
    return build_where(ds.info, ds.schema, filters, store=ds.store)


def _columns(ds: Dataset, columns: list[str] | None) -> list[str] | None:
    if not columns:
        return None
    from edgeminer.service.api.routes.samples import select_columns

    return [c for c in select_columns(ds.store, ds.name, columns) if c != "id"]


def _decode_image(text: str, field: str) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationFailed(
            f"{field} is not valid base64 ({exc}); send the image file's bytes base64-encoded",
            errors=[{"loc": ["body", field], "msg": "invalid base64"}],
        ) from exc
    if not data:
        raise ValidationFailed(f"{field} is empty; send the image file's bytes base64-encoded")
    from edgeminer.indexer.pipeline import ImageLoadError, identify_image_bytes

    try:
        identify_image_bytes(data)  # the header only: a full decode happens once, where it is embedded
    except ImageLoadError as exc:
        raise ValidationFailed(
            f"{field} is not readable as an image (PNG, JPEG, WebP...): {exc}",
            errors=[{"loc": ["body", *field.split(".")], "msg": "not an image"}],
        ) from exc
    return data


def _items(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from edgeminer.service.api.routes.samples import jsonable

    return [{k: jsonable(v) for k, v in r.items()} for r in rows]


_budget_lock = threading.Lock()


def _stream_budget(request: Request) -> StreamBudget:
    with _budget_lock:
        budget = getattr(request.app.state, "stream_budget", None)
        if budget is None:
            budget = StreamBudget()
            request.app.state.stream_budget = budget
        return budget


# -- routes ---------------------------------------------------------------------------------------


@router.post(
    "/datasets/{dataset}/mine",
    response_model=MineResponse,
    responses=problems(401, 404, 422),
    summary="Nearest unlabeled neighbours of failure examples",
)
def mine_route(dataset: str, body: MineRequest, store: StoreDep, settings: SettingsDep) -> dict[str, Any]:
    _check_budget(body.budget, settings)
    ds = store.dataset(dataset)
    s = body.seeds
    seeds = Seeds(
        ids=list(s.ids),
        issue=s.issue,
        cluster=s.cluster,
        confusion=(s.confusion.label, s.confusion.pred_label) if s.confusion else None,
        pair=(s.pair[0], s.pair[1]) if s.pair else None,
        failures=s.failures,
        split=s.split,
        text=s.text,
        image=_decode_image(s.image_base64, "seeds.image_base64") if s.image_base64 else None,
        slice=s.slice,
        label_issues=s.label_issues,
    )
    where = and_(_where(ds, body.filters), seed_candidate_where(ds, seeds)) or None
    columns = _columns(ds, body.columns)
    device = "cpu" if settings.device == "auto" else settings.device
    result = _domain(
        dataset,
        lambda: mine(
            store,
            dataset,
            seeds,
            budget=body.budget,
            k=body.k,
            aggregation=body.aggregation,
            where=where,
            include_labeled=body.include_labeled,
            include_exported=body.include_exported,
            dedup_distance=body.dedup_distance,
            columns=columns,
            device=device,
            diversity=body.diversity,
            pool_factor=body.pool_factor,
            balance_classes=body.balance_classes,
            uncertain_share=body.uncertain_share,
            uncertainty=body.uncertainty,
            mode_weighting=body.mode_weighting,
        ),
    )
    selection_id = record_selection(store, dataset, result, filters=body.filters) if body.record else None
    summary = result.summary()
    return {
        **summary,
        "seeds": len(result.seeds.ids),
        "seed_ids": result.seeds.ids[:1000],
        "selection_id": selection_id,
        "items": _items(result.rows),
    }


@router.post(
    "/datasets/{dataset}/select",
    response_model=SelectResponse,
    responses=problems(401, 404, 422),
    summary="Rows to label next by uncertainty, with a random exploration share",
)
def select_route(dataset: str, body: SelectRequest, store: StoreDep, settings: SettingsDep) -> dict[str, Any]:
    _check_budget(body.budget, settings)
    ds = store.dataset(dataset)
    where = _where(ds, body.filters)
    columns = _columns(ds, body.columns)
    result = _domain(
        dataset,
        lambda: select(
            store,
            dataset,
            strategy=body.strategy,
            budget=body.budget,
            explore=body.explore,
            per_class_cap=body.per_class_cap,
            where=where,
            include_labeled=body.include_labeled,
            include_exported=body.include_exported,
            seed=body.seed,
            columns=columns,
        ),
    )
    selection_id = record_selection(store, dataset, result, filters=body.filters) if body.record else None
    return {**result.summary(), "selection_id": selection_id, "items": _items(result.rows)}


@router.post(
    "/datasets/{dataset}/stream",
    response_model=DecisionPublic,
    responses=problems(401, 403, 404, 422),
    summary="Store a new production sample and decide whether to label it now",
)
def stream_route(
    dataset: str, body: StreamRequest, request: Request, store: StoreDep, settings: SettingsDep
) -> DecisionDoc:
    store.dataset(dataset)  # DatasetNotFound before the image is decoded
    image = _decode_image(body.image_base64, "image_base64") if body.image_base64 else None
    policy = StreamPolicy(
        confidence_below=body.confidence_below,
        uncertainty=body.uncertainty,
        uncertainty_above=body.uncertainty_above,
        issue_distance=body.issue_distance,
        issues=body.issues,
        budget=body.budget,
        period=body.period,
    )
    sample = StreamSample(
        image=image,
        uri=body.uri,
        embedding=body.embedding,
        probs=body.probs,
        mc_probs=body.mc_probs,
        id=body.id,
        metadata=dict(body.metadata),
        model_version=body.model_version,
        image_field="image_base64",
    )
    upload_dir = None if "://" in settings.data_dir else Path(settings.data_dir) / STREAM_UPLOADS
    device = "cpu" if settings.device == "auto" else settings.device
    return _domain(
        dataset,
        lambda: decide(
            store,
            dataset,
            sample,
            policy,
            _stream_budget(request),
            media_roots=settings.media_roots,
            upload_dir=upload_dir,
            device=device,
        ),
    )


@router.get(
    "/datasets/{dataset}/stream/decisions",
    response_model=Page[DecisionPublic],
    responses=problems(401, 404, 422),
    summary="Recorded stream decisions, newest first",
)
def decisions_route(
    dataset: str,
    store: StoreDep,
    send: Annotated[bool | None, Query(description="only sent (true) or not sent (false)")] = None,
    limit: Annotated[int, Query(ge=0, le=10_000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> dict[str, Any]:
    store.dataset(dataset)  # DatasetNotFound, not an empty page
    items, total = list_decisions(store, dataset, send=send, limit=limit, offset=offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


__all__ = ["router", "PERIODS"]
