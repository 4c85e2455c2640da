"""Aggregation: many seeds' ranked neighbours -> one ordered, de-duplicated list within a budget.

Each seed ranks the candidates by cosine distance; the aggregations combine those rankings:

- ``round_robin``: each seed's nearest in turn, so one dense seed cannot take the whole budget;
- ``min_distance``: rows closest to any seed first;
- ``mean``: rows closest to the (normalised) centroid of the seeds;
- ``reciprocal_rank``: sum over seeds of 1 / (60 + rank) (RRF), highest first (full rankings on the
  exact path; each seed's top list on the index path, rows outside a list adding 0);
- ``modes`` (default): seeds are grouped into failure modes (:func:`seed_modes`); the budget is shared
  across modes (:func:`share_budget`, largest remainder) by their size times how systematic the failure
  is there (:func:`mode_weights`), and each mode's share is filled by ``min_distance`` within the mode.

Nothing is post-filtered into a shortfall: :func:`aggregate` searches deeper until the budget is filled
or the candidates run out.

Diversity (:class:`Spread`, ``diversity=`` on mine): instead of the nearest rows only, each mode's share
(the whole budget for the other aggregations) is picked from a candidate pool of ``pool_factor x share``
rows nearest the mode, spread over that pool (``kcenter``: k-center greedy with the mode's seeds as the
first centers; ``typical``: k-means into ``share`` clusters, the most typical row of each;
``uncertain``: the pool's least certain rows by margin; ``badge``: BADGE within the pool, which mixes
uncertainty and spread and is not capped), at most
``ceil(share / predicted classes in the pool)`` rows per predicted class (``balance``), so a budget of
200 does not buy 200 near-copies of one class. The cap yields to the budget: what it leaves unfilled is
taken without it. Near-duplicate removal is not applied in this mode (spreading subsumes it).

``cover`` spreads a mode over its whole failure cluster instead of its seeds' neighbourhood: when the
mode's seeds share one analysis cluster, its share is picked by k-center greedy among that cluster's
candidates (at most COVER_MAX_POOL, a seeded sample beyond), with the cluster's training rows (split
TRAIN_SPLIT, labeled) as the first centers, so the picks fill the parts of the failure mode the model has
no training rows in yet, near the known errors or not. Not capped per predicted class (k-center already
spreads them; the cap cost planted-slice accuracy in bench/al.py). A mode without one cluster (mixed,
noise, no analysis) is spread the ``kcenter`` way over its nearest rows, its seeds as the first centers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from edgeminer.indexer.store import Dataset
from edgeminer.indexer.where import not_null, ok_and, sql_quote
from edgeminer.service.mining.search import NeighbourSearch, Ranked, normalize
from edgeminer.service.mining.seeds import ResolvedSeeds

__all__ = [
    "AGGREGATIONS",
    "DEFAULT_AGGREGATION",
    "COVER_MAX_POOL",
    "DEFAULT_POOL_FACTOR",
    "DIVERSITY_MODES",
    "DEFAULT_MODE_WEIGHTING",
    "LOCAL_ERROR_K",
    "MODE_WEIGHTINGS",
    "RRF_K",
    "Aggregation",
    "Diversity",
    "Fill",
    "ModePlan",
    "ModeWeighting",
    "Spread",
    "aggregate",
    "fill_lists",
    "fits_training_split",
    "learnable_rates",
    "mode_cluster",
    "mode_plan",
    "mode_weights",
    "plan_modes",
    "seed_modes",
    "share_budget",
    "weights_by_mode",
]

#: how the neighbours of several seeds are merged into one ranking (the API's ``aggregation`` field).
Aggregation = Literal["modes", "round_robin", "min_distance", "mean", "reciprocal_rank"]
AGGREGATIONS: tuple[Aggregation, ...] = get_args(Aggregation)
DEFAULT_AGGREGATION = "modes"
RRF_K = 60.0
#: how the ``modes`` aggregation shares the budget between failure modes (the API's ``mode_weighting``).
ModeWeighting = Literal["learnable_error_rate", "local_error_rate", "cluster_error_rate", "size"]
MODE_WEIGHTINGS: tuple[ModeWeighting, ...] = get_args(ModeWeighting)
DEFAULT_MODE_WEIGHTING: ModeWeighting = "learnable_error_rate"
#: judged (labeled, with a correct flag) neighbours per seed that estimate its local error rate.
LOCAL_ERROR_K = 20
#: the split whose rows the model was trained on (``learnable_error_rate`` asks how well it fits them).
TRAIN_SPLIT = "train"
#: how a diversity mine spreads a mode's share over its neighbourhood (see the module doc).
Diversity = Literal["kcenter", "typical", "uncertain", "badge", "cover"]
DIVERSITY_MODES: tuple[Diversity, ...] = get_args(Diversity)
#: ``cover`` picks among at most this many of a failure cluster's candidates (a seeded sample beyond).
COVER_MAX_POOL = 50_000
#: a diversity mine picks each mode's share among this many times as many nearest rows.
DEFAULT_POOL_FACTOR = 4


# ----------------------------------------------------------------------------------------------
# Orders over the seeds' ranked lists
# ----------------------------------------------------------------------------------------------


def _round_robin(lists: Ranked) -> list[str]:
    order: list[str] = []
    seen: set[str] = set()
    longest = max((len(ids) for ids, _ in lists), default=0)
    for r in range(longest):
        for ids, _ in lists:
            if r < len(ids) and ids[r] not in seen:
                seen.add(ids[r])
                order.append(ids[r])
    return order


def _best_distance(lists: Ranked) -> dict[str, float]:
    best: dict[str, float] = {}
    for ids, dist in lists:
        for i, d in zip(ids, dist.tolist(), strict=True):
            if d < best.get(i, math.inf):
                best[i] = d
    return best


def _min_distance(lists: Ranked) -> tuple[list[str], float]:
    """Rows by distance to their nearest seed, and the distance up to which that order is exact
    (rows not in any list are at least this far from every seed)."""
    best = _best_distance(lists)
    exact_upto = min((float(dist[-1]) for _, dist in lists if len(dist)), default=math.inf)
    return sorted(best, key=lambda i: (best[i], i)), exact_upto


def _reciprocal_rank(lists: Ranked) -> list[str]:
    score: dict[str, float] = {}
    for ids, _ in lists:
        for r, i in enumerate(ids):
            score[i] = score.get(i, 0.0) + 1.0 / (RRF_K + r + 1)
    return sorted(score, key=lambda i: (-score[i], i))


def _interleave(parts: list[list[str]]) -> list[str]:
    out: list[str] = []
    longest = max((len(p) for p in parts), default=0)
    for r in range(longest):
        for p in parts:
            if r < len(p):
                out.append(p[r])
    return out


# ----------------------------------------------------------------------------------------------
# Failure modes
# ----------------------------------------------------------------------------------------------


def seed_modes(seeds: ResolvedSeeds, *, seed: int = 0) -> list[list[int]]:
    """Group seeds into failure modes.

    Seeds with an analysis cluster (>= 0) are grouped by it; the rest by a clustering of their vectors
    (HDBSCAN, noise seeds alone; fewer than 6 loose seeds stay one mode each).

    Parameters
    ----------
    seeds : ResolvedSeeds
    seed : int
        Unused (HDBSCAN is deterministic); kept for the call signature.

    Returns
    -------
    list of list of int
        Seed positions per mode, largest mode first.
    """
    groups: dict[Any, list[int]] = {}
    loose: list[int] = []
    for n, c in enumerate(seeds.clusters):
        if c is not None and int(c) >= 0:
            groups.setdefault(("cluster", int(c)), []).append(n)
        else:
            loose.append(n)
    if len(loose) >= 6:
        import hdbscan

        min_size = max(2, min(10, len(loose) // 20 + 2))
        labels = hdbscan.HDBSCAN(min_cluster_size=min_size, min_samples=1).fit_predict(
            seeds.vectors[loose].astype(np.float64)
        )
        for n, lab in zip(loose, labels.tolist(), strict=True):
            key = ("vectors", int(lab)) if lab >= 0 else ("seed", n)
            groups.setdefault(key, []).append(n)
    else:
        for n in loose:
            groups[("seed", n)] = [n]
    return sorted(groups.values(), key=lambda g: (-len(g), g[0]))


def mode_cluster(resolved: ResolvedSeeds, group: list[int]) -> int | None:
    """The analysis cluster all seeds of a mode share, or None (mixed, unknown or noise)."""
    cs = {resolved.clusters[n] for n in group}
    if len(cs) == 1:
        c = next(iter(cs))
        return int(c) if c is not None and int(c) >= 0 else None
    return None


def mode_weights(ds: Dataset, resolved: ResolvedSeeds, groups: list[list[int]], *, weighting: str) -> list[float]:
    """How much of the budget each mode deserves: its size (seeds), times how systematic the failure is.

    A dense region of failures keeps its share; a stray error among rows the model gets right (a
    one-off, or label noise) gets little.

    Parameters
    ----------
    ds : Dataset
    resolved : ResolvedSeeds
    groups : list of list of int
        The modes (see :func:`seed_modes`).
    weighting : str
        ``local_error_rate``: the share of wrong predictions among the LOCAL_ERROR_K judged labeled rows
        nearest each seed (summed over the mode); ``learnable_error_rate``: that share among the
        judged rows *outside* the training split (errors the model makes on rows it was not fitted to),
        times the share of the LOCAL_ERROR_K training rows nearest the seed that the model gets right
        (:func:`learnable_rates`), when the model does fit its training split
        (:func:`fits_training_split`; else ``local_error_rate``); ``cluster_error_rate``: the error
        rate of the mode's analysis cluster (times its size); ``size``: the size alone.

    Returns
    -------
    list of float
        One weight per mode.
    """
    sizes = [float(len(g)) for g in groups]
    if weighting == "size":
        return sizes
    if weighting == "cluster_error_rate":
        return _cluster_error_weights(ds, resolved, groups, sizes)
    if weighting == "learnable_error_rate":
        rate = _learnable_error_rates(ds, resolved)
    else:
        rate = _local_error_rates(ds, resolved, ok_and(not_null("correct")))
    return weights_by_mode(rate, groups)


def weights_by_mode(rate: np.ndarray | None, groups: list[list[int]]) -> list[float]:
    """Each mode's weight: the sum of its seeds' ``rate``; the modes' sizes when there is no rate or every
    weight is 0 (nothing would be shared out)."""
    weights = [] if rate is None else [float(rate[g].sum()) for g in groups]
    return weights if sum(weights) > 0 else [float(len(g)) for g in groups]


def _cluster_error_weights(
    ds: Dataset, resolved: ResolvedSeeds, groups: list[list[int]], sizes: list[float]
) -> list[float]:
    out = []
    for g, size in zip(groups, sizes, strict=True):
        c = mode_cluster(resolved, g)
        if c is None:
            out.append(size)
            continue
        n_judged = ds.count(f"cluster = {c} AND correct IS NOT NULL")
        n_wrong = ds.count(f"cluster = {c} AND correct = false")
        out.append(size * (n_wrong / n_judged if n_judged else 1.0))
    return out


def _local_error_rates(ds: Dataset, resolved: ResolvedSeeds, where: str) -> np.ndarray | None:
    """Per seed: the share of wrong predictions among its LOCAL_ERROR_K nearest rows matching ``where``
    (judged rows; the other seeds count, they are failures there too; the seed itself does not). None
    when no row matches."""
    rights = _nearest_correct(ds, resolved, where)
    return None if rights is None else 1.0 - np.nan_to_num(rights, nan=0.0)


def _nearest_correct(ds: Dataset, resolved: ResolvedSeeds, where: str) -> np.ndarray | None:
    """Per seed: the share of its LOCAL_ERROR_K nearest rows matching ``where`` (itself excluded) the model
    gets right, NaN for a seed with no such row; None when no row matches."""
    judged = NeighbourSearch(ds, where, n_queries=len(resolved.ids))
    if judged.n_candidates == 0:
        return None
    lists = judged.ranked(resolved.vectors, LOCAL_ERROR_K + 1)
    lists = [
        ([i for i in ids if i != sid][:LOCAL_ERROR_K], d) for sid, (ids, d) in zip(resolved.ids, lists, strict=True)
    ]
    near_ids = sorted({i for ids, _ in lists for i in ids})
    table = ds.get_samples(near_ids, columns=["id", "correct"])
    right = {i for i, c in zip(table["id"].to_pylist(), table["correct"].to_pylist(), strict=True) if c is True}
    return np.asarray([np.mean([i in right for i in ids]) if ids else np.nan for ids, _ in lists])


def _learnable_error_rates(ds: Dataset, resolved: ResolvedSeeds) -> np.ndarray | None:
    """``learnable_error_rate`` per seed (see :func:`learnable_rates`) from the store: held-out judged
    rows (split other than TRAIN_SPLIT, or none) and the training split's judged rows. Without held-out
    rows, or when the model is not significantly more accurate on its training split than on the
    held-out rows (:func:`fits_training_split`), it is ``local_error_rate``."""
    judged = ok_and(not_null("correct"))
    train = ok_and(not_null("correct"), f"split = {sql_quote(TRAIN_SPLIT)}")
    held_out = ok_and(not_null("correct"), f"(split IS NULL OR split != {sql_quote(TRAIN_SPLIT)})")
    fitted = fits_training_split(
        ds.count(f"{train} AND correct = true"), ds.count(train),
        ds.count(f"{held_out} AND correct = true"), ds.count(held_out),
    )
    if not fitted:
        return _local_error_rates(ds, resolved, judged)
    rate = _local_error_rates(ds, resolved, held_out)
    fit = _nearest_correct(ds, resolved, train)
    return None if rate is None else learnable_rates(rate, fit)


def fits_training_split(train_right: int, train_n: int, held_right: int, held_n: int, alpha: float = 0.05) -> bool:
    """Is the model more accurate on its training split than on the held-out rows (one-sided
    two-proportion z-test at ``alpha``)? Only then are the stored predictions of training rows those of a
    model fitted to them, and how well it fits them says how well it learns from labels there. When they
    are not (predictions from a model trained on other data, a split name that means something else)
    the learnable weighting would read a training row's error as "cannot be learnt" and starve that
    failure mode; it falls back to ``local_error_rate`` instead."""
    if train_n <= 0 or held_n <= 0:
        return False
    p_train, p_held = train_right / train_n, held_right / held_n
    pooled = (train_right + held_right) / (train_n + held_n)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / train_n + 1.0 / held_n))
    if se == 0.0:
        return False
    z = (p_train - p_held) / se
    return bool(0.5 * math.erfc(z / math.sqrt(2.0)) < alpha)


def learnable_rates(held_out_error_rate: np.ndarray, train_fit: np.ndarray | None) -> np.ndarray:
    """How much labeling more rows like a seed can buy: its local error rate on rows the model was not
    trained on, times how well the model fits the training rows nearest it (1 without training rows).

    Why: labels only help where the retrained model learns from them. The demo CNN trained on the train
    split plus half of the other planted rows fits 16% of its inverted training digits, 38% of the small
    ones, 68% of the rotated and 98% of the thick ones; by error rate alone the first two take most of
    the mined budget and their labels buy little. Errors on the training rows themselves say the same
    thing (the model cannot fit them), so they do not count as evidence of a failure worth labeling, as
    they do in ``local_error_rate``."""
    rate = np.asarray(held_out_error_rate, dtype=np.float64)
    if train_fit is None:
        return rate
    return rate * np.nan_to_num(np.asarray(train_fit, dtype=np.float64), nan=1.0)


def share_budget(sizes: Sequence[float], budget: int) -> list[int]:
    """Split ``budget`` across groups in proportion to their sizes (largest remainder).

    Parameters
    ----------
    sizes : sequence of float
        One non-negative weight per group.
    budget : int

    Returns
    -------
    list of int
        One share per group, summing to ``budget`` (all 0 when the sizes or the budget are 0).
    """
    total = float(sum(sizes))
    if total <= 0 or budget <= 0:
        return [0] * len(sizes)
    raw = [budget * s / total for s in sizes]
    out = [int(math.floor(r)) for r in raw]
    rest = budget - sum(out)
    for n in sorted(range(len(sizes)), key=lambda n: (-(raw[n] - out[n]), -sizes[n], n))[:rest]:
        out[n] += 1
    return out


@dataclass
class ModePlan:
    """The failure modes of a ``modes`` mine: seed positions, weights, budget shares and the analysis
    cluster all of a mode's seeds share (None: mixed, noise or none) per mode (all empty for the other
    aggregations)."""

    groups: list[list[int]] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    shares: list[int] = field(default_factory=list)
    clusters: list[int | None] = field(default_factory=list)


def plan_modes(
    ds: Dataset, resolved: ResolvedSeeds, target: int, *, weighting: str, seed: int = 0
) -> ModePlan:
    """Group the seeds into modes and share ``target`` rows across them.

    Parameters
    ----------
    ds : Dataset
    resolved : ResolvedSeeds
    target : int
        Rows to share (the budget, capped at the candidate count).
    weighting : str
        One of MODE_WEIGHTINGS (see :func:`mode_weights`).
    seed : int
        Passed to :func:`seed_modes`.

    Returns
    -------
    ModePlan
    """
    groups = seed_modes(resolved, seed=seed)
    return mode_plan(resolved, groups, mode_weights(ds, resolved, groups, weighting=weighting), target)


def mode_plan(resolved: ResolvedSeeds, groups: list[list[int]], weights: list[float], target: int) -> ModePlan:
    """The plan of modes with these weights: ``target`` shared by :func:`share_budget`, each mode's
    analysis cluster by :func:`mode_cluster` (the step :func:`plan_modes` and the simulator share)."""
    return ModePlan(groups, weights, share_budget(weights, target), [mode_cluster(resolved, g) for g in groups])


# ----------------------------------------------------------------------------------------------
# Filling the budget
# ----------------------------------------------------------------------------------------------


class _Deduper:
    """Greedy near-duplicate removal: a row closer than ``threshold`` to a kept row is skipped."""

    def __init__(self, engine: NeighbourSearch | None, threshold: float | None):
        if threshold is not None and engine is None:
            raise ValueError("near-duplicate removal needs the search engine (for the vectors)")
        self.engine = engine
        self.threshold = threshold
        self.kept = np.zeros((0, 0), np.float32)
        self.removed = 0

    def accept(self, ids: list[str], limit: int, taken: set[str]) -> list[str]:
        """Up to ``limit`` of ``ids`` in order, skipping taken rows and near-duplicates of kept ones."""
        fresh = [i for i in ids if i not in taken]
        if self.threshold is None:
            picked = fresh[:limit]
            taken.update(picked)
            return picked
        out: list[str] = []
        for start in range(0, len(fresh), 256):
            if len(out) >= limit:
                break
            chunk = fresh[start : start + 256]
            assert self.engine is not None
            for i, v in zip(chunk, self.engine.vectors_of(chunk), strict=True):
                if len(out) >= limit:
                    break
                if len(self.kept) and float(np.max(self.kept @ v)) > 1.0 - self.threshold:
                    self.removed += 1
                    continue
                self.kept = v[None, :] if not len(self.kept) else np.vstack([self.kept, v[None, :]])
                taken.add(i)
                out.append(i)
        return out


@dataclass
class Fill:
    """The rows picked (in result order), the mode that picked each (``modes`` only), how many
    near-duplicates were skipped, and whether the order is final (budget filled, exact up to its end,
    or no deeper search possible)."""

    order: list[str]
    mode_of: dict[str, int]
    removed: int
    complete: bool = True


def _take(orders: list[list[str]], target: int, deduper: _Deduper, exhausted: bool) -> Fill:
    taken: set[str] = set()
    picked = deduper.accept(orders[0], target, taken)
    return Fill(picked, {}, deduper.removed, len(picked) >= target or exhausted)


def _fill_simple(lists: Ranked, aggregation: str, target: int, deduper: _Deduper, exhausted: bool) -> Fill:
    exact_upto = math.inf
    if aggregation == "round_robin":
        order = _round_robin(lists)
    elif aggregation == "min_distance":
        order, exact_upto = _min_distance(lists)
    else:
        order = _reciprocal_rank(lists)
    taken: set[str] = set()
    picked = deduper.accept(order, target, taken)
    complete = len(picked) >= target
    if complete and picked and math.isfinite(exact_upto):
        # min_distance's order is exact only up to the shallowest list's last distance: go deeper past it
        best = _best_distance(lists)
        complete = max(best[i] for i in picked) <= exact_upto
    return Fill(picked, {}, deduper.removed, complete or exhausted)


def _fill_modes(
    lists: Ranked, plan: ModePlan, target: int, deduper: _Deduper, exhausted: bool
) -> Fill:
    """Each mode's share by min_distance within the mode (larger modes first); shortfalls (overlap,
    dedup) are filled from all seeds by distance. Results interleave modes by rank."""
    taken: set[str] = set()
    complete = True
    per_mode: list[list[str]] = []
    best_all = _best_distance(lists)
    for g, share in zip(plan.groups, plan.shares, strict=True):
        got: list[str] = []
        if share:
            sub = [lists[n] for n in g]
            order, exact_upto = _min_distance(sub)
            got = deduper.accept(order, share, taken)
            if len(got) < share:
                complete = False
            elif got and math.isfinite(exact_upto):
                best = _best_distance(sub)
                complete = complete and max(best[i] for i in got) <= exact_upto
        per_mode.append(got)
    mode_of = {i: n for n, part in enumerate(per_mode) for i in part}
    ordered = _interleave(per_mode)
    if len(ordered) < target:
        order = sorted(best_all, key=lambda i: (best_all[i], i))
        ordered.extend(deduper.accept(order, target - len(ordered), taken))
    complete = complete and len(ordered) >= target
    return Fill(ordered, mode_of, deduper.removed, complete or exhausted)


@dataclass(frozen=True)
class Spread:
    """How a diversity mine spreads each mode's share (see the module doc).

    Parameters
    ----------
    method : str
        One of DIVERSITY_MODES.
    vectors_of : callable
        ids -> their normalised vectors (``NeighbourSearch.vectors_of``, or an in-memory lookup).
    preds_of : callable
        ids -> their predicted classes (the current model's).
    pool_factor : int
        The pool a share is picked from holds ``pool_factor x share`` nearest rows.
    balance : bool
        Cap the rows per predicted class within a mode.
    seed : int
        Seeds k-means (``typical``) and the first k-center pick when there are no centers.
    probs_of : callable, optional
        ids -> their class probabilities (the current model's); ``uncertain`` and ``badge`` need it.
    cluster_pool : callable, optional
        ``cover``: analysis cluster -> the ids of its candidates (at most COVER_MAX_POOL).
    trained_in : callable, optional
        ``cover``: analysis cluster -> the normalised vectors of its training rows (the first centers).
    """

    method: str
    vectors_of: Callable[[list[str]], np.ndarray]
    preds_of: Callable[[list[str]], list[str]]
    pool_factor: int = DEFAULT_POOL_FACTOR
    balance: bool = True
    seed: int = 0
    probs_of: Callable[[list[str]], np.ndarray] | None = None
    cluster_pool: Callable[[int], list[str]] | None = None
    trained_in: Callable[[int], np.ndarray] | None = None

    def pick(self, pool: list[str], share: int, centers: np.ndarray) -> list[str]:
        """``min(share, len(pool))`` ids of ``pool`` spread over it (see the module doc)."""
        from edgeminer.service.diversity import capped_kcenter, kcenter_greedy, typical_pick

        if share <= 0 or not pool:
            return []
        x = np.asarray(self.vectors_of(pool), dtype=np.float64)
        if self.method == "cover":
            return [pool[j] for j in kcenter_greedy(x, share, centers=centers, seed=self.seed)]
        preds = list(self.preds_of(pool))
        cap = math.ceil(share / max(1, len(set(preds)))) if self.balance else None
        if self.method in ("uncertain", "badge"):
            picks = self._by_probs(pool, x, share, preds, cap)
        elif self.method == "typical":
            picks = typical_pick(x, share, groups=preds, cap=cap, seed=self.seed)
        else:
            picks = capped_kcenter(x, share, centers=centers, groups=preds, cap=cap, seed=self.seed)
            if len(picks) < min(share, len(pool)):  # the cap yields to the budget
                left = np.ones(len(pool), bool)
                left[picks] = False
                more = np.vstack([centers, x[picks]]) if len(centers) else x[picks]
                picks += capped_kcenter(x, share - len(picks), centers=more, allowed=left, seed=self.seed)
        return [pool[j] for j in picks]

    def _by_probs(self, pool: list[str], x: np.ndarray, share: int, preds: list[str], cap: int | None) -> list[int]:
        from edgeminer.service.diversity import badge

        if self.probs_of is None:
            raise ValueError(f"diversity {self.method!r} needs the rows' probabilities (probs_of)")
        probs = np.asarray(self.probs_of(pool), dtype=np.float64)
        if self.method == "badge":
            return badge(probs, x, share, rng=self.seed)
        top = -np.sort(-probs, axis=1)
        margin = top[:, 0] - (top[:, 1] if probs.shape[1] > 1 else 0.0)
        order = np.argsort(margin, kind="stable").tolist()  # least certain first
        picks: list[int] = []
        used: dict[str, int] = {}
        for limit in (cap, None):  # the second pass fills what the cap left, without it
            for j in order:
                if len(picks) >= share:
                    break
                if j in picks or (limit is not None and used.get(preds[j], 0) >= limit):
                    continue
                picks.append(j)
                used[preds[j]] = used.get(preds[j], 0) + 1
        return picks


def _order(lists: Ranked, aggregation: str) -> tuple[list[str], float]:
    """One aggregation's order over the lists, and the distance up to which it is exact (inf: all)."""
    if aggregation == "round_robin":
        return _round_robin(lists), math.inf
    if aggregation == "min_distance":
        return _min_distance(lists)
    return _reciprocal_rank(lists), math.inf


def _fill_spread(
    lists: Ranked, groups: list[list[int]], shares: list[int], target: int, aggregation: str, spread: Spread,
    centers: np.ndarray, exhausted: bool, *, modes: bool, clusters: Sequence[int | None] = (),
) -> Fill:
    """Each group's share spread over its ``pool_factor x share`` nearest rows (group order:
    ``aggregation`` over the group's lists), or for ``cover`` over its cluster's candidates (``clusters``:
    each group's analysis cluster or None); shortfalls from all seeds by distance."""
    taken: set[str] = set()
    complete = True
    per_group: list[list[str]] = []
    for n_group, (g, share) in enumerate(zip(groups, shares, strict=True)):
        if not share:
            per_group.append([])
            continue
        cluster = clusters[n_group] if n_group < len(clusters) else None
        if spread.method == "cover" and cluster is not None and spread.cluster_pool is not None:
            pool = [i for i in spread.cluster_pool(cluster) if i not in taken]
            if pool:  # the whole cluster is the pool: complete by construction
                first = spread.trained_in(cluster) if spread.trained_in is not None else np.zeros((0, 0))
                got = spread.pick(pool, share, first)
                taken.update(got)
                per_group.append(got)
                continue
        order, _ = _order([lists[n] for n in g], aggregation)
        pool = [i for i in order if i not in taken][: spread.pool_factor * share]
        complete = complete and len(pool) >= spread.pool_factor * share
        got = spread.pick(pool, share, centers[g] if len(centers) else centers)
        taken.update(got)
        per_group.append(got)
    mode_of = {i: n for n, part in enumerate(per_group) for i in part} if modes else {}
    ordered = _interleave(per_group)
    if len(ordered) < target:
        best_all = _best_distance(lists)
        rest = [i for i in sorted(best_all, key=lambda i: (best_all[i], i)) if i not in taken]
        ordered.extend(rest[: target - len(ordered)])
    return Fill(ordered, mode_of, 0, (complete and len(ordered) >= target) or exhausted)


def _spread_all(
    lists: Ranked, aggregation: str, plan: ModePlan, target: int, spread: Spread, centers: np.ndarray,
    exhausted: bool,
) -> Fill:
    """The diversity fill: per mode (``modes``) or over all seeds as one group (the other aggregations)."""
    modes = aggregation == "modes"
    groups, shares = (plan.groups, plan.shares) if modes else ([list(range(len(lists)))], [target])
    agg = "min_distance" if aggregation in ("modes", "mean") else aggregation
    return _fill_spread(lists, groups, shares, target, agg, spread, centers, exhausted, modes=modes,
                        clusters=plan.clusters if modes else ())


def fill_lists(
    lists: Ranked, aggregation: str, *, target: int, plan: ModePlan | None = None, spread: Spread | None = None,
    centers: np.ndarray | None = None,
) -> Fill:
    """:func:`aggregate`'s fill on lists that are already complete (every candidate ranked, or as deep
    as the caller wants): what the active-learning simulator runs in memory.

    Parameters
    ----------
    lists : Ranked
        Per seed, the candidates nearest first (for ``mean``: one list, the centroid's).
    aggregation : str
        One of AGGREGATIONS.
    target : int
    plan : ModePlan, optional
        The modes (``modes`` only).
    spread : Spread, optional
        Spread each mode's share (diversity mode); None: the nearest rows.
    centers : array, optional
        The seeds' vectors (k-center's first centers), one row per list.

    Returns
    -------
    Fill
    """
    plan = plan or ModePlan()
    if spread is not None:
        c = centers if centers is not None else np.zeros((0, 0))
        return _spread_all(lists, aggregation, plan, target, spread, c, True)
    deduper = _Deduper(None, None)
    if aggregation == "modes":
        return _fill_modes(lists, plan, target, deduper, True)
    if aggregation == "mean":
        return _take([lists[0][0]], target, deduper, True)
    return _fill_simple(lists, aggregation, target, deduper, True)


def _deepen(engine: NeighbourSearch, depth: int, attempt: Callable[[int, bool], Fill]) -> Fill:
    """``attempt(depth, exhausted)`` at growing depths (x4) until it is complete or the candidates run out."""
    while True:
        exhausted = depth >= engine.n_candidates
        fill = attempt(depth, exhausted)
        if fill.complete or exhausted:
            return fill
        depth = min(engine.n_candidates, depth * 4)


def aggregate(
    engine: NeighbourSearch,
    resolved: ResolvedSeeds,
    aggregation: str,
    *,
    target: int,
    k: int,
    dedup_distance: float | None = None,
    plan: ModePlan | None = None,
    spread: Spread | None = None,
) -> tuple[Ranked, Fill]:
    """The seeds' neighbours combined by ``aggregation`` into ``target`` rows (fewer only when the
    candidates run out), searching deeper until the order is complete.

    Parameters
    ----------
    engine : NeighbourSearch
        Searches the candidates.
    resolved : ResolvedSeeds
    aggregation : str
        One of AGGREGATIONS.
    target : int
        Rows wanted (> 0).
    k : int
        Neighbours per seed that count as "found by" it (the ``mean`` lists go this deep; the others
        start at least this deep).
    dedup_distance : float or None
        Skip a row closer than this (cosine distance) to a row already kept.
    plan : ModePlan, optional
        The modes and their shares (``modes`` only; see :func:`plan_modes`).
    spread : Spread, optional
        Spread each mode's share over its neighbourhood (diversity mode; see the module doc).

    Returns
    -------
    lists : Ranked
        Each seed's ranked neighbours (what attributes the results to seeds).
    fill : Fill
        The picked rows in result order.
    """
    if aggregation == "mean":
        return _aggregate_mean(engine, resolved, target=target, k=k, dedup_distance=dedup_distance, spread=spread)
    plan = plan or ModePlan()
    factor = spread.pool_factor if spread is not None else 1
    depth = max(k, math.ceil(2 * factor * target / max(1, len(resolved.ids))) + k)
    if aggregation == "reciprocal_rank" and engine.exact:
        depth = engine.n_candidates  # fuse the full rankings when they are cheap
    lists: Ranked = []

    def attempt(depth: int, exhausted: bool) -> Fill:
        nonlocal lists
        lists = engine.ranked(resolved.vectors, depth)
        deduper = _Deduper(engine, dedup_distance)
        if spread is not None:
            return _spread_all(lists, aggregation, plan, target, spread, resolved.vectors, exhausted)
        if aggregation == "modes":
            return _fill_modes(lists, plan, target, deduper, exhausted)
        return _fill_simple(lists, aggregation, target, deduper, exhausted)

    fill = _deepen(engine, depth, attempt)
    return lists, fill


def _aggregate_mean(
    engine: NeighbourSearch, resolved: ResolvedSeeds, *, target: int, k: int, dedup_distance: float | None,
    spread: Spread | None = None,
) -> tuple[Ranked, Fill]:
    lists = engine.ranked(resolved.vectors, k)
    centroid = normalize(resolved.vectors.mean(axis=0, keepdims=True))

    def attempt(depth: int, exhausted: bool) -> Fill:
        ((ids, dist),) = engine.ranked(centroid, depth)
        if spread is not None:
            return _fill_spread([(ids, dist)], [[0]], [target], target, "min_distance", spread, centroid, exhausted,
                                modes=False)
        return _take([ids], target, _Deduper(engine, dedup_distance), exhausted)

    factor = spread.pool_factor if spread is not None else 1
    return lists, _deepen(engine, factor * target + k, attempt)
