"""Model versions: the predictions of several models on the same rows (issue 14).

Design. A dataset's rows (images or objects) and their embeddings, labels, map coordinates and clusters
are the model-independent part; a model's predictions (probs, pred_label, pred_label2, the uncertainty
scores, and for detection the outcome) are per version. They are kept in one table per dataset,
``<ds>__predictions``, keyed by ``(version, id)`` (``Store`` section "Model versions"). The *current*
version's values are also in the samples table, as before, so every reader (map, clusters, mining,
selection, exports, stats) keeps working unchanged; :func:`set_current` copies a version's values over
(and recomputes ``correct`` / ``outcome`` against the labels, which only the samples table holds).
Correctness is never stored per version: labels change (a label import), predictions do not.

The registry is the ``model_versions`` document ``registry`` (``ModelVersionsDoc``): the versions in
the order they were added, which one is current, and the one an ordinary ingest records its own
predictions under (the first ingest's name, ``v1`` unless ``--model-version`` named it).

Entry points: :func:`record_ingest_version` (called by ``pipeline.ingest`` at its end),
:func:`ingest_predictions` (a new version from a manifest or a TorchScript model, embeddings and labels
untouched), :func:`set_current`, :func:`list_versions`, :func:`require_version`.

Detection datasets: a new detector's version is its COCO results, matched to the dataset's ground-truth
objects exactly as at ingest (same ids): each object's pred_label, score and outcome (correct,
wrong_class, false_negative). Its false positives are new boxes, which would need embeddings to become
rows, so they are counted (``false_positives`` of the registry entry), not stored.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edgeminer.indexer import scores as scoring
from edgeminer.indexer.documents import MODEL_VERSIONS, ModelVersionEntry, ModelVersionsDoc, now_iso
from edgeminer.indexer.errors import (
    DocNotFound,
    InvalidSource,
    NotFound,
    NotSupported,
    SchemaMismatch,
    ValidationFailed,
)
from edgeminer.indexer.store import SCORE_COLUMNS, Store
from edgeminer.indexer.where import OK, ok_and

ProgressFn = Callable[[int, int, str], None]

REGISTRY_ID = "registry"
DEFAULT_VERSION = "v1"
VERSION_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: the prediction columns a version holds and the samples table shows for the current one
PREDICTION_COLUMNS = ("probs", "pred_label", "pred_label2", *SCORE_COLUMNS, "outcome", "model_version")
#: rows a version ingest reports by id at most (the count has them all)
MAX_REPORTED_ERRORS = 100


def unknown_version(dataset: str, name: str, known: Sequence[str]) -> NotFound:
    """The error for a model version the dataset does not have (404), listing the ones it has (a
    ``NotFound`` with ``known_versions``, not a class of its own: the error tree stays as drawn)."""
    hint = f" Known versions: {', '.join(known)}." if known else " The dataset has no model versions yet."
    return NotFound(
        f"dataset {dataset!r} has no model version {name!r}.{hint}",
        title="Model version not found",
        dataset=dataset,
        version=name,
        known_versions=list(known),
    )


@dataclass
class VersionReport:
    """What a version ingest did: rows stored, rows refused (first ones by id) and whether it is current."""

    dataset: str
    version: str
    kind: str
    source: str
    rows: int = 0
    error_count: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    current: bool = False
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        lines = [
            f"model version {self.version!r} of {self.dataset!r} ({self.kind}): {self.rows} predictions stored, "
            f"{self.error_count} rows refused; " + ("current" if self.current else "not current")
        ]
        lines += [f"  {e['id']}: {e['error']}" for e in self.errors[:10]]
        if self.error_count > 10:
            lines.append(f"  ... {self.error_count - 10} more")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------


def check_version_name(name: str) -> str:
    """``name`` if it can name a version (letters, digits, ``.``, ``_``, ``-``; up to 64), else 422."""
    if not isinstance(name, str) or not VERSION_NAME_RE.match(name):
        raise ValidationFailed(
            f"model version name {name!r} is not valid: use 1-64 letters, digits, '.', '_' or '-', starting "
            "with a letter or digit",
            field="model_version",
        )
    return name


def registry(store: Store, dataset: str) -> ModelVersionsDoc | None:
    """The dataset's registry document, or None when no version was ever recorded."""
    try:
        doc = store.get_doc(dataset, MODEL_VERSIONS, REGISTRY_ID)
    except DocNotFound:
        return None
    return cast(ModelVersionsDoc, {k: v for k, v in doc.items() if not k.startswith("_") and k != "id"})


def list_versions(store: Store, dataset: str) -> ModelVersionsDoc:
    """The registry with each version's stored row count (an empty one for a dataset without versions)."""
    reg = registry(store, dataset)
    if reg is None:
        return {"current": "", "ingest_version": "", "versions": []}
    counts = store.prediction_counts(dataset)
    for entry in reg["versions"]:
        entry["rows"] = counts.get(entry["name"], 0)
    return reg


def version_names(store: Store, dataset: str) -> list[str]:
    reg = registry(store, dataset)
    return [] if reg is None else [v["name"] for v in reg["versions"]]


def require_version(store: Store, dataset: str, name: str) -> ModelVersionEntry:
    """The registry entry of ``name``; NotFound (404) naming the known versions otherwise."""
    reg = registry(store, dataset)
    for entry in [] if reg is None else reg["versions"]:
        if entry["name"] == name:
            return entry
    raise unknown_version(dataset, str(name), version_names(store, dataset))


def _save_entry(
    store: Store,
    dataset: str,
    name: str,
    *,
    kind: str,
    model: str,
    source: str,
    rows: int,
    errors: int,
    extra: dict[str, int] | None = None,
) -> ModelVersionsDoc:
    """Add or refresh ``name`` in the registry (the first version becomes current and the ingest version)."""
    reg = registry(store, dataset) or {"current": name, "ingest_version": name, "versions": []}
    now = now_iso()
    entry = next((v for v in reg["versions"] if v["name"] == name), None)
    if entry is None:
        entry = {
            "name": name, "model": model, "kind": kind, "source": source, "rows": 0, "errors": 0,
            "created_at": now, "updated_at": now,
        }  # fmt: skip
        reg["versions"].append(entry)
    entry["model"] = model or entry["model"]
    entry["source"] = source or entry["source"]
    entry["updated_at"] = now
    entry["rows"] = store.prediction_counts(dataset).get(name, rows)
    entry["errors"] = errors
    if extra and "false_positives" in extra:
        entry["false_positives"] = extra["false_positives"]
    store.put_doc(dataset, MODEL_VERSIONS, REGISTRY_ID, dict(reg), name="registry")
    return reg


# ---------------------------------------------------------------------------------------------
# the first ingest's own predictions
# ---------------------------------------------------------------------------------------------


def record_ingest_version(
    store: Store, dataset: str, *, name: str | None, model: str, since: dt.datetime | None
) -> str:
    """Record the predictions an ordinary ingest wrote (rows ingested at or after ``since``; every row
    when the dataset has no registry yet) under ``name``, else the dataset's ingest version, else ``v1``.
    If another version is current, those rows get its values back in the samples table. Returns the
    version name."""
    reg = registry(store, dataset)
    version = check_version_name(name or (reg["ingest_version"] if reg else DEFAULT_VERSION))
    ids = _rows_since(store, dataset, None if reg is None else since)
    if ids:
        snap = store.get_samples(dataset, ids, columns=["id", *PREDICTION_COLUMNS])
        store.upsert_predictions(dataset, _with_version(snap, version))
    reg = _save_entry(store, dataset, version, kind="ingest", model=model, source="", rows=len(ids), errors=0)
    if ids and reg["current"] != version:
        apply_version(store, dataset, reg["current"], ids=ids)
    return version


def _rows_since(store: Store, dataset: str, since: dt.datetime | None) -> list[str]:
    table = store.query(dataset, where=OK, columns=["id", "ingested_at"])
    if since is not None and table.num_rows:
        mask = pc.fill_null(pc.greater_equal(table["ingested_at"], pa.scalar(since, table.schema.field(1).type)), False)
        table = table.filter(mask)
    return [str(i) for i in table["id"].to_pylist()]


def _with_version(table: pa.Table, version: str) -> pa.Table:
    return table.append_column("version", pa.array([version] * table.num_rows, pa.string()))


def ensure_registry(store: Store, dataset: str) -> ModelVersionsDoc:
    """The registry, created for a dataset ingested before model versions existed: its current
    predictions become version ``v1``."""
    reg = registry(store, dataset)
    if reg is not None:
        return reg
    if store.count(dataset, OK):
        model = str(store.query(dataset, where=OK, columns=["model_version"], limit=1)["model_version"][0] or "")
        record_ingest_version(store, dataset, name=None, model=model, since=None)
    reg = registry(store, dataset)
    if reg is None:
        raise NotSupported(f"dataset {dataset!r} has no rows yet: ingest it before adding model versions")
    return reg


# ---------------------------------------------------------------------------------------------
# making a version current
# ---------------------------------------------------------------------------------------------


def set_current(store: Store, dataset: str, name: str) -> dict[str, Any]:
    """Make ``name`` the current version: its predictions are copied into the samples table (rows it has
    no prediction for get none) and ``correct`` / ``outcome`` are recomputed against the labels. Map,
    clusters, mining, selection and stats read it from then on; re-run the analysis to re-rank the
    failure clusters under it. Returns ``{dataset, previous, current, rows, table_version}``."""
    require_version(store, dataset, name)
    reg = ensure_registry(store, dataset)
    previous = reg["current"]
    with store.lock(dataset):
        table_version = apply_version(store, dataset, name)
        reg["current"] = name
        store.put_doc(dataset, MODEL_VERSIONS, REGISTRY_ID, dict(reg), name="registry")
    rows = store.count(dataset, OK)
    return {"dataset": dataset, "previous": previous, "current": name, "rows": rows, "table_version": table_version}


def apply_version(store: Store, dataset: str, name: str, *, ids: Sequence[str] | None = None) -> int:
    """Copy version ``name``'s predictions into the samples table (all ok rows, or ``ids``), with
    ``correct`` and ``outcome`` against the current labels. Returns the samples table version."""
    info = store.get_dataset(dataset)
    if ids is None:
        rows = store.query(dataset, where=OK, columns=["id", "label", "labeled"])
    else:
        rows = store.get_samples(dataset, list(ids), columns=["id", "label", "labeled", "status"])
        rows = rows.filter(pc.equal(rows["status"], "ok")).select(["id", "label", "labeled"])
    preds = store.query_predictions(dataset, name, columns=list(PREDICTION_COLUMNS), ids=None if ids is None else ids)
    joined = _aligned(rows.sort_by("id"), preds)
    correct, outcome = _judge(joined, info.task)
    out = joined.select(["id", *PREDICTION_COLUMNS])
    out = out.set_column(out.schema.get_field_index("outcome"), "outcome", outcome)
    out = out.append_column("correct", correct)
    return store.update_columns(dataset, out)


def _aligned(rows: pa.Table, preds: pa.Table) -> pa.Table:
    """``rows`` with ``preds``' columns of the same id beside them (nulls where a version has no row)."""
    at = pc.index_in(rows["id"], value_set=preds["id"])
    taken = preds.take(at)
    for name in preds.column_names:
        if name != "id":
            rows = rows.append_column(name, taken[name])
    return rows


def _judge(table: pa.Table, task: str) -> tuple[pa.Array, pa.Array]:
    """``correct`` and ``outcome`` of each row: against the label for classification; a detection row's
    outcome is the detector's, stored with its version."""
    if task == "detection":
        outcome = table["outcome"].combine_chunks()
        return pc.equal(outcome, "correct"), outcome
    label, pred = table["label"].combine_chunks(), table["pred_label"].combine_chunks()
    judged = pc.and_(pc.is_valid(label), pc.is_valid(pred))
    correct = pc.if_else(judged, pc.equal(label, pred), pa.scalar(None, pa.bool_()))
    outcome = pc.if_else(correct, pa.scalar("correct"), pa.scalar("wrong_class"))
    return correct, outcome


# ---------------------------------------------------------------------------------------------
# a new version from a manifest or a TorchScript model
# ---------------------------------------------------------------------------------------------


def ingest_predictions(
    store: Store,
    dataset: str,
    name: str,
    *,
    source: Any = None,
    model_file: str | None = None,
    mc_passes: int = 0,
    device: str = "cpu",
    batch_size: int = 64,
    make_current: bool = False,
    progress: bool = False,
    on_progress: ProgressFn | None = None,
) -> VersionReport:
    """Store a model's predictions for the dataset's rows as version ``name``, without touching the
    embeddings, labels or anything else of the samples table (unless the version is, or is made,
    current: then its values are copied over as :func:`set_current` does).

    Exactly one of ``source`` (an opened manifest source: rows matched by id, ``probs`` [+ ``classes``]
    or ``pred_label`` + ``score``) and ``model_file`` (a TorchScript model returning (embedding, logits),
    run over the dataset's images; ``mc_passes`` adds MC-dropout scores) gives the predictions. Rows the
    source cannot give a prediction for are reported by id; the rest land. Re-running with the same name
    replaces that version's predictions for the rows given.

    Detection datasets: ``source`` is a COCO source with the new detector's results (``has_predictions``).

    Raises: ValidationFailed (name, arguments, a source that does not fit the task), NotSupported (a model
    file for a detection dataset), SchemaMismatch (class names the dataset does not have), InvalidSource
    (no row of the source matches the dataset).
    """
    import time

    started = time.perf_counter()
    check_version_name(name)
    info = store.get_dataset(dataset)
    if (source is None) == (model_file is None):
        raise ValidationFailed("give exactly one of a manifest (source) and a TorchScript model file", field="source")
    _check_task(dataset, info.task, source, model_file)
    reg = ensure_registry(store, dataset)
    kind, src, preds, errors, extra = _gather(
        store, dataset, info.task, source, model_file, mc_passes, device, batch_size, progress, on_progress
    )
    if preds.num_rows == 0:
        raise InvalidSource(
            f"{src}: no prediction could be matched to a row of dataset {dataset!r} "
            f"({len(errors)} rows refused{': ' + errors[0]['error'] if errors else ''})"
        )
    preds = preds.append_column("model_version", pa.array([name] * preds.num_rows, pa.string()))
    store.upsert_predictions(dataset, _with_version(preds, name))
    reg = _save_entry(
        store, dataset, name, kind=kind, model=src, source=src, rows=preds.num_rows, errors=len(errors), extra=extra
    )
    is_current = reg["current"] == name
    if make_current and not is_current:
        set_current(store, dataset, name)
        is_current = True
    elif is_current:
        apply_version(store, dataset, name, ids=preds["id"].to_pylist())
    return VersionReport(
        dataset=dataset, version=name, kind=kind, source=src, rows=preds.num_rows, error_count=len(errors),
        errors=errors[:MAX_REPORTED_ERRORS], current=is_current, seconds=round(time.perf_counter() - started, 3),
    )  # fmt: skip


def _gather(
    store: Store,
    dataset: str,
    task: str,
    source: Any,
    model_file: str | None,
    mc_passes: int,
    device: str,
    batch_size: int,
    progress: bool,
    on_progress: ProgressFn | None,
) -> tuple[str, str, pa.Table, list[dict[str, str]], dict[str, int]]:
    """(kind, source path, predictions by id, refused rows, extra counts) from a model, COCO results or a
    manifest."""
    if model_file is not None:
        preds, errors = _predict_with_model(
            store, dataset, model_file, mc_passes, device, batch_size, progress, on_progress
        )
        return "torchscript", str(model_file), preds, errors, {}
    src = str(getattr(source, "path", ""))
    if task == "detection":
        preds, errors, false_positives = _predictions_from_coco(store, dataset, source)
        return "coco", src, preds, errors, {"false_positives": false_positives}
    preds, errors = _predictions_from_source(store, dataset, source)
    return "manifest", src, preds, errors, {}


def _check_task(dataset: str, task: str, source: Any, model_file: str | None) -> None:
    """A detection dataset takes COCO results (matched to its ground-truth objects), a classification one a
    manifest or a model; NotSupported / ValidationFailed say which."""
    source_task = getattr(source, "task", "classification") if source is not None else "classification"
    if task == "detection":
        if model_file is not None:
            raise NotSupported(
                f"dataset {dataset!r} is a detection dataset: give the new detector's COCO results (the ground-"
                "truth annotations file with --coco-results), a classification model cannot be run over it"
            )
        if source_task != "detection" or not getattr(source, "has_predictions", False):
            raise ValidationFailed(
                f"dataset {dataset!r} is a detection dataset: a new version is the detector's COCO results, "
                "given with the ground-truth annotations file (SOURCE --coco-results RESULTS.json)",
                field="source",
            )
    elif source_task == "detection":
        raise ValidationFailed(f"dataset {dataset!r} is a classification dataset, the source is COCO detection")


def _predictions_from_coco(store: Store, dataset: str, source: Any) -> tuple[pa.Table, list[dict[str, str]], int]:
    """A new detector's outcome for each ground-truth object of the dataset (matched by the COCO source as at
    ingest: correct, wrong_class, false_negative), and how many of its detections matched no object (its
    false positives: new boxes are not rows of the dataset, so they are counted, not stored)."""
    known = set(store.query(dataset, where=ok_and("label IS NOT NULL"), columns=["id"])["id"].to_pylist())
    errors: list[dict[str, str]] = []
    rows: list[dict[str, Any]] = []
    false_positives = 0
    for rec in source:
        if rec.error:
            errors.append({"id": str(rec.id), "error": str(rec.error)})
        elif rec.outcome == "false_positive":
            false_positives += 1
        elif rec.id not in known:
            errors.append({"id": str(rec.id), "error": "a ground-truth object the dataset does not have"})
        else:
            score = None if rec.score is None else float(rec.score)
            rows.append(
                {"id": rec.id, "pred_label": rec.pred_label, "outcome": rec.outcome, "confidence": score,
                 "least_confidence": None if score is None else 1.0 - score}
            )  # fmt: skip
    schema = pa.schema(
        [("id", pa.string()), ("pred_label", pa.string()), ("outcome", pa.string()),
         ("confidence", pa.float32()), ("least_confidence", pa.float32())]
    )  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schema), errors, false_positives


def scored_predictions(ids: list[str], probs: np.ndarray, classes: list[str], mc: np.ndarray | None = None) -> pa.Table:
    """``ids`` with their probs (aligned with ``classes``), top-2 labels and every uncertainty score."""
    sc = scoring.score_all(probs, mc)
    p1, p2 = scoring.top2(probs, classes)
    cols: dict[str, Any] = {
        "id": pa.array(ids, pa.string()),
        "probs": pa.array(list(np.asarray(probs, np.float32)), pa.list_(pa.float32())),
        "pred_label": pa.array(list(p1), pa.string()),
        "pred_label2": pa.array(list(p2), pa.string()),
    }
    for col in SCORE_COLUMNS:
        values = sc.get(col)
        cols[col] = pa.nulls(len(ids), pa.float32()) if values is None else pa.array(values, pa.float32())
    return pa.table(cols)


def _bad_prob_rows(p: np.ndarray) -> np.ndarray:
    """Rows of probabilities that cannot be scored (NaN, infinite, negative or all zero)."""
    return ~np.isfinite(p).all(axis=1) | (p < 0).any(axis=1) | ~(p.sum(axis=1) > 0)


def _predictions_from_source(store: Store, dataset: str, source: Any) -> tuple[pa.Table, list[dict[str, str]]]:
    """Predictions of a manifest source's rows that match the dataset's ok rows by id."""
    info = store.get_dataset(dataset)
    classes = list(info.classes)
    src_classes = list(getattr(source, "classes", None) or classes)
    unknown = [c for c in src_classes if c not in classes]
    if getattr(source, "has_probs", False) and unknown:
        raise SchemaMismatch(
            f"the predictions name classes dataset {dataset!r} does not have: {', '.join(unknown[:10])}; its "
            f"classes are {', '.join(classes)}"
        )
    known = set(store.query(dataset, where=OK, columns=["id"])["id"].to_pylist())
    errors: list[dict[str, str]] = []
    prob_ids, prob_rows, label_rows = [], [], []
    seen: set[str] = set()
    order = [classes.index(c) for c in src_classes] if not unknown else []
    for rec in source:
        err = _record_problem(rec, known, seen, len(src_classes))
        if err:
            errors.append({"id": str(rec.id), "error": err})
            continue
        seen.add(rec.id)
        if rec.probs is not None:
            aligned = np.zeros(len(classes), np.float64)
            aligned[order] = np.asarray(rec.probs, np.float64)
            prob_ids.append(rec.id)
            prob_rows.append(aligned)
        else:
            label_rows.append(rec)
    parts = []
    if prob_rows:
        parts.append(_scored_or_refused(prob_ids, np.stack(prob_rows), classes, errors))
    if label_rows:
        parts.append(_label_predictions(label_rows, errors))
    parts = [p for p in parts if p.num_rows]
    if not parts:
        return pa.table({"id": pa.array([], pa.string())}), errors
    return pa.concat_tables(parts, promote_options="default"), errors


def _record_problem(rec: Any, known: set[str], seen: set[str], n_classes: int) -> str | None:
    if rec.error:
        return str(rec.error)
    if rec.id in seen:
        return "duplicate id: the first row with it was used"
    if rec.id not in known:
        return "no ok row with this id in the dataset (a version holds predictions for existing rows only)"
    if rec.probs is None and rec.pred_label is None:
        return "no prediction: give probs (with classes) or pred_label (+ score)"
    if rec.probs is not None and len(rec.probs) != n_classes:
        return f"probs has {len(rec.probs)} values but there are {n_classes} classes"
    if rec.probs is None and rec.score is not None and not 0.0 <= float(rec.score) <= 1.0:
        return f"score {rec.score} is outside [0, 1]"
    return None


def _scored_or_refused(ids: list[str], probs: np.ndarray, classes: list[str], errors: list[dict[str, str]]) -> pa.Table:
    bad = _bad_prob_rows(probs)
    for i in np.flatnonzero(bad):
        errors.append({"id": ids[i], "error": "probabilities are NaN, infinite, negative or all zero"})
    keep = np.flatnonzero(~bad)
    return scored_predictions([ids[i] for i in keep], probs[keep], classes)


def _label_predictions(records: list[Any], errors: list[dict[str, str]]) -> pa.Table:
    """pred_label (+ score as confidence) rows, as an ordinary ingest stores them."""
    score = [None if r.score is None else float(r.score) for r in records]
    return pa.table(
        {
            "id": pa.array([r.id for r in records], pa.string()),
            "pred_label": pa.array([r.pred_label for r in records], pa.string()),
            "confidence": pa.array(score, pa.float32()),
            "least_confidence": pa.array([None if s is None else 1.0 - s for s in score], pa.float32()),
        }
    )


def _predict_with_model(
    store: Store,
    dataset: str,
    model_file: str,
    mc_passes: int,
    device: str,
    batch_size: int,
    progress: bool,
    on_progress: ProgressFn | None,
) -> tuple[pa.Table, list[dict[str, str]]]:
    """Run a TorchScript model returning (embedding, logits) over the dataset's ok rows' images; its
    softmax over the classes it names (which the dataset must have) becomes each row's probabilities."""
    from edgeminer.indexer.embedders import TorchScriptEmbedder

    if batch_size < 1:
        raise ValidationFailed("batch_size must be >= 1", field="batch_size")
    model = TorchScriptEmbedder(model_file, mc_passes=mc_passes, device=device)
    if not model.has_logits:
        raise ValidationFailed(
            f"{model_file}: the model returns no logits; a model version needs (embedding, logits)",
            field="model_file",
        )
    classes = list(store.get_dataset(dataset).classes)
    model_classes = list(model.classes or [])
    unknown = [c for c in model_classes if c not in classes]
    if unknown:
        raise SchemaMismatch(
            f"{model_file}: the model names classes dataset {dataset!r} does not have: {', '.join(unknown[:10])}"
        )
    rows = store.query(dataset, where=ok_and("uri IS NOT NULL"), columns=["id", "uri", "bbox"]).sort_by("id")
    return _run_model(model, rows, classes, model_classes, batch_size, progress, on_progress)


def _run_model(
    model: Any,
    rows: pa.Table,
    classes: list[str],
    model_classes: list[str],
    batch_size: int,
    progress: bool,
    on_progress: ProgressFn | None,
) -> tuple[pa.Table, list[dict[str, str]]]:
    from edgeminer.indexer.pipeline import ImageLoadError, iter_batches, load_image

    order = [classes.index(c) for c in model_classes]
    ids, uris, boxes = rows["id"].to_pylist(), rows["uri"].to_pylist(), rows["bbox"].to_pylist()
    errors: list[dict[str, str]] = []
    parts: list[pa.Table] = []
    bar = _bar(len(ids)) if progress else None
    done = 0
    for batch in iter_batches(list(range(len(ids))), batch_size):
        arrays, good = [], []
        for i in batch:
            try:
                arrays.append(model.preprocess(_crop(load_image(uris[i]), boxes[i])))
                good.append(i)
            except ImageLoadError as exc:
                errors.append({"id": ids[i], "error": str(exc)})
        if arrays:
            out = model.embed_batch(np.stack(arrays))
            probs = np.zeros((len(good), len(classes)), np.float64)
            probs[:, order] = out.probs
            mc = None
            if out.mc_probs is not None:
                mc = np.zeros((out.mc_probs.shape[0], len(good), len(classes)), np.float64)
                mc[:, :, order] = out.mc_probs
            parts.append(scored_predictions([ids[i] for i in good], probs, classes, mc))
        done += len(batch)
        if bar is not None:
            bar.update(len(batch))
        if on_progress is not None:
            on_progress(done, len(ids), f"{done} of {len(ids)} images predicted")
    if bar is not None:
        bar.close()
    return (pa.concat_tables(parts) if parts else pa.table({"id": pa.array([], pa.string())})), errors


def _crop(img: Any, bbox: Sequence[float] | None) -> Any:
    if bbox is None:
        return img
    x, y, w, h = (float(v) for v in bbox)
    return img.crop((int(np.floor(x)), int(np.floor(y)), int(np.ceil(x + w)), int(np.ceil(y + h))))


def _bar(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="predict", dynamic_ncols=True)
