"""Distributions the dashboard and the API show: labels, metadata by outcome, confusion.

Pure functions take a ``pyarrow.Table`` (or anything with ``column(name).to_pylist()``) holding the
columns they need; the ``*_for`` wrappers read those columns from the store. Only rows with
``where.OK`` (status ok) are counted by the wrappers (error rows have no prediction).

Outcome buckets used throughout: ``correct`` / ``wrong`` (labeled rows with a prediction, by the
``correct`` column), ``unlabeled``, and ``no_prediction`` (labeled rows the model made no call on).
``error_rate = wrong / (correct + wrong)``, None when nothing in the bin was judged.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from edgeminer.indexer.errors import UnknownField, ValidationFailed
from edgeminer.indexer.where import ok_and

__all__ = [
    "BUCKETS",
    "CORE_FIELDS",
    "confusion",
    "confusion_for",
    "label_distribution",
    "label_distribution_for",
    "metadata_distribution",
    "metadata_distribution_for",
    "outcome_buckets",
]

BUCKETS = ("correct", "wrong", "unlabeled", "no_prediction")
SCALES = ("auto", "linear", "log")
#: sample columns a metadata distribution may also be asked for, with their kind.
CORE_FIELDS: dict[str, str] = {
    "area": "float",
    "width": "int",
    "height": "int",
    "confidence": "float",
    "least_confidence": "float",
    "margin": "float",
    "ratio": "float",
    "entropy": "float",
    "mc_variance": "float",
    "bald": "float",
    "split": "string",
    "label": "string",
    "pred_label": "string",
    "outcome": "string",
    "model_version": "string",
    "cluster": "int",
}
MISSING = "(missing)"
OTHER = "(other)"


def _col(table: Any, name: str) -> list[Any]:
    if name not in table.column_names:
        return [None] * table.num_rows
    return table.column(name).to_pylist()


def outcome_buckets(table: Any) -> list[str]:
    """One of :data:`BUCKETS` per row, from the ``labeled`` and ``correct`` columns."""
    out = []
    for lab, corr in zip(_col(table, "labeled"), _col(table, "correct"), strict=True):
        if not lab:
            out.append("unlabeled")
        elif corr is None:
            out.append("no_prediction")
        else:
            out.append("correct" if corr else "wrong")
    return out


def _empty_counts() -> dict[str, Any]:
    return {b: 0 for b in BUCKETS} | {"total": 0, "error_rate": None}


def _finish(counts: dict[str, Any]) -> dict[str, Any]:
    judged = counts["correct"] + counts["wrong"]
    counts["total"] = sum(counts[b] for b in BUCKETS)
    counts["error_rate"] = counts["wrong"] / judged if judged else None
    return counts


def _ordered(classes: Sequence[str], seen: set[Any]) -> list[str]:
    extra = sorted(str(v) for v in seen if v is not None and v not in set(classes))
    return [*classes, *extra]


# ----------------------------------------------------------------------------------------------
# Label distribution
# ----------------------------------------------------------------------------------------------


def label_distribution(table: Any, *, classes: Sequence[str] = ()) -> dict[str, Any]:
    """Ground-truth labels (labeled rows) and predicted labels (every row with a prediction), per
    split and in total. Classes keep the dataset's order; classes not listed are appended, sorted.

    Returns ``{"classes", "splits": [{"split", "rows", "labeled", "label": {cls: n}, "pred_label":
    {cls: n}}], "total": {...same without split}}``; every class appears in every count dict."""
    splits = [s if s is not None else MISSING for s in _col(table, "split")]
    labeled = [bool(v) for v in _col(table, "labeled")]
    gt = _col(table, "label")
    pred = _col(table, "pred_label")
    names = _ordered(list(classes), set(gt) | set(pred))

    def block(rows: list[int]) -> dict[str, Any]:
        gt_c = Counter(gt[i] for i in rows if labeled[i] and gt[i] is not None)
        pr_c = Counter(pred[i] for i in rows if pred[i] is not None)
        return {
            "rows": len(rows),
            "labeled": sum(1 for i in rows if labeled[i]),
            "label": {c: int(gt_c.get(c, 0)) for c in names},
            "pred_label": {c: int(pr_c.get(c, 0)) for c in names},
        }

    by_split: dict[str, list[int]] = {}
    for i, s in enumerate(splits):
        by_split.setdefault(s, []).append(i)
    return {
        "classes": names,
        "splits": [{"split": s, **block(rows)} for s, rows in sorted(by_split.items())],
        "total": block(list(range(len(splits)))),
    }


# ----------------------------------------------------------------------------------------------
# Metadata distribution
# ----------------------------------------------------------------------------------------------


def metadata_distribution(
    table: Any,
    column: str,
    *,
    kind: str,
    bins: int = 10,
    scale: str = "auto",
    edges: Sequence[float] | None = None,
    max_categories: int = 30,
) -> dict[str, Any]:
    """Counts of one field split by outcome bucket, with the error rate per bin.

    ``kind`` is the field's type (``string``, ``bool``, ``int``, ``float``, ``timestamp``). Categorical
    fields (string, bool) get one bin per value, the ``max_categories`` most frequent first, the rest
    folded into ``(other)``. Numeric fields get ``bins`` histogram bins; ``scale="log"`` spaces the
    edges logarithmically (for sizes such as box area), ``"auto"`` picks log when every value is
    positive and the range spans more than two decades; explicit ``edges`` override both (values
    outside them are counted in ``below`` / ``above``). Rows without a value are counted in
    ``missing`` in every case. Each bin: ``correct``, ``wrong``, ``unlabeled``, ``no_prediction``,
    ``total``, ``error_rate``.
    """
    if scale not in SCALES:
        raise ValidationFailed(f"scale must be one of {', '.join(SCALES)}, not {scale!r}")
    if bins < 1:
        raise ValidationFailed(f"bins must be at least 1, not {bins}")
    if max_categories < 1:
        raise ValidationFailed(f"max_categories must be at least 1, not {max_categories}")
    values = _col(table, column)
    buckets = outcome_buckets(table)
    overall = _empty_counts()
    missing = _empty_counts()
    for v, b in zip(values, buckets, strict=True):
        overall[b] += 1
        if v is None or (isinstance(v, float) and math.isnan(v)):
            missing[b] += 1
    result: dict[str, Any] = {
        "field": column,
        "type": kind,
        "overall": _finish(overall),
        "missing": _finish(missing),
    }
    if kind in ("string", "bool"):
        result.update(_categorical(values, buckets, max_categories))
    elif kind in ("int", "float", "timestamp"):
        result.update(_numeric(values, buckets, kind=kind, bins=bins, scale=scale, edges=edges))
    else:
        raise ValueError(f"field type must be one of string, bool, int, float, timestamp, not {kind!r}")
    return result


def _categorical(values: list[Any], buckets: list[str], max_categories: int) -> dict[str, Any]:
    freq = Counter(v for v in values if v is not None)
    ranked = sorted(freq, key=lambda v: (-freq[v], str(v)))
    keep = set(ranked[:max_categories])
    per: dict[Any, dict[str, Any]] = {v: _empty_counts() for v in ranked[:max_categories]}
    other = _empty_counts()
    for v, b in zip(values, buckets, strict=True):
        if v is None:
            continue
        (per[v] if v in keep else other)[b] += 1
    out_bins = [{"value": v, **_finish(c)} for v, c in per.items()]
    if len(ranked) > max_categories:
        out_bins.append({"value": OTHER, **_finish(other)})
    return {"kind": "categorical", "bins": out_bins}


def _numeric(
    values: list[Any],
    buckets: list[str],
    *,
    kind: str,
    bins: int,
    scale: str,
    edges: Sequence[float] | None,
) -> dict[str, Any]:
    present = [
        (float(v.timestamp()) if kind == "timestamp" else float(v), b)
        for v, b in zip(values, buckets, strict=True)
        if v is not None and not (isinstance(v, float) and math.isnan(v))
    ]
    arr = np.array([p[0] for p in present], dtype=np.float64)
    bks = [p[1] for p in present]
    used_scale = "linear"
    e: np.ndarray
    if edges is not None:
        e = np.asarray(list(edges), dtype=np.float64)
        if e.ndim != 1 or e.size < 2 or not np.all(np.diff(e) > 0):
            raise ValidationFailed("edges must be at least two strictly increasing numbers")
        used_scale = "explicit"
    elif arr.size == 0:
        e = np.array([], dtype=np.float64)
    else:
        lo, hi = float(arr.min()), float(arr.max())
        log_ok = lo > 0 and hi / lo > 100
        if scale == "log" and lo <= 0:
            raise ValidationFailed(f"log scale needs positive values; the smallest value is {lo:g}")
        if scale == "log" or (scale == "auto" and log_ok):
            used_scale = "log"
            e = np.logspace(math.log10(lo), math.log10(hi), bins + 1) if hi > lo else np.array([lo, lo])
            e[0], e[-1] = lo, hi  # exact ends: rounding in logspace must not push the extremes out
        else:
            e = np.linspace(lo, hi, bins + 1) if hi > lo else np.array([lo, hi])
    out: list[dict[str, Any]] = []
    below, above = _empty_counts(), _empty_counts()
    if e.size >= 2:
        counts = [_empty_counts() for _ in range(e.size - 1)]
        # Right-closed last bin: a value equal to the top edge lands in the last bin.
        pos = np.searchsorted(e, arr, side="right") - 1
        pos[arr == e[-1]] = e.size - 2
        for p, b, v in zip(pos.tolist(), bks, arr.tolist(), strict=True):
            if v < e[0]:
                below[b] += 1
            elif v > e[-1]:
                above[b] += 1
            else:
                counts[p][b] += 1
        out = [{"lo": float(e[i]), "hi": float(e[i + 1]), **_finish(c)} for i, c in enumerate(counts)]
    result: dict[str, Any] = {"kind": "numeric", "scale": used_scale, "bins": out}
    if used_scale == "explicit":
        result["below"] = _finish(below)
        result["above"] = _finish(above)
    return result


# ----------------------------------------------------------------------------------------------
# Confusion
# ----------------------------------------------------------------------------------------------


def confusion(table: Any, *, classes: Sequence[str] = (), top_pairs: int = 20) -> dict[str, Any]:
    """The ground-truth x prediction matrix over labeled rows with a prediction, its largest
    off-diagonal cells, and the model's top-2 confusion pairs over every row with two predictions.

    ``matrix[i][j]`` counts rows labeled ``labels[i]`` predicted ``labels[j]``. ``pairs`` are
    ``{"first", "second", "count", "mean_margin"}`` from ``pred_label`` / ``pred_label2``, sorted by
    count (then by smaller mean margin): ``mean_margin`` is the mean gap ``p1 - p2`` between the two top
    probabilities (lower = the model hesitates more between them), from the ``margin`` score column
    (which stores ``1 - (p1 - p2)``)."""
    if top_pairs < 0:
        raise ValidationFailed(f"top_pairs must be >= 0, not {top_pairs}")
    labeled = [bool(v) for v in _col(table, "labeled")]
    gt = _col(table, "label")
    pred = _col(table, "pred_label")
    pred2 = _col(table, "pred_label2")
    margin = _col(table, "margin")
    judged = [i for i in range(len(gt)) if labeled[i] and gt[i] is not None and pred[i] is not None]
    names = _ordered(list(classes), {gt[i] for i in judged} | {pred[i] for i in judged})
    pos = {c: k for k, c in enumerate(names)}
    matrix = np.zeros((len(names), len(names)), dtype=np.int64)
    for i in judged:
        matrix[pos[gt[i]], pos[pred[i]]] += 1
    cells: list[dict[str, Any]] = [
        {"label": names[a], "pred": names[b], "count": int(matrix[a, b])}
        for a in range(len(names))
        for b in range(len(names))
        if a != b and matrix[a, b] > 0
    ]
    cells.sort(key=lambda c: (-c["count"], c["label"], c["pred"]))
    pair_count: Counter[tuple[str, str]] = Counter()
    pair_gap: dict[tuple[str, str], list[float]] = {}
    for p1, p2, m in zip(pred, pred2, margin, strict=True):
        if p1 is None or p2 is None:
            continue
        pair_count[(p1, p2)] += 1
        if m is not None and not math.isnan(m):
            pair_gap.setdefault((p1, p2), []).append(1.0 - float(m))
    pairs: list[dict[str, Any]] = [
        {
            "first": a,
            "second": b,
            "count": int(c),
            "mean_margin": float(np.mean(pair_gap[(a, b)])) if pair_gap.get((a, b)) else None,
        }
        for (a, b), c in pair_count.items()
    ]
    pairs.sort(
        key=lambda p: (-p["count"], p["mean_margin"] if p["mean_margin"] is not None else 2.0, p["first"], p["second"])
    )
    judged_n = len(judged)
    correct_n = int(np.trace(matrix))
    return {
        "labels": names,
        "matrix": matrix.tolist(),
        "judged": judged_n,
        "errors": judged_n - correct_n,
        "accuracy": correct_n / judged_n if judged_n else None,
        "top_errors": cells[:top_pairs],
        "pairs": pairs[:top_pairs],
    }


# ----------------------------------------------------------------------------------------------
# Store wrappers
# ----------------------------------------------------------------------------------------------

def _read(store: Any, dataset: str, columns: Sequence[str], where: str | None) -> pa.Table:
    clause = ok_and(where)
    return store.query(dataset, where=clause, columns=list(dict.fromkeys(columns)))


def label_distribution_for(store: Any, dataset: str, *, where: str | None = None) -> dict[str, Any]:
    info = store.get_dataset(dataset)
    table = _read(store, dataset, ["split", "labeled", "label", "pred_label"], where)
    return label_distribution(table, classes=info.classes)


def resolve_field(store: Any, dataset: str, field: str) -> tuple[str, str]:
    """(column, type) of a metadata field (``slice`` -> ``meta_slice``) or a core column such as
    ``area``; UnknownField (a ValueError) naming the fields that exist otherwise."""
    info = store.get_dataset(dataset)
    name = field[5:] if field.startswith("meta_") and field[5:] in info.metadata_fields else field
    if name in info.metadata_fields:
        return "meta_" + name, info.metadata_fields[name]
    if name in CORE_FIELDS:
        return name, CORE_FIELDS[name]
    raise UnknownField(field, [*info.metadata_fields, *CORE_FIELDS], dataset=dataset)


def metadata_distribution_for(
    store: Any,
    dataset: str,
    field: str,
    *,
    where: str | None = None,
    bins: int = 10,
    scale: str = "auto",
    edges: Sequence[float] | None = None,
    max_categories: int = 30,
) -> dict[str, Any]:
    column, kind = resolve_field(store, dataset, field)
    table = _read(store, dataset, [column, "labeled", "correct"], where)
    out = metadata_distribution(
        table, column, kind=kind, bins=bins, scale=scale, edges=edges, max_categories=max_categories
    )
    out["field"] = field[5:] if field.startswith("meta_") else field
    out["column"] = column
    return out


def confusion_for(store: Any, dataset: str, *, where: str | None = None, top_pairs: int = 20) -> dict[str, Any]:
    info = store.get_dataset(dataset)
    table = _read(store, dataset, ["labeled", "label", "pred_label", "pred_label2", "margin"], where)
    return confusion(table, classes=info.classes, top_pairs=top_pairs)
