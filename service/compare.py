"""Compare two model versions of a dataset (issue 14): what the new model fixed and what it broke.

Every labeled row with a prediction in both versions is one of four outcomes: ``still_right``,
``fixed`` (wrong -> right), ``broken`` (right -> wrong), ``still_wrong``. :func:`compare` reports, overall,
per cluster of the current analysis, per value of each categorical metadata field (the demo's ``slice``
among them), per class (the label) and per slice: the accuracy of each version and their difference,
each with a paired bootstrap confidence interval, and the fixed / broken counts. A group whose
difference interval lies below 0 and whose fixed / broken split is unlikely under "no difference"
(exact McNemar test, p below 1 - confidence) is a *regression* (the new model is significantly worse
there); they are ranked first. Above 0 under the same test: an *improvement*.

The bootstrap. Resampling a group's n rows with replacement and recomputing the two accuracies only
depends on how many of the n draws fall in each of the four outcomes, so a resample is one
multinomial draw of n over the four observed shares: ``rng.multinomial(n, shares, size=B)`` gives all B
resamples at once in O(B) whatever n is, and it is the ordinary paired (row) bootstrap, not an
approximation of it. Percentile intervals; each group's generator is seeded from the seed and the
group's name, so a result does not depend on which other groups were computed.

Detection datasets: the rows compared are the ground-truth objects, right = the detector's outcome for
the object is ``correct``; the report adds each object's outcome transition (base -> new) and each
version's false-positive count.

Rows: :func:`compare_rows` gives each row's outcome (also ``unlabeled`` and ``no_prediction``), for the
dashboard's examples; :func:`point_outcomes` the outcome code of each point of the map, in the order of
``GET /points``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edgeminer.indexer.errors import ValidationFailed
from edgeminer.indexer.store import META_PREFIX, Store
from edgeminer.indexer.versions import require_version
from edgeminer.indexer.where import not_null, ok_and

#: per-row outcomes, by code (the code is the index): the map's colouring
ROW_OUTCOMES = ("unlabeled", "still_right", "still_wrong", "fixed", "broken", "no_prediction")
#: the four outcomes of a judged row, in the order the bootstrap counts them
JUDGED = ("still_right", "fixed", "broken", "still_wrong")
_CODE = {name: code for code, name in enumerate(ROW_OUTCOMES)}
DEFAULT_RESAMPLES = 1000
MAX_RESAMPLES = 20_000
#: a metadata field with more distinct values than this (among judged rows) is not broken down
MAX_GROUP_VALUES = 20
SLICE_FIELD = "slice"


@dataclass
class CompareOptions:
    """What to compare on: ``split`` (None = every labeled row), bootstrap resamples, seed, confidence."""

    split: str | None = None
    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    confidence: float = 0.95

    def check(self) -> None:
        if not 100 <= self.resamples <= MAX_RESAMPLES:
            raise ValidationFailed(f"resamples must be between 100 and {MAX_RESAMPLES}", field="resamples")
        if not 0.5 <= self.confidence < 1.0:
            raise ValidationFailed("confidence must be in [0.5, 1)", field="confidence")


def check_pair(store: Store, dataset: str, base: str, new: str) -> None:
    """Both versions exist (404 naming the known ones) and differ."""
    store.get_dataset(dataset)
    require_version(store, dataset, base)
    require_version(store, dataset, new)
    if base == new:
        raise ValidationFailed(f"base and new are both {base!r}: compare two different versions", field="new")


# ---------------------------------------------------------------------------------------------
# rows
# ---------------------------------------------------------------------------------------------


def compare_rows(store: Store, dataset: str, base: str, new: str, *, split: str | None = None) -> pa.Table:
    """One row per ok sample (of ``split``), sorted by id: id, split, label, cluster, the metadata
    columns, ``base_pred`` / ``new_pred``, ``base_confidence`` / ``new_confidence`` and ``outcome``
    (one of :data:`ROW_OUTCOMES`)."""
    check_pair(store, dataset, base, new)
    info = store.get_dataset(dataset)
    meta = [META_PREFIX + f for f in info.metadata_fields]
    where = ok_and(None if split is None else _split_clause(split))
    rows = store.query(dataset, where=where, columns=["id", "split", "label", "labeled", "cluster", *meta])
    rows = rows.sort_by("id")
    for name, tag in ((base, "base"), (new, "new")):
        preds = store.query_predictions(dataset, name, columns=["pred_label", "confidence", "outcome"])
        taken = preds.take(pc.index_in(rows["id"], value_set=preds["id"]))
        rows = rows.append_column(f"{tag}_pred", taken["pred_label"])
        rows = rows.append_column(f"{tag}_confidence", taken["confidence"])
        rows = rows.append_column(f"{tag}_outcome", taken["outcome"])
    codes = _outcome_codes(rows, info.task)
    return rows.append_column("outcome", pa.array(np.asarray(ROW_OUTCOMES, dtype=object)[codes], pa.string()))


def _split_clause(split: str) -> str:
    from edgeminer.indexer.where import sql_quote

    return f"split = {sql_quote(split)}"


def _outcome_codes(rows: pa.Table, task: str) -> np.ndarray:
    """The :data:`ROW_OUTCOMES` code of each row of a :func:`compare_rows` table. Classification: right =
    the prediction equals the label. Detection (ground-truth object rows; a false positive has no label):
    right = the detector's outcome for the object is ``correct`` (not wrong_class, not false_negative)."""
    label = rows["label"]
    labeled = pc.and_(pc.fill_null(rows["labeled"], False), pc.is_valid(label))
    if task == "detection":  # a false-positive row is labeled ("nothing here") without a label
        labeled = pc.fill_null(rows["labeled"], False)
        have = pc.and_(pc.is_valid(rows["base_outcome"]), pc.is_valid(rows["new_outcome"]))
        base_right, new_right = pc.equal(rows["base_outcome"], "correct"), pc.equal(rows["new_outcome"], "correct")
    else:
        have = pc.and_(pc.is_valid(rows["base_pred"]), pc.is_valid(rows["new_pred"]))
        base_right, new_right = pc.equal(rows["base_pred"], label), pc.equal(rows["new_pred"], label)
    b = pc.fill_null(base_right, False).to_numpy(zero_copy_only=False).astype(bool)
    n = pc.fill_null(new_right, False).to_numpy(zero_copy_only=False).astype(bool)
    codes = np.where(b & n, _CODE["still_right"], _CODE["still_wrong"]).astype(np.uint8)
    codes[~b & n] = _CODE["fixed"]
    codes[b & ~n] = _CODE["broken"]
    codes[~have.to_numpy(zero_copy_only=False).astype(bool)] = _CODE["no_prediction"]
    codes[~labeled.to_numpy(zero_copy_only=False).astype(bool)] = _CODE["unlabeled"]
    return codes


def _row_codes(rows: pa.Table) -> np.ndarray:
    """The codes of a :func:`compare_rows` table, from its ``outcome`` column."""
    names = rows["outcome"].to_numpy(zero_copy_only=False)
    return np.array([_CODE[str(v)] for v in names], dtype=np.uint8)


def detection_summary(store: Store, dataset: str, base: str, new: str, rows: pa.Table) -> dict[str, Any]:
    """Detection datasets: each ground-truth object's outcome under base against new (``transitions``:
    base outcome -> new outcome -> objects) and each version's false positives (detections matching no
    object: stored rows of the version for the first ingest, counted at ingest for a COCO results version)."""
    gt = pc.is_valid(rows["label"]).to_numpy(zero_copy_only=False).astype(bool)
    pairs: dict[str, dict[str, int]] = {}
    for b, n in zip(np.asarray(rows["base_outcome"].to_pylist(), dtype=object)[gt],
                    np.asarray(rows["new_outcome"].to_pylist(), dtype=object)[gt], strict=True):  # fmt: skip
        row = pairs.setdefault(str(b), {})
        row[str(n)] = row.get(str(n), 0) + 1
    false_positives = {}
    for name in (base, new):
        entry = require_version(store, dataset, name)
        if "false_positives" in entry:
            false_positives[name] = int(entry["false_positives"])
        else:
            outcome = store.query_predictions(dataset, name, columns=["outcome"])["outcome"]
            false_positives[name] = int(pc.sum(pc.fill_null(pc.equal(outcome, "false_positive"), False)).as_py() or 0)
    return {"transitions": pairs, "false_positives": false_positives}


# ---------------------------------------------------------------------------------------------
# statistics of one group
# ---------------------------------------------------------------------------------------------


def group_stats(counts: Sequence[int], *, key: str, opts: CompareOptions) -> dict[str, Any]:
    """Accuracies, difference and bootstrap intervals of a group from its counts of
    (still_right, fixed, broken, still_wrong); ``key`` seeds its resamples."""
    c = np.asarray(counts, dtype=np.int64)
    n = int(c.sum())
    out: dict[str, Any] = {"n": n, **{name: int(v) for name, v in zip(JUDGED, c, strict=True)}}
    if n == 0:
        empty = {"value": None, "low": None, "high": None}
        return {**out, "accuracy_base": empty, "accuracy_new": empty, "delta": empty, "p_value": None,
                "verdict": "no_data"}  # fmt: skip
    rng = np.random.default_rng([opts.seed, zlib.crc32(key.encode())])
    draws = rng.multinomial(n, c / n, size=opts.resamples)  # (B, 4): one paired row resample each
    acc_base = (draws[:, 0] + draws[:, 2]) / n
    acc_new = (draws[:, 0] + draws[:, 1]) / n
    delta = (draws[:, 1] - draws[:, 2]) / n
    q = [(1 - opts.confidence) / 2 * 100, (1 + opts.confidence) / 2 * 100]

    def interval(point: float, boot: np.ndarray) -> dict[str, float]:
        low, high = np.percentile(boot, q)
        return {"value": round(float(point), 6), "low": round(float(low), 6), "high": round(float(high), 6)}

    out["accuracy_base"] = interval((c[0] + c[2]) / n, acc_base)
    out["accuracy_new"] = interval((c[0] + c[1]) / n, acc_new)
    out["delta"] = interval((c[1] - c[2]) / n, delta)
    out["p_value"] = _mcnemar(int(c[1]), int(c[2]))
    # both the interval and the exact test must agree: a group of one broken row has the degenerate
    # interval [-1, -1] but says nothing (p = 1)
    significant = out["p_value"] < 1 - opts.confidence
    high, low = out["delta"]["high"], out["delta"]["low"]
    out["verdict"] = (
        "no_change" if not significant else "regression" if high < 0 else "improvement" if low > 0 else "no_change"
    )
    return out


def _mcnemar(fixed: int, broken: int) -> float:
    """Exact McNemar test (two-sided binomial test of fixed vs broken among the changed rows)."""
    if fixed + broken == 0:
        return 1.0
    from scipy.stats import binomtest

    return round(float(binomtest(broken, fixed + broken, 0.5).pvalue), 6)


def _counts(codes: np.ndarray) -> list[int]:
    return [int(np.count_nonzero(codes == _CODE[name])) for name in JUDGED]


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------


def compare(store: Store, dataset: str, base: str, new: str, options: CompareOptions | None = None) -> dict[str, Any]:
    """The comparison of ``new`` against ``base`` (see the module docstring); a JSON-able dict:
    ``{dataset, base, new, split, resamples, seed, confidence, rows, overall, regressions, clusters,
    classes, metadata, slices, analysis}``. Group entries: ``{key, value, n, still_right, fixed, broken,
    still_wrong, accuracy_base, accuracy_new, delta ({value, low, high} each), p_value, verdict}``."""
    opts = options or CompareOptions()
    opts.check()
    rows = compare_rows(store, dataset, base, new, split=opts.split)
    codes = _row_codes(rows)
    judged = np.isin(codes, [_CODE[n] for n in JUDGED])
    report: dict[str, Any] = {
        "dataset": dataset, "base": base, "new": new, "split": opts.split, "resamples": opts.resamples,
        "seed": opts.seed, "confidence": opts.confidence,
        "rows": {name: int(np.count_nonzero(codes == code)) for code, name in enumerate(ROW_OUTCOMES)},
        "overall": {"key": "overall", "value": None, **group_stats(_counts(codes), key="overall", opts=opts)},
    }  # fmt: skip
    report["analysis"], report["clusters"] = _cluster_groups(store, dataset, rows, codes, judged, opts)
    report["classes"] = _value_groups("label", rows["label"], codes, judged, opts)
    report["metadata"], report["skipped_fields"] = _metadata_groups(store, dataset, rows, codes, judged, opts)
    report["slices"] = report["metadata"].get(SLICE_FIELD, [])
    report["regressions"] = _regressions(report)
    task = store.get_dataset(dataset).task
    report["task"] = task
    report["detection"] = detection_summary(store, dataset, base, new, rows) if task == "detection" else None
    return report


def _value_groups(
    key: str, column: pa.ChunkedArray | pa.Array, codes: np.ndarray, judged: np.ndarray, opts: CompareOptions
) -> list[dict[str, Any]]:
    """One group per distinct value of ``column`` among judged rows (regressions first, then by value)."""
    values = np.asarray(column.to_pylist(), dtype=object)
    groups = []
    for value in sorted({v for v in values[judged]}, key=lambda v: (v is None, str(v))):
        mask = judged & (values == value) if value is not None else judged & np.array([v is None for v in values])
        stats = group_stats(_counts(codes[mask]), key=f"{key}={value}", opts=opts)
        groups.append({"key": key, "value": value, **stats})
    return sorted(groups, key=lambda g: g["verdict"] != "regression")


def _metadata_groups(
    store: Store, dataset: str, rows: pa.Table, codes: np.ndarray, judged: np.ndarray, opts: CompareOptions
) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Per categorical metadata field (string, int, bool) with at most :data:`MAX_GROUP_VALUES` values.
    The image properties computed at ingest (``img_width``, ``img_near_dups``...) are measurements, not
    categories: they are skipped even when they take few values (metadata slices bin them instead)."""
    from edgeminer.indexer.properties import PROPERTY_FIELDS

    info = store.get_dataset(dataset)
    out: dict[str, list[dict[str, Any]]] = {}
    skipped = []
    for fname, ftype in sorted(info.metadata_fields.items()):
        column = rows[META_PREFIX + fname]
        distinct = len(pc.unique(column.filter(pa.array(judged))))
        if ftype in ("float", "timestamp") or distinct > MAX_GROUP_VALUES or fname in PROPERTY_FIELDS:
            skipped.append(fname)
            continue
        out[fname] = _value_groups(fname, column, codes, judged, opts)
    return out, skipped


def _cluster_groups(
    store: Store, dataset: str, rows: pa.Table, codes: np.ndarray, judged: np.ndarray, opts: CompareOptions
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Per cluster of the current analysis (its failure rank beside it): regressions first (worst
    difference first), then failure clusters by rank, then the others by id."""
    from edgeminer.indexer.analysis.run import load_analysis

    doc = load_analysis(store, dataset)
    if doc is None:
        return None, []
    ranks = {int(c["id"]): c.get("failure_rank") for c in doc.get("clusters", [])}
    groups = _value_groups("cluster", rows["cluster"], codes, judged, opts)
    for g in groups:
        g["failure_rank"] = None if g["value"] is None else ranks.get(int(g["value"]))

    def order(g: dict[str, Any]) -> tuple[Any, ...]:
        regression = g["verdict"] == "regression"
        rank = g["failure_rank"] if g["failure_rank"] is not None else 10**9
        return (not regression, g["delta"]["value"] if regression else 0, rank, g["value"] is None, g["value"] or 0)

    meta = {"run_id": doc.get("run_id"), "analyzed_at": doc.get("analyzed_at"),
            "stale": doc.get("version_written") != store.version(dataset)}  # fmt: skip
    return meta, sorted(groups, key=order)


def _regressions(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every group whose difference interval lies below 0, worst first."""
    found = [g for g in [*report["clusters"], *report["classes"]] if g["verdict"] == "regression"]
    for groups in report["metadata"].values():
        found += [g for g in groups if g["verdict"] == "regression"]
    found += [report["overall"]] if report["overall"]["verdict"] == "regression" else []
    return sorted(
        ({"key": g["key"], "value": g["value"], "n": g["n"], "delta": g["delta"], "fixed": g["fixed"],
          "broken": g["broken"]} for g in found),
        key=lambda g: g["delta"]["value"],
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# rows for the dashboard
# ---------------------------------------------------------------------------------------------

ROW_FIELDS = (
    "id",
    "outcome",
    "label",
    "base_pred",
    "new_pred",
    "base_confidence",
    "new_confidence",
    "cluster",
    "split",
)


def outcome_page(
    store: Store,
    dataset: str,
    base: str,
    new: str,
    *,
    outcome: str | None = None,
    cluster: int | None = None,
    field: str | None = None,
    value: str | None = None,
    split: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> dict[str, Any]:
    """A page of :func:`compare_rows` (id order), filtered by outcome, cluster and a metadata field's value
    (or ``label``): ``{items, total, limit, offset, counts}`` (``counts``: rows per outcome in the filter
    before ``outcome`` is applied)."""
    rows = compare_rows(store, dataset, base, new, split=split)
    mask = np.ones(rows.num_rows, dtype=bool)
    if cluster is not None:
        mask &= pc.fill_null(pc.equal(rows["cluster"], cluster), False).to_numpy(zero_copy_only=False)
    if field is not None:
        mask &= _field_mask(store, dataset, rows, field, value)
    outcomes = np.asarray(rows["outcome"].to_pylist(), dtype=object)
    counts = {name: int(np.count_nonzero(mask & (outcomes == name))) for name in ROW_OUTCOMES}
    if outcome is not None:
        if outcome not in ROW_OUTCOMES:
            raise ValidationFailed(
                f"outcome must be one of {', '.join(ROW_OUTCOMES)}, not {outcome!r}", field="outcome"
            )
        mask &= outcomes == outcome
    picked = rows.filter(pa.array(mask))
    page = picked.slice(offset, limit).select(list(ROW_FIELDS)).to_pylist()
    return {"items": page, "total": picked.num_rows, "limit": limit, "offset": offset, "counts": counts}


def _field_mask(store: Store, dataset: str, rows: pa.Table, field: str, value: str | None) -> np.ndarray:
    from edgeminer.indexer.errors import UnknownField

    info = store.get_dataset(dataset)
    if field == "label":
        column = rows["label"]
    elif field in info.metadata_fields:
        column = rows[META_PREFIX + field]
    else:
        raise UnknownField(field, ["label", *info.metadata_fields], dataset=dataset)
    values = column.to_pylist()
    return np.array([(v is None and value is None) or (v is not None and str(v) == value) for v in values], dtype=bool)


def point_outcomes(store: Store, dataset: str, base: str, new: str) -> dict[str, Any]:
    """The outcome code of each point of the map, in the order of ``GET /points`` at the current table
    version (ok rows with coordinates, by id): ``{version, count, outcomes, codes}``."""
    check_pair(store, dataset, base, new)
    version = store.version(dataset)
    points = store.query(dataset, where=ok_and(not_null("x", "y")), columns=["id"]).sort_by("id")
    rows = compare_rows(store, dataset, base, new)
    at = pc.index_in(points["id"], value_set=rows["id"]).to_numpy(zero_copy_only=False)
    all_codes = _row_codes(rows)
    codes = all_codes[at.astype(np.int64)] if len(at) else np.empty(0, np.uint8)
    return {"version": version, "count": int(len(codes)), "outcomes": list(ROW_OUTCOMES), "codes": codes.tolist()}


__all__ = [
    "JUDGED",
    "ROW_OUTCOMES",
    "CompareOptions",
    "check_pair",
    "compare",
    "compare_rows",
    "group_stats",
    "outcome_page",
    "point_outcomes",
]
