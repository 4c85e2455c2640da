"""Metadata slices: conjunctions of metadata values where the model is wrong far more often than usual.

"img_brightness=dark and camera=C: 71% wrong, 3.1x the base rate, 240 judged rows, 180 unlabeled".

Features
    Every metadata field (the user's and the image properties of indexer/properties.py) except
    timestamps. Strings, booleans and integers with at most :data:`MAX_DISCRETE` distinct values are
    taken as they are (the :data:`MAX_VALUES` most frequent values); other numbers are cut at their 20th
    and 80th percentiles (over every ok row) into three bins, named ``low / normal / high`` or, for the
    image properties, ``dark / normal / bright``, ``blurry / normal / sharp``... (:data:`BIN_NAMES`).

Errors
    Judged only on labeled rows with a known ``correct``; by default only rows outside the ``train``
    split when there are any (a model is right on most of what it was trained on, which would dilute
    every slice). Unlabeled rows are counted per slice too: they are what a ``--slice`` mine returns.

Search
    SliceLine's score (Sagadeeva and Boehm, SIGMOD 2021; pip ``sliceline``):
    ``alpha * (slice error rate / base error rate - 1) - (1 - alpha) * (judged rows / slice rows - 1)``,
    over slices of support >= ``min_sup`` with at least one error. Levels 1 and 2 are enumerated exactly
    with sparse matrix products (the same slices ``sliceline.Slicefinder(max_l=2)`` scores); level 3
    extends the :data:`LEVEL3_PARENTS` best level-2 slices by one more predicate. Only slices with a
    positive score are kept, best first, without those that judge exactly the rows of a parent (an extra
    condition true on all of them: SliceLine lists both). tests/unit/test_metaslices.py checks the top slices against
    ``sliceline`` on a planted case.

Refinements
    SliceLine also lists a slice narrowed by a condition that changes nothing: on the demo, "slice=inverted"
    (93% wrong) came back as "img_near_dups=many and slice=inverted" (92%) and "img_sharpness=normal and
    slice=inverted" (90%), four of the top ten being such copies. By default (``refinements=False``) a
    slice of several conditions is listed only when its error rate is significantly higher than on the
    rest of each parent (the slice without one of its conditions): one-sided Fisher exact test,
    p < :data:`REFINEMENT_P`; otherwise the parent says the same with more rows. The next slices move up.

Caching
    :func:`load_slices` computes on demand and keeps the result in the docs table (kind ``slices``, id
    ``metaslices``) with the samples table version it read; a later call at the same version and with the
    same parameters returns the document, any other recomputes (cheap: metadata columns only). The
    document's ``version`` says which table version the figures describe.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from dataclasses import field as dataclass_field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import sparse
from scipy.stats import fisher_exact

from edgeminer.indexer.analysis.cache import load_or_compute
from edgeminer.indexer.documents import now_iso
from edgeminer.indexer.errors import ValidationFailed
from edgeminer.indexer.store import CORE_COLUMNS, META_PREFIX, DatasetInfo, Store
from edgeminer.indexer.where import and_, ok_and, sql_quote

__all__ = [
    "BIN_NAMES",
    "SLICES_DOC",
    "Feature",
    "SliceParams",
    "compute_slices",
    "find_slices",
    "get_slice",
    "load_slices",
    "slice_where",
]

SLICES_DOC = "slices"
DOC_ID = "metaslices"  # doc ids are unique across kinds: not "current" (the analysis document)
#: integer fields with at most this many distinct values are categories, not numbers.
MAX_DISCRETE = 8
#: most values of one categorical field used as predicates (the most frequent ones).
MAX_VALUES = 50
#: level-2 slices extended to level 3.
LEVEL3_PARENTS = 50
#: names of the low / middle / high bins of the image properties (others: low / normal / high).
BIN_NAMES: dict[str, tuple[str, str, str]] = {
    "img_brightness": ("dark", "normal", "bright"),
    "img_contrast": ("flat", "normal", "contrasty"),
    "img_sharpness": ("blurry", "normal", "sharp"),
    "img_saturation": ("grey", "normal", "vivid"),
    "img_width": ("narrow", "normal", "wide"),
    "img_height": ("short", "normal", "tall"),
    "img_aspect": ("portrait", "normal", "landscape"),
    "img_near_dups": ("few", "normal", "many"),
}
DEFAULT_BINS = ("low", "normal", "high")


@dataclass(frozen=True)
class SliceParams:
    """How slices are searched. ``min_sup`` None = max(10, 1% of the judged rows)."""

    alpha: float = 0.95
    max_l: int = 2
    min_sup: int | None = None
    top_k: int = 10
    quantiles: tuple[float, float] = (0.2, 0.8)
    include_train: bool = False
    refinements: bool = False  # True: also list slices a condition narrows without raising the error rate

    def check(self) -> None:
        if not 0 < self.alpha <= 1:
            raise ValidationFailed(f"alpha must be in (0, 1], not {self.alpha}", field="alpha")
        if self.max_l not in (1, 2, 3):
            raise ValidationFailed(f"max_l (predicates per slice) must be 1, 2 or 3, not {self.max_l}", field="max_l")
        if not 1 <= self.top_k <= 100:
            raise ValidationFailed(f"top_k must be between 1 and 100, not {self.top_k}", field="top_k")
        if self.min_sup is not None and self.min_sup < 1:
            raise ValidationFailed(f"min_sup must be >= 1, not {self.min_sup}", field="min_sup")
        lo, hi = self.quantiles
        if not 0 < lo < hi < 1:
            raise ValidationFailed(f"quantiles must be 0 < low < high < 1, not {self.quantiles}", field="quantiles")

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["quantiles"] = list(self.quantiles)
        return out


@dataclass
class Bin:
    """One predicate: a value (or value range) of one field, as a mask over the rows and as filters."""

    field: str
    name: str
    label: str
    filters: list[dict[str, Any]]
    mask: np.ndarray = dataclass_field(repr=False)


@dataclass
class Feature:
    """A metadata field and how it is cut."""

    field: str
    kind: str  # categorical | numeric
    bins: list[Bin]

    def describe(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "kind": self.kind,
            "bins": [
                {"name": b.name, "label": b.label, "rows": int(b.mask.sum()), "filters": b.filters} for b in self.bins
            ],
        }


# ---------------------------------------------------------------------------------------------
# features
# ---------------------------------------------------------------------------------------------


def slice_fields(info: DatasetInfo) -> list[str]:
    """The metadata fields slices are made of (every one but timestamps)."""
    return [f for f, t in info.metadata_fields.items() if t in ("string", "int", "float", "bool")]


def _public(name: str) -> str:
    """The filter name of metadata field ``name`` (``meta_<name>`` when a core column has the name)."""
    return META_PREFIX + name if name in CORE_COLUMNS else name


def build_features(
    table: pa.Table,
    info: DatasetInfo,
    quantiles: tuple[float, float] = (0.2, 0.8),
    fields: Sequence[str] | None = None,
) -> list[Feature]:
    """The binned features of ``table`` (which holds the ``meta_<field>`` columns of every ok row), one per
    field of ``fields`` (default :func:`slice_fields`)."""
    out = []
    for name in slice_fields(info) if fields is None else fields:
        col = table.column(META_PREFIX + name)
        ftype = info.metadata_fields[name]
        if col.null_count == len(col):
            continue
        distinct = pc.count_distinct(col).as_py()
        if ftype in ("string", "bool") or (ftype == "int" and distinct <= MAX_DISCRETE):
            feature = _categorical(name, col)
        else:
            feature = _numeric(name, col, quantiles)
        if len(feature.bins) >= 2 or (len(feature.bins) == 1 and not feature.bins[0].mask.all()):
            out.append(feature)
    return out


def _categorical(name: str, col: pa.ChunkedArray) -> Feature:
    counts = pc.value_counts(col.drop_null()).to_pylist()
    counts.sort(key=lambda d: (-d["counts"], str(d["values"])))
    values = col.to_numpy(zero_copy_only=False)
    bins = []
    for item in counts[:MAX_VALUES]:
        value = item["values"]
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        bins.append(
            Bin(
                name,
                shown,
                f"{name}={shown}",
                [{"field": _public(name), "op": "eq", "value": value}],
                np.asarray(values == value, dtype=bool),
            )
        )
    return Feature(name, "categorical", bins)


def _numeric(name: str, col: pa.ChunkedArray, quantiles: tuple[float, float]) -> Feature:
    values = pc.fill_null(col.cast(pa.float64()), math.nan).to_numpy(zero_copy_only=False)
    present = values[~np.isnan(values)]
    lo, hi = (float(v) for v in np.quantile(present, quantiles, method="lower"))
    low, mid, high = BIN_NAMES.get(name, DEFAULT_BINS)
    f = _public(name)
    with np.errstate(invalid="ignore"):
        if lo == hi:
            bins = [
                Bin(name, low, f"{name}={low} (<= {lo:.4g})", [{"field": f, "op": "le", "value": lo}], values <= lo),
                Bin(name, high, f"{name}={high} (> {lo:.4g})", [{"field": f, "op": "gt", "value": lo}], values > lo),
            ]
        else:
            bins = [
                Bin(name, low, f"{name}={low} (<= {lo:.4g})", [{"field": f, "op": "le", "value": lo}], values <= lo),
                Bin(
                    name,
                    mid,
                    f"{name}={mid} ({lo:.4g}-{hi:.4g})",
                    [{"field": f, "op": "gt", "value": lo}, {"field": f, "op": "lt", "value": hi}],
                    (values > lo) & (values < hi),
                ),
                Bin(name, high, f"{name}={high} (>= {hi:.4g})", [{"field": f, "op": "ge", "value": hi}], values >= hi),
            ]
    return Feature(name, "numeric", [b for b in bins if b.mask.any()])


# ---------------------------------------------------------------------------------------------
# the search (SliceLine's score, levels 1-3)
# ---------------------------------------------------------------------------------------------


@dataclass
class FoundSlice:
    bins: tuple[int, ...]  # indices into the flat bin list
    score: float
    size: int
    errors: int


def sliceline_score(sizes: np.ndarray, errors: np.ndarray, n: int, base: float, alpha: float) -> np.ndarray:
    """SliceLine's score of slices with ``sizes`` rows and ``errors`` errors among ``n`` rows."""
    with np.errstate(divide="ignore", invalid="ignore"):
        score = alpha * ((errors / sizes) / base - 1) - (1 - alpha) * (n / sizes - 1)
    return np.nan_to_num(score, nan=-np.inf)


def find_slices(
    onehot: sparse.csc_matrix,
    errors: np.ndarray,
    owner: np.ndarray,
    *,
    alpha: float,
    max_l: int,
    min_sup: int,
    top_k: int,
    refinements: bool = True,
) -> list[FoundSlice]:
    """The ``top_k`` best slices (positive score) over the judged rows; ``refinements=False`` leaves out
    a slice whose error rate is not significantly above the rest of one of its parents (module docstring).

    ``onehot``: judged rows x bins (0/1); ``errors``: 0/1 per judged row; ``owner``: the feature of each
    bin (two bins of one feature never combine)."""
    n = onehot.shape[0]
    e = np.asarray(errors, dtype=np.float64)
    base = float(e.mean()) if n else 0.0
    if n == 0 or base == 0:
        return []
    x = sparse.csc_matrix(onehot, dtype=np.float64)
    sizes1 = np.asarray(x.sum(axis=0)).ravel()
    errs1 = x.T @ e
    valid = np.flatnonzero((sizes1 >= min_sup) & (errs1 > 0))
    found = [FoundSlice((int(b),), 0.0, int(sizes1[b]), int(errs1[b])) for b in valid]
    if max_l >= 2 and len(valid) > 1:
        found += _level2(x[:, valid], e, valid, owner, min_sup)
    scores = sliceline_score(
        np.array([f.size for f in found], float), np.array([f.errors for f in found], float), n, base, alpha
    )
    for f, s in zip(found, scores, strict=True):
        f.score = float(s)
    if max_l >= 3:
        found += _level3(x, e, found, valid, owner, min_sup, base, alpha)
    everything = {f.bins: f for f in found}
    found = [f for f in _drop_redundant(found) if f.score > 0]
    found.sort(key=lambda f: (-f.score, f.bins))
    if refinements:
        return found[:top_k]
    out: list[FoundSlice] = []
    for f in found:
        if len(out) == top_k:
            break
        # every parent of a scored slice is scored: its rows and errors cover the slice's (>= min_sup, > 0)
        if len(f.bins) == 1 or all(_raises_error_rate(f, everything[p]) for p in _parents(f.bins)):
            out.append(f)
    return out


REFINEMENT_P = 0.05
"""A slice narrowed by one more condition is listed (``refinements=False``) only when its errors are
more concentrated than on the rest of the parent at this one-sided Fisher exact p-value."""


def _parents(bins: tuple[int, ...]) -> list[tuple[int, ...]]:
    return [tuple(b for b in bins if b != x) for x in bins]


def _raises_error_rate(child: FoundSlice, parent: FoundSlice) -> bool:
    """Whether ``child`` (``parent`` and one more condition) is wrong significantly more often than the
    parent's other rows."""
    rest = parent.size - child.size
    if rest <= 0:
        return False
    rest_errors = parent.errors - child.errors
    table = [[child.errors, child.size - child.errors], [rest_errors, rest - rest_errors]]
    return bool(fisher_exact(table, alternative="greater").pvalue < REFINEMENT_P)


def _drop_redundant(found: list[FoundSlice]) -> list[FoundSlice]:
    """Drop a slice that judges the same rows as one of its parents (a condition that holds on all of
    the parent's judged rows adds nothing; SliceLine would list both, with the same score)."""
    size_of = {f.bins: f.size for f in found}
    return [
        f
        for f in found
        if len(f.bins) == 1 or not any(size_of.get(tuple(b for b in f.bins if b != x)) == f.size for x in f.bins)
    ]


def _level2(
    xv: sparse.csc_matrix, e: np.ndarray, valid: np.ndarray, owner: np.ndarray, min_sup: int
) -> list[FoundSlice]:
    sizes = (xv.T @ xv).toarray()
    errs = (xv.T @ sparse.diags(e) @ xv).toarray()
    i, j = np.triu_indices(len(valid), k=1)
    keep = (owner[valid[i]] != owner[valid[j]]) & (sizes[i, j] >= min_sup) & (errs[i, j] > 0)
    return [
        FoundSlice((int(valid[a]), int(valid[b])), 0.0, int(sizes[a, b]), int(errs[a, b]))
        for a, b in zip(i[keep], j[keep], strict=True)
    ]


def _level3(
    x: sparse.csc_matrix,
    e: np.ndarray,
    found: list[FoundSlice],
    valid: np.ndarray,
    owner: np.ndarray,
    min_sup: int,
    base: float,
    alpha: float,
) -> list[FoundSlice]:
    """Extend the best level-2 slices by one predicate of a third feature."""
    parents = sorted((f for f in found if len(f.bins) == 2), key=lambda f: -f.score)[:LEVEL3_PARENTS]
    xv = x[:, valid]
    seen: set[tuple[int, ...]] = set()
    out = []
    for p in parents:
        inside = np.asarray(x[:, p.bins[0]].multiply(x[:, p.bins[1]]).todense()).ravel()
        sizes = xv.T @ inside
        errs = xv.T @ (inside * e)
        for k, b in enumerate(valid):
            if owner[b] in (owner[p.bins[0]], owner[p.bins[1]]) or sizes[k] < min_sup or errs[k] <= 0:
                continue
            key = tuple(sorted((*p.bins, int(b))))
            if key not in seen:
                seen.add(key)
                out.append(FoundSlice(key, 0.0, int(sizes[k]), int(errs[k])))
    n = x.shape[0]
    scores = sliceline_score(
        np.array([f.size for f in out], float), np.array([f.errors for f in out], float), n, base, alpha
    )
    for f, s in zip(out, scores, strict=True):
        f.score = float(s)
    return out


# ---------------------------------------------------------------------------------------------
# computing, caching and reading
# ---------------------------------------------------------------------------------------------


@dataclass
class _Rows:
    table: pa.Table
    judged: np.ndarray  # bool per row
    errors: np.ndarray  # bool per row (wrong), meaningful where judged
    unlabeled: np.ndarray
    judged_on: str


def _load_rows(store: Store, dataset: str, fields: Sequence[str], include_train: bool) -> _Rows:
    cols = ["id", "split", "labeled", "correct", *(META_PREFIX + f for f in fields)]
    table = store.query(dataset, where=ok_and(), columns=cols)
    labeled = pc.fill_null(table.column("labeled"), False).to_numpy(zero_copy_only=False).astype(bool)
    correct = table.column("correct")
    known = pc.is_valid(correct).to_numpy(zero_copy_only=False).astype(bool)
    wrong = pc.fill_null(pc.invert(correct), False).to_numpy(zero_copy_only=False).astype(bool)
    judged = labeled & known
    judged_on = "all labeled rows"
    if not include_train:
        split = pc.fill_null(table.column("split"), "").to_numpy(zero_copy_only=False)
        outside = judged & (split != "train")
        if outside.any():
            judged, judged_on = outside, "labeled rows outside the train split"
    return _Rows(table, judged, wrong, ~labeled, judged_on)


def _onehot(bins: Sequence[Bin], rows: np.ndarray) -> sparse.csc_matrix:
    """Rows ``rows`` (bool mask) x bins, 0/1, built column by column (never a dense n x bins matrix)."""
    indices, indptr = [], [0]
    for b in bins:
        hit = np.flatnonzero(b.mask[rows])
        indices.append(hit)
        indptr.append(indptr[-1] + len(hit))
    idx = np.concatenate(indices) if indices else np.zeros(0, np.int64)
    data = np.ones(len(idx), dtype=np.float64)
    return sparse.csc_matrix((data, idx, np.asarray(indptr)), shape=(int(rows.sum()), len(bins)))


def compute_slices(
    store: Store, dataset: str, params: SliceParams | None = None, *, fields: Sequence[str] | None = None
) -> dict[str, Any]:
    """Find the metadata slices of ``dataset`` now (no cache); the document :func:`load_slices` keeps.

    ``fields``: the metadata fields to slice on (default :func:`slice_fields`: every one but timestamps),
    e.g. all but a column that holds the answer (bench/slices.py leaves out the planted ``slice``)."""
    params = params or SliceParams()
    params.check()
    info = store.get_dataset(dataset)
    version = store.version(dataset)
    usable = slice_fields(info)
    if fields is None:
        fields = usable
    else:
        fields = list(dict.fromkeys(fields))
        unknown = [f for f in fields if f not in usable]
        if unknown:
            raise ValidationFailed(
                f"dataset {dataset!r} has no metadata field {unknown[0]!r} to slice on; "
                f"its fields: {', '.join(usable) or 'none'}",
                field="fields",
            )
    rows = _load_rows(store, dataset, fields, params.include_train)
    features = build_features(rows.table, info, params.quantiles, fields)
    bins = [b for f in features for b in f.bins]
    owner = np.array([n for n, f in enumerate(features) for _ in f.bins], dtype=np.int64)
    n_judged = int(rows.judged.sum())
    min_sup = params.min_sup or max(10, math.ceil(0.01 * n_judged))
    errors = rows.errors[rows.judged]
    found = find_slices(
        _onehot(bins, rows.judged),
        errors,
        owner,
        alpha=params.alpha,
        max_l=params.max_l,
        min_sup=min_sup,
        top_k=params.top_k,
        refinements=params.refinements,
    )
    base = float(errors.mean()) if n_judged else 0.0
    return {
        "dataset": dataset,
        "version": version,
        "computed_at": now_iso(),
        "params": params.as_dict(),
        "min_sup": min_sup,
        "method": "sliceline score; levels 1-2 exact, level 3 from the best level-2 slices"
        + ("" if params.refinements else "; a narrower slice only when it raises the error rate (Fisher p < 0.05)"),
        "rows": rows.table.num_rows,
        "judged": n_judged,
        "judged_errors": int(errors.sum()),
        "judged_on": rows.judged_on,
        "unlabeled": int(rows.unlabeled.sum()),
        "base_error_rate": base,
        "features": [f.describe() for f in features],
        "slices": [_describe(n + 1, f, bins, rows, base) for n, f in enumerate(found)],
    }


def _describe(rank: int, found: FoundSlice, bins: Sequence[Bin], rows: _Rows, base: float) -> dict[str, Any]:
    parts = [bins[i] for i in found.bins]
    members = np.logical_and.reduce([b.mask for b in parts])
    rate = found.errors / found.size if found.size else 0.0
    lift = rate / base if base else 0.0
    unlabeled = int((members & rows.unlabeled).sum())
    text = " and ".join(f"{b.field}={b.name}" for b in parts)
    return {
        "id": rank,
        "rank": rank,
        "description": text,
        "conditions": [{"field": b.field, "bin": b.name, "label": b.label, "filters": b.filters} for b in parts],
        "filters": [f for b in parts for f in b.filters],
        "score": found.score,
        "rows": int(members.sum()),
        "judged": found.size,
        "errors": found.errors,
        "error_rate": rate,
        "lift": lift,
        "unlabeled": unlabeled,
        "summary": (
            f"{text}: {rate:.0%} wrong, {lift:.1f}x the base rate, {found.size} judged rows, {unlabeled} unlabeled"
        ),
    }


def load_slices(
    store: Store, dataset: str, params: SliceParams | None = None, *, refresh: bool = False
) -> dict[str, Any]:
    """The metadata slices at the table's current version: the cached ``slices`` document when it was
    computed at this version with these parameters, else computed now and cached."""
    params = params or SliceParams()
    params.check()
    checked = params

    def compute() -> dict[str, Any]:
        return compute_slices(store, dataset, checked)

    return load_or_compute(store, dataset, SLICES_DOC, DOC_ID, params.as_dict(), compute, refresh=refresh)


def get_slice(store: Store, dataset: str, slice_id: int) -> dict[str, Any]:
    """Slice number ``slice_id`` (its rank, from 1) of :func:`load_slices` with the default parameters."""
    from edgeminer.indexer.errors import NotFound

    doc = load_slices(store, dataset)
    for item in doc["slices"]:
        if item["id"] == slice_id:
            return dict(item)
    raise NotFound(
        f"dataset {dataset!r} has no metadata slice {slice_id}: it has {len(doc['slices'])} "
        f"(see `edgeminer slices --dataset {dataset}` or GET /api/v1/datasets/{dataset}/slices)",
        title="Slice not found",
        dataset=dataset,
        slice=slice_id,
    )


def slice_where(info: DatasetInfo, item: Mapping[str, Any]) -> str:
    """The trusted where-clause of a slice's ``filters`` (columns checked against the dataset's metadata
    fields, values written as typed literals)."""
    parts = []
    ops = {"eq": "=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
    for f in item.get("filters") or []:
        name = str(f["field"])
        plain = (
            name[len(META_PREFIX) :]
            if name.startswith(META_PREFIX) and name[len(META_PREFIX) :] in CORE_COLUMNS
            else name
        )
        ftype = info.metadata_fields.get(plain)
        if ftype is None or f.get("op") not in ops:
            raise ValidationFailed(f"slice filter on {name!r} does not fit dataset {info.name!r}: recompute the slices")
        parts.append(f"`{META_PREFIX}{plain}` {ops[f['op']]} {_literal(f['value'], ftype)}")
    return and_(*parts)


def _literal(value: Any, ftype: str) -> str:
    if ftype == "bool":
        return "true" if bool(value) else "false"
    if ftype == "string":
        return sql_quote(str(value))
    number = float(value)
    if not math.isfinite(number):
        raise ValidationFailed(f"slice bound {value!r} is not a finite number")
    return str(int(number)) if ftype == "int" and number.is_integer() else repr(number)


def slices_overview(
    store: Store, dataset: str, params: SliceParams | None = None, *, refresh: bool = False
) -> dict[str, Any]:
    """The metadata slices (:func:`load_slices`) beside the failure clusters of the current analysis, so
    both kinds of slice show side by side: ``current_version`` / ``stale`` say whether the slices describe
    the table as it is, ``clusters.stale`` whether the analysis is older than the data."""
    doc = load_slices(store, dataset, params, refresh=refresh)
    current = store.version(dataset)
    return {
        **doc,
        "current_version": current,
        "stale": doc["version"] != current,
        "clusters": _cluster_refs(store, dataset, current),
    }


def _cluster_refs(store: Store, dataset: str, current: int) -> dict[str, Any]:
    """The failure clusters of the current analysis, by reference (their full summaries are at
    ``/clusters/{id}``)."""
    from edgeminer.indexer.analysis.run import load_analysis

    doc = load_analysis(store, dataset)
    if doc is None:
        return {"analyzed": False, "stale": False, "items": []}
    failures = sorted((c for c in doc.get("clusters", []) if c.get("failure_rank")), key=lambda c: c["failure_rank"])
    items = [
        {
            "id": c["id"],
            "failure_rank": c["failure_rank"],
            "size": c.get("size"),
            "judged": c.get("judged"),
            "errors": c.get("errors"),
            "error_rate": c.get("error_rate"),
            "lift": c.get("lift"),
            "unlabeled": c.get("unlabeled"),
            "dominant_label": _label_value(c.get("dominant_label")),
            "top_confusion": (c.get("top_confusions") or [None])[0],
        }
        for c in failures
    ]
    written = doc.get("version_written")
    return {
        "analyzed": True,
        "run_id": doc.get("run_id"),
        "analyzed_at": doc.get("analyzed_at"),
        "version_written": written,
        "stale": written != current,
        "base_error_rate": doc.get("base_error_rate"),
        "items": items,
    }


def _label_value(dominant: Any) -> str | None:
    """The class of a cluster summary's ``dominant_label`` ({value, count, share}, or None)."""
    if isinstance(dominant, Mapping):
        value = dominant.get("value")
        return None if value is None else str(value)
    return None if dominant is None else str(dominant)
