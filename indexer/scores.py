"""Uncertainty scores: pure functions over a model's class probabilities.

Inputs
    ``probs``     array-like of shape ``(n, C)``: one row of class probabilities per sample.
    ``mc_probs``  array-like of shape ``(T, n, C)``: ``T`` stochastic forward passes (MC dropout) of the
                  same ``n`` samples.

Direction
    Every uncertainty score points the same way: **higher = less certain**. ``least_confidence``,
    ``margin``, ``ratio`` and ``entropy`` lie in ``[0, 1]``; ``mc_variance`` lies in ``[0, 0.25]``;
    ``bald`` is normalised by ``log C`` and lies in ``[0, 1]``. The one exception is ``confidence`` in
    :func:`score_all` (the top probability, higher = more certain), kept because people filter on it.

Validation (shared by every function)
    * the input must be 2-D ``(n, C)`` (3-D ``(T, n, C)`` for the MC scores) with ``C >= 1``;
    * NaN, infinite or negative values raise ``InvalidProbabilities`` (a ``ValueError``) naming the row
      (and pass);
    * a row whose sum is zero raises ``InvalidProbabilities`` naming the row;
    * a row that does not sum to 1 within ``1e-3``: with ``renormalize=True`` (the default) it is divided
      by its sum (so raw non-negative scores such as sigmoid outputs are accepted); with
      ``renormalize=False`` it raises ``InvalidProbabilities`` naming the row and its sum.

With a single class (``C == 1``) there is nothing to be uncertain about: every score is 0.
Ties between the two top classes give ``margin == 1`` and ``ratio == 1`` (maximally uncertain).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeminer.indexer.errors import InvalidProbabilities, ValidationFailed

__all__ = [
    "SCORE_FUNCTIONS",
    "MC_METHODS",
    "SUM_TOLERANCE",
    "bald",
    "check_probs",
    "classes_for_probs",
    "entropy",
    "highest_first",
    "least_confidence",
    "margin",
    "mc_variance",
    "pad_probs",
    "ratio",
    "score_all",
    "top2",
    "uncertainty",
]

#: a probability row may differ from 1 by this much before it counts as "not summing to 1".
SUM_TOLERANCE = 1e-3

FloatArray = npt.NDArray[np.float64]


def highest_first(score: Any, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    """Positions of ``score`` highest first (every score here points up: higher = less certain), ties in
    a random order drawn from ``rng`` (one draw per row), not in row order."""
    score = np.asarray(score, dtype=np.float64)
    return np.lexsort((rng.random(len(score)), -score))


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def _where(row: int, sample: int | None) -> str:
    return f"row {row}" if sample is None else f"pass {sample}, row {row}"


def _check_rows(p: FloatArray, *, renormalize: bool, sample: int | None = None) -> FloatArray:
    """Validate an (n, C) float64 array; return it (renormalised when asked)."""
    if p.size == 0:
        return p
    bad = ~np.isfinite(p)
    if bad.any():
        r = int(np.argwhere(bad)[0][0])
        raise InvalidProbabilities(f"probabilities contain NaN or infinity at {_where(r, sample)}: {p[r].tolist()}")
    neg = p < 0
    if neg.any():
        r = int(np.argwhere(neg)[0][0])
        raise InvalidProbabilities(f"probabilities must be non-negative; {_where(r, sample)} has {p[r].tolist()}")
    sums = p.sum(axis=1)
    zero = sums <= 0
    if zero.any():
        r = int(np.flatnonzero(zero)[0])
        raise InvalidProbabilities(f"probabilities of {_where(r, sample)} sum to 0; cannot score a row with no mass")
    off = np.abs(sums - 1.0) > SUM_TOLERANCE
    if off.any():
        if not renormalize:
            r = int(np.flatnonzero(off)[0])
            raise InvalidProbabilities(
                f"probabilities of {_where(r, sample)} sum to {sums[r]:.6g}, not 1 "
                f"(tolerance {SUM_TOLERANCE}); pass renormalize=True to divide each row by its sum, "
                "or apply a softmax first"
            )
        p = p / sums[:, None]
    return p


def check_probs(probs: Any, *, renormalize: bool = True) -> FloatArray:
    """Validate ``(n, C)`` probabilities and return them as float64 (renormalised rows when allowed).

    Raises ``ValueError`` for a wrong shape, NaN/inf, negative values, zero-sum rows, and (only with
    ``renormalize=False``) rows that do not sum to 1 within ``SUM_TOLERANCE``; the message names the row.
    """
    try:
        p = np.array(probs, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidProbabilities(f"probabilities must be a numeric (n, C) array: {exc}") from None
    if p.ndim != 2:
        raise InvalidProbabilities(
            f"probabilities must be 2-D (n samples, C classes), got shape {p.shape}; "
            "for a single sample pass [[p1, p2, ...]]"
        )
    if p.shape[1] < 1:
        raise InvalidProbabilities("probabilities must have at least one class column, got shape " + str(p.shape))
    return _check_rows(p, renormalize=renormalize)


def _check_mc(mc_probs: Any, *, renormalize: bool) -> FloatArray:
    try:
        p = np.array(mc_probs, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidProbabilities(f"MC probabilities must be a numeric (T, n, C) array: {exc}") from None
    if p.ndim != 3:
        raise InvalidProbabilities(f"MC probabilities must be 3-D (T passes, n samples, C classes), got {p.shape}")
    if p.shape[0] < 1 or p.shape[2] < 1:
        raise InvalidProbabilities(f"MC probabilities need at least one pass and one class, got shape {p.shape}")
    for t in range(p.shape[0]):
        p[t] = _check_rows(p[t], renormalize=renormalize, sample=t)
    return p


def _top_two(p: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The largest and second-largest probability of each row (second is 0 when C == 1)."""
    if p.shape[1] == 1:
        return p[:, 0], np.zeros(p.shape[0])
    part = np.partition(p, p.shape[1] - 2, axis=1)
    return part[:, -1], part[:, -2]


def _row_entropy(p: FloatArray) -> FloatArray:
    """Shannon entropy in nats of each row along the last axis (0 log 0 = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return np.asarray(-terms.sum(axis=-1), dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# Scores over (n, C) probabilities
# ----------------------------------------------------------------------------------------------


def least_confidence(probs: Any, *, renormalize: bool = True) -> FloatArray:
    """Normalised least confidence: ``(1 - p_max) * C / (C - 1)``, in [0, 1]; higher = less certain.

    0 when the model puts all mass on one class, 1 when it is uniform. 0 for a single class.
    """
    p = check_probs(probs, renormalize=renormalize)
    c = p.shape[1]
    if c == 1:
        return np.zeros(p.shape[0])
    p1, _ = _top_two(p)
    return np.clip((1.0 - p1) * c / (c - 1), 0.0, 1.0)


def margin(probs: Any, *, renormalize: bool = True) -> FloatArray:
    """Margin of confidence: ``1 - (p1 - p2)`` (top two probabilities), in [0, 1]; higher = less certain.

    1 for a tie between the top two classes; 0 for a single class.
    """
    p = check_probs(probs, renormalize=renormalize)
    if p.shape[1] == 1:
        return np.zeros(p.shape[0])
    p1, p2 = _top_two(p)
    return np.clip(1.0 - (p1 - p2), 0.0, 1.0)


def ratio(probs: Any, *, renormalize: bool = True) -> FloatArray:
    """Ratio of confidence: ``p2 / p1`` (second over top probability), in [0, 1]; higher = less certain.

    1 for a tie between the top two classes; 0 for a single class.
    """
    p = check_probs(probs, renormalize=renormalize)
    if p.shape[1] == 1:
        return np.zeros(p.shape[0])
    p1, p2 = _top_two(p)
    return np.clip(p2 / p1, 0.0, 1.0)  # p1 > 0: rows sum to 1, so the top probability is >= 1/C


def entropy(probs: Any, *, renormalize: bool = True) -> FloatArray:
    """Normalised entropy: ``-sum(p log p) / log C``, in [0, 1]; higher = less certain.

    1 for the uniform distribution, 0 for a one-hot row; 0 for a single class.
    """
    p = check_probs(probs, renormalize=renormalize)
    c = p.shape[1]
    if c == 1:
        return np.zeros(p.shape[0])
    return np.clip(_row_entropy(p) / math.log(c), 0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# Scores over (T, n, C) MC-dropout samples
# ----------------------------------------------------------------------------------------------


def mc_variance(mc_probs: Any, *, renormalize: bool = True) -> FloatArray:
    """MC-dropout variance: for each sample, the variance over the ``T`` passes of each class
    probability (population variance, ``ddof=0``), averaged over the ``C`` classes.

    In [0, 0.25]; higher = less certain (the passes disagree). 0 with a single pass or a single class.
    """
    p = _check_mc(mc_probs, renormalize=renormalize)
    if p.shape[1] == 0:
        return np.zeros(0)
    return np.asarray(p.var(axis=0).mean(axis=-1), dtype=np.float64)


def bald(mc_probs: Any, *, renormalize: bool = True) -> FloatArray:
    """BALD (mutual information between the prediction and the model parameters):
    ``H(mean_t p_t) - mean_t H(p_t)``, **normalised by log C** so it lies in [0, 1].

    Higher = less certain in a way more data would fix (the passes are individually confident but
    disagree with each other). Multiply by ``log C`` for nats. 0 with a single pass or a single class.
    """
    p = _check_mc(mc_probs, renormalize=renormalize)
    c = p.shape[2]
    if c == 1 or p.shape[1] == 0:
        return np.zeros(p.shape[1])
    mi = _row_entropy(p.mean(axis=0)) - _row_entropy(p).mean(axis=0)
    return np.clip(mi / math.log(c), 0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# Dispatch
# ----------------------------------------------------------------------------------------------

#: method name -> score function. ``mc_variance`` and ``bald`` take (T, n, C) MC samples, the rest (n, C).
SCORE_FUNCTIONS: dict[str, Callable[..., FloatArray]] = {
    "least_confidence": least_confidence,
    "margin": margin,
    "ratio": ratio,
    "entropy": entropy,
    "mc_variance": mc_variance,
    "bald": bald,
}

#: the methods that need MC-dropout samples of shape (T, n, C).
MC_METHODS = frozenset({"mc_variance", "bald"})


def uncertainty(probs: Any, *, method: str = "least_confidence", renormalize: bool = True) -> FloatArray:
    """One uncertainty score per sample (higher = less certain) with the named ``method``.

    ``probs`` is (n, C), or (T, n, C) MC samples for ``mc_variance`` and ``bald``.
    """
    fn = SCORE_FUNCTIONS.get(method)
    if fn is None:
        valid = ", ".join(SCORE_FUNCTIONS)
        raise ValidationFailed(f"unknown uncertainty method {method!r}; valid methods: {valid}")
    return fn(probs, renormalize=renormalize)


def score_all(probs: Any, mc_probs: Any | None = None, *, renormalize: bool = True) -> dict[str, np.ndarray]:
    """Every score column for a batch, as float32 arrays of length n.

    Keys: ``confidence`` (top probability, higher = more certain), ``least_confidence``, ``margin``,
    ``ratio``, ``entropy``; plus ``mc_variance`` and ``bald`` when ``mc_probs`` (T, n, C) is given
    (its n and C must match ``probs``). Probabilities are validated once (see the module docstring).
    """
    p = check_probs(probs, renormalize=renormalize)
    n, c = p.shape
    p1, p2 = _top_two(p)
    lc: FloatArray
    mg: FloatArray
    rt: FloatArray
    ent: FloatArray
    if c == 1:
        lc = mg = rt = ent = np.zeros(n)
    else:
        lc = np.clip((1.0 - p1) * c / (c - 1), 0.0, 1.0)
        mg = np.clip(1.0 - (p1 - p2), 0.0, 1.0)
        rt = np.clip(p2 / np.where(p1 > 0, p1, 1.0), 0.0, 1.0)
        ent = np.clip(_row_entropy(p) / math.log(c), 0.0, 1.0)
    out: dict[str, np.ndarray] = {
        "confidence": p1,
        "least_confidence": lc,
        "margin": mg,
        "ratio": rt,
        "entropy": ent,
    }
    if mc_probs is not None:
        mc = np.asarray(mc_probs)
        if mc.ndim != 3 or mc.shape[1:] != (n, c):
            want = f"(T, {n}, {c})"
            raise InvalidProbabilities(
                f"MC probabilities must have shape {want} to match probs {(n, c)}, got {mc.shape}"
            )
        out["mc_variance"] = mc_variance(mc, renormalize=renormalize)
        out["bald"] = bald(mc, renormalize=renormalize)
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


Labels = list[str]


def top2(probs: Any, classes: Sequence[str], *, renormalize: bool = True) -> tuple[Labels, list[str | None]]:
    """The most and second most likely class name of each row: ``(pred_label, pred_label2)``.

    Ties go to the class listed first in ``classes``. ``pred_label2`` is None when there is one class.
    """
    p = check_probs(probs, renormalize=renormalize)
    names = list(classes)
    if len(names) != p.shape[1]:
        raise InvalidProbabilities(f"got {len(names)} class names for probabilities with {p.shape[1]} columns")
    if p.shape[0] == 0:
        return [], []
    order = np.argsort(-p, axis=1, kind="stable")
    first = [names[i] for i in order[:, 0]]
    second: list[str | None] = [names[i] for i in order[:, 1]] if p.shape[1] > 1 else [None] * p.shape[0]
    return first, second


# ----------------------------------------------------------------------------------------------
# Probabilities of a growing class list
# ----------------------------------------------------------------------------------------------


def classes_for_probs(n_values: int, classes: Sequence[str], model_classes: int | None = None) -> list[str]:
    """The class names of a probability vector of ``n_values`` values for a dataset's ``classes``.

    A dataset's class list only grows at the end (a label import with ``add_classes``, an ingest bringing
    new labels), so probabilities are aligned with a prefix of it: all ``len(classes)`` classes, or as
    few as the ``model_classes`` the model predicts (``DatasetInfo.model_classes``; None means all); the
    classes after the prefix have probability 0. Any length in between is accepted (a retrained model
    that knows some of the added classes). ValueError, naming the accepted lengths, otherwise."""
    names = list(classes)
    total = len(names)
    least = total if model_classes is None else max(1, min(int(model_classes), total))
    if least <= n_values <= total:
        return names[:n_values]
    shown = ", ".join(names[:50]) + (f" ... ({total} in all)" if total > 50 else "")
    if least == total:
        want = "send one value per class, in this order"
    else:
        added = ", ".join(names[least:][:20])
        want = (
            f"send {least} to {total} values in this order: the model's {least} classes first; the classes "
            f"added after them ({added}) may be left out (probability 0)"
        )
    raise InvalidProbabilities(f"probs has {n_values} values, the dataset has {total} classes ({shown}): {want}")


def pad_probs(probs: Any, n_classes: int) -> FloatArray:
    """Probabilities over a prefix of the class list, padded with zeros to ``n_classes`` columns (the
    last axis); the stored probs of rows scored before classes were added read this way."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 0:
        raise InvalidProbabilities("probabilities must be an array, not a single number")
    have = p.shape[-1]
    if have > n_classes:
        raise InvalidProbabilities(f"probabilities have {have} columns, more than the {n_classes} classes")
    if have == n_classes:
        return p
    pad = [(0, 0)] * (p.ndim - 1) + [(0, n_classes - have)]
    return np.pad(p, pad)
