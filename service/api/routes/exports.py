"""Exports to labeling tools (background jobs) and labels coming back.

- ``POST /datasets/{ds}/exports``: start an export (202) or get the one the same request already made
  (200, same export id and job); ``force`` starts a new one.
- ``GET /datasets/{ds}/exports`` / ``GET /datasets/{ds}/exports/{id}``: status, progress, files, errors.
- ``GET /datasets/{ds}/exports/{id}/download``: the zip (the only way export files leave the server).
- ``POST /datasets/{ds}/labels``: upload a Label Studio JSON export, a COCO JSON or a CSV of
  (id or uri, label); the matched rows become labeled.
- ``POST /datasets/{ds}/label_studio/push`` / ``.../label_studio/pull``: send a selection to a project of
  the server's Label Studio (settings ``label_studio_url`` / ``label_studio_token`` only: a request never
  names the server), and import its annotations; both are jobs.

When the server starts, export jobs a killed server left unfinished are resumed (the router's
lifespan runs after the app's, so the store and job runner exist).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, File, Form, Query, Request, Response, UploadFile, status
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgeminer.service.api.deps import JobsDep, SettingsDep, StoreDep
from edgeminer.service.api.models import Filter, JobPublic, problems
from edgeminer.service.api.routes.jobs import public_job
from edgeminer.service.errors import Conflict, NotFound
from edgeminer.service.export.common import MediaMode, Target
from edgeminer.service.export.labels import LabelFormat

log = logging.getLogger("edgeminer.exports")


@asynccontextmanager
async def _resume_exports(app: FastAPI) -> AsyncIterator[None]:
    store = getattr(app.state, "store", None)
    jobs = getattr(app.state, "jobs", None)
    if store is not None and jobs is not None:
        from edgeminer.service.export.runner import resume_interrupted

        try:
            settings = getattr(app.state, "settings", None)
            resumed = resume_interrupted(
                store,
                jobs,
                media_roots=settings.media_roots if settings else (),
                data_dir=settings.data_dir if settings else None,
            )
            if resumed:
                log.warning("resumed %d interrupted export job(s)", len(resumed))
        except Exception:  # noqa: BLE001 - a failed resume must not keep the server from starting
            log.exception("could not resume interrupted exports")
    yield


router = APIRouter(tags=["exports"], lifespan=_resume_exports)


class ExportCreate(BaseModel):
    """An export request: exactly one selection (``ids``, ``issue``, ``selection`` or ``filter``)."""

    model_config = ConfigDict(extra="forbid")
    target: Target
    ids: list[str] | None = Field(None, description="sample ids", max_length=1_000_000)
    issue: str | None = Field(None, description="an issue id: its sample_ids")
    selection: str | None = Field(None, description="a saved mine / select result id")
    filter: list[Filter] | None = Field(None, description="structured filters (ANDed)")
    media: MediaMode = Field(
        "relative",
        description="url: reference images by URL (media_base_url, else the server's media route); copy: "
        "put the images into the export; relative: paths relative to media_root (a tool's local files root)",
    )
    media_base_url: str | None = Field(
        None,
        max_length=2000,
        description="url media: base URL the image's path under its media root is appended to, or a template "
        "with the placeholders {id}, {dataset}, {path}, {name} (replaced by the row's URL-quoted values; any "
        "other {...} is refused)",
    )
    media_root: str | None = Field(None, description="relative media: the folder paths are relative to")
    chunk_size: int = Field(500, ge=1, le=100_000, description="rows written per chunk (resume granularity)")
    name: str = Field("", max_length=200)
    force: bool = Field(False, description="start a new export even if the same request was made before")

    @field_validator("media_base_url")
    @classmethod
    def _media_base_url(cls, value: str | None) -> str | None:
        from edgeminer.service.export.common import check_media_base_url

        return None if value is None else check_media_base_url(value)  # ValueError -> 422 naming the field


class ExportJob(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    status: str
    progress: dict[str, Any] | None = None
    error: str | None = None


class ExportPublic(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    dataset: str
    name: str = ""
    status: str = Field(description="queued, running, done, failed, interrupted or cancelled")
    request: dict[str, Any]
    job_id: str | None = None
    job: ExportJob | None = None
    version_read: int
    count: int = Field(description="rows selected")
    rows_done: int = 0
    chunks_done: int = 0
    chunks_total: int = 0
    rows_exported: int | None = None
    media_errors: int = 0
    errors: list[dict[str, Any]] = Field(default_factory=list)
    files: list[str] = Field(default_factory=list)
    zip: str | None = Field(None, description="file name of the zip (download route) once done")
    zip_bytes: int | None = None
    ids: list[str] | None = None
    created_at: str | None = None
    finished_at: str | None = None


class LabelImportPublic(BaseModel):
    model_config = ConfigDict(extra="allow")
    dataset: str
    format: str
    split: str
    entries: int
    matched: int
    changed: int
    false_positives: int
    conflicts: int
    skipped_tasks: int
    new_classes: list[str]
    unmatched: list[dict[str, Any]]
    unmatched_count: int
    labeled_before: int
    labeled_after: int
    version_before: int = Field(description="table version holding the previous labels (time travel)")
    version_after: int
    job_id: str | None = None


def _default_base_url(request: Request, task: str) -> str:
    """This server's media route for the row (full size). Object rows would come back cropped, so a
    detection export by URL needs a media_base_url under which the whole images are served."""
    if task == "detection":
        from edgeminer.service.export.common import ExportError

        raise ExportError(
            "a detection export with media 'url' needs media_base_url (or EDGEMINER_MEDIA_BASE_URL): this "
            "server's media route serves object crops, not whole images; or use media 'copy'"
        )
    base = str(request.base_url).rstrip("/").replace("{", "%7B").replace("}", "%7D")  # no placeholders from Host
    return base + "/api/v1/datasets/{dataset}/media/{id}?size=full"


@router.post(
    "/datasets/{dataset}/exports",
    response_model=ExportPublic,
    response_model_exclude_none=True,
    status_code=status.HTTP_202_ACCEPTED,
    responses={200: {"model": ExportPublic, "description": "the same request was made before"}, **problems(404, 422)},
)
def create_export(
    dataset: str,
    body: ExportCreate,
    request: Request,
    response: Response,
    store: StoreDep,
    jobs: JobsDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    from edgeminer.service.export.common import ExportRequest
    from edgeminer.service.export.runner import start_export

    data = body.model_dump(exclude={"force"})
    if data["filter"] is not None:
        data["filter"] = [f.model_dump() for f in body.filter or []]
    if data["media"] == "url" and not data["media_base_url"]:
        if settings.media_base_url:
            from edgeminer.service.export.common import ExportError, check_media_base_url

            try:
                check_media_base_url(settings.media_base_url)
            except ValueError as exc:
                raise ExportError(f"the server's EDGEMINER_MEDIA_BASE_URL is not usable: {exc}") from None
        data["media_base_url"] = settings.media_base_url or _default_base_url(request, store.get_dataset(dataset).task)
    req = ExportRequest.from_dict(data)
    view, started = start_export(
        store, jobs, dataset, req, data_dir=settings.data_dir, force=body.force, media_roots=settings.media_roots
    )
    if not started:
        response.status_code = status.HTTP_200_OK
    return view


@router.get("/datasets/{dataset}/exports", response_model=list[ExportPublic], response_model_exclude_none=True)
def list_exports(dataset: str, store: StoreDep, jobs: JobsDep) -> list[dict[str, Any]]:
    from edgeminer.service.export.runner import EXPORT_KIND, export_view

    docs = store.dataset(dataset).list_docs(EXPORT_KIND)
    return [export_view(store, jobs, d) for d in reversed(docs)]


@router.get(
    "/datasets/{dataset}/exports/{export_id}",
    response_model=ExportPublic,
    response_model_exclude_none=True,
    responses=problems(404),
)
def get_export(
    dataset: str,
    export_id: str,
    store: StoreDep,
    jobs: JobsDep,
    ids: Annotated[bool, Query(description="include the exact ids exported")] = False,
) -> dict[str, Any]:
    from edgeminer.service.export.runner import export_view
    from edgeminer.service.export.runner import get_export as load

    return export_view(store, jobs, load(store, dataset, export_id), with_ids=ids)


@router.get(
    "/datasets/{dataset}/exports/{export_id}/download",
    response_class=FileResponse,
    responses={200: {"content": {"application/zip": {}}}, **problems(404, 409)},
)
def download_export(dataset: str, export_id: str, store: StoreDep, settings: SettingsDep) -> FileResponse:
    from edgeminer.service.export.common import ExportError
    from edgeminer.service.export.runner import export_path
    from edgeminer.service.export.runner import get_export as load

    doc = load(store, dataset, export_id)
    if doc.get("status") != "done":
        raise Conflict(
            f"export {export_id} is {doc.get('status')}, not done; poll GET .../exports/{export_id} and "
            "download when its status is done"
        )
    try:  # stored relative to the exports folder; never resolves outside this dataset's exports
        path: Path | None = export_path(doc, "zip", data_dir=settings.data_dir, dataset=dataset)
    except ExportError:
        log.warning("export %s of dataset %s: its zip path points outside the exports folder", export_id, dataset)
        path = None
    if path is None or not path.is_file():
        raise NotFound(
            f"the zip of export {export_id} is gone from the server; re-run it with force=true",
            title="Export file not found",
        )
    return FileResponse(path, media_type="application/zip", filename=f"{dataset}-{export_id}.zip")


@router.post(
    "/datasets/{dataset}/labels",
    response_model=LabelImportPublic,
    responses={202: {"description": "the import is queued behind another job; poll the job"}, **problems(404, 422)},
)
def import_labels(
    dataset: str,
    file: Annotated[UploadFile, File(description="Label Studio JSON export, COCO JSON, or CSV (id or uri, label)")],
    store: StoreDep,
    jobs: JobsDep,
    format: Annotated[LabelFormat | None, Form(description="default: detected")] = None,
    split: Annotated[str, Form(min_length=1, max_length=64, description="split of the newly labeled rows")] = "train",
    iou: Annotated[float, Form(gt=0, le=1, description="detection: box overlap to match an object row")] = 0.5,
    add_classes: Annotated[
        bool,
        Form(
            description="append labels that are not classes of the dataset to its class list (default: such "
            "labels refuse the whole import, listing them and the known classes)"
        ),
    ] = False,
) -> Any:
    """Import labels: the whole file is read and checked before the job is queued, so a malformed file
    or (without ``add_classes``) a label outside the dataset's classes is a 422 and nothing is written."""
    from edgeminer.service.export.labels import check_classes, display_name, parse_labels
    from edgeminer.service.export.labels import import_labels as run_import

    info = store.get_dataset(dataset)
    name = display_name(file.filename)
    fmt: str | None = format
    if fmt is None and name.lower().endswith(".csv"):
        fmt = "csv"
    raw = file.file.read()
    parsed = parse_labels(info, raw, format=fmt, name=name, split=split)  # a bad file is a 422, not a failed job
    check_classes(parsed, info, add_classes=add_classes)
    fmt = parsed.format

    def fn(ctx: Any) -> dict[str, Any]:
        report = run_import(ctx.store, dataset, raw, split=split, iou=iou, add_classes=add_classes, parsed=parsed)
        return {
            "report": report.to_dict(),
            "version_read": report.version_before,
            "version_written": report.version_after,
            "counts": {"matched": report.matched, "unmatched": report.unmatched_count},
        }

    params = {"file": name, "format": fmt, "split": split, "iou": iou, "add_classes": add_classes}
    job = jobs.submit(dataset, "labels_import", params, fn)
    try:
        done = jobs.wait(job["id"], timeout=120)
    except TimeoutError:
        return JSONResponse({"job_id": job["id"], "status": "queued"}, status_code=status.HTTP_202_ACCEPTED)
    if done["status"] != "succeeded":
        from edgeminer.service.errors import EdgeminerError
        from edgeminer.service.export.labels import LabelImportError

        if done.get("error_type") in ("LabelImportError", "UnknownLabels", "ExportError", "SchemaMismatch"):
            raise LabelImportError(done.get("error") or "the labels import failed", job_id=job["id"])
        raise EdgeminerError(done.get("error") or "the labels import failed", job_id=job["id"])
    return {**(done["result"] or {})["report"], "job_id": job["id"]}


# ----------------------------------------------------------------------------------------------
# Label Studio, live: the server is the one of the settings (EDGEMINER_LABEL_STUDIO_URL / _TOKEN) only
# ----------------------------------------------------------------------------------------------


class LabelStudioPush(BaseModel):
    """Send a selection (exactly one of ``ids``, ``issue``, ``selection``, ``filter``) to a project of the
    server's Label Studio, with the model's predictions as pre-labels."""

    model_config = ConfigDict(extra="forbid")
    project: str = Field(min_length=1, max_length=50, description="project title: reused if it exists, else created")
    ids: list[str] | None = Field(None, description="sample ids", max_length=1_000_000)
    issue: str | None = Field(None, description="an issue id: its sample_ids")
    selection: str | None = Field(None, description="a saved mine / select result id")
    filter: list[Filter] | None = Field(None, description="structured filters (ANDed)")
    media: MediaMode = Field(
        "url",
        description="url: images by URL (media_base_url, else EDGEMINER_MEDIA_BASE_URL, else this server's media "
        "route, which must then be readable without an API key); relative: Label Studio's local files under "
        "media_root (LOCAL_FILES_DOCUMENT_ROOT); copy is not useful here",
    )
    media_base_url: str | None = Field(None, max_length=2000, description="url media: as for an export")
    media_root: str | None = Field(
        None, description="relative media: one of the dataset's (or the server's) media roots; default the first"
    )
    batch_size: int = Field(200, ge=1, le=10_000, description="tasks per import request")

    @field_validator("media_base_url")
    @classmethod
    def _media_base_url(cls, value: str | None) -> str | None:
        from edgeminer.service.export.common import check_media_base_url

        return None if value is None else check_media_base_url(value)


class LabelStudioPull(BaseModel):
    """Import the annotations of a project of the server's Label Studio (as a labels file import)."""

    model_config = ConfigDict(extra="forbid")
    project: str = Field(min_length=1, max_length=50, description="project title")
    split: str = Field("train", min_length=1, max_length=64, description="split of the newly labeled rows")
    iou: float = Field(0.5, gt=0, le=1, description="detection: box overlap to match an object row")
    add_classes: bool = Field(False, description="append labels that are not classes to the class list")


def _label_studio(settings: Any) -> Any:
    from edgeminer.service.errors import NotSupported
    from edgeminer.service.export.labelstudio_live import server_from

    if not settings.label_studio_url:
        raise NotSupported(
            "this server has no Label Studio configured: set EDGEMINER_LABEL_STUDIO_URL and "
            "EDGEMINER_LABEL_STUDIO_TOKEN where edgeminer serve runs (the API talks to that server only)"
        )
    return server_from(settings)


@router.post(
    "/datasets/{dataset}/label_studio/push",
    response_model=JobPublic,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problems(404, 422),
)
def push_label_studio(
    dataset: str, body: LabelStudioPush, request: Request, store: StoreDep, jobs: JobsDep, settings: SettingsDep
) -> Any:
    """Export the selection and send it to the Label Studio project as a background job (poll
    ``GET /api/v1/jobs/{id}``). Rows already in the project (by ``data.edgeminer_id``) are skipped; a batch
    Label Studio refuses is listed in the job's errors and the others land."""
    from edgeminer.service.export.common import ExportError, ExportRequest
    from edgeminer.service.export.labelstudio_live import push

    server = _label_studio(settings)
    info = store.get_dataset(dataset)
    data = body.model_dump(exclude={"project", "batch_size"})
    data["target"] = "label_studio"
    if data["filter"] is not None:
        data["filter"] = [f.model_dump() for f in body.filter or []]
    if data["media"] == "url" and not data["media_base_url"]:
        data["media_base_url"] = settings.media_base_url or _default_base_url(request, info.task)
    if data["media_root"] is not None and data["media_root"] not in [*info.media_roots, *settings.media_roots]:
        raise ExportError("media_root must be one of the dataset's or the server's media roots", field="media_root")
    req = ExportRequest.from_dict(data)

    def fn(ctx: Any) -> dict[str, Any]:
        report = push(
            ctx.store,
            dataset,
            req,
            server,
            body.project,
            data_dir=settings.data_dir,
            media_roots=settings.media_roots,
            batch_size=body.batch_size,
            progress=ctx.progress,
        )
        for batch in report.failed_batches:
            ctx.error(f"batch {batch['batch']} ({batch['first_id']} .. {batch['last_id']})", batch["message"])
        for err in report.errors:
            ctx.error(str(err["id"]), err["message"])
        counts = {"pushed": report.pushed, "skipped_existing": report.skipped_existing, "failed": report.failed}
        return {"report": report.to_dict(), "counts": counts}

    params = {"project": body.project, "server": server.url, "media": req.media, "selection": req.selection_kind}
    return public_job(jobs.submit(dataset, "label_studio_push", params, fn))


@router.post(
    "/datasets/{dataset}/label_studio/pull",
    response_model=JobPublic,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problems(404, 422),
)
def pull_label_studio(
    dataset: str, body: LabelStudioPull, store: StoreDep, jobs: JobsDep, settings: SettingsDep
) -> Any:
    """Import the project's annotated tasks as a background job, through the labels file import (its
    matching, class checks and report); the job's result holds the report."""
    from edgeminer.service.export.labels import check_split
    from edgeminer.service.export.labelstudio_live import pull

    server = _label_studio(settings)
    store.get_dataset(dataset)
    check_split(body.split)

    def fn(ctx: Any) -> dict[str, Any]:
        result = pull(
            ctx.store, dataset, server, body.project, split=body.split, iou=body.iou, add_classes=body.add_classes
        )
        report = result.report
        out: dict[str, Any] = {"pull": result.to_dict()}
        if report is not None:
            out.update(
                version_read=report.version_before,
                version_written=report.version_after,
                counts={"matched": report.matched, "unmatched": report.unmatched_count},
            )
        return out

    params = {"project": body.project, "server": server.url, "split": body.split, "add_classes": body.add_classes}
    return public_job(jobs.submit(dataset, "label_studio_pull", params, fn))
