"""Request and response models shared by the routes (Pydantic lives here, at the edge, only).

Families follow the fastapi full-stack template: ``XCreate`` (request body), ``XUpdate`` (partial
update), ``XPublic`` (response). Area-specific models (mining, selection, exports) may live next to
their routes; the shared ones (Problem, Filter, Page, JobPublic...) are here.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

FilterOp = Literal["eq", "ne", "lt", "le", "gt", "ge", "between", "in", "contains", "is_null"]
FILTER_OPS: tuple[str, ...] = ("eq", "ne", "lt", "le", "gt", "ge", "between", "in", "contains", "is_null")

Scalar = str | int | float | bool | None


class Problem(BaseModel):
    """An error (RFC 9457 problem details); extra members depend on the error type."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(examples=["urn:edgeminer:problem:dataset-not-found"])
    title: str
    status: int
    detail: str


#: ``responses=`` for routes: documents the problem+json bodies in the OpenAPI schema.
def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    desc = {
        400: "Bad request",
        401: "Missing or wrong X-API-Key",
        403: "Forbidden",
        404: "Not found",
        409: "Conflict",
        422: "Validation failed",
        503: "Service unavailable",
    }
    return {
        s: {
            "model": Problem,
            "description": desc.get(s, "Error"),
            "content": {"application/problem+json": {}},
        }
        for s in statuses
    }


class Filter(BaseModel):
    """A structured filter: ``{"field": "area", "op": "between", "value": [100, 10000]}``.

    Metadata fields are used by their plain name (``slice``); ``contains`` on a list column (``tags``)
    tests membership, on a string it is a substring match; ``is_null`` takes ``true`` or ``false``.
    """

    model_config = ConfigDict(extra="forbid")
    field: str = Field(min_length=1, max_length=128)
    op: FilterOp = "eq"
    value: Scalar | list[Scalar] = None


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int = Field(description="rows matching the filters, over all pages")
    limit: int
    offset: int


class UnreadableDataset(BaseModel):
    dataset: str = Field(description="dataset name ('_catalog' when the list of datasets itself cannot be read)")
    reason: str = Field(description="why, without server paths; `edgeminer check --dataset X` gives the details")


class Health(BaseModel):
    """Liveness plus a cheap integrity probe: every dataset's tables must open, count their rows and find
    each data file they reference at the size they recorded (no rows are read: a file overwritten in
    place is found by `edgeminer check` only). The server's data dir is not shown."""

    status: Literal["ok", "degraded"] = Field(
        "ok", description="'degraded' when a dataset cannot be read; the server still answers (HTTP 200)"
    )
    version: str
    datasets: int
    auth: Literal["none", "writes", "reads_and_writes"]
    unreadable_count: int = Field(0, description="datasets that cannot be read")
    unreadable: list[UnreadableDataset] = Field(
        default_factory=list,
        description="which, and why; left empty (unreadable_count still set) when the server requires an "
        "API key for reads and the request did not send a valid one",
    )
    label_studio: bool = Field(
        False,
        description="whether this server has a Label Studio configured (EDGEMINER_LABEL_STUDIO_URL and "
        "EDGEMINER_LABEL_STUDIO_TOKEN): the push / pull routes need it. Never its URL or token",
    )


# -- datasets -------------------------------------------------------------------------------------


class DatasetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
    dim: int = Field(gt=0, le=65536, description="embedding dimension")
    embedder: dict[str, Any] = Field(
        default_factory=lambda: {"kind": "precomputed"},
        description='embedder config recorded with the dataset, e.g. {"kind": "open_clip", "model": "ViT-B-32"}',
    )
    classes: list[str] = Field(default_factory=list, max_length=100_000)
    task: Literal["classification", "detection"] = "classification"
    metadata_fields: dict[str, Literal["string", "int", "float", "bool", "timestamp"]] = Field(default_factory=dict)


class DatasetSummary(BaseModel):
    name: str
    task: str
    dim: int
    embedder: dict[str, Any]
    classes: list[str]
    metadata_fields: dict[str, str]
    rows: int
    created_at: str


class DatasetCounts(BaseModel):
    total: int
    ok: int
    errors: int
    labeled: int
    unlabeled: int
    analyzed: int = Field(description="rows with a 2-D position (x, y) from the last analysis")
    by_split: dict[str, int]


class VersionPublic(BaseModel):
    version: int
    timestamp: str
    rows: int


class DatasetDetail(DatasetSummary):
    media_roots: list[str]
    counts: DatasetCounts
    version: int
    versions: list[VersionPublic]
    fields: dict[str, str] = Field(description="filterable fields and their types")


#: said of every request field that names a server path (see service.paths).
UNDER_INGEST_ROOTS = "; must be under the server's ingest roots (EDGEMINER_INGEST_ROOTS), else 403"


class EmbedderOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["open_clip", "torchscript", "precomputed"] | None = None
    model: str | None = None
    pretrained: str | None = Field(
        None, description="open_clip: a pretrained tag, or a checkpoint file on the server" + UNDER_INGEST_ROOTS
    )
    model_file: str | None = Field(None, description="torchscript: the model file on the server" + UNDER_INGEST_ROOTS)
    image_size: int | None = Field(
        None, gt=0, le=4096, description="torchscript: square input size (default: the file's edgeminer.json, else 224)"
    )
    mean: list[float] | None = Field(
        None, min_length=1, max_length=3, description="torchscript: per-channel mean (default: edgeminer.json, 0.5)"
    )
    std: list[float] | None = Field(
        None, min_length=1, max_length=3, description="torchscript: per-channel std (default: edgeminer.json, 0.5)"
    )
    mc_passes: int | None = Field(None, ge=0, le=100)
    vectors: str | None = Field(
        None, description="precomputed: a .npy on the server, one row per manifest row" + UNDER_INGEST_ROOTS
    )
    vector_column: str | None = None
    device: str | None = None


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(
        min_length=1,
        description="a path on the server: manifest, class folders or COCO json"
        + UNDER_INGEST_ROOTS
        + " (images a manifest or COCO file names outside them become error rows)",
    )
    format: Literal["manifest", "folders", "coco"] | None = None
    split: str | None = None
    unlabeled: str | None = Field(None, description="folders: a folder of unlabeled images" + UNDER_INGEST_ROOTS)
    coco_results: str | None = Field(None, description="coco: a COCO results json" + UNDER_INGEST_ROOTS)
    image_root: str | None = Field(
        None, description="manifest, coco: the folder relative image paths start from" + UNDER_INGEST_ROOTS
    )
    classes: list[str] | None = None
    embedder: EmbedderOptions = Field(default_factory=EmbedderOptions)
    batch_size: int = Field(64, ge=1, le=4096)
    workers: int = Field(2, ge=1, le=32)

    def server_paths(self) -> list[tuple[str, str]]:
        """(field, value) of every field that names a path on the server (checked against
        ``settings.ingest_roots`` before anything is opened)."""
        from edgeminer.service.paths import names_a_file

        emb = self.embedder
        fields = [
            ("source", self.source),
            ("unlabeled", self.unlabeled),
            ("coco_results", self.coco_results),
            ("image_root", self.image_root),
            ("embedder.vectors", emb.vectors),
            ("embedder.model_file", emb.model_file),
            ("embedder.pretrained", emb.pretrained if emb.pretrained and names_a_file(emb.pretrained) else None),
        ]
        return [(name, value) for name, value in fields if value is not None]


# -- samples --------------------------------------------------------------------------------------


class SampleQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filters: list[Filter] = Field(default_factory=list, max_length=64)
    sort: str | None = Field(None, description="a scalar column; prefix '-' for descending")
    limit: int = Field(50, ge=0, le=10_000)
    offset: int = Field(0, ge=0)
    columns: list[str] | None = None


# -- issues ---------------------------------------------------------------------------------------


class IssueCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=10_000)
    sample_ids: list[str] = Field(default_factory=list, max_length=100_000)


class IssueUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=10_000)
    add_ids: list[str] = Field(default_factory=list, max_length=100_000)
    remove_ids: list[str] = Field(default_factory=list, max_length=100_000)


class IssuePublic(BaseModel):
    id: str
    dataset: str
    name: str
    description: str
    sample_ids: list[str]
    count: int
    created_at: str
    updated_at: str


class IssueChange(IssuePublic):
    added: int = 0
    removed: int = 0
    unknown_ids: list[str] = Field(default_factory=list, description="ids that are not in the dataset")
    not_in_issue: list[str] = Field(default_factory=list, description="ids asked to be removed but absent")


# -- jobs -----------------------------------------------------------------------------------------


class JobProgress(BaseModel):
    done: int = 0
    total: int | None = None
    message: str | None = None


class JobPublic(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    kind: str
    dataset: str
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    params: dict[str, Any] = Field(default_factory=dict)
    progress: JobProgress = Field(default_factory=JobProgress)
    counts: dict[str, Any] = Field(default_factory=dict)
    errors: list[Any] = Field(default_factory=list)
    error_count: int = 0
    error: str | None = None
    result: dict[str, Any] | None = None
    version_read: int | None = None
    version_written: int | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    interrupted: bool = False
