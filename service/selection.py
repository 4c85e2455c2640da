"""Selection: which unlabeled rows to label next by the model's uncertainty, under a budget.

``select`` ranks the candidates (unlabeled, not yet exported, plus the caller's filter) by one score
column, all of which point the same way (**higher = less certain**): least_confidence, margin, ratio,
entropy, mc_variance, bald; ``random`` ranks at random. An ``explore`` share of the budget is drawn
uniformly at random from the candidates the exploitation part did not take (exploitation vs
exploration), an optional per-class cap limits how many rows one predicted class may take, and a
``seed`` makes the random parts reproducible. The result says how many rows came from each part.

Recording: :func:`record_selection` stores a mine or select result as a ``selection`` document (what an
export can take as its input). ``edgeminer mine`` / ``edgeminer select`` and ``POST /mine`` /
``POST /select`` all call it, so they leave the same document for the same request.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, get_args

import numpy as np

from edgeminer.indexer.scores import highest_first
from edgeminer.indexer.store import Store
from edgeminer.indexer.where import labeled
from edgeminer.service.mining import MineResult, MiningError, candidate_where, exported_ids

#: how rows are ranked for labeling (the API's ``strategy`` field).
Strategy = Literal[
    "least_confidence", "margin", "ratio", "entropy", "mc_variance", "bald", "random", "coreset", "typiclust", "badge"
]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
#: strategies that pick a batch by covering the embeddings (service/diversity.py), not by one score column.
DIVERSITY_STRATEGIES = ("coreset", "typiclust", "badge")
_MC_HINT = "it needs MC-dropout passes at ingest (--mc-passes with a torchscript model that has dropout)"
SCORE_HINTS = {"mc_variance": _MC_HINT, "bald": _MC_HINT}


class SelectionError(MiningError):
    """A selection request that cannot be served as asked (an unknown strategy, a score the dataset does
    not have, a budget out of range...)."""


@dataclass
class SelectionResult:
    """What :func:`select` picked: the rows (rank, id, part, score, extra columns) and how."""

    dataset: str
    strategy: str
    budget: int
    explore: float
    candidates: int
    rows: list[dict[str, Any]]
    counts: dict[str, int]
    skipped_no_score: int
    per_class_cap: int | None
    seed: int
    version: int
    include_labeled: bool = False
    include_exported: bool = False
    columns: list[str] | None = None

    def summary(self) -> dict[str, Any]:
        """The result without its rows (what the CLI prints and the API returns around the items)."""
        return {
            "dataset": self.dataset,
            "strategy": self.strategy,
            "budget": self.budget,
            "explore": self.explore,
            "returned": len(self.rows),
            "candidates": self.candidates,
            "counts": self.counts,
            "skipped_no_score": self.skipped_no_score,
            "per_class_cap": self.per_class_cap,
            "seed": self.seed,
            "version": self.version,
        }

    def params(self, filters: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
        """The request as a selection document records it (``filters``: the structured filters the
        ``where`` clause was built from, as plain dicts)."""
        return {
            "strategy": self.strategy,
            "budget": self.budget,
            "explore": self.explore,
            "per_class_cap": self.per_class_cap,
            "filters": [dict(f) for f in filters],
            "include_labeled": self.include_labeled,
            "include_exported": self.include_exported,
            "seed": self.seed,
            "columns": self.columns,
        }

    def record(self, filters: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
        """The selection document of this result (kind ``select``): ``kind``, ``params``, ``ids``, ``summary``."""
        return selection_record(self, self.params(filters))


def _check(strategy: str, budget: int, explore: float, per_class_cap: int | None) -> None:
    if strategy not in STRATEGIES:
        raise SelectionError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    if not isinstance(budget, int) or budget < 1:
        raise SelectionError(f"budget must be a positive integer, not {budget!r}")
    if not (0.0 <= float(explore) <= 1.0) or math.isnan(float(explore)):
        raise SelectionError(f"explore is the random share of the budget, in [0, 1], not {explore!r}")
    if per_class_cap is not None and (not isinstance(per_class_cap, int) or per_class_cap < 1):
        raise SelectionError(f"per_class_cap must be a positive integer, not {per_class_cap!r}")


def select(
    store: Store,
    dataset: str,
    *,
    strategy: str = "least_confidence",
    budget: int = 100,
    explore: float = 0.0,
    per_class_cap: int | None = None,
    where: str | None = None,
    include_labeled: bool = False,
    include_exported: bool = False,
    seed: int = 0,
    columns: Sequence[str] | None = None,
) -> SelectionResult:
    """Pick ``min(budget, candidates)`` rows (fewer only when the per-class cap leaves too few):
    ``round(budget * explore)`` at random, the rest by ``strategy`` (highest uncertainty first).

    Parameters
    ----------
    store : Store
    dataset : str
    strategy : str
        One of STRATEGIES: a score column (higher = less certain), or ``random``.
    budget, explore, per_class_cap
        Rows wanted; the share of them drawn at random (in [0, 1]) from the candidates the strategy did
        not take; the most rows one predicted class may take (None: no cap).
    where, include_labeled, include_exported
        A trusted filter clause (from service/filters.py); let labeled / exported rows be candidates.
    seed : int
        Makes the random parts (explore, tie breaks, ``random``) reproducible.
    columns : sequence of str or None
        Extra columns on each result row.

    Returns
    -------
    SelectionResult
        Rows whose score is missing are skipped and counted (``skipped_no_score``).

    Raises
    ------
    SelectionError
        An option out of range, or no candidate has the strategy's score (the message says how to get it).
    """
    _check(strategy, budget, explore, per_class_cap)
    version = store.version(dataset)
    clause = candidate_where(
        where, include_labeled=include_labeled, include_exported=include_exported,
        exported_ids=None if include_exported else exported_ids(store, dataset),
    )
    score_col = None if strategy in ("random", *DIVERSITY_STRATEGIES) else strategy
    pool = _candidates(store, dataset, clause, score_col)
    pick = partial(_pick_diverse, store, dataset) if strategy in DIVERSITY_STRATEGIES else _pick
    picker = pick(pool, strategy, budget=budget, explore=explore, per_class_cap=per_class_cap, seed=seed)
    return SelectionResult(
        dataset=dataset, strategy=strategy, budget=budget, explore=float(explore), candidates=len(pool.ids),
        rows=_rows(store, dataset, pool, picker, columns), counts=picker.counts(), skipped_no_score=pool.skipped,
        per_class_cap=per_class_cap, seed=seed, version=version, include_labeled=include_labeled,
        include_exported=include_exported, columns=None if columns is None else list(columns),
    )


@dataclass
class _Pool:
    """The candidates in a stable base order (ids sorted), their predicted classes, and the score column
    (None for ``random``) with the mask of rows that have one."""

    ids: np.ndarray
    preds: np.ndarray
    scores: np.ndarray | None = None
    has: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    skipped: int = 0


def _candidates(store: Store, dataset: str, clause: str, score_col: str | None) -> _Pool:
    cols = ["id", "pred_label"] + ([score_col] if score_col else [])
    table = store.query(dataset, where=clause, columns=cols)
    ids = np.asarray(table["id"].to_pylist(), dtype=object)
    preds = np.asarray([p if p is not None else "" for p in table["pred_label"].to_pylist()], dtype=object)
    # a stable base order (ids sorted) so the result depends only on the data and the seed
    base = np.argsort(ids, kind="stable") if len(ids) else np.zeros(0, np.int64)
    pool = _Pool(ids[base], preds[base])
    if score_col is None:
        return pool
    raw = table[score_col].to_pylist()
    pool.scores = np.asarray([np.nan if v is None else v for v in raw], dtype=np.float64)[base]
    pool.has = ~np.isnan(pool.scores)
    pool.skipped = int((~pool.has).sum())
    if len(ids) and not pool.has.any():
        hint = SCORE_HINTS.get(score_col, "re-ingest the rows with the model's probabilities")
        raise SelectionError(
            f"none of the {len(ids)} candidate rows of dataset {dataset!r} has a {score_col!r} "
            f"score: {hint}; or choose another strategy ({', '.join(s for s in STRATEGIES if s != score_col)})"
        )
    return pool


class _Picker:
    """Takes rows in a given order, at most ``per_class_cap`` per predicted class, never one twice;
    remembers which part (strategy, explore, random) took each."""

    def __init__(self, preds: np.ndarray, per_class_cap: int | None):
        self.preds = preds
        self.cap = per_class_cap
        self.per_class: dict[str, int] = {}
        self.chosen: list[int] = []
        self.part: list[str] = []

    def take(self, order: np.ndarray, limit: int, label: str) -> None:
        got = 0
        taken = set(self.chosen)
        for n in order.tolist():
            if got >= limit:
                break
            if n in taken:
                continue
            pred = self.preds[n]
            if self.cap is not None and self.per_class.get(pred, 0) >= self.cap:
                continue
            self.per_class[pred] = self.per_class.get(pred, 0) + 1
            self.chosen.append(n)
            self.part.append(label)
            got += 1

    def counts(self) -> dict[str, int]:
        """Rows taken per part, in the order the parts first took a row."""
        out: dict[str, int] = {}
        for p in self.part:
            out[p] = out.get(p, 0) + 1
        return out


def _pick(
    pool: _Pool, strategy: str, *, budget: int, explore: float, per_class_cap: int | None, seed: int
) -> _Picker:
    """The strategy's share (highest score first), then the explore share at random (``random``: all
    of the budget at random)."""
    rng = np.random.default_rng(seed)
    picker = _Picker(pool.preds, per_class_cap)
    if pool.scores is None:
        target = min(budget, len(pool.ids))
        if target:
            picker.take(rng.permutation(np.arange(len(pool.ids))), target, "random")
        return picker
    target = min(budget, len(pool.ids) - pool.skipped)
    n_explore = int(round(target * float(explore)))
    valid = np.flatnonzero(pool.has)
    if target - n_explore:
        picker.take(valid[highest_first(pool.scores[valid], rng)], target - n_explore, strategy)
    if n_explore:
        picker.take(rng.permutation(valid), n_explore, "explore")
    return picker


def _pick_diverse(
    store: Store, dataset: str, pool: _Pool, strategy: str, *, budget: int, explore: float,
    per_class_cap: int | None, seed: int,
) -> _Picker:
    """A diversity strategy's share of the budget (service/diversity.py), then the explore share at
    random. Candidates without an embedding (or, for badge, probabilities) are skipped and counted."""
    rng = np.random.default_rng(seed)
    x, probs, ok = _candidate_arrays(store, dataset, pool, need_probs=strategy == "badge")
    valid = np.flatnonzero(ok)
    pool.skipped = int(len(pool.ids) - len(valid))
    if len(pool.ids) and not len(valid):
        what = "probabilities and an embedding" if strategy == "badge" else "an embedding"
        raise SelectionError(f"none of the {len(pool.ids)} candidate rows of dataset {dataset!r} has {what}: "
                             f"re-ingest them with a model, or choose an uncertainty strategy")
    picker = _Picker(pool.preds, per_class_cap)
    target = min(budget, len(valid))
    n_explore = int(round(target * float(explore)))
    need = target - n_explore
    if need:
        order = valid[_diverse_order(store, dataset, strategy, x[valid], probs, valid, need, pool, per_class_cap,
                                     seed)]
        picker.take(order, need, strategy)
    if n_explore:
        picker.take(rng.permutation(valid), n_explore, "explore")
    return picker


def _diverse_order(
    store: Store, dataset: str, strategy: str, x: np.ndarray, probs: np.ndarray | None, valid: np.ndarray,
    need: int, pool: _Pool, per_class_cap: int | None, seed: int,
) -> np.ndarray:
    """Positions (into ``valid``) the strategy picks, in pick order."""
    from edgeminer.service import diversity

    preds = pool.preds[valid]
    # with a per-class cap, ask for more than needed so the cap does not leave the budget short
    ask = need if per_class_cap is None else min(len(valid), 3 * need)
    if strategy == "badge":
        assert probs is not None
        return np.asarray(diversity.badge(probs[valid], x, ask, rng=seed), dtype=np.int64)
    _, labeled_x = store.vectors(dataset, where=labeled())
    labeled_x = normalize_rows(labeled_x)
    if strategy == "coreset":
        picks = diversity.capped_kcenter(x, need, centers=labeled_x, groups=list(preds), cap=per_class_cap, seed=seed)
        return np.asarray(picks, dtype=np.int64)
    both = np.vstack([labeled_x, x]) if len(labeled_x) else x
    is_lab = np.r_[np.ones(len(labeled_x), bool), np.zeros(len(x), bool)]
    picks = diversity.typiclust(both, is_lab, ~is_lab, ask, seed=seed)
    return np.asarray(picks, dtype=np.int64) - len(labeled_x)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float64; zero rows stay zero): the cosine geometry mining uses."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12) if x.size else x


def _candidate_arrays(
    store: Store, dataset: str, pool: _Pool, *, need_probs: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The candidates' normalised embeddings (zeros where missing), their probabilities padded to the
    dataset's classes (``need_probs``), and the mask of rows that have what the strategy needs."""
    ids = [str(i) for i in pool.ids]
    got_ids, vecs = store.vectors(dataset, ids=ids)
    at = {i: n for n, i in enumerate(got_ids)}
    dim = vecs.shape[1] if vecs.ndim == 2 and len(got_ids) else store.get_dataset(dataset).dim
    x = np.zeros((len(ids), dim))
    ok = np.zeros(len(ids), bool)
    for n, i in enumerate(ids):
        if i in at:
            x[n] = vecs[at[i]]
            ok[n] = True
    x = normalize_rows(x)
    if not need_probs:
        return x, None, ok
    raw = store.get_samples(dataset, ids, columns=["id", "probs"])["probs"].to_pylist()
    width = max([len(store.get_dataset(dataset).classes), 1, *(len(p) for p in raw if p is not None)])
    probs = np.zeros((len(ids), width))
    for n, p in enumerate(raw):
        if p is None or not len(p) or not np.all(np.isfinite(p)) or sum(p) <= 0:
            ok[n] = False
            continue
        probs[n, : len(p)] = p  # stored probs cover a prefix of the classes (the rest are 0)
    probs /= np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)
    return x, probs, ok


def _rows(
    store: Store, dataset: str, pool: _Pool, picker: _Picker, columns: Sequence[str] | None
) -> list[dict[str, Any]]:
    picked = [str(pool.ids[n]) for n in picker.chosen]
    extra: dict[str, dict[str, Any]] = {}
    cols = [c for c in dict.fromkeys(columns or []) if c not in ("id", "embedding")]
    if cols and picked:
        extra = {r["id"]: r for r in store.get_samples(dataset, picked, columns=["id", *cols]).to_pylist()}
    rows = []
    for rank, (n, i, p) in enumerate(zip(picker.chosen, picked, picker.part, strict=True)):
        row: dict[str, Any] = {"id": i, "rank": rank + 1, "part": p}
        if pool.scores is not None:
            row["score"] = float(pool.scores[n])
        row.update({c: v for c, v in extra.get(i, {}).items() if c != "id"})
        rows.append(row)
    return rows


def selection_record(result: SelectionResult, params: Mapping[str, Any]) -> dict[str, Any]:
    """The selection document a select call leaves behind (kind ``select``), for exports.

    Parameters
    ----------
    result : SelectionResult
    params : mapping
        The request's parameters (see :meth:`SelectionResult.params`).

    Returns
    -------
    dict
        ``kind``, ``params``, ``ids`` (in rank order), ``summary``.
    """
    ids = [r["id"] for r in result.rows]
    return {"kind": "select", "params": dict(params), "ids": ids, "summary": result.summary()}


def filter_records(filters: Sequence[Any]) -> list[dict[str, Any]]:
    """Structured filters (dicts, or objects with field/op/value such as the API's models) as plain
    ``{"field", "op", "value"}`` dicts, so every front end records them alike.

    Parameters
    ----------
    filters : sequence
        What service/filters.py's ``build_where`` took.

    Returns
    -------
    list of dict
    """
    return [{"field": _part(f, "field"), "op": _part(f, "op") or "eq", "value": _part(f, "value")} for f in filters]


def _part(f: Any, name: str) -> Any:
    return f.get(name) if isinstance(f, Mapping) else getattr(f, name, None)


def record_selection(
    store: Store, dataset: str, result: MineResult | SelectionResult, *, filters: Sequence[Any] = ()
) -> str:
    """Store a mine or select result as a ``selection`` document, the input an export can take.

    The one place a selection is recorded: the CLI (``edgeminer mine`` / ``select``) and the API
    (``POST /datasets/{ds}/mine`` / ``select``) both call it, so the same request leaves the same
    document: ``kind`` (``mine`` / ``select``), ``params`` (the options, with the structured filters),
    ``ids`` (in rank order), ``summary``, and for a mine the ``seeds`` spec.

    Parameters
    ----------
    store : Store
    dataset : str
    result : MineResult or SelectionResult
    filters : sequence
        The structured filters the request's ``where`` was built from (dicts, or the API's models).

    Returns
    -------
    str
        The document's id: ``mine-<12 hex>`` or ``select-<12 hex>``.
    """
    doc = result.record(filter_records(filters))
    selection_id = f"{doc['kind']}-{uuid.uuid4().hex[:12]}"
    store.put_doc(dataset, "selection", selection_id, doc, name=doc["kind"])
    return selection_id
