"""Diversity-aware batch selection on arrays: k-center greedy (Core-Set), TypiClust and BADGE.

Pure functions over numpy arrays (no store): ``service/selection.py`` feeds them the candidates'
embeddings and probabilities from the store, ``service/mining`` uses :func:`kcenter_greedy` and
:func:`typical_pick` to spread a failure mode's share over its neighbourhood, and the active-learning
simulator (``service/simulate.py``) calls them on in-memory copies.

- :func:`kcenter_greedy` (Sener & Savarese 2018): start from the labeled rows as centers, repeatedly take
  the candidate farthest (Euclidean) from every center so far. Same picks as scikit-activeml's
  ``CoreSet`` on data without ties.
- :func:`typiclust` (Hacohen et al. 2022): k-means over labeled + candidates into
  ``n_labeled + budget`` clusters; from the largest cluster holding no labeled row, the candidate with
  the highest typicality (inverse mean distance to its ``k`` nearest neighbours in the cluster); repeat.
  Same picks as scikit-activeml's ``TypiClust`` with the same k-means seed.
- :func:`badge` (Ash et al. 2020): gradient embeddings ``g = (p - onehot(argmax p)) (x) x`` seeded by
  k-means++ (first pick: the largest ``||g||``; then D^2 sampling). The same picks as scikit-activeml's
  ``Badge`` given the same random stream.

Memory: nothing is ``n x n``. Distances to centers are computed a chunk of rows at a time
(``CHUNK`` rows); k-center and BADGE keep one running "distance to the nearest center" per row. BADGE
never materialises the ``n x (C*d)`` gradient embeddings: with ``g_i = a_i (x) x_i``,
``||g_i - g_j||^2 = |a_i|^2 |x_i|^2 + |a_j|^2 |x_j|^2 - 2 (a_i . a_j)(x_i . x_j)`` is exact and costs
``O(C + d)`` per pair (no random projection). TypiClust's k-means switches to ``MiniBatchKMeans``
above ``MINIBATCH_ABOVE`` rows and caps the clusters at ``max(budget, MAX_CLUSTERS)`` (the paper's
cap); its neighbour search runs within one cluster at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "CHUNK",
    "MAX_CLUSTERS",
    "MINIBATCH_ABOVE",
    "TYPICALITY_K",
    "badge",
    "capped_kcenter",
    "coreset_objective",
    "kcenter_greedy",
    "min_sq_distances",
    "typical_pick",
    "typicality",
    "typiclust",
]

#: rows per chunk of a distance computation.
CHUNK = 4096
#: TypiClust: most k-means clusters (the paper's cap), unless the budget is larger.
MAX_CLUSTERS = 500
#: TypiClust: above this many rows k-means runs as MiniBatchKMeans.
MINIBATCH_ABOVE = 50_000
#: TypiClust: neighbours that define a row's typicality (scikit-activeml's default is 5, the paper's 20).
TYPICALITY_K = 5


def _f64(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float64)


def min_sq_distances(x: np.ndarray, centers: np.ndarray, *, chunk: int = CHUNK) -> np.ndarray:
    """Squared Euclidean distance from each row of ``x`` to its nearest row of ``centers``
    (``inf`` when there are no centers), computed ``chunk`` rows at a time.

    Parameters
    ----------
    x : (n, d) array
    centers : (m, d) array
    chunk : int

    Returns
    -------
    (n,) float64 array
    """
    x = _f64(x)
    out = np.full(len(x), np.inf)
    if not len(centers) or not len(x):
        return out
    xx = np.einsum("ij,ij->i", x, x)
    for cs in range(0, len(centers), chunk):
        c = _f64(centers[cs : cs + chunk])
        cc = np.einsum("ij,ij->i", c, c)
        for rs in range(0, len(x), chunk):
            d = xx[rs : rs + chunk, None] + cc[None, :] - 2.0 * (x[rs : rs + chunk] @ c.T)
            out[rs : rs + chunk] = np.minimum(out[rs : rs + chunk], np.maximum(d, 0.0).min(axis=1))
    return out


def _sq_to(x: np.ndarray, xx: np.ndarray, j: int, *, chunk: int = CHUNK) -> np.ndarray:
    """Squared distances of every row of ``x`` to row ``j`` (chunked)."""
    out = np.empty(len(x))
    v = x[j]
    for rs in range(0, len(x), chunk):
        out[rs : rs + chunk] = np.maximum(xx[rs : rs + chunk] + xx[j] - 2.0 * (x[rs : rs + chunk] @ v), 0.0)
    return out


def kcenter_greedy(
    x: np.ndarray,
    budget: int,
    *,
    centers: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
    seed: int = 0,
) -> list[int]:
    """Core-Set's k-center greedy: ``min(budget, allowed rows)`` rows of ``x``, each the one farthest
    from all centers so far (the given ``centers``, then the rows already picked).

    Parameters
    ----------
    x : (n, d) array
        The candidates' embeddings.
    budget : int
    centers : (m, d) array, optional
        Initial centers (the labeled rows). Without any, the first pick is a seeded random row.
    allowed : (n,) bool array, optional
        Rows that may be picked (all by default); the others still count as covered by nothing.
    seed : int
        Only for the first pick when there are no centers.

    Returns
    -------
    list of int
        Row positions in pick order.
    """
    return capped_kcenter(x, budget, centers=centers, allowed=allowed, seed=seed)


def capped_kcenter(
    x: np.ndarray,
    budget: int,
    *,
    centers: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
    groups: Sequence[object] | None = None,
    cap: int | None = None,
    seed: int = 0,
) -> list[int]:
    """:func:`kcenter_greedy` with at most ``cap`` picks per value of ``groups`` (e.g. the predicted class).

    Returns
    -------
    list of int
        Row positions in pick order (fewer than ``budget`` when the cap or ``allowed`` leave too few).
    """
    x = _f64(x)
    n = len(x)
    ok = np.ones(n, bool) if allowed is None else np.asarray(allowed, bool).copy()
    dist = min_sq_distances(x, centers if centers is not None else np.zeros((0, x.shape[1] if x.ndim == 2 else 0)))
    xx = np.einsum("ij,ij->i", x, x) if n else np.zeros(0)
    g = np.asarray(groups, dtype=object) if groups is not None else None
    used: dict[object, int] = {}
    picks: list[int] = []
    rng = np.random.default_rng(seed)
    while len(picks) < budget and ok.any():
        if np.isinf(dist[ok]).all():
            j = int(rng.choice(np.flatnonzero(ok)))
        else:
            j = int(np.argmax(np.where(ok, dist, -np.inf)))
        picks.append(j)
        ok[j] = False
        dist = np.minimum(dist, _sq_to(x, xx, j))
        if g is not None and cap is not None:
            used[g[j]] = used.get(g[j], 0) + 1
            if used[g[j]] >= cap:
                ok &= g != g[j]
    return picks


def coreset_objective(x: np.ndarray, centers: np.ndarray) -> float:
    """The k-center objective: the largest distance from a row of ``x`` to its nearest center."""
    if not len(x):
        return 0.0
    return float(np.sqrt(min_sq_distances(x, centers).max()))


def typicality(x: np.ndarray, k: int = TYPICALITY_K, eps: float = 1e-7) -> np.ndarray:
    """TypiClust's typicality of each row among the rows of ``x``: the inverse of the mean distance
    to its ``k`` nearest neighbours (itself included at distance 0, as scikit-activeml counts it).

    Parameters
    ----------
    x : (n, d) array
        One cluster's rows.
    k : int
    eps : float

    Returns
    -------
    (n,) float64 array
    """
    from sklearn.neighbors import NearestNeighbors

    n = len(x)
    if n <= 1:
        return np.ones(n)
    k = min(n - 1, k)
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, n_neighbors=k + 1)
    return 1.0 / ((dist.sum(axis=1) + eps) / k)


def _kmeans_labels(x: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if len(x) > MINIBATCH_ABOVE:
        return MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, n_init=3).fit_predict(x)
    return KMeans(n_clusters=n_clusters, random_state=seed).fit_predict(x)


def typiclust(
    x: np.ndarray,
    labeled: np.ndarray,
    candidates: np.ndarray,
    budget: int,
    *,
    k: int = TYPICALITY_K,
    seed: int = 0,
) -> list[int]:
    """TypiClust (TPC-RP): k-means over all rows into ``n_labeled + budget`` clusters (at most
    ``max(budget, MAX_CLUSTERS)``); the largest clusters with the fewest labeled rows first, from each
    the most typical candidate.

    Parameters
    ----------
    x : (n, d) array
        Labeled rows and candidates together.
    labeled : (n,) bool array
    candidates : (n,) bool array
        Rows that may be picked.
    budget : int
    k : int
        Neighbours of the typicality.
    seed : int
        k-means' random state.

    Returns
    -------
    list of int
        Row positions of ``x`` in pick order.
    """
    labeled = np.asarray(labeled, bool)
    cand = np.asarray(candidates, bool) & ~labeled
    budget = min(budget, int(cand.sum()))
    if budget <= 0:
        return []
    n_clusters = min(len(x), int(labeled.sum()) + budget, max(budget, MAX_CLUSTERS))
    labels = _kmeans_labels(_f64(x), n_clusters, seed)
    size = np.bincount(labels, minlength=n_clusters)
    covered = np.bincount(labels[labeled], minlength=n_clusters)
    # uncovered clusters by size (largest first), then the ones with the fewest labeled rows
    order = sorted(range(n_clusters), key=lambda c: (covered[c], -size[c], c))
    picks: list[int] = []
    left = cand.copy()
    for c in order * 2:  # a second pass when clusters run out of candidates
        if len(picks) >= budget:
            break
        members = np.flatnonzero(labels == c)
        if not left[members].any():
            continue
        typ = typicality(x[members], k)
        typ[~left[members]] = -np.inf
        j = int(members[int(np.argmax(typ))])
        picks.append(j)
        left[j] = False
    return picks


def typical_pick(
    x: np.ndarray,
    budget: int,
    *,
    groups: Sequence[object] | None = None,
    cap: int | None = None,
    k: int = TYPICALITY_K,
    seed: int = 0,
) -> list[int]:
    """Spread ``budget`` picks over ``x``: k-means into ``budget`` clusters, the most typical row of
    each (largest cluster first), at most ``cap`` per value of ``groups``. A cluster whose rows are all
    of capped groups gives its turn away: more rows of allowed groups come from the other clusters
    (round robin, next most typical); only when the capped groups are all that is left is the cap
    dropped (the budget comes first).

    Returns
    -------
    list of int
        Row positions of ``x`` (fewer than ``budget`` only when the rows run out).
    """
    budget = min(budget, len(x))
    if budget <= 0:
        return []
    labels = _kmeans_labels(_f64(x), budget, seed)
    size = np.bincount(labels, minlength=budget)
    ranked = []
    for c in sorted(range(budget), key=lambda c: (-size[c], c)):
        members = np.flatnonzero(labels == c)
        ranked.append(members[np.argsort(-typicality(x[members], k), kind="stable")].tolist())
    g = np.asarray(groups, dtype=object) if groups is not None else np.zeros(len(x), dtype=object)
    state = _Quota(g, cap)
    state.sweep(ranked, budget, once=True)
    while len(state.picks) < budget and state.sweep(ranked, budget, once=False):
        pass
    state.cap = None
    while len(state.picks) < budget and state.sweep(ranked, budget, once=False):
        pass
    return state.picks


class _Quota:
    """Picks under a per-group cap: ``sweep`` takes, cluster by cluster, the first allowed untaken row."""

    def __init__(self, groups: np.ndarray, cap: int | None):
        self.groups = groups
        self.cap = cap
        self.used: dict[object, int] = {}
        self.picks: list[int] = []
        self.taken: set[int] = set()
        self.clusters_used: set[int] = set()

    def sweep(self, ranked: list[list[int]], budget: int, *, once: bool) -> bool:
        """One pass over the clusters; ``once``: only clusters that gave no row yet. True if it took any."""
        took = False
        for c, rows in enumerate(ranked):
            if len(self.picks) >= budget:
                break
            if once and c in self.clusters_used:
                continue
            for j in rows:
                g = self.groups[j]
                if j in self.taken or (self.cap is not None and self.used.get(g, 0) >= self.cap):
                    continue
                self.picks.append(j)
                self.taken.add(j)
                self.used[g] = self.used.get(g, 0) + 1
                self.clusters_used.add(c)
                took = True
                break
        return took


def badge(
    probs: np.ndarray,
    x: np.ndarray,
    budget: int,
    *,
    rng: np.random.RandomState | int = 0,
    chunk: int = CHUNK,
) -> list[int]:
    """BADGE: k-means++ seeding on the gradient embeddings ``(p - onehot(argmax p)) (x) x``, computed
    implicitly (see the module doc), never materialised.

    Parameters
    ----------
    probs : (n, C) array
        The candidates' class probabilities (the current model's).
    x : (n, d) array
        The candidates' embeddings (the penultimate layer).
    budget : int
    rng : RandomState or int
        The D^2 sampling's random stream (an int seeds a ``RandomState``).
    chunk : int

    Returns
    -------
    list of int
        Row positions in pick order.
    """
    rs = rng if isinstance(rng, np.random.RandomState) else np.random.RandomState(int(rng))
    p = _f64(probs)
    x = _f64(x)
    n = len(x)
    a = p - np.eye(p.shape[1])[p.argmax(axis=1)] if n else p
    aa = np.einsum("ij,ij->i", a, a)
    xx = np.einsum("ij,ij->i", x, x)
    d2 = aa * xx  # ||g_i||^2: the distance to "no center"
    picks: list[int] = []
    for step in range(min(budget, n)):
        total = float(d2.sum())
        if total <= 0:
            w = np.ones(n)
            w[picks] = 0
            d2 = np.full(n, np.inf)
            j = int(rs.choice(n, 1, replace=False, p=w / w.sum())[0])
        elif step == 0:
            j = int(np.argmax(d2))
        else:
            j = int(rs.choice(n, 1, replace=False, p=d2 / total)[0])
        picks.append(j)
        gd = np.empty(n)
        for s in range(0, n, chunk):
            dot = (a[s : s + chunk] @ a[j]) * (x[s : s + chunk] @ x[j])
            gd[s : s + chunk] = np.maximum(aa[s : s + chunk] * xx[s : s + chunk] + aa[j] * xx[j] - 2.0 * dot, 0.0)
        d2 = np.minimum(d2, gd)  # as scikit-activeml: the origin (zero gradient) counts as a center
    return picks
