"""Export jobs: plan (selection -> exact ids at one table version, idempotent id), run (chunked,
resumable after a kill), finish (target files, zip, ``exported`` tags), and status.

An export is a ``export`` document in the dataset's docs table::

    id, dataset, request {...}, status (queued | running | done | failed), job_id, version_read,
    ids [...] (the exact rows, in order), count, chunk_size, chunks_total, chunks_done, rows_done,
    media_errors (count), errors [{id, message}] (first 1000), path, zip, zip_bytes, files [...],
    rows_exported, created_at, finished_at

(``indexer.documents.ExportDoc``; a run adds started_at, error, chunks_resumed and version_written.)

The id is ``exp-`` + a hash of the dataset and the request, so asking twice for the same export gives
the same export (and, while it runs, the same job); ``force`` makes a new one. Rows are read at
``version_read`` (LanceDB time travel), so a resumed or repeated run writes the same files even if the
table changed in between. Files live in ``<data_dir>/_exports/<dataset>/<export id>/`` plus a zip next
to it; they are reachable over HTTP only through the export's download route.

The document stores ``path`` and ``zip`` relative to the exports folder (``<dataset>/<export id>``), so a
data dir that moves keeps its exports; :func:`export_path` resolves them, confined to the dataset's own
exports folder (a document written before, with absolute paths, still resolves; one pointing anywhere
else never does). :func:`plan_export` and :func:`run_export` hand back absolute paths.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from edgeminer.indexer.documents import ExportDoc, RunDoc
from edgeminer.indexer.roots import is_remote_uri
from edgeminer.indexer.store import DatasetInfo, DocNotFound, Store, ids_in
from edgeminer.service.export import coco, cvat, labelbox, labelstudio, sagemaker, yolo
from edgeminer.service.export import csv as csv_target
from edgeminer.service.export.common import (
    EXPORT_COLUMNS,
    ExportError,
    ExportRequest,
    Record,
    RenderContext,
    copy_media,
    dedupe,
    fill_media_url,
    has_placeholders,
    ids_from_doc,
    is_remote,
    join_url,
    local_path,
    relative_to_roots,
    row_to_record,
    unique_file_name,
    write_json,
    write_text,
)
from edgeminer.service.media import allowed_roots, safe_local_path
from edgeminer.service.settings import local_cache_root

EXPORT_KIND = "export"  # doc kind
JOB_KIND = "export"  # run kind
#: the module that renders each target (``render``, ``finish``, ``MEDIA_DIR``...); one entry per
#: ``common.TARGETS`` (tests/unit/test_export_runner.py checks they match).
TARGET_MODULES: dict[str, ModuleType] = {
    "label_studio": labelstudio,
    "cvat": cvat,
    "coco": coco,
    "yolo": yolo,
    "labelbox": labelbox,
    "sagemaker": sagemaker,
    "csv": csv_target,
}
MAX_DOC_ERRORS = 1000
#: seconds between progress writes of the export doc (the chunk files on disk are what resumes)
PROGRESS_INTERVAL = 0.5
TAG_BATCH = 2000
_START_LOCK = threading.Lock()

Progress = Callable[[int, int | None, str | None], None]
OnError = Callable[[Any, str], None]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def target_module(target: str) -> ModuleType:
    module = TARGET_MODULES.get(target)
    if module is None:
        raise ExportError(f"unknown export target {target!r}: choose one of {', '.join(TARGET_MODULES)}")
    return module


def exports_dir(data_dir: str) -> Path:
    """Where exports are written: ``<data_dir>/_exports`` for a local store; for object storage the local
    cache of that store, ``<cache>/exports`` (``EDGEMINER_CACHE_DIR`` or ``~/.cache/edgeminer/<hash>``, see
    ``settings.local_cache_root``). The export document (in the bucket) is what another machine sees; its
    files are rebuilt there by re-running the export."""
    if is_remote_uri(str(data_dir)):
        return local_cache_root(str(data_dir)) / "exports"
    return Path(data_dir) / "_exports"


PATH_KEYS = ("path", "zip")


def _stored_paths(dataset: str, export_id: str) -> dict[str, str]:
    """What an export document stores: its folder and zip relative to the exports folder."""
    return {"path": f"{dataset}/{export_id}", "zip": f"{dataset}/{export_id}.zip"}


def export_path(doc: Mapping[str, Any], key: str, *, data_dir: str, dataset: str) -> Path:
    """The absolute ``path`` (folder) or ``zip`` of an export document, always a direct child of
    ``<exports>/<dataset>/``. A stored value relative to the exports folder (the current form) resolves
    there; an absolute one (documents written before) is used while it exists inside that folder, else
    its file name is looked up in the folder (the data dir moved). A value that resolves elsewhere (``..``,
    another folder, a symlink out) is refused with ExportError."""
    from edgeminer.indexer.store import DATASET_NAME_RE

    if key not in PATH_KEYS:
        raise ValueError(f"key must be one of {PATH_KEYS}, not {key!r}")
    if not DATASET_NAME_RE.match(dataset):
        raise ExportError(f"invalid dataset name {dataset!r}")
    root = exports_dir(data_dir)
    home = (root / dataset).resolve()
    value = doc.get(key)
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ExportError(f"export {doc.get('id', '?')!r} has no valid {key} in its document")
    stored = Path(value)
    found: list[Path] = []
    for cand in (stored if stored.is_absolute() else root / stored, home / stored.name):
        real = cand.resolve()
        if real.parent == home and real.name not in ("", ".", ".."):
            found.append(real)
    if not found:
        raise ExportError(
            f"the {key} of export {doc.get('id', '?')!r} points outside the exports folder of dataset {dataset!r}"
        )
    return next((p for p in found if p.exists()), found[0])


def _with_local_paths(doc: ExportDoc, data_dir: str) -> ExportDoc:
    """A copy of ``doc`` whose ``path`` and ``zip`` are absolute (for the caller on this machine)."""
    out = doc.copy()
    out["path"] = str(export_path(doc, "path", data_dir=data_dir, dataset=str(doc["dataset"])))
    out["zip"] = str(export_path(doc, "zip", data_dir=data_dir, dataset=str(doc["dataset"])))
    return out


# ----------------------------------------------------------------------------------------------
# Plan
# ----------------------------------------------------------------------------------------------


def resolve_selection(store: Store, dataset: str, req: ExportRequest, *, version: int) -> list[str]:
    """The exact ids the request selects, in order, read at ``version``."""
    kind = req.selection_kind
    if kind == "ids":
        ids = dedupe(req.ids or [])
    elif kind == "issue":
        try:
            doc = store.get_doc(dataset, "issue", str(req.issue))
        except DocNotFound:
            from edgeminer.service.errors import IssueNotFound

            raise IssueNotFound(dataset, str(req.issue)) from None
        ids = dedupe(ids_from_doc(doc))
    elif kind == "selection":
        doc = store.get_doc(dataset, "selection", str(req.selection))  # DocNotFound -> 404
        ids = dedupe(ids_from_doc(doc))
    else:
        from edgeminer.service.filters import build_where

        filters = [req.filter] if isinstance(req.filter, Mapping) else list(req.filter or [])
        where = build_where(store.get_dataset(dataset), store.schema(dataset), filters, store=store)
        table = store.query(dataset, where=where or None, columns=["id"], version=version)
        ids = dedupe(table.column("id").to_pylist())
    if not ids:
        raise ExportError(f"the {kind} selection of dataset {dataset!r} holds no rows: nothing to export")
    if kind != "filter":
        found: set[str] = set()
        for start in range(0, len(ids), 2000):
            part = ids[start : start + 2000]
            found.update(store.query(dataset, where=ids_in(part), columns=["id"], version=version)["id"].to_pylist())
        missing = [i for i in ids if i not in found]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise ExportError(
                f"{len(missing)} of {len(ids)} selected ids are not in dataset {dataset!r}: {shown}{more}; "
                "remove them from the selection",
                missing=missing[:100],
            )
    return ids


def plan_export(
    store: Store, dataset: str, req: ExportRequest, *, data_dir: str, force: bool = False
) -> tuple[ExportDoc, bool]:
    """The export document for ``req``: the existing one (same request), or a new one with the exact
    ids and the table version read. Returns (doc, created); the returned doc's ``path`` and ``zip`` are
    absolute (the stored ones are relative to the exports folder)."""
    req.validate()
    info = store.get_dataset(dataset)
    if req.media == "url" and not req.media_base_url:
        raise ExportError(
            "media 'url' needs a media_base_url (the request's, or EDGEMINER_MEDIA_BASE_URL on the server)"
        )
    # the dataset's creation time is part of the id: a dataset deleted and made again under the same name
    # never picks up the old one's chunk files as a half-done export of its own
    export_id = req.export_id(dataset, nonce=(uuid.uuid4().hex if force else "") + info.created_at)
    try:
        return _with_local_paths(_clean(store.get_doc(dataset, EXPORT_KIND, export_id)), data_dir), False
    except DocNotFound:
        pass
    version = store.version(dataset)
    ids = resolve_selection(store, dataset, req, version=version)
    chunk = int(req.chunk_size)
    paths = _stored_paths(dataset, export_id)
    doc: ExportDoc = {
        "id": export_id,
        "dataset": dataset,
        "name": req.name or f"{req.target} export of {len(ids)} rows",
        "request": req.to_dict(),
        "status": "queued",
        "job_id": None,
        "version_read": version,
        "ids": ids,
        "count": len(ids),
        "chunk_size": chunk,
        "chunks_total": (len(ids) + chunk - 1) // chunk,
        "chunks_done": 0,
        "rows_done": 0,
        "media_errors": 0,
        "errors": [],
        "path": paths["path"],
        "zip": paths["zip"],
        "zip_bytes": None,
        "files": [],
        "rows_exported": None,
        "created_at": _now(),
        "finished_at": None,
    }
    store.put_doc(dataset, EXPORT_KIND, export_id, doc, name=doc["name"])
    return _with_local_paths(doc, data_dir), True


# ----------------------------------------------------------------------------------------------
# Run
# ----------------------------------------------------------------------------------------------


class _Media:
    """Turns a row's uri into the export's media reference (copying the file when asked)."""

    def __init__(
        self,
        req: ExportRequest,
        out: Path,
        media_dir: str,
        roots: list[str],
        dataset: str,
        readable: Sequence[tuple[str, str]],
    ):
        self.req = req
        self.out = out
        self.media_dir = media_dir
        self.roots = roots
        self.dataset = dataset
        self.readable = readable  # (absolute, real) roots files may be copied from

    def _readable_path(self, uri: str) -> str:
        """The real path of a file the export may copy: under the server's media roots or the
        dataset's own (the rule the media route applies: an export zip is served too)."""
        from edgeminer.service.errors import EdgeminerError

        try:
            return str(safe_local_path(uri, self.readable))
        except EdgeminerError as exc:
            raise ExportError(f"{uri!r} not copied: {exc.detail}") from None

    def ref(self, row: Mapping[str, Any], file_name: str) -> str:
        uri = row.get("uri")
        if not uri:
            raise ExportError("the row has no image uri")
        mode = self.req.media
        if mode == "copy":
            dst = self.out / self.media_dir / file_name
            if not dst.exists():  # object rows of one image share the copy
                src = self._readable_path(str(uri)) if not is_remote(str(uri)) else str(uri)
                try:
                    copy_media(src, dst)
                except OSError as exc:
                    raise ExportError(f"copying {uri!r} failed: {exc.strerror or exc}") from None
            return f"{self.media_dir}/{file_name}"
        if is_remote(str(uri)):
            return str(uri)
        rel = relative_to_roots(str(uri), self.roots)
        if mode == "relative":
            return rel if rel is not None else os.path.abspath(str(local_path(str(uri))))
        base = str(self.req.media_base_url)
        if has_placeholders(base):  # a template such as https://host/api/v1/datasets/{dataset}/media/{id}
            if rel is None and "{path}" in base:
                raise ExportError(
                    f"image {uri!r} is under none of the media roots ({', '.join(self.roots) or 'none'}), so "
                    "media_base_url's {path} has no value for it; pass media_root, or use {id} or media 'copy'"
                )
            values = {"id": str(row["id"]), "dataset": self.dataset, "path": rel or "", "name": file_name}
            return fill_media_url(base, values)
        if rel is None:
            raise ExportError(
                f"image {uri!r} is under none of the media roots ({', '.join(self.roots) or 'none'}), so no "
                "URL can be built for it; pass media_root, or use media 'copy'"
            )
        return join_url(base, rel)


@dataclass
class _Run:
    """The state of one :func:`run_export` call: its document, where it writes, and what it has read."""

    store: Store
    dataset: str
    export_id: str
    doc: ExportDoc
    out: Path
    zip_path: Path
    req: ExportRequest
    info: DatasetInfo
    module: ModuleType
    media: _Media
    columns: list[str]
    on_error: OnError | None
    ids: list[str]
    size: int
    n_chunks: int
    names: dict[str, str] = field(default_factory=dict)
    taken: set[str] = field(default_factory=set)
    records: list[Record] = field(default_factory=list)
    resumed: int = 0

    @property
    def parts(self) -> Path:
        return self.out / "parts"

    def save(self) -> None:
        self.store.put_doc(self.dataset, EXPORT_KIND, self.export_id, self.doc, name=self.doc.get("name", ""))

    def report(self, item: str, message: str) -> None:
        self.doc["media_errors"] += 1
        if len(self.doc["errors"]) < MAX_DOC_ERRORS:
            self.doc["errors"].append({"id": item, "message": message})
        if self.on_error is not None:
            self.on_error(item, message)


def run_export(
    store: Store,
    dataset: str,
    export_id: str,
    *,
    job_id: str | None = None,
    progress: Progress | None = None,
    on_error: OnError | None = None,
    check_cancelled: Callable[[], None] | None = None,
    media_roots: Sequence[str] = (),
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Write (or finish writing) an export.

    Media is copied only from under ``media_roots`` (the server's) and the dataset's own media roots.
    Chunks already on disk are kept, so a run killed half way resumes where it stopped; rows whose media
    cannot be referenced or copied are reported (and left out of the target files) while the rest exports.

    Parameters
    ----------
    store, dataset, export_id
        The store, the dataset and the export document's id.
    job_id
        The job running the export (kept in the document).
    progress, on_error, check_cancelled
        Optional callbacks: rows done, a row's media error, and a hook that raises to cancel.
    media_roots
        The server's readable media roots.
    data_dir
        The folder holding the exports folder (default: the store's).

    Returns
    -------
    dict
        A summary (``zip``: its absolute path).

    Raises
    ------
    DocNotFound
        The export document does not exist.
    Exception
        Whatever stopped the run (the document is marked failed first).
    """
    data_dir = str(store.uri) if data_dir is None else data_dir
    doc = _clean(store.get_doc(dataset, EXPORT_KIND, export_id))
    out = export_path(doc, "path", data_dir=data_dir, dataset=dataset)
    zip_path = export_path(doc, "zip", data_dir=data_dir, dataset=dataset)
    if doc["status"] == "done" and zip_path.is_file():
        return _summary(doc, zip_path)
    run = _start_run(store, dataset, export_id, doc, out, zip_path, job_id, on_error, media_roots)
    try:
        _load_chunks(run, progress, check_cancelled)
        good = [r for r in run.records if not r.media_error]
        files = _write_outputs(run, good)
    except Exception as exc:
        doc.update({"status": "failed", "error": str(exc) or type(exc).__name__, "finished_at": _now()})
        run.save()
        raise
    _finish_run(run, files, len(good))
    return _summary(doc, zip_path)


def _start_run(
    store: Store,
    dataset: str,
    export_id: str,
    doc: ExportDoc,
    out: Path,
    zip_path: Path,
    job_id: str | None,
    on_error: OnError | None,
    media_roots: Sequence[str],
) -> _Run:
    """Mark the export running (paths stored relative to the exports folder) and set up its state."""
    # stored relative to the exports folder (an older document's absolute paths are rewritten)
    doc.update({"path": f"{dataset}/{out.name}", "zip": f"{dataset}/{zip_path.name}"})
    req = ExportRequest.from_dict(doc["request"])
    info = store.get_dataset(dataset)
    module = target_module(req.target)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    doc.update({"status": "running", "job_id": job_id or doc.get("job_id"), "started_at": _now(), "error": None})
    doc["errors"] = []
    doc["media_errors"] = 0
    store.put_doc(dataset, EXPORT_KIND, export_id, doc, name=doc.get("name", ""))

    roots = [req.media_root] if req.media_root else list(info.media_roots)
    readable = allowed_roots(media_roots, info)
    media = _Media(req, out, str(getattr(module, "MEDIA_DIR", "images")), roots, dataset, readable)
    meta_cols = [f"meta_{f}" for f in info.metadata_fields]
    schema_names = set(store.schema(dataset).names)
    columns = [c for c in (*EXPORT_COLUMNS, *meta_cols) if c in schema_names]
    ids: list[str] = list(doc["ids"])
    size = int(doc["chunk_size"])
    n_chunks = int(doc["chunks_total"])
    return _Run(
        store, dataset, export_id, doc, out, zip_path, req, info, module, media, columns, on_error, ids, size, n_chunks
    )


def _load_chunks(run: _Run, progress: Progress | None, check_cancelled: Callable[[], None] | None) -> None:
    """Read every chunk's records, from its part file if a previous run wrote it, else from the table."""
    doc, ids, size, n_chunks = run.doc, run.ids, run.size, run.n_chunks
    last_write = time.monotonic()
    for k in range(n_chunks):
        if check_cancelled is not None:
            check_cancelled()
        part = run.parts / f"{k:05d}.jsonl"
        if part.exists():
            chunk_records = _resume_chunk(run, part)
        else:
            chunk_records = _read_chunk(run, ids[k * size : (k + 1) * size])
            write_text(part, "".join(r.to_json() + "\n" for r in chunk_records))
        run.records.extend(chunk_records)
        doc["chunks_done"] = k + 1
        doc["rows_done"] = min(len(ids), (k + 1) * size)
        now = time.monotonic()
        if now - last_write >= PROGRESS_INTERVAL:  # the doc holds every id: write it now and then
            last_write = now
            run.save()
        if progress is not None:
            progress(doc["rows_done"], len(ids), f"chunk {k + 1}/{n_chunks}")


def _resume_chunk(run: _Run, part: Path) -> list[Record]:
    """The records of a chunk a previous run wrote (their file names are taken again)."""
    chunk_records = [Record.from_json(line) for line in part.read_text().splitlines() if line]
    for rec in chunk_records:
        if rec.image_key not in run.names:
            run.names[rec.image_key] = rec.file_name
            run.taken.add(os.path.splitext(rec.file_name)[0].lower())
        if rec.media_error:
            run.report(rec.id, rec.media_error)
    run.resumed += 1
    return chunk_records


def _read_chunk(run: _Run, chunk_ids: list[str]) -> list[Record]:
    """Read a chunk's rows at ``version_read`` and turn them into records (media referenced or copied)."""
    doc = run.doc
    rows = run.store.get_samples(
        run.dataset, chunk_ids, columns=run.columns, version=int(doc["version_read"])
    ).to_pylist()
    chunk_records = []
    for row in rows:
        key = str(row["id"])
        if run.info.task == "detection":
            key = str(row.get("parent_id") or row.get("uri") or row["id"])
        file_name = run.names.get(key)
        if file_name is None:
            file_name = unique_file_name(row.get("uri"), key, run.taken)
            run.names[key] = file_name
        error = None
        try:
            ref: str | None = run.media.ref(row, file_name)
            check = getattr(run.module, "check_media", None)  # a target's own limits (yolo: one path a line)
            if check is not None and ref is not None:
                check(ref)
        except ExportError as exc:
            ref, error = None, str(exc)
        rec = row_to_record(row, task=run.info.task, media=ref, file_name=file_name)
        rec.media_error = error
        chunk_records.append(rec)
        if error:
            run.report(rec.id, error)
    got = {r.id for r in chunk_records}
    for missing in (i for i in chunk_ids if i not in got):
        run.report(missing, f"row {missing!r} is not in version {doc['version_read']} of the table")
    return chunk_records


def _write_outputs(run: _Run, good: list[Record]) -> list[str]:
    """Render the target files and export.json, tag the exported rows, compact, zip; the files written."""
    doc, out = run.doc, run.out
    ctx = RenderContext(
        dataset=run.dataset,
        export_id=run.export_id,
        out_dir=out,
        classes=list(run.info.classes),
        task=run.info.task,
        request=run.req,
        created_at=str(doc["created_at"]),
    )
    files = list(run.module.render(good, ctx))
    write_json(
        out / "export.json",
        {
            "id": run.export_id,
            "dataset": run.dataset,
            "target": run.req.target,
            "task": run.info.task,
            "version_read": doc["version_read"],
            "request": run.req.to_dict(),
            "created_at": doc["created_at"],
            "rows": len(good),
            "ids": [r.id for r in good],
            "media_errors": [{"id": r.id, "message": r.media_error} for r in run.records if r.media_error],
            "files": files,
        },
    )
    files.append("export.json")
    _tag_exported(run, [r.id for r in good])
    _zip(out, run.zip_path, skip={"parts"})
    shutil.rmtree(run.parts, ignore_errors=True)
    return files


def _tag_exported(run: _Run, exported_ids: list[str]) -> None:
    """Add the export's id to the rows' ``exported`` list, in batches, then compact the table."""
    for start in range(0, len(exported_ids), TAG_BATCH):
        run.store.append_to_list(run.dataset, exported_ids[start : start + TAG_BATCH], "exported", run.export_id)
    run.store.compact(run.dataset)


def _finish_run(run: _Run, files: list[str], rows_exported: int) -> None:
    """Mark the export done, with its files, zip size and counts."""
    run.doc.update(
        {
            "status": "done",
            "files": sorted(set(files)),
            "zip_bytes": run.zip_path.stat().st_size,
            "rows_exported": rows_exported,
            "chunks_resumed": run.resumed,
            "finished_at": _now(),
            "version_written": run.store.version(run.dataset),
        }
    )
    run.save()


def _summary(doc: Mapping[str, Any], zip_path: Path) -> dict[str, Any]:
    return {
        "export_id": doc["id"],
        "status": doc["status"],
        "rows_exported": doc.get("rows_exported"),
        "media_errors": doc.get("media_errors", 0),
        "zip": str(zip_path),
        "counts": {"rows": doc.get("count", 0), "exported": doc.get("rows_exported") or 0},
        "version_read": doc.get("version_read"),
    }


def _zip(folder: Path, dest: Path, *, skip: set[str]) -> None:
    """Zip ``folder`` (without the top-level entries in ``skip``) to ``dest``, atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*")):
                rel = path.relative_to(folder)
                if rel.parts[0] in skip or path.is_symlink() or not path.is_file() or path.name.startswith("."):
                    continue
                zf.write(path, rel.as_posix())
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------------------------
# Jobs glue
# ----------------------------------------------------------------------------------------------


def job_fn(
    dataset: str, export_id: str, media_roots: Sequence[str] = (), data_dir: str | None = None
) -> Callable[[Any], dict[str, Any]]:
    """The JobRunner function running (or resuming) one export. Its result (shown by the jobs API)
    names the zip by file name only: server paths stay on the server."""

    def run(ctx: Any) -> dict[str, Any]:
        summary = run_export(
            ctx.store,
            dataset,
            export_id,
            job_id=ctx.job_id,
            progress=ctx.progress,
            on_error=ctx.error,
            check_cancelled=ctx.check_cancelled,
            media_roots=media_roots,
            data_dir=data_dir,
        )
        return {**summary, "zip": os.path.basename(str(summary["zip"]))}

    return run


def start_export(
    store: Store,
    jobs: Any,
    dataset: str,
    req: ExportRequest,
    *,
    data_dir: str,
    force: bool = False,
    media_roots: Sequence[str] = (),
) -> tuple[dict[str, Any], bool]:
    """Plan the export and make sure a job is working on it. Returns (view, started): the same
    request while its job runs (or after it finished) returns the same export and job, started False;
    an export whose job died (server restart) is resumed by a new job."""
    from edgeminer.service.jobs import ACTIVE, is_orphaned

    with _START_LOCK:
        doc, _ = plan_export(store, dataset, req, data_dir=data_dir, force=force)
        if doc["status"] == "done" and Path(doc["zip"]).is_file():  # plan_export's paths are absolute
            return export_view(store, jobs, doc), False
        job = _job_doc(jobs, dataset, doc.get("job_id"))
        if job is not None and job.get("status") in ACTIVE and not is_orphaned(job):
            return export_view(store, jobs, doc), False
        params = {"export_id": doc["id"], "target": req.target, "rows": doc["count"]}
        extra = {"resumed_from": job["id"]} if job is not None else {}
        job = jobs.submit(dataset, JOB_KIND, params, job_fn(dataset, doc["id"], media_roots, data_dir), **extra)
        doc = _clean(store.get_doc(dataset, EXPORT_KIND, doc["id"]))
        if doc["status"] != "done":
            doc.update({"job_id": job["id"], "status": "queued" if doc["status"] != "running" else doc["status"]})
            store.put_doc(dataset, EXPORT_KIND, doc["id"], doc, name=doc.get("name", ""))
        return export_view(store, jobs, doc), True


def resume_interrupted(
    store: Store, jobs: Any, *, media_roots: Sequence[str] = (), data_dir: str | None = None
) -> list[RunDoc]:
    """Restart the export jobs a dead server left unfinished (called when the server starts)."""

    def factory(old: RunDoc) -> Callable[[Any], dict[str, Any]] | None:
        export_id = (old.get("params") or {}).get("export_id")
        if not export_id:
            return None
        try:
            doc = store.get_doc(str(old["dataset"]), EXPORT_KIND, str(export_id))
        except DocNotFound:
            return None
        if doc.get("status") == "done" or doc.get("job_id") not in (None, old.get("id")):
            return None  # finished, or already picked up by a newer job
        return job_fn(str(old["dataset"]), str(export_id), media_roots, data_dir)

    return list(jobs.resume([JOB_KIND], factory))


def _job_doc(jobs: Any, dataset: str, job_id: str | None) -> RunDoc | None:
    if not job_id or jobs is None:
        return None
    from edgeminer.service.errors import JobNotFound

    try:
        return cast(RunDoc, dict(jobs.get(job_id, dataset)))
    except JobNotFound:
        return None


def export_view(store: Store, jobs: Any, doc: Mapping[str, Any], *, with_ids: bool = False) -> dict[str, Any]:
    """The export as the API shows it: the document (ids only on request) plus its job's state.
    An export whose job died with its server shows status ``interrupted`` until it is resumed."""
    from edgeminer.service.jobs import ACTIVE, is_orphaned

    view = {k: v for k, v in doc.items() if k != "ids" and not k.startswith("_")}
    if with_ids:
        view["ids"] = list(doc.get("ids") or [])
    view.pop("path", None)  # server paths stay on the server; the zip is served by the download route
    view["zip"] = None if doc.get("status") != "done" else os.path.basename(str(doc.get("zip")))
    job = _job_doc(jobs, str(doc["dataset"]), doc.get("job_id"))
    if job is not None:
        view["job"] = {k: job.get(k) for k in ("id", "status", "progress", "error", "interrupted", "resumed_from")}
        if doc.get("status") in ("queued", "running"):
            if job.get("status") == "failed" or (job.get("status") in ACTIVE and is_orphaned(job)):
                view["status"] = "interrupted" if job.get("interrupted") or is_orphaned(job) else "failed"
                view["error"] = job.get("error")
            elif job.get("status") == "cancelled":
                view["status"] = "cancelled"
    return view


def get_export(store: Store, dataset: str, export_id: str) -> ExportDoc:
    from edgeminer.service.errors import ExportNotFound

    try:
        return _clean(store.dataset(dataset).get_doc(EXPORT_KIND, export_id))
    except DocNotFound:
        raise ExportNotFound(dataset, export_id) from None


def _clean(doc: Mapping[str, Any]) -> ExportDoc:
    """A stored ``export`` document without the store's bookkeeping keys (``_created_at``...)."""
    return cast(ExportDoc, {k: v for k, v in doc.items() if not k.startswith("_")})
