"""The ingest pipeline: source -> decode (parallel) -> embed (batched) -> score -> store.

Idempotent and resumable: every record gets a fingerprint (what the source said about it, the image
file's size and mtime, and the embedder); rows already stored with the same fingerprint are skipped
before any decoding, and each batch is written as soon as it is embedded. So re-running the same ingest
changes nothing, and re-running an interrupted one picks up where it stopped.

Per-row problems (missing, truncated or non-image files, probabilities of the wrong length, a duplicate
id, a vector of the wrong dimension) become rows with ``status='error'`` and a reason; the rest of the
batch lands.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from edgeminer.indexer import scores as scoring
from edgeminer.indexer.counts import row_counts
from edgeminer.indexer.documents import RUN, RunDoc, RunError, new_run_doc, now_iso
from edgeminer.indexer.embedders import Embedder, EmbedderError, EmbedOutput, check_model_classes
from edgeminer.indexer.errors import InputError, InvalidProbabilities, UnknownField, ValidationFailed
from edgeminer.indexer.properties import property_fields, safe_properties, update_near_duplicates
from edgeminer.indexer.store import Store, now_utc, usable_vectors
from edgeminer.indexer.where import OK, ok_and

ProgressFn = Callable[[int, int, str], None]


#: rows gathered before one upsert: fewer, larger fragments and table versions than one write per embedding
#: batch (6,600 rows ingested 64 at a time made the table go from version 1 to 123; in 1,024-row writes, 26).
#: An interrupted ingest re-embeds the rows it had not written yet.
WRITE_ROWS = 4096


@dataclass
class IngestReport:
    dataset: str
    run_id: str
    total: int = 0
    ok_rows: int = 0
    error_rows: int = 0
    skipped: int = 0  # unchanged rows already in the store
    inserted: int = 0
    updated: int = 0
    version_read: int = 0
    version_written: int = 0
    seconds: float = 0.0
    errors: list[dict[str, str]] = field(default_factory=list)  # first 100: id, uri, error
    index: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {
            "total": self.total,
            "ok": self.ok_rows,
            "errors": self.error_rows,
            "skipped": self.skipped,
            "inserted": self.inserted,
            "updated": self.updated,
        }

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def summary(self) -> str:
        rate = (self.ok_rows + self.error_rows) / self.seconds if self.seconds else 0.0
        lines = [
            f"ingested into {self.dataset!r}: {self.total} records, {self.ok_rows} ok, "
            f"{self.error_rows} errors, {self.skipped} unchanged (skipped); "
            f"{self.inserted} new, {self.updated} updated; version {self.version_read} -> "
            f"{self.version_written}; {self.seconds:.1f} s ({rate:.0f} rows/s)"
        ]
        for err in self.errors[:10]:
            lines.append(f"  error {err['id']} ({err['uri']}): {err['error']}")
        if self.error_rows > 10:
            lines.append(f"  ... {self.error_rows - 10} more: edgeminer stats --dataset {self.dataset} --errors")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# image loading
# ---------------------------------------------------------------------------------------------


class ImageLoadError(InputError):
    """Bytes or a file that is not a readable image (missing, not an image, truncated, too many pixels);
    the message says which. At ingest it makes the row an error row; from a request it refuses it."""


def load_image(uri: str) -> Any:
    """Open and fully decode an image file (so truncated files fail here, not later)."""
    from PIL import Image, UnidentifiedImageError

    if uri.startswith(("http://", "https://")):
        raise ImageLoadError("remote URIs are not fetched at ingest: download the images and use local paths")
    path = uri[7:] if uri.startswith("file://") else uri
    if not os.path.exists(path):
        raise ImageLoadError("file not found")
    if os.path.isdir(path):
        raise ImageLoadError("is a directory, not an image")
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except UnidentifiedImageError:
        raise ImageLoadError("not an image (Pillow cannot identify the file)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"unreadable or truncated image: {exc}") from None


def pillow_reason(exc: BaseException) -> str:
    """Pillow's message for ``exc`` without the object reprs it embeds (``<_io.BytesIO object at
    0x...>`` says nothing to a client and leaks interpreter addresses)."""
    import re

    text = re.sub(r"\s*<[^<>]*\bobject at 0x[0-9a-fA-F]+>", "", str(exc)).strip(" :")
    return text or type(exc).__name__


def _open_image_bytes(data: bytes) -> Any:
    import io

    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageLoadError("empty data (0 bytes), not an image")
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ImageLoadError(f"not an image format Pillow can identify ({len(data)} bytes)") from exc
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"too many pixels to decode safely: {pillow_reason(exc)}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"unreadable image header: {pillow_reason(exc)}") from exc


def identify_image_bytes(data: bytes) -> str:
    """The format of an uploaded image (``PNG``, ``JPEG``...) from its header alone (cheap: nothing is
    decoded); ImageLoadError as :func:`decode_image_bytes` says it when Pillow cannot identify it."""
    img = _open_image_bytes(data)
    try:
        return str(img.format or "image")
    finally:
        img.close()


def decode_image_bytes(data: bytes) -> Any:
    """An uploaded image (bytes) fully decoded to RGB. ImageLoadError says what is wrong: no image
    Pillow can identify, an image too large to decode, or truncated / corrupt data (Pillow's reason)."""
    from PIL import Image

    opened = _open_image_bytes(data)
    try:
        opened.load()
        return opened.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"too many pixels to decode safely: {pillow_reason(exc)}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        kind = opened.format or "image"
        raise ImageLoadError(f"truncated or corrupt {kind} data: {pillow_reason(exc)}") from exc


def _file_stat(uri: str) -> str:
    path = uri[7:] if uri.startswith("file://") else uri
    try:
        st = os.stat(path)
        return f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        return "missing"


# ---------------------------------------------------------------------------------------------
# the pipeline
# ---------------------------------------------------------------------------------------------


def fingerprint(record: Any, embedder_key: str) -> str:
    emb = record.embedding
    emb_hash = hashlib.sha1(np.asarray(emb, np.float32).tobytes()).hexdigest() if emb is not None else ""
    payload = {
        "uri": record.uri,
        "split": record.split,
        "label": record.label,
        "probs": None if record.probs is None else [round(float(p), 7) for p in record.probs],
        "pred_label": record.pred_label,
        "score": record.score,
        "metadata": record.metadata,
        "parent_id": record.parent_id,
        "bbox": None if record.bbox is None else [float(v) for v in record.bbox],
        "outcome": record.outcome,
        "error": record.error,
        "emb": emb_hash,
        # a row the source already marked as an error is never read (e.g. an image outside the allowed
        # roots): its file's state neither matters nor gets looked at
        "file": _file_stat(record.uri) if emb is None and not record.error else "",
        "embedder": embedder_key,
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _chunks(it: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in it:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def model_predicts(source: Any, embedder: Embedder) -> bool:
    """The model's own logits become the predictions only for classification sources that bring no
    predictions of their own (a detection source's predictions are the detector's)."""
    return (
        getattr(source, "task", "classification") == "classification"
        and bool(getattr(embedder, "has_logits", False))
        and not getattr(source, "has_probs", False)
        and not getattr(source, "has_predictions", False)
    )


def prepare_dataset(store: Store, dataset: str, source: Any, embedder: Embedder) -> Any:
    """Create the dataset on first ingest, or extend it (classes, metadata fields, media roots).

    When the model's logits give the predictions, its class order comes first (probs are aligned with
    it) and labels the model does not know are appended."""
    classes = list(source.classes or [])
    if model_predicts(source, embedder) and embedder.classes:
        if not store.has_dataset(dataset):
            check_model_classes(embedder, classes)  # labels that match no model class: refused, not all "wrong"
        classes = list(embedder.classes) + [c for c in classes if c not in embedder.classes]
    dim = embedder.dim or int(getattr(source, "dim", 0) or 0)
    # image properties (indexer/properties.py) are metadata too; a source column of the same name wins
    fields = {**property_fields(source.metadata_fields), **source.metadata_fields}
    if store.has_dataset(dataset):
        info = store.get_dataset(dataset)
        if dim and info.dim != dim:
            raise EmbedderError(
                f"dataset {dataset!r} holds {info.dim}-d vectors, this ingest makes {dim}-d ones: "
                "ingest into a new dataset"
            )
        return store.update_dataset(
            dataset,
            classes=classes,
            metadata_fields=fields,
            media_roots=list(getattr(source, "roots", []) or []),
        )
    if not dim:
        raise EmbedderError(
            "cannot tell the vector dimension: the precomputed source has no valid vector in its first rows"
        )
    config = embedder.config()
    if config.get("kind") == "precomputed":
        config["dim"] = dim
    return store.create_dataset(
        dataset,
        dim=dim,
        embedder=config,
        classes=classes,
        task=getattr(source, "task", "classification"),
        metadata_fields=fields,
        media_roots=list(getattr(source, "roots", []) or []),
    )


_Pending = tuple[list[Any], list[str], list[Future[Any]]]  # records, fingerprints, decode futures


@dataclass(frozen=True)
class RowSpec:
    """What turning a decoded, embedded chunk into rows needs besides the records (picklable: the Ray engine
    sends it to its actors, indexer/ray_engine.py)."""

    dim: int
    classes: list[str]
    class_index: dict[str, int]
    src_classes: list[str]
    model_version: str
    use_model: bool


@dataclass
class ChunkRows:
    """One chunk's rows as a table (with their embeddings), its ok count and its error rows (id, uri, error)."""

    table: pa.Table | None
    ok: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)


@dataclass
class IngestRun:
    """One ingest between its start and its end: what both engines (this module's and indexer/ray_engine.py)
    share, from :func:`start_ingest` to :func:`finish_ingest` (or :func:`abort_ingest`)."""

    store: Store
    dataset: str
    source: Any
    report: IngestReport
    run_doc: RunDoc
    spec: RowSpec
    embedder_key: str
    model_version_name: str | None
    created: bool
    started: float
    since: Any
    total: int

    def add_chunk(self, rows: ChunkRows) -> None:
        """Count a chunk's ok and error rows into the report (the first 100 errors are kept)."""
        self.report.ok_rows += rows.ok
        self.report.error_rows += len(rows.errors)
        room = 100 - len(self.report.errors)
        if room > 0:
            self.report.errors.extend(rows.errors[:room])


def start_ingest(
    store: Store,
    dataset: str,
    source: Any,
    embedder: Embedder,
    *,
    batch_size: int,
    workers: int,
    model_version: str | None,
    run_id: str | None,
) -> IngestRun:
    """Create or extend the dataset, work out the fingerprints' embedder key and the row spec, and write the
    run document (status running)."""
    _check_ingest_args(batch_size, workers)
    started = time.perf_counter()
    created = not store.has_dataset(dataset)
    info = prepare_dataset(store, dataset, source, embedder)
    run_id = run_id or uuid.uuid4().hex[:12]
    report = IngestReport(dataset=dataset, run_id=run_id, version_read=store.version(dataset))
    emb_cfg = dict(info.embedder)
    embedder_key = json.dumps({k: emb_cfg.get(k) for k in sorted(emb_cfg) if k != "mc_passes"}, default=str)
    classes = list(info.classes)
    spec = RowSpec(
        dim=info.dim,
        classes=classes,
        class_index={c: i for i, c in enumerate(classes)},
        src_classes=list(source.classes or []),
        model_version=model_version or _model_version(emb_cfg),
        use_model=model_predicts(source, embedder),
    )
    total = len(source)
    report.total = total
    run_doc = _start_ingest_run(store, dataset, source, run_id, report, batch_size, workers, total)
    # model_version (the name given) is what these predictions are recorded under (issue 14)
    return IngestRun(
        store, dataset, source, report, run_doc, spec, embedder_key, model_version, created, started, now_utc(), total
    )


def abort_ingest(run: IngestRun, exc: BaseException) -> None:
    """A failed ingest: drop a dataset it created that holds no row, else mark the run document failed."""
    if not (run.created and _drop_if_empty(run.store, run.dataset)):  # a failed first ingest leaves no empty dataset
        _fail_ingest_run(run.store, run.dataset, run.run_doc, run.report, exc, run.started)


def record_ingest(run: IngestRun) -> None:
    """Record the predictions this ingest wrote as a model version (before :func:`finish_ingest`)."""
    _record_version(
        run.store, run.dataset, model_version_name=run.model_version_name, model=run.spec.model_version, since=run.since
    )


def finish_ingest(run: IngestRun, *, build_indexes: bool) -> IngestReport:
    """Near-duplicates, indexes (if asked), the report's end and the run document marked succeeded."""
    _close_ingest_run(
        run.store, run.dataset, run.run_doc, run.report, run.started, run.total, build_indexes=build_indexes
    )
    return run.report


def ingest(
    store: Store,
    dataset: str,
    source: Any,
    embedder: Embedder,
    *,
    batch_size: int = 64,
    workers: int = 2,
    progress: bool = True,
    on_progress: ProgressFn | None = None,
    model_version: str | None = None,
    run_id: str | None = None,
    build_indexes: bool = True,
    write_rows: int = WRITE_ROWS,
) -> IngestReport:
    """Decode, embed, score and store every record of ``source`` (unchanged rows are skipped).

    Parameters
    ----------
    store, dataset, source, embedder
        Where to, the records (a ``sources`` object) and the model (the dataset is created if new).
    batch_size, workers, progress, on_progress
        Rows per batch and decoding threads (both >= 1); a progress bar; a ``(done, total, message)`` hook.
    model_version, run_id, build_indexes
        Stored on each row (default: the embedder's); the run document's id; build indexes at the end.
    write_rows
        Rows gathered before one write to the table (>= 1); an interruption writes what is gathered, a
        killed process re-embeds at most this many rows on the next run.

    Returns
    -------
    IngestReport
        Counts, errors and the table versions read and written.

    Raises
    ------
    ValidationFailed
        ``batch_size`` or ``workers`` is below 1 (any other failure marks the run document failed).
    """
    if write_rows < 1:
        raise ValidationFailed("write_rows must be >= 1")
    run = start_ingest(
        store,
        dataset,
        source,
        embedder,
        batch_size=batch_size,
        workers=workers,
        model_version=model_version,
        run_id=run_id,
    )
    bar = _progress_bar(dataset, run.total) if progress else None
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgeminer-decode")
    try:
        _ingest_chunks(run, embedder, batch_size, pool, bar, on_progress, RowWriter(run, write_rows))
        record_ingest(run)
    except BaseException as exc:
        abort_ingest(run, exc)
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        if bar is not None:
            bar.close()
    return finish_ingest(run, build_indexes=build_indexes)


def _progress_bar(dataset: str, total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc=f"ingest {dataset}", dynamic_ncols=True)


def _drop_if_empty(store: Store, dataset: str) -> bool:
    """Drop ``dataset`` if it holds no row (True when dropped); never raises over the ingest's own error."""
    try:
        if store.count(dataset) == 0:
            store.drop_dataset(dataset)
            return True
    except Exception:  # noqa: BLE001 - the ingest's error is the one to report
        pass
    return False


def _fail_ingest_run(
    store: Store, dataset: str, run_doc: RunDoc, report: IngestReport, exc: BaseException, started: float
) -> None:
    """Mark the ingest's run document failed (or interrupted) with the error."""
    interrupted = isinstance(exc, KeyboardInterrupt)
    run_doc["error"] = "interrupted" if interrupted else f"{type(exc).__name__}: {exc}"
    run_doc["error_type"] = type(exc).__name__
    _end_run(run_doc, "failed", report, store.version(dataset), time.perf_counter() - started)
    store.put_doc(dataset, RUN, report.run_id, run_doc, name=run_doc["kind"])


def _close_ingest_run(
    store: Store,
    dataset: str,
    run_doc: RunDoc,
    report: IngestReport,
    started: float,
    total: int,
    *,
    build_indexes: bool,
) -> None:
    """Build the indexes (if asked), fill in the report's end and mark the run document succeeded."""
    if report.inserted or report.updated:
        update_near_duplicates(store, dataset)  # img_near_dups needs every embedding: once, at the end
    if build_indexes:
        report.index = store.ensure_indexes(dataset)
    report.version_written = store.version(dataset)
    report.seconds = time.perf_counter() - started
    _end_run(run_doc, "succeeded", report, report.version_written, report.seconds)
    run_doc["progress"] = {"done": total, "total": total, "message": "done"}
    run_doc["errors"] = [run_error(e) for e in report.errors[:20]]
    store.put_doc(dataset, RUN, report.run_id, run_doc, name=run_doc["kind"])


def _check_ingest_args(batch_size: int, workers: int) -> None:
    if batch_size < 1:
        raise ValidationFailed("batch_size must be >= 1")
    if workers < 1:
        raise ValidationFailed("workers must be >= 1")


def _start_ingest_run(
    store: Store,
    dataset: str,
    source: Any,
    run_id: str,
    report: IngestReport,
    batch_size: int,
    workers: int,
    total: int,
) -> RunDoc:
    """Write the ingest's ``run`` document, status running."""
    run_doc = new_run_doc(
        "ingest",
        dataset,
        {"source": str(getattr(source, "path", "")), "batch_size": batch_size, "workers": workers},
        run_id=run_id,
        status="running",
        version_read=report.version_read,
    )
    run_doc["progress"]["total"] = total
    store.put_doc(dataset, RUN, run_id, run_doc, name=run_doc["kind"])
    return run_doc


class RowWriter:
    """Upserts the rows of an ingest ``rows`` at a time (and the rest on :meth:`flush`), counting the
    inserted and updated rows into the run's report. Both engines write through it."""

    def __init__(self, run: IngestRun, rows: int = WRITE_ROWS):
        self.run = run
        self.rows = max(1, int(rows))
        self.pending: list[pa.Table] = []
        self.count = 0

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.count += table.num_rows
        if self.count >= self.rows:
            self.flush()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        """Write what is gathered, also when the block failed (Ctrl-C, an error): rows already embedded are
        kept; then the original failure propagates (a failure to write is not allowed to hide it)."""
        if kind is None:
            self.flush()
            return
        try:
            self.flush()
        except Exception:  # noqa: BLE001 - the original failure is the one to report
            pass

    def flush(self) -> None:
        if not self.pending:
            return
        table = self.pending[0] if len(self.pending) == 1 else pa.concat_tables(self.pending, promote_options="default")
        self.pending, self.count = [], 0
        result = self.run.store.upsert_samples(self.run.dataset, table)
        self.run.report.inserted += result.inserted
        self.run.report.updated += result.updated


def _ingest_chunks(
    run: IngestRun,
    embedder: Embedder,
    batch_size: int,
    pool: ThreadPoolExecutor,
    bar: Any,
    on_progress: ProgressFn | None,
    writer: RowWriter,
) -> None:
    """Decode each chunk in ``pool`` while the previous one is embedded and stored; an interruption
    (Ctrl-C, a failure) still writes the rows already embedded (``writer``'s block), then propagates."""
    with writer:
        report = run.report
        done = 0
        pending: _Pending | None = None
        for chunk, todo, todo_fps in changed_chunks(run, batch_size):
            futures = [pool.submit(decode_record, rec, embedder) for rec in todo]
            # embed the previous chunk while this one decodes
            if pending is not None:
                _finish(run, embedder, pending, writer)
            pending = (todo, todo_fps, futures)
            done += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
                bar.set_postfix(ok=report.ok_rows, errors=report.error_rows, skipped=report.skipped)
            if on_progress is not None:
                on_progress(done, run.total, f"{report.ok_rows} ok, {report.error_rows} errors")
        if pending is not None:
            _finish(run, embedder, pending, writer)


def changed_chunks(run: IngestRun, batch_size: int) -> Iterator[tuple[list[Any], list[Any], list[str]]]:
    """The source in chunks of ``batch_size`` records: each chunk, and its records (a repeated id made an error
    row) not already stored with the same fingerprint, with their fingerprints (the rest count as skipped)."""
    seen: dict[str, int] = {}
    for chunk in _chunks(_number(run.source), batch_size):
        records, fps = _dedupe(chunk, seen, run.embedder_key)
        todo, todo_fps = _changed(run.store, run.dataset, records, fps, run.report)
        yield chunk, todo, todo_fps


def _changed(
    store: Store, dataset: str, records: list[Any], fps: list[str], report: IngestReport
) -> tuple[list[Any], list[str]]:
    """The records (and fingerprints) not already stored with the same fingerprint; the rest are skipped."""
    have = store.existing(dataset, [r.id for r in records])
    todo, todo_fps = [], []
    for rec, fp in zip(records, fps, strict=True):
        old = have.get(rec.id)
        if old is not None and old[0] == fp:
            report.skipped += 1
        else:
            todo.append(rec)
            todo_fps.append(fp)
    return todo, todo_fps


def _end_run(doc: RunDoc, status: str, report: IngestReport, version_written: int, seconds: float) -> None:
    """Close an ingest's own ``run`` document (a CLI ingest; a job's is kept by the job runner)."""
    doc.update(
        {
            "status": status,
            "counts": dict(report.counts()),
            "error_count": report.error_rows,
            "version_written": version_written,
            "finished_at": now_iso(),
            "duration_s": round(seconds, 3),
        }
    )


def run_error(error: dict[str, str]) -> RunError:
    """An ``IngestReport.errors`` entry (id, uri, error) as a run document's error (item, message)."""
    return {"item": error.get("id", ""), "message": f"{error.get('uri', '')}: {error.get('error', '')}"}


def _model_version(cfg: dict[str, Any]) -> str:
    if cfg.get("kind") == "torchscript":
        return f"{os.path.basename(str(cfg.get('model_file')))}@{cfg.get('model_sha256')}"
    if cfg.get("kind") == "open_clip":
        return f"{cfg.get('model')}/{cfg.get('pretrained')}"
    return str(cfg.get("kind"))


def _record_version(store: Store, dataset: str, *, model_version_name: str | None, model: str, since: Any) -> None:
    """Record the predictions this ingest wrote as a model version (indexer/versions.py): under the name
    given, else the dataset's ingest version (``v1`` for a new dataset)."""
    from edgeminer.indexer.versions import record_ingest_version

    record_ingest_version(store, dataset, name=model_version_name, model=model, since=since)


def _number(source: Any) -> Iterator[tuple[int, Any]]:
    yield from enumerate(source)


def _dedupe(chunk: list[tuple[int, Any]], seen: dict[str, int], embedder_key: str) -> tuple[list[Any], list[str]]:
    """A repeated id keeps the first row; later ones are stored as error rows under their own id."""
    import dataclasses

    records, fps = [], []
    for n, rec in chunk:
        if rec.id in seen:
            first = seen[rec.id]
            rec = dataclasses.replace(
                rec,
                id=f"{rec.id}#dup{n}",
                error=f"duplicate id {rec.id!r}: first at record {first}, this is record {n}",
            )
        else:
            seen[rec.id] = n
        records.append(rec)
        fps.append(fingerprint(rec, embedder_key))
    return records, fps


@dataclass
class Decoded:
    """A record after decoding: the preprocessed image (None for a vector row or an error), its size, the
    error that makes it an error row, and its image properties."""

    array: np.ndarray | None
    width: int | None
    height: int | None
    error: str | None
    props: dict[str, Any] = field(default_factory=dict)  # meta_img_* image properties


def decode_record(rec: Any, embedder: Embedder) -> Decoded:
    """Read one record's image (unless its vector is given), crop its box and preprocess it for the embedder;
    the error that makes it an error row, if any."""
    if rec.error:
        return Decoded(None, rec.width, rec.height, rec.error)
    if rec.embedding is not None:
        # precomputed: a cheap header read fills width/height and catches a missing file
        w, h = rec.width, rec.height
        if rec.uri and not rec.uri.startswith(("http://", "https://")) and (w is None or h is None):
            try:
                from PIL import Image

                with Image.open(rec.uri) as img:
                    w, h = img.size
                    props = safe_properties(img) if rec.bbox is None else {}
            except Exception:  # noqa: BLE001 - size is optional for precomputed rows
                props = {}
            return Decoded(None, w, h, None, props)
        return Decoded(None, w, h, None)
    try:
        img = load_image(rec.uri)
    except ImageLoadError as exc:
        return Decoded(None, rec.width, rec.height, str(exc))
    width, height = img.size
    if rec.bbox is not None:
        x, y, w, h = (float(v) for v in rec.bbox)
        if w <= 0 or h <= 0:
            return Decoded(None, width, height, f"empty box {list(rec.bbox)}")
        left, top = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
        right, bottom = min(width, int(np.ceil(x + w))), min(height, int(np.ceil(y + h)))
        if right <= left or bottom <= top:
            return Decoded(None, width, height, f"box {list(rec.bbox)} lies outside the {width}x{height} image")
        img = img.crop((left, top, right, bottom))
    try:
        arr = embedder.preprocess(img)
    except Exception as exc:  # noqa: BLE001 - a per-image failure, recorded on the row
        return Decoded(None, width, height, f"preprocessing failed: {exc}")
    return Decoded(arr, rec.width or width, rec.height or height, None, safe_properties(img))


def _finish(run: IngestRun, embedder: Embedder, pending: _Pending, writer: RowWriter) -> None:
    records, fps, futures = pending
    if not records:
        return
    rows = build_chunk_rows(records, fps, [f.result() for f in futures], embedder, run.spec)
    run.add_chunk(rows)
    assert rows.table is not None  # records is not empty
    writer.add(rows.table)


def build_chunk_rows(
    records: list[Any], fps: list[str], decoded: list[Decoded], embedder: Embedder, spec: RowSpec
) -> ChunkRows:
    """Embed a chunk's decoded images in one batch and build its rows: vectors, scores, predictions, and an
    error row (status 'error' and the reason) for each record that failed a step."""
    if not records:
        return ChunkRows(None)
    out, pos = _embed_decoded(embedder, decoded)
    rows: list[dict[str, Any]] = []
    vectors: list[Any] = []
    result = ChunkRows(None)
    for i, (rec, fp, dec) in enumerate(zip(records, fps, decoded, strict=True)):
        error = dec.error
        vec: np.ndarray | None = None
        model_probs: np.ndarray | None = None
        mc: np.ndarray | None = None
        if error is None:
            vec, model_probs, mc, error = _row_vector(rec, out, pos.get(i), spec.dim, spec.use_model)
        row = _base_row(rec, dec, fp, spec.model_version)
        if error is None:
            try:
                row.update(_predictions(rec, model_probs, mc, spec.classes, spec.class_index, spec.src_classes))
            except ValueError as exc:
                error = str(exc)
        if error is not None:
            row.update(status="error", error=error)
            result.errors.append({"id": rec.id, "uri": rec.uri, "error": error})
            vectors.append(None)
        else:
            row.update(status="ok", error=None)
            result.ok += 1
            vectors.append(vec)
        rows.append(row)
    result.table = _rows_table(rows, vectors, spec.dim)
    return result


def _embed_decoded(embedder: Embedder, decoded: list[Decoded]) -> tuple[EmbedOutput | None, dict[int, int]]:
    """Embed the rows that decoded, in one batch: the output and each row's position in it (a failed
    batch marks those rows as errors)."""
    idx = [i for i, d in enumerate(decoded) if d.array is not None]
    out: EmbedOutput | None = None
    if idx:
        try:
            out = embedder.embed_batch(np.stack([decoded[i].array for i in idx]))  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - one bad batch must not sink the ingest
            reason = str(exc) if len(str(exc)) <= 500 else str(exc)[:500] + " ..."  # no model output dumps
            for i in idx:
                decoded[i].error = f"embedding failed: {reason}"
            idx = []
    return out, {i: n for n, i in enumerate(idx)}


def _row_vector(
    rec: Any, out: EmbedOutput | None, at: int | None, dim: int, use_model: bool
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, str | None]:
    """A decoded row's vector (its own, normalized, or the embedder's at position ``at``), the model's
    probs and MC passes for it, and the error that makes it unusable (or None)."""
    vec: np.ndarray | None = None
    model_probs: np.ndarray | None = None
    mc: np.ndarray | None = None
    error: str | None = None
    if rec.embedding is not None:
        vec = np.asarray(rec.embedding, dtype=np.float32).reshape(-1)
        if vec.shape[0] != dim:
            error = f"vector has {vec.shape[0]} values, the dataset's dimension is {dim}"
            vec = None
        elif not np.all(np.isfinite(vec)):
            error = "vector has NaN or infinite values"
            vec = None
        else:
            norm = float(np.linalg.norm(vec.astype(np.float64)))  # float32 overflows from ~1e19
            vec = (vec / norm).astype(np.float32) if norm > 0 else vec
    elif out is not None and at is not None:
        vec = out.embeddings[at]
        if not usable_vectors(np.asarray(vec, np.float32).reshape(1, -1))[0]:
            error = "the embedder returned NaN or infinite values for this image"
            vec = None
        elif out.probs is not None and use_model:
            model_probs = out.probs[at]
            mc = None if out.mc_probs is None else out.mc_probs[:, at, :]
    return vec, model_probs, mc, error


def _base_row(rec: Any, dec: Decoded, fp: str, model_version: str) -> dict[str, Any]:
    """A record's row without status, scores and predictions."""
    row: dict[str, Any] = {
        "id": rec.id,
        "uri": rec.uri,
        "parent_id": rec.parent_id,
        "bbox": None if rec.bbox is None else [float(v) for v in rec.bbox],
        "area": None if rec.bbox is None else float(rec.bbox[2]) * float(rec.bbox[3]),
        "width": dec.width,
        "height": dec.height,
        "split": rec.split,
        "label": rec.label,
        "labeled": rec.label is not None or rec.outcome == "false_positive",
        "model_version": model_version,
        "fingerprint": fp,
        "ingested_at": now_utc(),
    }
    for key, value in (rec.metadata or {}).items():
        row["meta_" + key] = value
    row.update({k: v for k, v in dec.props.items() if k[5:] not in (rec.metadata or {})})
    return row


def _rows_table(rows: list[dict[str, Any]], vectors: list[Any], dim: int) -> pa.Table:
    """The rows as one table, with their embeddings (null for error rows)."""
    # rows differ in their keys (scores only where there are predictions): take the union
    keys = list(dict.fromkeys(k for r in rows for k in r))
    table = pa.Table.from_pydict({k: [r.get(k) for r in rows] for k in keys})
    emb_arr = pa.array(
        [None if v is None else np.asarray(v, np.float32).tolist() for v in vectors], pa.list_(pa.float32(), dim)
    )
    return table.append_column("embedding", emb_arr)


def _predictions(
    rec: Any,
    model_probs: np.ndarray | None,
    mc: np.ndarray | None,
    classes: list[str],
    class_index: dict[str, int],
    src_classes: list[str],
) -> dict[str, Any]:
    """Scores, predicted labels, correctness and outcome for one record.

    Priority: the source's probabilities, then the source's pred_label + score, then the model's own
    logits (torchscript). Source probabilities are re-ordered into the dataset's class order."""
    out: dict[str, Any] = {}
    probs: np.ndarray | None = None
    if rec.probs is not None:
        p = np.asarray(rec.probs, dtype=np.float64)
        order = src_classes or classes
        if len(p) != len(order):
            raise InvalidProbabilities(f"probs has {len(p)} values but there are {len(order)} classes")
        aligned = np.zeros(len(classes), dtype=np.float64)
        for k, name in enumerate(order):
            aligned[class_index[name]] = p[k]
        probs = aligned
    elif model_probs is not None and rec.pred_label is None and rec.outcome is None:
        probs = np.zeros(len(classes), dtype=np.float64)
        probs[: len(model_probs)] = model_probs  # labels the model does not know get probability 0
    if probs is not None:
        sc = scoring.score_all(probs[None, :], None if mc is None else mc[:, None, :])
        for key, arr in sc.items():
            out[key] = float(arr[0])
        p1, p2 = scoring.top2(probs[None, :], classes)
        out["probs"] = probs.astype(np.float32).tolist()
        out["pred_label"], out["pred_label2"] = p1[0], p2[0]
    elif rec.pred_label is not None:
        out["pred_label"] = rec.pred_label
        if rec.score is not None:
            s = float(rec.score)
            if not 0.0 <= s <= 1.0:
                raise InvalidProbabilities(f"score {s} is outside [0, 1]")
            out["confidence"] = s
            out["least_confidence"] = 1.0 - s
    pred = out.get("pred_label")
    if rec.outcome is not None:
        out["outcome"] = rec.outcome
        out["correct"] = rec.outcome == "correct"
    elif rec.label is not None and pred is not None:
        out["correct"] = pred == rec.label
        out["outcome"] = "correct" if out["correct"] else "wrong_class"
    return out


# ---------------------------------------------------------------------------------------------
# stats
# ---------------------------------------------------------------------------------------------


def dataset_stats(store: Store, dataset: str) -> dict[str, Any]:
    """Row counts (indexer/counts.py: per split, labeled, errors, wrong), scores present, embedder,
    dimension and versions."""
    info = store.get_dataset(dataset)
    counts = row_counts(store, dataset)
    splits: dict[str, dict[str, int]] = {}
    for split, c in counts.splits.items():  # a row without a split is counted under "?"
        into = splits.setdefault(split or "?", dict.fromkeys(c.as_dict(), 0))
        for key, n in c.as_dict().items():
            into[key] += n
    score_cols = ["probs", *scoring_columns()]
    ok_rows = store.query(dataset, where=OK, columns=score_cols)
    complete = {c: ok_rows.num_rows - ok_rows[c].null_count for c in score_cols}
    has_emb = store.count(dataset, "embedding IS NOT NULL")
    versions = store.list_versions(dataset)
    return {
        "dataset": dataset,
        "task": info.task,
        "rows": counts.total,
        "ok": counts.ok,
        "errors": counts.errors,
        "labeled": counts.labeled,
        "wrong": counts.wrong,
        "with_embedding": has_emb,
        "scores_present": complete,
        "splits": splits,
        "embedder": info.embedder,
        "dimension": info.dim,
        "classes": info.classes,
        "metadata_fields": info.metadata_fields,
        "version": versions[-1]["version"] if versions else 0,
        "versions": len(versions),
    }


def errors_by_field(store: Store, dataset: str, field: str) -> list[dict[str, Any]]:
    """Per value of a metadata field (or split, label, pred_label): labeled rows, errors and the share of
    all errors, most errors first. ``edgeminer stats --by slice`` on the demo."""
    info = store.get_dataset(dataset)
    column = field if field in ("split", "label", "pred_label", "outcome") else f"meta_{field}"
    if field not in info.metadata_fields and column == f"meta_{field}":
        raise UnknownField(field, ["split", "label", "pred_label", "outcome", *info.metadata_fields], dataset=dataset)
    rows = store.query(dataset, where=ok_and("labeled = true"), columns=[column, "correct"]).to_pylist()
    total_errors = sum(1 for r in rows if r["correct"] is False)
    groups: dict[Any, list[int]] = {}
    for r in rows:
        g = groups.setdefault(r[column], [0, 0])
        g[0] += 1
        g[1] += r["correct"] is False
    out = [
        {
            "value": value,
            "labeled": n,
            "errors": e,
            "error_rate": e / n if n else 0.0,
            "share_of_errors": e / total_errors if total_errors else 0.0,
        }
        for value, (n, e) in groups.items()
    ]
    return sorted(out, key=lambda d: (-d["errors"], str(d["value"])))


def error_rows(store: Store, dataset: str, limit: int = 50) -> list[dict[str, Any]]:
    return store.query(dataset, where="status = 'error'", columns=["id", "uri", "error"], limit=limit).to_pylist()


def scoring_columns() -> list[str]:
    from edgeminer.indexer.store import SCORE_COLUMNS

    return list(SCORE_COLUMNS)


def format_stats(stats: dict[str, Any]) -> str:
    emb = stats["embedder"]
    desc = emb.get("kind", "?")
    if emb.get("kind") == "open_clip":
        desc += f" {emb.get('model')} / {emb.get('pretrained')}"
    elif emb.get("kind") == "torchscript":
        desc += f" {emb.get('model_file')} (mc_passes={emb.get('mc_passes')})"
    lines = [
        f"dataset {stats['dataset']} ({stats['task']}): {stats['rows']} rows, {stats['ok']} ok, "
        f"{stats['errors']} errors; {stats['labeled']} labeled, {stats['wrong']} wrong",
        f"embedder: {desc}; dimension {stats['dimension']}; {stats['with_embedding']} rows with an embedding",
        f"classes: {', '.join(stats['classes']) if stats['classes'] else '(none)'}",
        f"metadata: {', '.join(f'{k}:{v}' for k, v in stats['metadata_fields'].items()) or '(none)'}",
        f"table version {stats['version']} ({stats['versions']} versions)",
        "",
        f"{'split':<12}{'rows':>8}{'ok':>8}{'labeled':>9}{'wrong':>8}{'errors':>8}",
    ]
    for split, s in sorted(stats["splits"].items()):
        lines.append(f"{split:<12}{s['rows']:>8}{s['ok']:>8}{s['labeled']:>9}{s['wrong']:>8}{s['errors']:>8}")
    ok = stats["ok"]
    present = ", ".join(f"{k} {v}/{ok}" for k, v in stats["scores_present"].items())
    lines += ["", f"scores present on ok rows: {present}"]
    return "\n".join(lines)


def iter_batches(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]
