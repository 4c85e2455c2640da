"""Datasets: list, create (empty, with dim + embedder + classes), detail, delete; ingest as a job."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Response, status

from edgeminer.indexer.counts import row_counts
from edgeminer.indexer.documents import RunDoc
from edgeminer.indexer.store import DatasetInfo, Store
from edgeminer.service.api.deps import JobsDep, SettingsDep, StoreDep
from edgeminer.service.api.models import (
    DatasetCounts,
    DatasetCreate,
    DatasetDetail,
    DatasetSummary,
    IngestRequest,
    JobPublic,
    VersionPublic,
    problems,
)
from edgeminer.service.api.routes.jobs import public_job
from edgeminer.service.errors import Conflict, ValidationFailed
from edgeminer.service.export.runner import exports_dir
from edgeminer.service.filters import field_types
from edgeminer.service.paths import names_a_file, require_under_roots
from edgeminer.service.stream import STREAM_UPLOADS

router = APIRouter(tags=["datasets"])

#: versions listed in a dataset's detail (newest last); the full history can be long.
VERSIONS_SHOWN = 20


def summary(store: Store, info: DatasetInfo) -> DatasetSummary:
    return DatasetSummary(
        name=info.name,
        task=info.task,
        dim=info.dim,
        embedder=info.embedder,
        classes=info.classes,
        metadata_fields=info.metadata_fields,
        rows=store.count(info.name),
        created_at=info.created_at,
    )


#: the ``by_split`` key of rows without a split.
NO_SPLIT = "(none)"


def counts(store: Store, dataset: str) -> DatasetCounts:
    c = row_counts(store, dataset)
    return DatasetCounts(
        total=c.total,
        ok=c.ok,
        errors=c.errors,
        labeled=c.labeled,
        unlabeled=c.unlabeled,
        analyzed=c.analyzed,
        by_split=c.by_split(NO_SPLIT),
    )


def detail(store: Store, name: str) -> DatasetDetail:
    info = store.get_dataset(name)
    versions = store.list_versions(name)
    base = summary(store, info)
    return DatasetDetail(
        **base.model_dump(),
        media_roots=info.media_roots,
        counts=counts(store, name),
        version=store.version(name),
        versions=[VersionPublic(**v) for v in versions[-VERSIONS_SHOWN:]],
        fields=field_types(info, store.schema(name)),
    )


@router.get("/datasets", response_model=list[DatasetSummary])
def list_datasets(store: StoreDep) -> list[DatasetSummary]:
    return [summary(store, info) for info in store.list_datasets()]


def check_embedder_paths(embedder: dict[str, Any], roots: list[str]) -> None:
    """A recorded embedder config names files the server loads later (by ingest, text and image
    queries, the stream): a torchscript ``model_file``, an open_clip checkpoint as ``pretrained``. From
    an API request they must lie under ``settings.ingest_roots`` (403 otherwise)."""
    for key in ("model_file", "pretrained"):
        value = embedder.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ValidationFailed(f"embedder.{key} must be a string", field=f"embedder.{key}")
        if key == "model_file" or names_a_file(value):
            require_under_roots(value, roots, field=f"embedder.{key}")


@router.post(
    "/datasets",
    response_model=DatasetDetail,
    status_code=status.HTTP_201_CREATED,
    responses=problems(401, 403, 409, 422),
)
def create_dataset(body: DatasetCreate, store: StoreDep, settings: SettingsDep) -> DatasetDetail:
    """An empty dataset: rows arrive later by ingest (or by other tools writing through the store).

    An embedder config that names a file on the server (``model_file``, a checkpoint as ``pretrained``)
    must name one under the server's ingest roots (``EDGEMINER_INGEST_ROOTS``), else 403."""
    check_embedder_paths(body.embedder, settings.ingest_roots)
    embedder = dict(body.embedder)
    embedder.setdefault("kind", "precomputed")
    if embedder["kind"] == "precomputed":
        embedder.setdefault("dim", body.dim)
    store.create_dataset(
        body.name,
        dim=body.dim,
        embedder=embedder,
        classes=body.classes,
        task=body.task,
        metadata_fields=dict(body.metadata_fields),
    )
    return detail(store, body.name)


@router.get("/datasets/{dataset}", response_model=DatasetDetail, responses=problems(404))
def get_dataset(dataset: str, store: StoreDep) -> DatasetDetail:
    return detail(store, dataset)


@router.delete("/datasets/{dataset}", status_code=status.HTTP_204_NO_CONTENT, responses=problems(401, 404, 409))
def delete_dataset(dataset: str, store: StoreDep, jobs: JobsDep, settings: SettingsDep) -> Response:
    store.dataset(dataset)  # DatasetNotFound before the jobs are looked at
    active = [j for j in jobs.list(dataset=dataset) if j.get("status") in ("queued", "running")]
    live = [j for j in active if not _orphan(j)]
    if live:
        raise Conflict(
            f"dataset {dataset!r} has {len(live)} queued or running job(s) ({live[0]['id']}); "
            "wait for them or cancel them first",
            jobs=[j["id"] for j in live],
        )
    store.drop_dataset(dataset)
    # its thumbnails and crops, export folders and zips, and stream uploads go with it
    shutil.rmtree(settings.thumbnail_cache / dataset, ignore_errors=True)
    if "://" not in settings.data_dir:
        shutil.rmtree(exports_dir(settings.data_dir) / dataset, ignore_errors=True)
        shutil.rmtree(Path(settings.data_dir) / STREAM_UPLOADS / dataset, ignore_errors=True)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _orphan(job: RunDoc) -> bool:
    from edgeminer.service.jobs import is_orphaned

    return is_orphaned(job)


@router.post(
    "/datasets/{dataset}/ingest",
    response_model=JobPublic,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problems(401, 403, 404, 422),
)
def start_ingest(dataset: str, body: IngestRequest, store: StoreDep, jobs: JobsDep, settings: SettingsDep) -> Any:
    """Ingest a source on the server (manifest, class folders or COCO) as a background job.

    Every path the request names (source, unlabeled, coco_results, image_root, embedder.vectors,
    embedder.model_file, a checkpoint file as embedder.pretrained) must lie under the server's ingest
    roots (``EDGEMINER_INGEST_ROOTS``), symlinks followed: otherwise, or when none are configured, the
    request is refused (403) before anything is opened, with the same answer whether the path exists or
    not. Images a manifest or COCO file names outside the roots become error rows and are never read;
    the dataset's media roots stay inside the ingest roots.

    The source is then opened, so a missing file or a bad manifest is a 422 right away. A dataset that
    does not exist yet is created from the source and the embedder options; an existing one keeps its
    embedder (options must agree with it). Poll ``GET /api/v1/jobs/{id}``.
    """
    roots = list(settings.ingest_roots)
    for field, value in body.server_paths():
        require_under_roots(value, roots, field=field)
    source = _open_ingest_source(body, roots)
    embedder = _ingest_embedder(store, dataset, source, body, settings.device)
    run = _ingest_runner(dataset, source, embedder, body)
    params = body.model_dump(mode="json", exclude_none=True)
    return public_job(jobs.submit(dataset, "ingest", params, run))


def _open_ingest_source(body: IngestRequest, roots: list[str]) -> Any:
    """Open the source an ingest request names (images outside ``roots`` become error rows)."""
    from edgeminer.indexer.sources import open_source

    emb = body.embedder
    return open_source(
        body.source,
        kind=body.format,
        split=body.split,
        unlabeled=body.unlabeled,
        coco_results=body.coco_results,
        image_root=body.image_root,
        vectors=emb.vectors,
        vector_column=emb.vector_column,
        classes=body.classes,
        allowed_roots=roots,
    )


def _ingest_embedder(store: Store, dataset: str, source: Any, body: IngestRequest, device: str) -> Any:
    """The embedder for an ingest: a new dataset is created from it, an existing one keeps its own."""
    from edgeminer.indexer.embedders import embedder_from_options
    from edgeminer.indexer.pipeline import prepare_dataset

    emb = body.embedder
    options: dict[str, Any] = {
        "kind": emb.kind,
        "model": emb.model,
        "pretrained": emb.pretrained,
        "model_file": emb.model_file,
        "image_size": emb.image_size,
        "mc_passes": emb.mc_passes,
        "device": emb.device or device,
        # torchscript: the names of the model's outputs, in order (unless the source brings its own predictions)
        "classes": None if getattr(source, "has_probs", False) or getattr(source, "has_predictions", False)
        else body.classes,
        "mean": emb.mean,
        "std": emb.std,
    }
    if store.has_dataset(dataset):
        return embedder_from_options(store.get_dataset(dataset).embedder, **options)
    # a new dataset needs its dimension, which only the embedder (or the vectors) can tell
    embedder = embedder_from_options(None, **options)
    prepare_dataset(store, dataset, source, embedder)
    return embedder


def _ingest_result(report: Any) -> dict[str, Any]:
    """The job result of a finished ingest: counts, error rows, versions, seconds, index."""
    result = report.as_dict()
    errors = [{"item": e.get("id", ""), "message": f"{e.get('uri', '')}: {e.get('error', '')}"} for e in report.errors]
    return {
        "counts": report.counts(),
        "errors": errors,
        "error_count": report.error_rows,
        "version_read": report.version_read,
        "version_written": report.version_written,
        "seconds": round(report.seconds, 3),
        "index": result.get("index", {}),
    }


def _ingest_runner(dataset: str, source: Any, embedder: Any, body: IngestRequest) -> Callable[[Any], dict[str, Any]]:
    """The background job body that ingests ``source`` into ``dataset``."""
    from edgeminer.indexer.pipeline import ingest

    def run(ctx: Any) -> dict[str, Any]:
        report = ingest(
            ctx.store,  # the runner keeps the job's run doc (pid, host: restart marking)
            dataset,
            source,
            embedder,
            batch_size=body.batch_size,
            workers=body.workers,
            progress=False,
            on_progress=ctx.progress,
            run_id=ctx.job_id,
        )
        return _ingest_result(report)

    return run
