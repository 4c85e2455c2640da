"""mine(): seeds -> their nearest candidates, aggregated, de-duplicated, within a budget.

The steps: check the options, resolve the seeds (:mod:`.seeds`), build the candidate search
(:mod:`.search`), plan the failure modes (``modes`` only) and fill the budget (:mod:`.aggregation`),
then describe each row (rank, distance, the seeds that found it). :meth:`MineResult.record` is the
selection document a mine leaves behind (``service/selection.py``'s ``record_selection`` stores it).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edgeminer.indexer.scores import highest_first
from edgeminer.indexer.store import Dataset, Store, usable_vectors
from edgeminer.indexer.where import and_, labeled, sql_quote
from edgeminer.service.mining.aggregation import (
    AGGREGATIONS,
    COVER_MAX_POOL,
    DEFAULT_AGGREGATION,
    DEFAULT_MODE_WEIGHTING,
    DEFAULT_POOL_FACTOR,
    DIVERSITY_MODES,
    MODE_WEIGHTINGS,
    TRAIN_SPLIT,
    Fill,
    ModePlan,
    Spread,
    aggregate,
    plan_modes,
)
from edgeminer.service.mining.errors import MiningError
from edgeminer.service.mining.search import (
    NeighbourSearch,
    Ranked,
    candidate_where,
    exported_ids,
    normalize,
    seed_rows_among_candidates,
)
from edgeminer.service.mining.seeds import ResolvedSeeds, Seeds, resolve_seeds_in

__all__ = ["DEFAULT_K", "UNCERTAIN_SCORES", "MineOptions", "MineResult", "mine", "mine_in", "mine_record", "mine_with"]

#: the stored uncertainty scores ``uncertain_share`` can rank by (higher = less certain).
UNCERTAIN_SCORES = ("margin", "least_confidence", "ratio", "entropy")
#: k when the caller does not give one: neighbours per seed used to attribute results to seeds.
DEFAULT_K = 10


@dataclass(frozen=True)
class MineOptions:
    """How to mine: the keyword parameters of :func:`mine` (see there).

    Parameters
    ----------
    budget : int
        Rows wanted; ``min(budget, candidates)`` come back.
    k : int or None
        Neighbours per seed that count as "found by" it (default DEFAULT_K).
    aggregation : str
        One of AGGREGATIONS.
    where : str or None
        A trusted filter clause (from service/filters.py).
    include_labeled, include_exported : bool
        Let labeled / already exported rows be candidates.
    dedup_distance : float or None
        Near-duplicate cosine distance (None: no de-duplication).
    columns : sequence of str or None
        Extra columns on each result row.
    exact : bool or None
        Force the exact or index search (None: ``Store.prefer_exact`` decides).
    seed : int
        Passed to the mode grouping.
    device : str
        Device of the dataset's embedder (text / image seeds).
    mode_weighting : str
        One of MODE_WEIGHTINGS.
    diversity : str or None
        One of DIVERSITY_MODES: spread each mode's share over its ``pool_factor x share`` nearest rows,
        balancing the predicted classes (``balance_classes``), or (``cover``) over the candidates of the
        mode's failure cluster, away from the cluster's training rows; None: the nearest rows only.
    pool_factor : int
        See ``diversity``.
    balance_classes : bool
        See ``diversity``.
    uncertain_share : float
        The share of the budget (in [0, 1]) taken after the mined rows by the ``uncertainty`` score
        instead: the most uncertain candidates not mined (0: mining only). Mining finds the failure
        modes early, uncertainty keeps the accuracy a labeled batch buys once they are fixed (bench/al.py).
    uncertainty : str
        One of UNCERTAIN_SCORES: the stored score column ``uncertain_share`` ranks by.
    """

    budget: int = 100
    k: int | None = None
    aggregation: str = DEFAULT_AGGREGATION
    where: str | None = None
    include_labeled: bool = False
    include_exported: bool = False
    dedup_distance: float | None = None
    columns: Sequence[str] | None = None
    exact: bool | None = None
    seed: int = 0
    device: str = "cpu"
    mode_weighting: str = DEFAULT_MODE_WEIGHTING
    diversity: str | None = None
    pool_factor: int = DEFAULT_POOL_FACTOR
    balance_classes: bool = True
    uncertain_share: float = 0.0
    uncertainty: str = "margin"

    def check(self) -> None:
        """Raise MiningError naming the first option out of range."""
        if self.aggregation not in AGGREGATIONS:
            raise MiningError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, not {self.aggregation!r}")
        if not isinstance(self.budget, int) or self.budget < 1:
            raise MiningError(f"budget must be a positive integer, not {self.budget!r}")
        if self.k is not None and (not isinstance(self.k, int) or self.k < 1):
            raise MiningError(f"k (neighbours per seed) must be a positive integer, not {self.k!r}")
        if self.dedup_distance is not None and not (0.0 <= self.dedup_distance < 2.0):
            raise MiningError(f"dedup_distance is a cosine distance in [0, 2), not {self.dedup_distance!r}")
        if self.mode_weighting not in MODE_WEIGHTINGS:
            raise MiningError(
                f"mode_weighting must be one of {', '.join(MODE_WEIGHTINGS)}, not {self.mode_weighting!r}"
            )
        if self.diversity is not None and self.diversity not in DIVERSITY_MODES:
            raise MiningError(
                f"diversity must be one of {', '.join(DIVERSITY_MODES)} (or none), not {self.diversity!r}"
            )
        if not isinstance(self.pool_factor, int) or not (1 <= self.pool_factor <= 100):
            raise MiningError(f"pool_factor must be an integer in [1, 100], not {self.pool_factor!r}")
        if not isinstance(self.uncertain_share, (int, float)) or not (0.0 <= float(self.uncertain_share) <= 1.0):
            raise MiningError(f"uncertain_share must be a number in [0, 1], not {self.uncertain_share!r}")
        if self.uncertainty not in UNCERTAIN_SCORES:
            raise MiningError(f"uncertainty must be one of {', '.join(UNCERTAIN_SCORES)}, not {self.uncertainty!r}")

    @property
    def neighbours(self) -> int:
        """k, or its default."""
        return int(self.k or DEFAULT_K)

    def params(self, filters: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
        """The request as a selection document records it (``filters``: the structured filters the
        ``where`` clause was built from, as plain dicts)."""
        return {
            "budget": self.budget,
            "k": self.k,
            "aggregation": self.aggregation,
            "mode_weighting": self.mode_weighting,
            "filters": [dict(f) for f in filters],
            "include_labeled": self.include_labeled,
            "include_exported": self.include_exported,
            "dedup_distance": self.dedup_distance,
            "columns": None if self.columns is None else list(self.columns),
            "diversity": self.diversity,
            "pool_factor": self.pool_factor,
            "balance_classes": self.balance_classes,
            "uncertain_share": self.uncertain_share,
            "uncertainty": self.uncertainty,
        }


@dataclass
class MineResult:
    """What :func:`mine` found: the rows (rank, id, distance, seeds, mode, extra columns) and how."""

    dataset: str
    aggregation: str
    budget: int
    k: int
    engine: str
    candidates: int
    rows: list[dict[str, Any]]
    seeds: ResolvedSeeds
    modes: list[dict[str, Any]]
    dedup_removed: int
    version: int
    took_ms: float
    options: MineOptions = field(default_factory=MineOptions)
    #: the seed spec, when mine() was given one (not already resolved seeds)
    spec: Seeds | None = None

    def summary(self) -> dict[str, Any]:
        """The result without its rows (what the CLI prints and the API returns around the items)."""
        return {
            "dataset": self.dataset,
            "aggregation": self.aggregation,
            "budget": self.budget,
            "k": self.k,
            "returned": len(self.rows),
            "candidates": self.candidates,
            "engine": self.engine,
            "seeds": len(self.seeds.ids),
            "modes": self.modes,
            "dedup_removed": self.dedup_removed,
            "uncertain": sum(1 for r in self.rows if "picked_by" in r),
            "version": self.version,
            "took_ms": round(self.took_ms, 1),
        }

    def record(self, filters: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
        """The selection document of this result (kind ``mine``), for exports.

        Parameters
        ----------
        filters : sequence
            The structured filters the request's ``where`` was built from (plain dicts).

        Returns
        -------
        dict
            ``kind``, ``seeds`` (the spec described), ``params``, ``ids`` (in rank order), ``summary``.
        """
        return mine_record(self, self.spec, self.options.params(filters))


def mine_record(
    result: MineResult, seeds: Seeds | None = None, params: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The selection document a mine call leaves behind (kind ``mine``), for exports.

    Parameters
    ----------
    result : MineResult
    seeds : Seeds, optional
        The spec to describe (default the result's own).
    params : mapping, optional
        The request's parameters (default the result's options, without filters).

    Returns
    -------
    dict
    """
    spec = seeds if seeds is not None else result.spec
    return {
        "kind": "mine",
        "seeds": spec.describe() if spec is not None else {"ids": len(result.seeds.ids)},
        "params": dict(params) if params is not None else result.options.params(),
        "ids": [r["id"] for r in result.rows],
        "summary": result.summary(),
    }


def mine(
    store: Store,
    dataset: str,
    seeds: Seeds | ResolvedSeeds,
    *,
    budget: int = 100,
    k: int | None = None,
    aggregation: str = DEFAULT_AGGREGATION,
    where: str | None = None,
    include_labeled: bool = False,
    include_exported: bool = False,
    dedup_distance: float | None = None,
    columns: Sequence[str] | None = None,
    exact: bool | None = None,
    embedder: Any = None,
    seed: int = 0,
    device: str = "cpu",
    mode_weighting: str = DEFAULT_MODE_WEIGHTING,
    diversity: str | None = None,
    pool_factor: int = DEFAULT_POOL_FACTOR,
    balance_classes: bool = True,
    uncertain_share: float = 0.0,
    uncertainty: str = "margin",
) -> MineResult:
    """Nearest candidates of the seeds, aggregated, de-duplicated: ``min(budget, matching)`` rows.

    Nothing is post-filtered into a shortfall: when near-duplicate removal or overlap between seeds
    leaves too few rows, the per-seed search goes deeper until the budget is filled or the candidates
    run out. Each row carries the seeds that found it (the seeds whose ``k`` nearest candidates include
    it; the nearest seed otherwise) and its distance to the nearest seed (``1 - cos``).

    Parameters
    ----------
    store : Store
    dataset : str
    seeds : Seeds or ResolvedSeeds
        What to mine around (resolved here when a spec).
    budget, k, aggregation, where, include_labeled, include_exported, dedup_distance, columns
        See :class:`MineOptions`.
    exact, seed, device, mode_weighting, diversity, pool_factor, balance_classes, uncertain_share, uncertainty
        See :class:`MineOptions`.
    embedder : Embedder, optional
        Embeds text / image seeds (default the dataset's own).

    Returns
    -------
    MineResult

    Raises
    ------
    MiningError
        An option out of range, or seeds that cannot be resolved: SeedsNotFound (ids not in the
        dataset), EmbeddingUnavailable (text / image seeds the dataset's embedder cannot embed).
    """
    options = MineOptions(
        budget=budget, k=k, aggregation=aggregation, where=where, include_labeled=include_labeled,
        include_exported=include_exported, dedup_distance=dedup_distance, columns=columns, exact=exact, seed=seed,
        device=device, mode_weighting=mode_weighting, diversity=diversity, pool_factor=pool_factor,
        balance_classes=balance_classes, uncertain_share=uncertain_share, uncertainty=uncertainty,
    )
    return mine_with(store, dataset, seeds, options, embedder=embedder)


def mine_with(
    store: Store,
    dataset: str,
    seeds: Seeds | ResolvedSeeds,
    options: MineOptions,
    *,
    embedder: Any = None,
) -> MineResult:
    """:func:`mine` with its options in one object: :func:`mine_in` on ``store.dataset(dataset)``.

    Raises
    ------
    DatasetNotFound
        No such dataset; otherwise as :func:`mine`.
    """
    return mine_in(store.dataset(dataset), seeds, options, embedder=embedder)


def mine_in(
    ds: Dataset,
    seeds: Seeds | ResolvedSeeds,
    options: MineOptions,
    *,
    embedder: Any = None,
) -> MineResult:
    """Mine in the dataset ``ds``: check the options, resolve the seeds, search the candidates, plan
    the modes and fill the budget, describe the rows.

    Parameters
    ----------
    ds : Dataset
        The handle every step reads through (the name was checked when it was made).
    seeds : Seeds or ResolvedSeeds
    options : MineOptions
    embedder : Embedder, optional

    Returns
    -------
    MineResult

    Raises
    ------
    MiningError
        As :func:`mine`.
    """
    t0 = time.perf_counter()
    options.check()
    k = options.neighbours
    spec = None if isinstance(seeds, ResolvedSeeds) else seeds
    if isinstance(seeds, ResolvedSeeds):
        resolved = seeds
    else:
        resolved = resolve_seeds_in(ds, seeds, embedder=embedder, device=options.device)
    version = ds.version
    engine = _candidate_search(ds, resolved, options)
    plan, lists, fill, uncertain = _fill_mixed(ds, engine, resolved, options)
    rows = _result_rows(ds, engine, resolved, lists, fill, k, options.columns)
    rows += _uncertain_rows(ds, engine, resolved, uncertain, len(rows), options)
    return MineResult(
        dataset=ds.name,
        aggregation=options.aggregation,
        budget=options.budget,
        k=k,
        engine=engine.engine,
        candidates=engine.n_candidates,
        rows=rows,
        seeds=resolved,
        modes=_modes_info(resolved, plan, fill),
        dedup_removed=fill.removed,
        version=version,
        took_ms=(time.perf_counter() - t0) * 1000,
        options=options,
        spec=spec,
    )


def _fill(
    ds: Dataset, engine: NeighbourSearch, resolved: ResolvedSeeds, options: MineOptions
) -> tuple[ModePlan, Ranked, Fill]:
    """The modes (``modes`` only), each seed's ranked neighbours and the rows picked, for
    ``min(budget, candidates)`` rows (nothing when there are no candidates)."""
    target = min(options.budget, engine.n_candidates)
    if target <= 0:
        return ModePlan(), [], Fill([], {}, 0)
    plan = ModePlan()
    if options.aggregation == "modes":
        plan = plan_modes(ds, resolved, target, weighting=options.mode_weighting, seed=options.seed)
    lists, fill = aggregate(
        engine, resolved, options.aggregation, target=target, k=options.neighbours,
        dedup_distance=options.dedup_distance, plan=plan, spread=_spread(ds, engine, options),
    )
    return plan, lists, fill


def _fill_mixed(
    ds: Dataset, engine: NeighbourSearch, resolved: ResolvedSeeds, options: MineOptions
) -> tuple[ModePlan, Ranked, Fill, list[tuple[str, float]]]:
    """:func:`_fill` for the mined part of the budget, then the ``uncertain_share`` part: the most
    uncertain candidates not mined, as (id, score). When too few candidates have the score, mining
    takes the rest of the budget."""
    target = min(options.budget, engine.n_candidates)
    n_unc = int(round(target * float(options.uncertain_share)))
    if n_unc <= 0:
        return (*_fill(ds, engine, resolved, options), [])
    mined = target - n_unc
    plan, lists, fill = _fill(ds, engine, resolved, replace(options, budget=mined)) if mined else (
        ModePlan(), [], Fill([], {}, 0))
    uncertain = _most_uncertain(ds, engine.where, set(fill.order), n_unc, options)
    if len(uncertain) < n_unc:  # too few scored candidates: mining fills the budget
        plan, lists, fill = _fill(ds, engine, resolved, replace(options, budget=target - len(uncertain)))
        uncertain = _most_uncertain(ds, engine.where, set(fill.order), len(uncertain), options)
    return plan, lists, fill, uncertain


def _most_uncertain(
    ds: Dataset, where: str, exclude: set[str], n: int, options: MineOptions
) -> list[tuple[str, float]]:
    """The ``n`` candidates with the highest ``options.uncertainty`` score, not in ``exclude`` (ties in
    a seeded random order); candidates without the score are skipped."""
    if n <= 0:
        return []
    col = options.uncertainty
    if col not in ds.schema.names:
        raise MiningError(
            f"uncertain_share ranks by the {col!r} score, and dataset {ds.name!r} has none: ingest the rows "
            f"with the model's probabilities, or set uncertain_share to 0"
        )
    table = ds.query(where=where, columns=["id", col])
    ids = np.asarray(table["id"].to_pylist(), dtype=object)
    score = np.asarray([np.nan if v is None else v for v in table[col].to_pylist()], dtype=np.float64)
    keep = ~np.isnan(score) & np.asarray([i not in exclude for i in ids.tolist()], dtype=bool)
    ids, score = ids[keep], score[keep]
    base = np.argsort(ids, kind="stable")  # the result depends on the data and the seed only
    ids, score = ids[base], score[base]
    order = highest_first(score, np.random.default_rng(options.seed))[:n]
    return [(str(ids[j]), float(score[j])) for j in order]


def _uncertain_rows(
    ds: Dataset, engine: NeighbourSearch, resolved: ResolvedSeeds, picks: list[tuple[str, float]], first: int,
    options: MineOptions,
) -> list[dict[str, Any]]:
    """Result rows for the ``uncertain_share`` picks, ranked after the ``first`` mined rows: no seed
    found them (``seeds`` empty); ``distance`` is to the nearest seed, ``picked_by`` says why."""
    if not picks:
        return []
    ids = [i for i, _ in picks]
    dist = _seed_distances(engine, resolved, [], ids)
    extra = _extra_columns(ds, ids, options.columns)
    rows = []
    for n, ((i, score), d) in enumerate(zip(picks, dist, strict=True)):
        row: dict[str, Any] = {
            "id": i,
            "rank": first + n + 1,
            "distance": round(float(d.min()), 6),
            "seeds": [],
            "picked_by": options.uncertainty,
            options.uncertainty: round(score, 6),
        }
        row.update({c: v for c, v in extra.get(i, {}).items() if c not in ("id", options.uncertainty)})
        rows.append(row)
    return rows


def _spread(ds: Dataset, engine: NeighbourSearch, options: MineOptions) -> Spread | None:
    """The diversity mode's spreading (None when off): vectors from the search, predictions from the store."""
    if options.diversity is None:
        return None

    def preds_of(ids: list[str]) -> list[str]:
        table = ds.get_samples(ids, columns=["id", "pred_label"])
        got = dict(zip(table["id"].to_pylist(), table["pred_label"].to_pylist(), strict=True))
        return [str(got.get(i) or "") for i in ids]

    def probs_of(ids: list[str]) -> np.ndarray:
        rows = ds.get_samples(ids, columns=["id", "probs"])
        got = dict(zip(rows["id"].to_pylist(), rows["probs"].to_pylist(), strict=True))
        width = max([len(ds.info.classes), 1, *(len(p) for p in got.values() if p)])
        out = np.full((len(ids), width), 1.0 / width)  # no probabilities: as uncertain as can be
        for n, i in enumerate(ids):
            p = got.get(i)
            if p and all(np.isfinite(p)) and sum(p) > 0:
                out[n] = 0.0
                out[n, : len(p)] = np.asarray(p) / sum(p)
        return out

    pools: dict[int, list[str]] = {}  # a deeper search re-fills the modes: read each cluster once

    def cluster_pool(cluster: int) -> list[str]:
        """The candidates in an analysis cluster that have a usable vector, a seeded sample of
        COVER_MAX_POOL when there are more (sorted first: the pick depends on the data and seed only)."""
        if cluster not in pools:
            ids = engine.candidates_matching(f"cluster = {int(cluster)}")
            if len(ids) > COVER_MAX_POOL:
                ids = sorted(np.random.default_rng(options.seed).choice(ids, COVER_MAX_POOL, replace=False).tolist())
            pools[cluster] = ids
        return pools[cluster]

    def trained_in(cluster: int) -> np.ndarray:
        """The normalised vectors of the cluster's training rows (labeled, split TRAIN_SPLIT)."""
        where = and_(labeled(), f"split = {sql_quote(TRAIN_SPLIT)}", f"cluster = {int(cluster)}")
        _, vecs = ds.vectors(where=where)
        vecs = vecs[usable_vectors(vecs)] if len(vecs) else vecs
        return normalize(vecs) if len(vecs) else np.zeros((0, ds.dim), np.float32)

    cover = options.diversity == "cover" and "cluster" in ds.schema.names
    return Spread(
        options.diversity, engine.vectors_of, preds_of, pool_factor=options.pool_factor,
        balance=options.balance_classes, seed=options.seed, probs_of=probs_of,
        cluster_pool=cluster_pool if cover else None, trained_in=trained_in if cover else None,
    )


def _candidate_search(ds: Dataset, resolved: ResolvedSeeds, options: MineOptions) -> NeighbourSearch:
    """The search over the candidates: the caller's filter, minus seeds and (usually) exported rows."""
    clause = candidate_where(
        options.where,
        include_labeled=options.include_labeled,
        include_exported=options.include_exported,
        exclude_ids=seed_rows_among_candidates(ds, resolved.ids, include_labeled=options.include_labeled),
        exported_ids=None if options.include_exported else exported_ids(ds),
    )
    return NeighbourSearch(ds, clause, exact=options.exact, n_queries=len(resolved.ids))


def _modes_info(resolved: ResolvedSeeds, plan: ModePlan, fill: Fill) -> list[dict[str, Any]]:
    return [
        {
            "mode": n,
            "size": len(g),
            "weight": round(w, 3),
            "share": s,
            "found": sum(1 for m in fill.mode_of.values() if m == n),
            "cluster": c,
            "seeds": [resolved.ids[j] for j in g[:50]],
        }
        for n, (g, s, w, c) in enumerate(zip(plan.groups, plan.shares, plan.weights, plan.clusters, strict=True))
    ]


def _result_rows(
    ds: Dataset,
    engine: NeighbourSearch,
    resolved: ResolvedSeeds,
    lists: Ranked,
    fill: Fill,
    k: int,
    columns: Sequence[str] | None,
) -> list[dict[str, Any]]:
    order = fill.order
    if not order:
        return []
    dist = _seed_distances(engine, resolved, lists, order)
    found_by: dict[str, list[int]] = {}
    for n, (ids, _) in enumerate(lists):
        for i in ids[:k]:
            found_by.setdefault(i, []).append(n)
    extra = _extra_columns(ds, order, columns)
    rows = []
    for rank, (i, d) in enumerate(zip(order, dist, strict=True)):
        near = int(np.argmin(d))
        seeds = found_by.get(i) or [near]
        row: dict[str, Any] = {
            "id": i,
            "rank": rank + 1,
            "distance": round(float(d[near]), 6),
            "seeds": [resolved.ids[n] for n in sorted(seeds, key=lambda n: d[n])],
        }
        if i in fill.mode_of:
            row["mode"] = fill.mode_of[i]
        row.update({c: v for c, v in extra.get(i, {}).items() if c != "id"})
        rows.append(row)
    return rows


def _seed_distances(engine: NeighbourSearch, resolved: ResolvedSeeds, lists: Ranked, order: list[str]) -> np.ndarray:
    """Cosine distances (results, seeds); with one seed, the search's own distances when it has them all."""
    single = dict(zip(*lists[0], strict=True)) if len(resolved.ids) == 1 and lists else {}
    if single and all(i in single for i in order):
        return np.asarray([[single[i]] for i in order], np.float32)
    vecs = engine.vectors_of(order)
    return 1.0 - vecs @ resolved.vectors.T


def _extra_columns(ds: Dataset, order: list[str], columns: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    cols = [c for c in dict.fromkeys(columns or []) if c not in ("id", "embedding")]
    if not cols:
        return {}
    return {r["id"]: r for r in ds.get_samples(order, columns=["id", *cols]).to_pylist()}
