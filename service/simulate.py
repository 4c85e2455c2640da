"""Active-learning simulator: what would labeling the rows each strategy picks have bought?

The protocol (one repeat; ``repeats`` repeat it with seeds ``seed, seed + 1, ...``):

1. **Roles.** Every usable row (status ok, with an embedding) whose label is known takes one role:
   ``train`` (its split is the train split: the labeled training set), or, for the other labeled rows
   (e.g. ``val``, plus rows whose label a ``truth`` mapping supplies, such as the demo's
   ``pool_truth.csv``), shuffled by the repeat's seed: ``test`` (``test_share`` of them: held out,
   never selectable, never shown to a strategy; all accuracies are measured here), ``seen``
   (``seen_share``: labeled validation rows the strategies may look at; the failures mining starts
   from are the current model's mistakes there; never trained on) and ``pool`` (the rest: candidates
   whose labels are **hidden**). Rows without a known label take no part.
2. **Round 0.** The model is trained on ``train`` alone and evaluated on ``test``.
3. **Each round** a strategy picks ``budget`` pool rows it has not picked yet, their labels are revealed
   (they join the training set), the model is retrained on ``train`` + revealed, and evaluated.
   A strategy sees only a :class:`View`: the current model's probabilities and embeddings of every row,
   the labels of ``train``, ``seen`` and revealed rows, and ``-1`` for every hidden label (the oracle's
   labels never reach a strategy).

Retraining (``retrain``):

- ``probe``: a multinomial logistic regression (scikit-learn, lbfgs, ``C = PROBE_C``, fixed seed) on the stored
  embeddings, for every dataset. The "current model" is the probe: its probabilities on the pool drive
  the uncertainty scores, BADGE and the failures mining starts from each round (the stored ingest-time
  probabilities belong to another model and are not used); the embeddings stay the stored ones.
- ``cnn``: datasets whose rows are the demo's 32x32 digit images (the demo and the planted-slice
  generators): the demo CNN (``indexer/demo.py``'s ``train_model``) retrained from scratch each round;
  its probabilities *and* its embeddings (the penultimate layer) become the current ones, so coreset,
  TypiClust, BADGE and mining work in the new model's space, as they would after a real retrain.

Strategies (:func:`strategy_names`): ``random``; each uncertainty score of ``indexer/scores.py`` that
needs only probabilities (least_confidence, margin, ratio, entropy: the MC-dropout scores need passes a
probe does not have); ``coreset``, ``typiclust``, ``badge`` (``service/diversity.py``); and mining from
the failure clusters, ``mine-<aggregation>`` for each aggregation of ``service/mining`` and
``mine-<aggregation>+<kcenter|typical|uncertain|badge|cover>`` with the diversity mode, and the mixes
``mine-modes+cover+margin`` (half mined, spread over each mode's failure cluster away from its trained
rows, then the highest-margin rows not mined; the default), ``mine-modes+badge+margin`` (the mined half by
BADGE among each mode's nearest rows) and ``mine-modes+badge+entropy`` (that, the other half by entropy).
Mining here
runs the mining library's own steps (``seed_modes``, ``share_budget``, ``fill_lists``, ``Spread``) on
in-memory rankings; the seeds' modes are their stored analysis clusters when the dataset has them, else a
clustering of the seed vectors, and each mode's weight is what ``mode_weighting`` (by default
``learnable_error_rate``) gives it on the store, with the roles standing in for the splits: the error rate
among the seen rows nearest each seed times the share of the nearest trained rows (train, revealed) the
current model gets right (:func:`_mode_rates`). When the current model makes no mistake on ``seen`` a
mining strategy picks at random for that round (counted).
``oracle-planted`` is not a strategy but a ceiling: random pool rows of the planted slices, read from the
slice truth no strategy sees. When it does not beat uncertainty sampling, the retrained model cannot
learn the slices from that many labels and no way of picking can win there (the demo's probe).

Reported (:class:`SimResult`): per strategy, repeat and round the test accuracy overall, on the planted
slices (rows whose ``slice_column`` value is not ``background``), per slice value and per analysis
cluster; the area under the budget curve (:func:`aubc`); a pairwise win matrix (:func:`win_matrix`:
paired t-test over repeats, as Lüth et al. 2023); and what the picks were (share in the planted slices,
how balanced their true classes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from edgeminer.indexer.errors import ValidationFailed
from edgeminer.indexer.store import Store, embeddings_to_numpy
from edgeminer.indexer.where import HAS_EMBEDDING, ok_and

__all__ = [
    "DEFAULT_STRATEGY",
    "Protocol",
    "RETRAINERS",
    "SimData",
    "SimResult",
    "View",
    "assign_roles",
    "aubc",
    "load_sim_data",
    "make_strategy",
    "run_names",
    "simulate",
    "standard_strategies",
    "strategy_names",
    "win_matrix",
]

TRAIN, SEEN, POOL, TEST = 0, 1, 2, 3
ROLE_NAMES = {TRAIN: "train", SEEN: "seen", POOL: "pool", TEST: "test"}
RETRAINERS = ("probe", "cnn")
UNCERTAINTY = ("least_confidence", "margin", "ratio", "entropy")
#: the probe's inverse regularisation, one value for every dataset (on unit embeddings, C=1 underfits
#: the rare slices even when half of their rows are labeled).
PROBE_C = 10.0
#: edgeminer's default way of picking from failures (what bench/al.py holds to the goal of issue 14):
#: half the budget mined (the failure modes share it by learnable error rate, each mode's share spread by
#: k-center greedy over its failure cluster's candidates, away from the cluster's trained rows), the other
#: half the highest-margin rows not mined (``edgeminer mine --diversity cover --uncertain-share 0.5``).
#: Mining alone is ahead early but flattens and ends below margin sampling on subpop; the mix keeps the
#: early lead without that loss. ``cover`` replaced BADGE among each mode's 4 x share nearest rows
#: (``mine-modes+badge+margin``): on held-out probe repeats (seeds 500 and 1600, 30 each) it is ahead on
#: the three generators (planted AUBC +0.006 to +0.018, p <= 0.042) and equal with the demo CNN (seeds
#: 1600: +0.001, p = 0.85); it ends lower on the demo's probe (final -0.015, p = 0.003, seeds 500), where
#: no way of picking beats entropy. Issue 14's notes list every variant and its numbers.
DEFAULT_STRATEGY = "mine-modes+cover+margin"
#: mining + uncertainty mixes (``mine-<aggregation>+<diversity>+<uncertainty score>``): the mined share of
#: the budget, then ``DEFAULT_UNCERTAIN_SHARE`` of it by the score (``edgeminer mine --uncertain-share``,
#: ``--uncertainty``).
MIXED = ("mine-modes+cover+margin", "mine-modes+badge+margin", "mine-modes+badge+entropy")
DEFAULT_UNCERTAIN_SHARE = 0.5
PLANTED = "planted"
#: the diagnostic ceiling (see :func:`_oracle`): it alone reads the planted-slice truth.
ORACLE = "oracle-planted"
OVERALL = "overall"


class SimulationError(ValidationFailed):
    """A simulation that cannot run as asked (no labeled rows beyond train, an unknown strategy...)."""


# ----------------------------------------------------------------------------------------------
# Data and protocol
# ----------------------------------------------------------------------------------------------


@dataclass
class SimData:
    """An in-memory copy of what the simulation needs: one entry per usable row.

    ``y`` is the oracle (the true label's index, -1 unknown); it never reaches a strategy.
    """

    dataset: str
    ids: np.ndarray
    x: np.ndarray
    y: np.ndarray
    split: np.ndarray
    groups: np.ndarray
    cluster: np.ndarray
    classes: list[str]
    uris: list[str]
    background: str = "none"
    images: np.ndarray | None = None

    @property
    def planted(self) -> np.ndarray:
        """Rows in a planted slice (their group is not the background value)."""
        return self.groups != self.background


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def load_sim_data(
    store: Store,
    dataset: str,
    *,
    slice_column: str | None = "slice",
    background: str = "none",
    truth: Mapping[str, str] | None = None,
) -> SimData:
    """Read the rows the simulation uses (ok, with an embedding) into memory.

    Parameters
    ----------
    store, dataset
    slice_column : str or None
        A metadata column (without ``meta_``) naming each row's slice; None or absent: no slices.
    background : str
        The slice value of ordinary rows (the rest are the planted slices).
    truth : mapping, optional
        id -> label for rows the store has no label for (e.g. the demo's pool_truth.csv).

    Returns
    -------
    SimData

    Raises
    ------
    SimulationError
        A slice column the dataset does not have.
    """
    ds = store.dataset(dataset)
    names = ds.schema.names
    col = None if slice_column is None else f"meta_{slice_column}"
    if col is not None and col not in names:
        have = sorted(n[5:] for n in names if n.startswith("meta_"))
        raise SimulationError(
            f"dataset {dataset!r} has no metadata column {slice_column!r} (it has: {', '.join(have) or 'none'})"
        )
    cols = ["id", "uri", "split", "label", "labeled", "embedding"] + ["cluster"] * ("cluster" in names)
    table = ds.query(where=ok_and(HAS_EMBEDDING), columns=cols + ([col] if col else [])).sort_by("id")
    ids = np.asarray(table["id"].to_pylist(), dtype=object)
    raw = zip(table["label"].to_pylist(), table["labeled"].to_pylist(), strict=True)
    labels = [lab if ok else None for lab, ok in raw]
    if truth:
        labels = [lab if lab is not None else truth.get(i) for lab, i in zip(labels, ids.tolist(), strict=True)]
    classes = list(ds.info.classes) + sorted({lab for lab in labels if lab is not None} - set(ds.info.classes))
    at = {c: n for n, c in enumerate(classes)}
    clusters = table["cluster"].to_pylist() if "cluster" in cols else [None] * len(ids)
    return SimData(
        dataset=dataset,
        ids=ids,
        x=_unit(embeddings_to_numpy(table["embedding"], ds.info.dim)),
        y=np.asarray([at[lab] if lab is not None else -1 for lab in labels], dtype=np.int64),
        split=np.asarray([s or "" for s in table["split"].to_pylist()], dtype=object),
        groups=np.asarray([str(v) for v in table[col].to_pylist()] if col else [background] * len(ids), dtype=object),
        cluster=np.asarray([-1 if c is None else int(c) for c in clusters], dtype=np.int64),
        classes=classes,
        uris=[u or "" for u in table["uri"].to_pylist()],
        background=background,
    )


@dataclass(frozen=True)
class Protocol:
    """How the labeled rows beyond train are shared out (see the module doc)."""

    test_share: float = 0.4
    seen_share: float = 0.2
    train_split: str = "train"

    def check(self) -> None:
        if not (0 < self.test_share < 1 and 0 <= self.seen_share < 1 and self.test_share + self.seen_share < 1):
            raise SimulationError(
                f"test_share and seen_share must be in (0, 1) and [0, 1) with a sum below 1 (the rest is the "
                f"pool), not {self.test_share} and {self.seen_share}"
            )


def assign_roles(data: SimData, protocol: Protocol, seed: int) -> np.ndarray:
    """Each row's role (TRAIN, SEEN, POOL, TEST; -1: no known label, no part), the non-train labeled
    rows shuffled by ``seed``.

    Raises
    ------
    SimulationError
        No labeled train rows, or no labeled rows beyond train.
    """
    protocol.check()
    roles = np.full(len(data.ids), -1, dtype=np.int64)
    known = data.y >= 0
    roles[known & (data.split == protocol.train_split)] = TRAIN
    rest = np.flatnonzero(known & (data.split != protocol.train_split))
    if not (roles == TRAIN).any() or len(rest) < 3:
        raise SimulationError(
            f"dataset {data.dataset!r} needs labeled {protocol.train_split!r} rows and labeled rows beyond them "
            f"(it has {int((roles == TRAIN).sum())} and {len(rest)}): label a val split, or pass the pool's truth"
        )
    rest = np.random.default_rng(seed).permutation(rest)
    n_test = max(1, int(round(protocol.test_share * len(rest))))
    n_seen = int(round(protocol.seen_share * len(rest)))
    roles[rest[:n_test]] = TEST
    roles[rest[n_test : n_test + n_seen]] = SEEN
    roles[rest[n_test + n_seen :]] = POOL
    return roles


# ----------------------------------------------------------------------------------------------
# Models: the probe and the demo CNN
# ----------------------------------------------------------------------------------------------


@dataclass
class Fitted:
    """The current model's view of every row: class probabilities (n, C) and unit embeddings (n, d)."""

    probs: np.ndarray
    x: np.ndarray


def fit_probe(data: SimData, train: np.ndarray, seed: int) -> Fitted:
    """A logistic-regression probe on the stored embeddings of the ``train`` rows."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=PROBE_C, max_iter=2000, random_state=seed)
    clf.fit(data.x[train], data.y[train])
    probs = np.zeros((len(data.ids), len(data.classes)))
    probs[:, clf.classes_] = clf.predict_proba(data.x)
    return Fitted(probs, data.x)


def fit_cnn(data: SimData, train: np.ndarray, seed: int) -> Fitted:
    """The demo CNN retrained on the ``train`` rows' images; its probabilities and embeddings."""
    import torch

    from edgeminer.indexer.demo import train_model

    if data.images is None:
        data.images = _load_images(data)
    torch.set_num_threads(1)  # as the BLAS limit in simulate(): small batches, a shared CPU
    model, _ = train_model(data.images[train], data.y[train], seed=seed)
    embs, logits = [], []
    with torch.inference_mode():
        for s in range(0, len(data.images), 512):
            e, lo = model(torch.from_numpy(data.images[s : s + 512]))
            embs.append(e.numpy())
            logits.append(lo.numpy())
    lg = np.concatenate(logits).astype(np.float64)
    lg -= lg.max(axis=1, keepdims=True)
    p = np.exp(lg)
    probs = np.zeros((len(data.ids), len(data.classes)))
    probs[:, : p.shape[1]] = p / p.sum(axis=1, keepdims=True)
    return Fitted(probs, _unit(np.concatenate(embs)))


def _load_images(data: SimData) -> np.ndarray:
    from PIL import Image

    out = np.zeros((len(data.uris), 1, 32, 32), dtype=np.float32)
    for n, uri in enumerate(data.uris):
        try:
            with Image.open(uri) as img:
                out[n, 0] = np.asarray(img.convert("L").resize((32, 32)), dtype=np.float32) / 255.0 * 2 - 1
        except OSError as e:
            raise SimulationError(
                f"--retrain cnn reads each row's image; row {data.ids[n]!r}: cannot read {uri!r} ({e}); "
                f"use --retrain probe"
            ) from e
    return out


FITTERS: dict[str, Callable[[SimData, np.ndarray, int], Fitted]] = {"probe": fit_probe, "cnn": fit_cnn}


# ----------------------------------------------------------------------------------------------
# What a strategy sees, and the strategies
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """Everything a strategy may look at in one round. ``labels`` holds the labels of the train, seen
    and revealed rows and -1 for every other row (hidden); ``candidates`` are the pool rows not picked yet."""

    x: np.ndarray
    probs: np.ndarray
    labels: np.ndarray
    candidates: np.ndarray
    trained: np.ndarray
    seen: np.ndarray
    cluster: np.ndarray
    ids: np.ndarray
    seed: int
    notes: dict[str, int] = field(default_factory=dict)


Strategy = Callable[[View, int], np.ndarray]


def _random(view: View, budget: int) -> np.ndarray:
    cand = np.flatnonzero(view.candidates)
    return np.random.default_rng(view.seed).permutation(cand)[:budget]


def _uncertainty(method: str) -> Strategy:
    def pick(view: View, budget: int) -> np.ndarray:
        from edgeminer.indexer.scores import highest_first, uncertainty

        cand = np.flatnonzero(view.candidates)
        score = uncertainty(view.probs[cand], method=method)
        return cand[highest_first(score, np.random.default_rng(view.seed))[:budget]]

    return pick


def _coreset(view: View, budget: int) -> np.ndarray:
    from edgeminer.service.diversity import kcenter_greedy

    cand = np.flatnonzero(view.candidates)
    return cand[kcenter_greedy(view.x[cand], budget, centers=view.x[view.trained], seed=view.seed)]


def _typiclust(view: View, budget: int) -> np.ndarray:
    from edgeminer.service.diversity import typiclust

    rows = np.flatnonzero(view.trained | view.candidates)
    picks = typiclust(view.x[rows], view.trained[rows], view.candidates[rows], budget, seed=view.seed)
    return rows[picks]


def _badge(view: View, budget: int) -> np.ndarray:
    from edgeminer.service.diversity import badge

    cand = np.flatnonzero(view.candidates)
    return cand[badge(view.probs[cand], view.x[cand], budget, rng=view.seed)]


def _oracle(planted: np.ndarray) -> Strategy:
    """``oracle-planted``: random pool rows of the planted slices (then any row when they run out). It
    reads the slice truth no strategy sees: a diagnostic ceiling (is the retrained model able to learn
    the slices from this many labels at all?), never a way to pick."""

    def pick(view: View, budget: int) -> np.ndarray:
        rng = np.random.default_rng(view.seed)
        inside = rng.permutation(np.flatnonzero(view.candidates & planted))
        outside = rng.permutation(np.flatnonzero(view.candidates & ~planted))
        return np.concatenate([inside, outside])[:budget]

    return pick


def _nearest_right(view: View, seeds: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Per seed: the share of its k nearest ``rows`` (itself excluded) the current model gets right;
    NaN when there is no such row."""
    if not len(rows):
        return np.full(len(seeds), np.nan)
    right = view.probs[rows].argmax(axis=1) == view.labels[rows]
    sim = view.x[seeds] @ view.x[rows].T
    sim[rows[None, :] == seeds[:, None]] = -np.inf
    k = max(1, min(k, len(rows) - 1))
    near = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    valid = np.isfinite(np.take_along_axis(sim, near, axis=1))
    count = valid.sum(axis=1)
    hits = (right[near] & valid).sum(axis=1)
    return np.where(count > 0, hits / np.maximum(count, 1), np.nan)


def _mode_rates(view: View, seeds: np.ndarray, k: int, weighting: str) -> np.ndarray:
    """Per seed, what its mode's share of the budget is weighted by, as ``mode_weighting`` does on the
    store: ``local_error_rate``: the share of wrong predictions among its k nearest judged rows (train,
    seen, revealed); ``learnable_error_rate``: that share among the seen rows (never trained on) times
    the share of its k nearest trained rows (train, revealed) the current model gets right, when the
    model is significantly more accurate on the trained rows than on the seen ones (else the first)."""
    from edgeminer.service.mining.aggregation import fits_training_split, learnable_rates

    seen, trained = np.flatnonzero(view.seen), np.flatnonzero(view.trained)

    def error_rate(rows: np.ndarray) -> np.ndarray:  # a seed without such rows counts as all wrong
        return 1.0 - np.nan_to_num(_nearest_right(view, seeds, rows, k), nan=0.0)

    right = view.probs.argmax(axis=1) == view.labels
    fitted = fits_training_split(int(right[trained].sum()), len(trained), int(right[seen].sum()), len(seen))
    if weighting != "learnable_error_rate" or not fitted:
        if weighting == "learnable_error_rate":
            view.notes["learnable_fallback"] = view.notes.get("learnable_fallback", 0) + 1
        return error_rate(np.flatnonzero(view.trained | view.seen))
    return learnable_rates(error_rate(seen), _nearest_right(view, seeds, trained, k))


def _mining(aggregation: str, diversity: str | None) -> Strategy:
    def pick(view: View, budget: int) -> np.ndarray:
        preds = view.probs.argmax(axis=1)
        wrong = (view.labels >= 0) & (preds != view.labels)
        seeds = np.flatnonzero(view.seen & wrong)
        if not len(seeds):
            view.notes["fallback_random"] = view.notes.get("fallback_random", 0) + 1
            return _random(view, budget)
        return _mine_order(view, seeds, preds, aggregation, diversity, budget)

    return pick


def _mine_order(
    view: View, seeds: np.ndarray, preds: np.ndarray, aggregation: str,
    diversity: str | None, budget: int,
) -> np.ndarray:
    """The mining library's steps on in-memory rankings (see the module doc)."""
    from edgeminer.service.mining.aggregation import (
        DEFAULT_MODE_WEIGHTING,
        LOCAL_ERROR_K,
        ModePlan,
        Spread,
        fill_lists,
        mode_plan,
        seed_modes,
        weights_by_mode,
    )
    from edgeminer.service.mining.seeds import ResolvedSeeds

    cand = np.flatnonzero(view.candidates)
    pos = {str(view.ids[c]): c for c in cand}
    clusters: list[int | None] = [int(c) if c >= 0 else None for c in view.cluster[seeds]]
    resolved = ResolvedSeeds([str(i) for i in view.ids[seeds]], view.x[seeds], clusters)
    target = min(budget, len(cand))
    plan = ModePlan()
    if aggregation == "modes":
        groups = seed_modes(resolved)
        weights = weights_by_mode(_mode_rates(view, seeds, LOCAL_ERROR_K, DEFAULT_MODE_WEIGHTING), groups)
        plan = mode_plan(resolved, groups, weights, target)
    queries = view.x[seeds]
    if aggregation == "mean":
        c = view.x[seeds].mean(axis=0, keepdims=True)
        queries = c / max(float(np.linalg.norm(c)), 1e-12)
    dist = 1.0 - queries @ view.x[cand].T
    order = np.argsort(dist, axis=1, kind="stable")
    lists = [([str(view.ids[cand[j]]) for j in o], d[o]) for o, d in zip(order, dist, strict=True)]
    spread = None
    if diversity is not None:
        spread = Spread(
            diversity, lambda ids: view.x[[pos[i] for i in ids]], lambda ids: [str(preds[pos[i]]) for i in ids],
            seed=view.seed, probs_of=lambda ids: view.probs[[pos[i] for i in ids]],
            cluster_pool=lambda c: [str(view.ids[j]) for j in cand[view.cluster[cand] == c]],
            trained_in=lambda c: view.x[view.trained & (view.cluster == c)],
        )
    fill = fill_lists(lists, aggregation, target=target, plan=plan, spread=spread, centers=queries)
    return np.asarray([pos[i] for i in fill.order], dtype=np.int64)


def _mixed(aggregation: str, diversity: str | None, method: str, share: float = DEFAULT_UNCERTAIN_SHARE) -> Strategy:
    """Mining for ``budget - round(budget x share)`` rows, then the most uncertain (``method``) rows not
    mined: ``edgeminer mine --uncertain-share`` in memory."""
    mining, unc = _mining(aggregation, diversity), _uncertainty(method)

    def pick(view: View, budget: int) -> np.ndarray:
        mined = np.asarray(mining(view, budget - int(round(budget * share))), dtype=np.int64)
        rest = view.candidates.copy()
        rest[mined] = False
        more = unc(replace(view, candidates=rest), budget - len(mined))
        return np.concatenate([mined, np.asarray(more, dtype=np.int64)])[:budget]

    return pick


def strategy_names() -> list[str]:
    """Every strategy the simulator knows (see the module doc)."""
    from edgeminer.service.mining.aggregation import AGGREGATIONS, DIVERSITY_MODES

    mines = [f"mine-{a}" for a in AGGREGATIONS] + [f"mine-{a}+{d}" for a in AGGREGATIONS for d in DIVERSITY_MODES]
    return ["random", *UNCERTAINTY, "coreset", "typiclust", "badge", *mines, *MIXED, ORACLE]


def standard_strategies() -> list[str]:
    """The set bench/al.py and ``edgeminer simulate`` run by default: random, the uncertainty scores,
    coreset, typiclust, badge, mining with each aggregation, and the default aggregation (``modes``) with
    each diversity mode, and the mining + uncertainty mixes (the default among them)."""
    from edgeminer.service.mining.aggregation import AGGREGATIONS, DIVERSITY_MODES

    return ["random", *UNCERTAINTY, "coreset", "typiclust", "badge", *(f"mine-{a}" for a in AGGREGATIONS),
            *(f"mine-modes+{d}" for d in DIVERSITY_MODES), *MIXED]


def make_strategy(name: str, planted: np.ndarray | None = None) -> Strategy:
    """The strategy called ``name`` (one of :func:`strategy_names`); ``planted`` (the rows of the planted
    slices) only for :data:`ORACLE`.

    Raises
    ------
    SimulationError
        An unknown name, or ``oracle-planted`` without planted slices.
    """
    if name not in strategy_names():
        raise SimulationError(f"unknown strategy {name!r}: choose from {', '.join(strategy_names())}")
    if name == ORACLE:
        if planted is None or not planted.any():
            raise SimulationError(
                f"{ORACLE} picks rows of the planted slices, and this dataset has none: it needs a slice column "
                "(--slice-column) in which those rows have a value other than the background value (--background)"
            )
        return _oracle(planted)
    fixed: dict[str, Strategy] = {"random": _random, "coreset": _coreset, "typiclust": _typiclust, "badge": _badge}
    if name in fixed:
        return fixed[name]
    if name in UNCERTAINTY:
        return _uncertainty(name)
    agg, *rest = name[len("mine-") :].split("+")
    div = rest[0] if rest else None
    return _mixed(agg, div, rest[1]) if len(rest) > 1 else _mining(agg, div)


# ----------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------


def evaluate(data: SimData, probs: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """Test accuracy overall, on the planted slices, per slice value and per analysis cluster."""
    right = probs.argmax(axis=1) == data.y
    out = {OVERALL: float(right[test].mean()) if test.any() else math.nan}
    planted = test & data.planted
    out[PLANTED] = float(right[planted].mean()) if planted.any() else math.nan
    for g in np.unique(data.groups[test]).tolist():
        out[f"slice:{g}"] = float(right[test & (data.groups == g)].mean())
    for c in np.unique(data.cluster[test]).tolist():
        if c >= 0:
            out[f"cluster:{c}"] = float(right[test & (data.cluster == c)].mean())
    return out


@dataclass
class _Run:
    """One strategy's rounds in one repeat: evaluations per round and what it picked."""

    evals: list[dict[str, float]]
    picked: list[int]
    notes: dict[str, int]


def _run_strategy(
    data: SimData, roles: np.ndarray, name: str, start: Fitted, fit: Callable[[SimData, np.ndarray, int], Fitted],
    *, budget: int, rounds: int, seed: int,
) -> _Run:
    strategy = make_strategy(name, data.planted)
    test = roles == TEST
    revealed = np.zeros(len(roles), bool)
    model = start
    run = _Run([evaluate(data, model.probs, test)], [], {})
    for r in range(rounds):
        trained = (roles == TRAIN) | revealed
        visible = np.where(trained | (roles == SEEN), data.y, -1)
        view = View(
            x=model.x, probs=model.probs, labels=visible, candidates=(roles == POOL) & ~revealed, trained=trained,
            seen=roles == SEEN, cluster=data.cluster, ids=data.ids, seed=seed * 1000 + r, notes=run.notes,
        )
        picks = np.asarray(strategy(view, budget), dtype=np.int64)[:budget]
        if len(picks) and (not view.candidates[picks].all() or len(set(picks.tolist())) != len(picks)):
            raise AssertionError(f"strategy {name} picked a row that is not a fresh candidate")
        revealed[picks] = True
        run.picked.extend(picks.tolist())
        model = fit(data, (roles == TRAIN) | revealed, seed)
        run.evals.append(evaluate(data, model.probs, test))
    return run


@dataclass
class SimResult:
    """Curves per strategy: ``curves[strategy][metric]`` is a (repeats, rounds + 1) array of test
    accuracies at ``labels`` (0, budget, 2 x budget, ...) revealed labels."""

    dataset: str
    strategies: list[str]
    budget: int
    rounds: int
    repeats: int
    retrain: str
    protocol: Protocol
    labels: list[int]
    curves: dict[str, dict[str, np.ndarray]]
    picks: dict[str, dict[str, float]]
    roles: dict[str, int]
    notes: dict[str, dict[str, int]] = field(default_factory=dict)

    def metrics(self) -> list[str]:
        """Metric names every strategy has (overall, planted, slice:..., cluster:...)."""
        sets = [set(c) for c in self.curves.values()]
        common = set.intersection(*sets) if sets else set()
        return [m for m in (OVERALL, PLANTED) if m in common] + sorted(common - {OVERALL, PLANTED})

    def aubc(self, metric: str = OVERALL) -> dict[str, np.ndarray]:
        """Per strategy, the area under its budget curve per repeat (see :func:`aubc`)."""
        return {s: aubc(self.curves[s][metric], self.labels) for s in self.strategies}

    def final(self, metric: str = OVERALL) -> dict[str, np.ndarray]:
        """Per strategy, the accuracy after the last round, per repeat."""
        return {s: self.curves[s][metric][:, -1] for s in self.strategies}

    def table(self, metric: str = OVERALL) -> list[dict[str, Any]]:
        """One row per strategy: mean and std of the final accuracy and the AUBC over repeats."""
        au, fin = self.aubc(metric), self.final(metric)
        return [
            {
                "strategy": s,
                "start": float(np.nanmean(self.curves[s][metric][:, 0])),
                "final": float(np.nanmean(fin[s])),
                "final_std": float(np.nanstd(fin[s])),
                "aubc": float(np.nanmean(au[s])),
                "aubc_std": float(np.nanstd(au[s])),
                **self.picks.get(s, {}),
            }
            for s in self.strategies
        ]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: settings, mean curves, tables and win matrices of the overall and planted accuracy."""
        out: dict[str, Any] = {
            "dataset": self.dataset, "strategies": self.strategies, "budget": self.budget, "rounds": self.rounds,
            "repeats": self.repeats, "retrain": self.retrain, "labels": self.labels, "roles": self.roles,
            "protocol": {"test_share": self.protocol.test_share, "seen_share": self.protocol.seen_share},
            "notes": self.notes, "metrics": {},
        }
        for m in self.metrics():
            out["metrics"][m] = {
                "curves": {s: np.nanmean(self.curves[s][m], axis=0).round(4).tolist() for s in self.strategies},
                "table": self.table(m),
            }
            if m in (OVERALL, PLANTED):
                out["metrics"][m]["win_matrix_aubc"] = win_matrix(self.aubc(m))
                out["metrics"][m]["win_matrix_final"] = win_matrix(self.final(m))
        return out


def simulate(
    data: SimData,
    strategies: Sequence[str],
    *,
    budget: int,
    rounds: int,
    repeats: int,
    retrain: str = "probe",
    protocol: Protocol | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> SimResult:
    """Run every strategy for ``rounds`` rounds of ``budget`` labels, ``repeats`` times (see the module
    doc). ``random`` is always included.

    Parameters
    ----------
    data : SimData
        From :func:`load_sim_data`.
    strategies : sequence of str
        Names from :func:`strategy_names`.
    budget, rounds, repeats : int
        Labels per round, rounds, repeats (each with its own split of the labeled rows and seeds).
    retrain : str
        ``probe`` or ``cnn`` (see the module doc).
    protocol : Protocol, optional
    seed : int
        The first repeat's seed (repeat r uses ``seed + r``).
    progress : callable, optional
        Called with a short message after each strategy run.

    Returns
    -------
    SimResult

    Raises
    ------
    SimulationError
        Options out of range, an unknown strategy or retrainer, a dataset without labels beyond train.
    """
    protocol = protocol or Protocol()
    names = _check_run(data, strategies, budget, rounds, repeats, retrain)
    fit = FITTERS[retrain]
    runs: dict[str, list[_Run]] = {s: [] for s in names}
    roles = np.zeros(0, np.int64)
    with threadpool_limits(1):  # small matrices: BLAS threads competing for a busy CPU slow each fit badly
        for rep in range(repeats):
            roles = assign_roles(data, protocol, seed + rep)
            start = fit(data, roles == TRAIN, seed + rep)
            for s in names:
                runs[s].append(
                    _run_strategy(data, roles, s, start, fit, budget=budget, rounds=rounds, seed=seed + rep)
                )
                if progress:
                    progress(f"repeat {rep + 1}/{repeats}: {s}")
    return _result(data, names, runs, roles, budget=budget, rounds=rounds, retrain=retrain, protocol=protocol)


def run_names(strategies: Sequence[str]) -> list[str]:
    """The strategies a simulation runs, in order: random always first, each name once."""
    return list(dict.fromkeys(["random", *strategies]))


def _check_run(
    data: SimData, strategies: Sequence[str], budget: int, rounds: int, repeats: int, retrain: str
) -> list[str]:
    names = run_names(strategies)
    for s in names:
        make_strategy(s, data.planted)
    if retrain not in FITTERS:
        raise SimulationError(f"retrain must be one of {', '.join(FITTERS)}, not {retrain!r}")
    for what, v, low in (("budget", budget, 1), ("rounds", rounds, 1), ("repeats", repeats, 1)):
        if not isinstance(v, int) or v < low:
            raise SimulationError(f"{what} must be a positive integer, not {v!r}")
    return names


def _result(
    data: SimData, names: list[str], runs: dict[str, list[_Run]], roles: np.ndarray, *, budget: int, rounds: int,
    retrain: str, protocol: Protocol,
) -> SimResult:
    curves: dict[str, dict[str, np.ndarray]] = {}
    picks: dict[str, dict[str, float]] = {}
    notes: dict[str, dict[str, int]] = {}
    for s in names:
        keys = set.intersection(*(set(e) for run in runs[s] for e in run.evals))
        curves[s] = {k: np.asarray([[e[k] for e in run.evals] for run in runs[s]]) for k in keys}
        picks[s] = _pick_stats(data, [run.picked for run in runs[s]])
        merged: dict[str, int] = {}
        for run in runs[s]:
            for k, v in run.notes.items():
                merged[k] = merged.get(k, 0) + v
        if merged:
            notes[s] = merged
    counts = {ROLE_NAMES[r]: int((roles == r).sum()) for r in ROLE_NAMES}
    return SimResult(
        dataset=data.dataset, strategies=names, budget=budget, rounds=rounds, repeats=len(runs[names[0]]),
        retrain=retrain, protocol=protocol, labels=[budget * r for r in range(rounds + 1)], curves=curves,
        picks=picks, roles=counts, notes=notes,
    )


def _pick_stats(data: SimData, picked: list[list[int]]) -> dict[str, float]:
    """What the picks were, averaged over repeats: the share in the planted slices and how balanced
    their true classes are (entropy of the class counts / log(classes), 1 = perfectly even)."""
    share, balance = [], []
    for p in picked:
        if not p:
            continue
        idx = np.asarray(p)
        share.append(float(data.planted[idx].mean()))
        counts = np.bincount(data.y[idx], minlength=len(data.classes)).astype(np.float64)
        q = counts[counts > 0] / counts.sum()
        balance.append(float(-(q * np.log(q)).sum() / math.log(max(2, len(data.classes)))))
    return {
        "picked_planted": float(np.mean(share)) if share else math.nan,
        "picked_class_balance": float(np.mean(balance)) if balance else math.nan,
    }


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------


def aubc(curves: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Area under the budget curve per row of ``curves`` (repeats, points), normalised by the label
    range: the mean accuracy over the budget (trapezoids), in the accuracy's units."""
    lab = np.asarray(labels, dtype=np.float64)
    c = np.asarray(curves, dtype=np.float64)
    if len(lab) < 2 or lab[-1] == lab[0]:
        return c[:, -1]
    return np.asarray(np.trapezoid(c, lab, axis=1) / (lab[-1] - lab[0]))


def win_matrix(values: Mapping[str, np.ndarray], *, alpha: float = 0.05) -> dict[str, dict[str, dict[str, float]]]:
    """Pairwise comparison of strategies over repeats (paired by repeat), as Lüth et al. 2023.

    Parameters
    ----------
    values : mapping
        Strategy -> one value per repeat (e.g. its AUBC), the repeats in the same order for all.
    alpha : float
        Significance level of the two-sided paired t-test.

    Returns
    -------
    dict
        ``out[a][b]`` = ``{"win": 1 | 0 | -1, "diff": mean(a - b), "p": p-value}``: 1 when ``a`` is
        significantly better than ``b``, -1 significantly worse, 0 otherwise (and on the diagonal).
        With fewer than 2 repeats nothing is significant.
    """
    from scipy.stats import ttest_rel

    names = list(values)
    out: dict[str, dict[str, dict[str, float]]] = {a: {} for a in names}
    for a in names:
        for b in names:
            va, vb = np.asarray(values[a], float), np.asarray(values[b], float)
            diff = va - vb
            p = math.nan
            if a != b and len(diff) >= 2 and np.nanstd(diff) > 0:
                p = float(ttest_rel(va, vb, nan_policy="omit").pvalue)
            elif a != b and len(diff) >= 2 and np.nanmean(diff) != 0:
                p = 0.0  # a constant, non-zero difference in every repeat
            win = 0 if not (p <= alpha) else (1 if np.nanmean(diff) > 0 else -1)
            out[a][b] = {"win": win, "diff": float(np.nanmean(diff)), "p": p}
    return out
