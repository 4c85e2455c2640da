"""Metadata slices and label issues over HTTP.

- ``GET /datasets/{ds}/slices``: the metadata slices with the highest error rates
  (indexer/analysis/metaslices.py), beside references to the failure clusters of the current analysis
  (their summaries are at ``/datasets/{ds}/clusters/{id}``);
- ``GET /datasets/{ds}/label-issues``: labeled rows whose label is likely wrong
  (indexer/analysis/label_issues.py), most likely first, a page at a time.

Both are computed on demand and cached per samples-table version in the dataset's docs table (a later
request at the same version returns the cached figures); ``version`` says which table version they
describe, ``current_version`` / ``stale`` whether the table has moved since.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from edgeminer.indexer.analysis.label_issues import LabelIssueParams, load_label_issues
from edgeminer.indexer.analysis.metaslices import SliceParams, slices_overview
from edgeminer.service.api.deps import StoreDep
from edgeminer.service.api.models import problems

router = APIRouter(tags=["slices"])


class SliceCondition(BaseModel):
    field: str = Field(description="metadata field (image properties are img_*)")
    bin: str = Field(description="the value, or the bin's name for numbers (dark, normal, bright...)")
    label: str = Field(description="field=bin with the bin's range")
    filters: list[dict[str, Any]] = Field(description="the condition as structured filters")


class MetaSlice(BaseModel):
    id: int = Field(description="the slice's number (its rank): `mine --slice N`, seeds.slice")
    rank: int
    description: str
    summary: str = Field(description="one line: error rate, lift, judged rows, unlabeled rows")
    conditions: list[SliceCondition]
    filters: list[dict[str, Any]] = Field(description="all conditions as filters (for /samples?filters=)")
    score: float = Field(description="SliceLine score")
    rows: int = Field(description="ok rows in the slice")
    judged: int = Field(description="labeled rows the error rate is judged on")
    errors: int
    error_rate: float
    lift: float = Field(description="error rate / the base error rate")
    unlabeled: int


class ClusterRef(BaseModel):
    id: int
    failure_rank: int
    size: int | None = None
    judged: int | None = None
    errors: int | None = None
    error_rate: float | None = None
    lift: float | None = None
    unlabeled: int | None = None
    dominant_label: str | None = None
    top_confusion: dict[str, Any] | None = None
    href: str = Field(description="the cluster's full summary")


class ClusterRefs(BaseModel):
    analyzed: bool
    stale: bool = Field(description="the analysis is older than the data (version_written != current_version)")
    run_id: str | None = None
    analyzed_at: str | None = None
    version_written: int | None = None
    base_error_rate: float | None = None
    items: list[ClusterRef]


class SlicesResponse(BaseModel):
    dataset: str
    version: int = Field(description="samples table version the slices describe")
    current_version: int
    stale: bool
    computed_at: str
    method: str
    params: dict[str, Any]
    min_sup: int
    rows: int
    judged: int
    judged_errors: int
    judged_on: str
    unlabeled: int
    base_error_rate: float
    features: list[dict[str, Any]] = Field(description="each metadata field used and its bins")
    slices: list[MetaSlice]
    clusters: ClusterRefs = Field(description="the failure clusters of the current analysis, by reference")


class LabelIssue(BaseModel):
    id: str
    rank: int
    split: str
    label: str = Field(description="the given label")
    suggested: str = Field(description="the class confident learning counts the row into")
    self_confidence: float = Field(description="probability of the given label")
    suggested_confidence: float
    judged_by: Literal["model", "probe"] = Field(description="stored model probabilities, or the probe's")


class LabelIssuesResponse(BaseModel):
    dataset: str
    version: int
    current_version: int
    stale: bool
    computed_at: str
    method: str
    params: dict[str, Any]
    counts: dict[str, int] = Field(description="labeled rows, judged by the model / the probe, not judged")
    thresholds: dict[str, dict[str, float]]
    total: int = Field(description="label issues found (the page is items)")
    truncated: bool
    limit: int
    offset: int
    items: list[LabelIssue]


@router.get(
    "/datasets/{dataset}/slices",
    response_model=SlicesResponse,
    responses=problems(401, 404, 422),
    summary="Metadata slices with high error rates, beside the failure clusters",
)
def get_slices(
    dataset: str,
    store: StoreDep,
    max_l: int = Query(2, ge=1, le=3, description="most conditions per slice"),
    top_k: int = Query(10, ge=1, le=100, description="slices to return"),
    min_sup: int | None = Query(None, ge=1, description="fewest judged rows per slice (default 1%, >= 10)"),
    include_train: bool = Query(False, description="judge errors on train rows too"),
    refinements: bool = Query(
        False, description="also list slices a condition narrows without a significantly higher error rate"
    ),
    refresh: bool = Query(False, description="recompute even if cached at this version"),
) -> dict[str, Any]:
    params = SliceParams(
        max_l=max_l, top_k=top_k, min_sup=min_sup, include_train=include_train, refinements=refinements
    )
    out = slices_overview(store, store.dataset(dataset).name, params, refresh=refresh)
    for item in out["clusters"]["items"]:
        item["href"] = f"/api/v1/datasets/{dataset}/clusters/{item['id']}"
    return out


@router.get(
    "/datasets/{dataset}/label-issues",
    response_model=LabelIssuesResponse,
    responses=problems(401, 404, 422),
    summary="Labeled rows whose label is likely wrong (confident learning)",
)
def get_label_issues(
    dataset: str,
    store: StoreDep,
    train_rows: Literal["probe", "skip", "model"] = Query(
        "probe", description="train rows: a cross-validated probe on the embeddings (default), skip, or the model"
    ),
    other_rows: Literal["probe", "model"] = Query(
        "probe", description="the other labeled rows: the probe (default) or the stored model probabilities"
    ),
    limit: int = Query(100, ge=1, le=5000),
    offset: int = Query(0, ge=0),
    refresh: bool = Query(False, description="recompute even if cached at this version"),
) -> dict[str, Any]:
    name = store.dataset(dataset).name
    doc = load_label_issues(
        store, name, LabelIssueParams(train_rows=train_rows, other_rows=other_rows), refresh=refresh
    )
    current = store.version(name)
    issues = doc["issues"]
    return {
        **{k: v for k, v in doc.items() if k not in ("issues", "count")},
        "current_version": current,
        "stale": doc["version"] != current,
        "total": doc["count"],
        "limit": limit,
        "offset": offset,
        "items": issues[offset : offset + limit],
    }
