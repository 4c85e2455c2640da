"""Selection: which unlabeled rows to label next by the model's uncertainty, under a budget.

``select`` ranks the candidates (unlabeled, not yet exported, plus the caller's filter) by one score
column, all of which point the same way (**higher = less certain**): least_confidence, margin, ratio,
entropy, mc_variance, bald; ``random`` ranks at random. An ``explore`` share of the budget is drawn
uniformly at random from the candidates the exploitation part did not take (exploitation vs
exploration), an optional per-class cap limits how many rows one predicted class may take, and a
``seed`` makes the random parts reproducible. The result says how many rows came from each part.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeminer.indexer.store import Store
from edgeminer.service.mining import MiningError, candidate_where, exported_ids

STRATEGIES = ("least_confidence", "margin", "ratio", "entropy", "mc_variance", "bald", "random")
_MC_HINT = "it needs MC-dropout passes at ingest (--mc-passes with a torchscript model that has dropout)"
SCORE_HINTS = {"mc_variance": _MC_HINT, "bald": _MC_HINT}


class SelectionError(MiningError):
    """A selection request that cannot be served (HTTP 422)."""


@dataclass
class SelectionResult:
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

    def summary(self) -> dict[str, Any]:
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

    Rows whose score is missing are skipped and counted; if no candidate has the score the request
    fails with a message saying how to get it."""
    _check(strategy, budget, explore, per_class_cap)
    version = store.version(dataset)
    clause = candidate_where(
        where,
        include_labeled=include_labeled,
        include_exported=include_exported,
        exported_ids=None if include_exported else exported_ids(store, dataset),
    )
    score_col = None if strategy == "random" else strategy
    cols = ["id", "pred_label"] + ([score_col] if score_col else [])
    table = store.query(dataset, where=clause, columns=cols)
    ids = np.asarray(table["id"].to_pylist(), dtype=object)
    n_candidates = len(ids)
    preds = np.asarray([p if p is not None else "" for p in table["pred_label"].to_pylist()], dtype=object)
    # a stable base order (ids sorted) so the result depends only on the data and the seed
    base = np.argsort(ids, kind="stable") if n_candidates else np.zeros(0, np.int64)
    ids, preds = ids[base], preds[base]
    rng = np.random.default_rng(seed)
    skipped = 0
    if score_col:
        raw = table[score_col].to_pylist()
        scores = np.asarray([np.nan if v is None else v for v in raw], dtype=np.float64)[base]
        has = ~np.isnan(scores)
        skipped = int((~has).sum())
        if n_candidates and not has.any():
            hint = SCORE_HINTS.get(score_col, "re-ingest the rows with the model's probabilities")
            raise SelectionError(
                f"none of the {n_candidates} candidate rows of dataset {dataset!r} has a {score_col!r} "
                f"score: {hint}; or choose another strategy ({', '.join(s for s in STRATEGIES if s != score_col)})"
            )
    target = min(budget, n_candidates - skipped) if score_col else min(budget, n_candidates)
    n_explore = int(round(target * float(explore))) if score_col else target
    n_exploit = target - n_explore
    per_class: dict[str, int] = {}
    chosen: list[int] = []
    part: list[str] = []

    def take(order: np.ndarray, limit: int, label: str) -> None:
        got = 0
        taken = set(chosen)
        for n in order.tolist():
            if got >= limit:
                break
            if n in taken:
                continue
            if per_class_cap is not None and per_class.get(preds[n], 0) >= per_class_cap:
                continue
            per_class[preds[n]] = per_class.get(preds[n], 0) + 1
            chosen.append(n)
            part.append(label)
            got += 1

    if score_col and n_exploit:
        valid = np.flatnonzero(has)
        # highest uncertainty first; ties broken by a seeded shuffle, not by id order
        tie = rng.random(len(valid))
        order = valid[np.lexsort((tie, -scores[valid]))]
        take(order, n_exploit, strategy)
    if n_explore:
        pool = np.flatnonzero(has) if score_col else np.arange(n_candidates)
        take(rng.permutation(pool), n_explore, "explore" if score_col else "random")
    counts: dict[str, int] = {}
    for p in part:
        counts[p] = counts.get(p, 0) + 1
    rows = _rows(store, dataset, ids, chosen, part, scores if score_col else None, score_col, columns)
    return SelectionResult(
        dataset=dataset,
        strategy=strategy,
        budget=budget,
        explore=float(explore),
        candidates=n_candidates,
        rows=rows,
        counts=counts,
        skipped_no_score=skipped,
        per_class_cap=per_class_cap,
        seed=seed,
        version=version,
    )


def _rows(
    store: Store,
    dataset: str,
    ids: np.ndarray,
    chosen: list[int],
    part: list[str],
    scores: np.ndarray | None,
    score_col: str | None,
    columns: Sequence[str] | None,
) -> list[dict[str, Any]]:
    picked = [str(ids[n]) for n in chosen]
    extra: dict[str, dict[str, Any]] = {}
    cols = [c for c in dict.fromkeys(columns or []) if c not in ("id", "embedding")]
    if cols and picked:
        extra = {r["id"]: r for r in store.get_samples(dataset, picked, columns=["id", *cols]).to_pylist()}
    rows = []
    for rank, (n, i, p) in enumerate(zip(chosen, picked, part, strict=True)):
        row: dict[str, Any] = {"id": i, "rank": rank + 1, "part": p}
        if scores is not None and score_col:
            row["score"] = float(scores[n])
        row.update({c: v for c, v in extra.get(i, {}).items() if c != "id"})
        rows.append(row)
    return rows


def selection_record(result: SelectionResult, params: dict[str, Any]) -> dict[str, Any]:
    """The selection document a select call leaves behind (kind ``selection``), for exports."""
    ids = [r["id"] for r in result.rows]
    return {"kind": "select", "params": params, "ids": ids, "summary": result.summary()}
