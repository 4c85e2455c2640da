"""Mining: seeds (failure examples) -> their nearest unlabeled neighbours, ranked and within a budget.

Seeds come from explicit ids, an issue (its ``sample_ids``), rows matching a seed selector (a cluster,
a confusion cell ``label X predicted Y``, a top-2 pair ``pred_label/pred_label2``, the failures of a
split), a text query (the dataset's open_clip text tower) or an uploaded image (the dataset's embedder).

Candidates are the rows a caller may want to label: unlabeled rows by default, AND the caller's filter,
minus rows already exported (unless ``include_exported``), minus the seeds themselves.

Aggregations over many seeds (each seed ranks the candidates by cosine distance):

- ``round_robin``: each seed's nearest in turn, so one dense seed cannot take the whole budget;
- ``min_distance``: rows closest to any seed first;
- ``mean``: rows closest to the (normalised) centroid of the seeds;
- ``reciprocal_rank``: sum over seeds of 1 / (60 + rank) (RRF), highest first (full rankings on the
  exact path; each seed's top list on the index path, rows outside a list adding 0);
- ``modes`` (default): seeds are grouped into failure modes (their analysis cluster, else a clustering
  of the seed vectors); the budget is shared across modes (largest remainder) by their size times how
  systematic the failure is there (``mode_weighting``: the local error rate among the judged rows
  nearest the seeds by default, so a stray one-off error among rows the model gets right gets little),
  and each mode's share is filled by ``min_distance`` within the mode. Measured on the demo with all
  val failures as seeds (bench/mine_demo.py) it has the best mean slice precision over budgets 25-200
  (0.982, min_distance 0.974, reciprocal_rank 0.952, mean 0.950, round_robin 0.847, modes weighted by
  size alone 0.898); see the report.

Guarantees: the result has ``min(budget, matching rows)`` rows. Nothing is post-filtered into a
shortfall: when near-duplicate removal or overlap between seeds leaves too few rows, the per-seed
search goes deeper until the budget is filled or the candidates run out. Each result carries the
seeds that found it (the seeds whose ``k`` nearest candidates include it; the nearest seed otherwise)
and its distance to the nearest seed (``1 - cos``).
"""

from __future__ import annotations

import functools
import json
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.compute as pc

from edgeminer.indexer.store import (
    EXACT_SEARCH_MAX_CANDIDATES,
    Store,
    embeddings_to_numpy,
    ids_in,
    sql_quote,
    usable_vectors,
)

AGGREGATIONS = ("modes", "round_robin", "min_distance", "mean", "reciprocal_rank")
DEFAULT_AGGREGATION = "modes"
#: k when the caller does not give one: neighbours per seed used to attribute results to seeds.
DEFAULT_K = 10
#: most seeds a selector (cluster, confusion cell, failures) may produce.
MAX_SEEDS = 5000
RRF_K = 60.0
#: at most this many query vectors on the exact path are searched one by one instead of loading every
#: candidate vector into memory once.
FEW_QUERIES = 2
#: candidate rows whose vectors cost about one index query to read (~11 us a row vs 11-25 ms a query,
#: bench/search.py --crossover at 100k and 1M): with n seeds, up to n times this many candidates are
#: ranked exactly in memory.
MATRIX_ROWS_PER_QUERY = 2000
#: most candidate vectors loaded into memory for an exact multi-seed search (~0.5 GB at 512 dims).
MATRIX_MAX_ROWS = 250_000

# ----------------------------------------------------------------------------------------------
# Errors (the API maps them into service/errors.py's tree)
# ----------------------------------------------------------------------------------------------


class MiningError(ValueError):
    """A mining or selection request that cannot be served as asked (HTTP 422)."""


class SeedsNotFound(MiningError):
    """Seed ids that do not exist in the dataset (HTTP 404)."""

    def __init__(self, dataset: str, missing: Sequence[str]):
        self.dataset = dataset
        self.missing = list(missing)
        shown = ", ".join(repr(m) for m in self.missing[:10])
        more = f" and {len(self.missing) - 10} more" if len(self.missing) > 10 else ""
        super().__init__(
            f"{len(self.missing)} seed id(s) not found in dataset {dataset!r}: {shown}{more}; "
            "check the ids (GET /datasets/{ds}/samples lists them)"
        )


class EmbeddingUnavailable(MiningError):
    """The dataset's embedder cannot embed this kind of seed (text on a non-CLIP embedder...)."""


# ----------------------------------------------------------------------------------------------
# Seeds
# ----------------------------------------------------------------------------------------------


@dataclass
class Seeds:
    """What to mine around. Parts combine: ids + issue + selector rows + text + image."""

    ids: list[str] = field(default_factory=list)
    issue: str | None = None
    #: selector: rows matching ALL given parts become seeds
    cluster: int | None = None
    confusion: tuple[str, str] | None = None  # (label, pred_label): ground truth X predicted as Y
    pair: tuple[str, str] | None = None  # top-2 confusion pair (pred_label, pred_label2), either order
    failures: bool = False  # only rows the model got wrong (correct = false)
    split: str | None = None  # only rows of this split
    text: str | None = None
    image: bytes | None = None

    def has_selector(self) -> bool:
        return self.cluster is not None or self.confusion is not None or self.pair is not None or (
            self.failures or self.split is not None
        )

    def is_empty(self) -> bool:
        return not (self.ids or self.issue or self.has_selector() or self.text or self.image)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.ids:
            out["ids"] = len(self.ids)
        for name in ("issue", "cluster", "split", "text"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.confusion:
            out["confusion"] = {"label": self.confusion[0], "pred_label": self.confusion[1]}
        if self.pair:
            out["pair"] = list(self.pair)
        if self.failures:
            out["failures"] = True
        if self.image:
            out["image"] = f"{len(self.image)} bytes"
        return out


@dataclass
class ResolvedSeeds:
    """Seed vectors (normalised) with their ids (``text:<query>`` / ``image:upload`` for embedded
    seeds) and analysis clusters (None when unknown)."""

    ids: list[str]
    vectors: np.ndarray
    clusters: list[int | None]


def seed_selector_where(seeds: Seeds) -> str | None:
    """The where-clause of the selector part of ``seeds`` (values quoted), or None."""
    parts = []
    if seeds.cluster is not None:
        parts.append(f"cluster = {int(seeds.cluster)}")
    if seeds.confusion is not None:
        label, pred = seeds.confusion
        parts.append(f"label = {sql_quote(label)} AND pred_label = {sql_quote(pred)}")
    if seeds.pair is not None:
        a, b = seeds.pair
        qa, qb = sql_quote(a), sql_quote(b)
        parts.append(
            f"((pred_label = {qa} AND pred_label2 = {qb}) OR (pred_label = {qb} AND pred_label2 = {qa}))"
        )
    if seeds.failures:
        parts.append("correct = false")
    if seeds.split is not None:
        parts.append(f"split = {sql_quote(seeds.split)}")
    return " AND ".join(f"({p})" for p in parts) if parts else None


def issue_sample_ids(store: Store, dataset: str, issue_id: str) -> list[str]:
    """The flagged sample ids of an issue document (kind ``issue``, field ``sample_ids``)."""
    doc = store.get_doc(dataset, "issue", issue_id)
    ids = doc.get("sample_ids") or []
    if not ids:
        raise MiningError(f"issue {issue_id!r} has no sample ids yet: add failure examples to it first")
    return [str(i) for i in ids]


@functools.lru_cache(maxsize=8)
def _cached_embedder(config_json: str, device: str) -> Any:
    from edgeminer.indexer.embedders import load_embedder

    return load_embedder(json.loads(config_json), device=device)


def dataset_embedder(store: Store, dataset: str, *, device: str = "cpu") -> Any:
    """The dataset's embedder, rebuilt from its recorded config once per process and config."""
    info = store.get_dataset(dataset)
    try:
        return _cached_embedder(json.dumps(info.embedder, sort_keys=True), device)
    except Exception as exc:  # noqa: BLE001 - any failure to rebuild it means we cannot embed
        if type(exc).__name__ == "NotSupported":
            raise EmbeddingUnavailable(str(exc)) from exc
        raise EmbeddingUnavailable(
            f"cannot load the embedder of dataset {dataset!r} ({info.embedder.get('kind', '?')}): {exc}"
        ) from exc


def embed_text(embedder: Any, text: str, *, dataset: str = "") -> np.ndarray:
    try:
        out = embedder.embed_text([text])
    except Exception as exc:  # noqa: BLE001
        if type(exc).__name__ == "NotSupported" or isinstance(exc, NotImplementedError):
            kind = getattr(embedder, "kind", "this")
            raise EmbeddingUnavailable(
                f"text seeds need a CLIP (open_clip) embedder; dataset {dataset!r} uses a {kind} embedder, "
                "which has no text tower: seed with ids, an issue, a cluster or an image instead"
            ) from exc
        raise
    return _as_matrix(out)


def embed_image(embedder: Any, data: bytes, *, what: str = "uploaded image") -> np.ndarray:
    from edgeminer.indexer.pipeline import ImageLoadError, decode_image_bytes

    try:
        img = decode_image_bytes(data)
    except ImageLoadError as exc:
        raise MiningError(f"{what} is not a readable image ({exc}); send a PNG or JPEG file") from exc
    out = embedder.embed_images([img])
    return _as_matrix(out)


def _as_matrix(out: Any) -> np.ndarray:
    emb = getattr(out, "embeddings", out)
    arr = np.asarray(emb, dtype=np.float32)
    return arr.reshape(1, -1) if arr.ndim == 1 else arr


def resolve_seeds(
    store: Store,
    dataset: str,
    seeds: Seeds,
    *,
    embedder: Any = None,
    max_seeds: int = MAX_SEEDS,
    device: str = "cpu",
) -> ResolvedSeeds:
    """Turn a seed spec into normalised vectors. Unknown ids raise SeedsNotFound; ids of rows
    without an embedding (error rows) raise MiningError naming them."""
    info = store.get_dataset(dataset)
    if seeds.is_empty():
        raise MiningError(
            "no seeds given: pass ids, an issue, a cluster, a confusion cell, a pair, failures/split, "
            "a text query or an image"
        )
    row_ids: list[str] = list(dict.fromkeys(str(i) for i in seeds.ids))
    if seeds.issue:
        row_ids.extend(i for i in issue_sample_ids(store, dataset, seeds.issue) if i not in row_ids)
    if row_ids:
        have = store.get_samples(dataset, row_ids, columns=["id"])["id"].to_pylist()
        missing = sorted(set(row_ids) - set(have))
        if missing:
            raise SeedsNotFound(dataset, missing)
    where = seed_selector_where(seeds)
    if where is not None:
        n = store.count(dataset, where)
        if n == 0:
            raise MiningError(
                f"no rows match the seed selector {json.dumps(seeds.describe())}: nothing to mine around"
            )
        if n > max_seeds:
            raise MiningError(
                f"the seed selector matches {n} rows, more than the {max_seeds} seeds a request may use: "
                "narrow it (add a split, a cluster or a confusion cell)"
            )
        sel = store.query(dataset, where=where, columns=["id"])["id"].to_pylist()
        row_ids.extend(i for i in sel if i not in set(row_ids))
    ids: list[str] = []
    parts: list[np.ndarray] = []
    clusters: list[int | None] = []
    if row_ids:
        if len(row_ids) > max_seeds:
            raise MiningError(f"{len(row_ids)} seeds, more than the {max_seeds} a request may use")
        table = store.get_samples(dataset, row_ids, columns=["id", "embedding", "cluster", "status"])
        got_ids = table["id"].to_pylist()
        embs = table["embedding"].to_pylist()
        bad = [i for i, e in zip(got_ids, embs, strict=True) if e is None]
        if bad:
            raise MiningError(
                f"seed rows without an embedding (failed at ingest): {', '.join(bad[:10])}; "
                "fix or drop them, or seed with other rows"
            )
        ids.extend(got_ids)
        parts.append(np.asarray(embs, dtype=np.float32).reshape(len(got_ids), info.dim))
        clusters.extend(table["cluster"].to_pylist())
    if seeds.text or seeds.image:
        emb = embedder if embedder is not None else dataset_embedder(store, dataset, device=device)
        if seeds.text:
            vec = embed_text(emb, seeds.text, dataset=dataset)
            ids.append(f"text:{seeds.text}")
            parts.append(vec)
            clusters.append(None)
        if seeds.image:
            vec = embed_image(emb, seeds.image)
            ids.append("image:upload")
            parts.append(vec)
            clusters.append(None)
    vectors = np.concatenate(parts, axis=0) if parts else np.zeros((0, info.dim), np.float32)
    if vectors.shape[1] != info.dim:
        raise MiningError(
            f"the seed embedding has {vectors.shape[1]} values but dataset {dataset!r} stores {info.dim}: "
            "the dataset's embedder config does not match its vectors"
        )
    return ResolvedSeeds(ids, normalize(vectors), clusters)


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


# ----------------------------------------------------------------------------------------------
# Candidates and neighbour search
# ----------------------------------------------------------------------------------------------


def candidate_where(
    where: str | None = None,
    *,
    include_labeled: bool = False,
    include_exported: bool = False,
    exclude_ids: Sequence[str] = (),
    exported_ids: Sequence[str] | None = None,
) -> str:
    """The candidate clause: unlabeled (unless include_labeled), the caller's filter (already built
    by service/filters.py), not exported (unless include_exported), not a seed, ok rows.

    ``exported_ids`` (the rows whose ``exported`` list is non-empty, see :func:`exported_ids`) turns
    the "not exported" test into an id exclusion that the id index answers; without it the clause
    tests the list column, which reads it for every row."""
    parts = ["status = 'ok'"]  # ok rows carry an embedding; testing it would read every vector
    if not include_labeled:
        parts.append("(labeled = false OR labeled IS NULL)")
    excluded = list(exclude_ids)
    if not include_exported:
        if exported_ids is None or len(exported_ids) > MAX_EXCLUDED_IDS:
            parts.append("(exported IS NULL OR array_length(exported) = 0)")
        else:
            excluded.extend(exported_ids)
    if where:
        parts.append(f"({where})")
    if excluded:
        parts.append(f"NOT ({ids_in(dict.fromkeys(excluded))})")
    return " AND ".join(parts)


#: most ids an exclusion list may hold before the clause tests the exported column instead.
MAX_EXCLUDED_IDS = 20_000
_EXPORTED_CACHE: dict[tuple[str, str, str, int], list[str]] = {}
_EXPORTED_LOCK = threading.Lock()


_COUNT_CACHE: dict[tuple[str, str, str, int, str], int] = {}


def cached_count(store: Store, dataset: str, where: str) -> int:
    """Rows matching ``where``, remembered per table version (a count costs a filter pass over the
    table: ~15 ms at 1M rows; the dashboard and repeated mines ask the same question again)."""
    key = (store.uri, dataset, store.get_dataset(dataset).created_at, store.version(dataset), where)
    with _EXPORTED_LOCK:
        hit = _COUNT_CACHE.get(key)
    if hit is not None:
        return hit
    n = store.count(dataset, where)
    with _EXPORTED_LOCK:
        if len(_COUNT_CACHE) > 1024:
            _COUNT_CACHE.clear()
        _COUNT_CACHE[key] = n
    return n


def exported_ids(store: Store, dataset: str) -> list[str]:
    """Ids of rows already exported (non-empty ``exported``), cached per table version."""
    key = (store.uri, dataset, store.get_dataset(dataset).created_at, store.version(dataset))
    with _EXPORTED_LOCK:
        hit = _EXPORTED_CACHE.get(key)
    if hit is not None:
        return hit
    ids = store.query(dataset, where="array_length(exported) > 0", columns=["id"])["id"].to_pylist()
    with _EXPORTED_LOCK:
        if len(_EXPORTED_CACHE) > 64:
            _EXPORTED_CACHE.clear()
        _EXPORTED_CACHE[key] = ids
    return ids


class NeighbourSearch:
    """Ranked candidates per query vector, to any depth. Small candidate sets are loaded once and
    searched exactly in numpy (one matrix product for all queries); large ones go through
    ``Store.search`` (vector index, prefilter, refine), re-queried deeper when asked."""

    def __init__(
        self, store: Store, dataset: str, where: str, *, exact: bool | None = None, n_queries: int = 1
    ):
        self.store = store
        self.dataset = dataset
        self.where = where
        self.n_candidates = cached_count(store, dataset, where)
        if exact is None:
            # many seeds: reading the candidates' vectors once beats one index query per seed
            small = EXACT_SEARCH_MAX_CANDIDATES
            if n_queries > FEW_QUERIES:
                small = min(MATRIX_MAX_ROWS, max(small, n_queries * MATRIX_ROWS_PER_QUERY))
            exact = self.n_candidates <= small or not store.has_vector_index(dataset)
        self.exact = bool(exact)
        self.engine = "exact" if self.exact else "index"
        self._ids: np.ndarray | None = None
        self._vecs: np.ndarray | None = None
        self._vec_cache: dict[str, np.ndarray] = {}
        self._pos: dict[str, int] | None = None

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        if self._ids is None or self._vecs is None:
            dim = self.store.get_dataset(self.dataset).dim
            table = self.store.query(self.dataset, where=self.where, columns=["id", "embedding"])
            table = table.filter(pc.is_valid(table["embedding"]))
            vecs = embeddings_to_numpy(table["embedding"], dim)
            ok = usable_vectors(vecs)  # a damaged vector (NaN, inf) never ranks as anyone's neighbour
            self._ids = np.asarray(table["id"].to_pylist(), dtype=object)[ok]
            self._vecs = normalize(vecs[ok])
        return self._ids, self._vecs

    def ranked(self, queries: np.ndarray, depth: int) -> list[tuple[list[str], np.ndarray]]:
        """For each query, its ``depth`` nearest candidates: (ids, cosine distances ascending)."""
        depth = max(0, min(int(depth), self.n_candidates))
        if depth == 0:
            return [([], np.zeros(0, np.float32)) for _ in range(len(queries))]
        if self.exact and (self._ids is not None or len(queries) > FEW_QUERIES):
            ids, vecs = self._load()
            out = []
            for start in range(0, len(queries), 256):
                dist = 1.0 - queries[start : start + 256] @ vecs.T
                if depth < dist.shape[1]:
                    part = np.argpartition(dist, depth - 1, axis=1)[:, :depth]
                else:
                    part = np.tile(np.arange(dist.shape[1]), (dist.shape[0], 1))
                for row, cols in zip(dist, part, strict=True):
                    order = cols[np.argsort(row[cols], kind="stable")]
                    out.append((ids[order].tolist(), row[order].astype(np.float32)))
            return out
        # the index path, or a few queries on the exact path: LanceDB searches (flat when exact), which
        # beats loading every candidate vector for one or two seeds
        out = []
        for q in queries:
            table = self.store.search(
                self.dataset, q, k=depth, where=self.where, columns=["id"], exact=self.exact,
                candidates=self.n_candidates,
            )
            out.append((table["id"].to_pylist(), np.asarray(table["_distance"].to_numpy(), np.float32)))
        return out

    def vectors_of(self, ids: Sequence[str]) -> np.ndarray:
        """Normalised vectors of candidate ids (from memory when loaded, else from the store)."""
        if self._ids is not None and self._vecs is not None:
            all_ids, vecs = self._ids, self._vecs
            if self._pos is None:
                self._pos = {i: n for n, i in enumerate(all_ids.tolist())}
            return vecs[[self._pos[i] for i in ids]] if ids else np.zeros((0, vecs.shape[1]), np.float32)
        missing = [i for i in ids if i not in self._vec_cache]
        if missing:
            got, vecs = self.store.vectors(self.dataset, ids=missing)
            for i, v in zip(got, normalize(vecs), strict=True):
                self._vec_cache[i] = v
        dim = self.store.get_dataset(self.dataset).dim
        return np.stack([self._vec_cache[i] for i in ids]) if ids else np.zeros((0, dim), np.float32)


# ----------------------------------------------------------------------------------------------
# Aggregation
# ----------------------------------------------------------------------------------------------

Ranked = list[tuple[list[str], np.ndarray]]


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


def _min_distance(lists: Ranked) -> tuple[list[str], float]:
    """Rows by distance to their nearest seed, and the distance up to which that order is exact
    (rows not in any list are at least this far from every seed)."""
    best: dict[str, float] = {}
    for ids, dist in lists:
        for i, d in zip(ids, dist.tolist(), strict=True):
            if d < best.get(i, math.inf):
                best[i] = d
    exact_upto = min((float(dist[-1]) for _, dist in lists if len(dist)), default=math.inf)
    return sorted(best, key=lambda i: (best[i], i)), exact_upto


def _reciprocal_rank(lists: Ranked) -> list[str]:
    score: dict[str, float] = {}
    for ids, _ in lists:
        for r, i in enumerate(ids):
            score[i] = score.get(i, 0.0) + 1.0 / (RRF_K + r + 1)
    return sorted(score, key=lambda i: (-score[i], i))


def seed_modes(seeds: ResolvedSeeds, *, seed: int = 0) -> list[list[int]]:
    """Group seeds into failure modes: by analysis cluster when they have one (>= 0), the rest by a
    clustering of their vectors (HDBSCAN, noise seeds alone). Largest mode first."""
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


MODE_WEIGHTINGS = ("local_error_rate", "cluster_error_rate", "size")
DEFAULT_MODE_WEIGHTING = "local_error_rate"
#: judged (labeled, with a correct flag) neighbours per seed that estimate its local error rate.
LOCAL_ERROR_K = 20


def mode_weights(
    store: Store, dataset: str, resolved: ResolvedSeeds, groups: list[list[int]], *, weighting: str
) -> list[float]:
    """How much of the budget each mode deserves: its size (seeds), times how systematic the failure
    is there. ``local_error_rate``: the share of wrong predictions among the LOCAL_ERROR_K judged
    labeled rows nearest each seed (averaged over the mode); ``cluster_error_rate``: the error rate of
    the mode's analysis cluster. A dense region of failures keeps its share; a stray error among
    rows the model gets right (a one-off, or label noise) gets little."""
    sizes = [float(len(g)) for g in groups]
    if weighting == "size":
        return sizes
    if weighting == "cluster_error_rate":
        out = []
        for g, size in zip(groups, sizes, strict=True):
            c = _mode_cluster(resolved, g)
            if c is None:
                out.append(size)
                continue
            n_judged = store.count(dataset, f"cluster = {c} AND correct IS NOT NULL")
            n_wrong = store.count(dataset, f"cluster = {c} AND correct = false")
            out.append(size * (n_wrong / n_judged if n_judged else 1.0))
        return out
    # judged rows near each seed, the other seeds included (they are failures there too), itself not
    judged = NeighbourSearch(store, dataset, "status = 'ok' AND correct IS NOT NULL", n_queries=len(resolved.ids))
    if judged.n_candidates == 0:
        return sizes
    lists = judged.ranked(resolved.vectors, LOCAL_ERROR_K + 1)
    lists = [
        ([i for i in ids if i != sid][:LOCAL_ERROR_K], d) for sid, (ids, d) in zip(resolved.ids, lists, strict=True)
    ]
    near_ids = sorted({i for ids, _ in lists for i in ids})
    table = store.get_samples(dataset, near_ids, columns=["id", "correct"])
    wrong = {i for i, c in zip(table["id"].to_pylist(), table["correct"].to_pylist(), strict=True) if c is False}
    rate = np.asarray([np.mean([i in wrong for i in ids]) if ids else 1.0 for ids, _ in lists])
    return [float(rate[g].sum()) for g in groups]


def share_budget(sizes: Sequence[float], budget: int) -> list[int]:
    """Split ``budget`` across groups in proportion to their sizes (largest remainder)."""
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
class MineResult:
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

    def summary(self) -> dict[str, Any]:
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
            "version": self.version,
            "took_ms": round(self.took_ms, 1),
        }


def _check_options(aggregation: str, budget: int, k: int | None, dedup_distance: float | None) -> None:
    if aggregation not in AGGREGATIONS:
        raise MiningError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, not {aggregation!r}")
    if not isinstance(budget, int) or budget < 1:
        raise MiningError(f"budget must be a positive integer, not {budget!r}")
    if k is not None and (not isinstance(k, int) or k < 1):
        raise MiningError(f"k (neighbours per seed) must be a positive integer, not {k!r}")
    if dedup_distance is not None and not (0.0 <= dedup_distance < 2.0):
        raise MiningError(f"dedup_distance is a cosine distance in [0, 2), not {dedup_distance!r}")


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
) -> MineResult:
    """Nearest candidates of the seeds, aggregated, de-duplicated, ``min(budget, matching)`` rows.

    ``where`` is a trusted clause (from service/filters.py). ``k`` is the number of nearest
    candidates per seed that count as "found by" that seed (default 10); the search itself goes as
    deep as the budget needs. ``dedup_distance``: a row closer than this (cosine distance) to a row
    already kept is skipped as a near-duplicate.
    """
    t0 = time.perf_counter()
    _check_options(aggregation, budget, k, dedup_distance)
    if mode_weighting not in MODE_WEIGHTINGS:
        raise MiningError(f"mode_weighting must be one of {', '.join(MODE_WEIGHTINGS)}, not {mode_weighting!r}")
    k = int(k or DEFAULT_K)
    if isinstance(seeds, ResolvedSeeds):
        resolved = seeds
    else:
        resolved = resolve_seeds(store, dataset, seeds, embedder=embedder, device=device)
    version = store.version(dataset)
    clause = candidate_where(
        where,
        include_labeled=include_labeled,
        include_exported=include_exported,
        exclude_ids=_seeds_among_candidates(store, dataset, resolved, include_labeled),
        exported_ids=None if include_exported else exported_ids(store, dataset),
    )
    engine = NeighbourSearch(store, dataset, clause, exact=exact, n_queries=len(resolved.ids))
    target = min(budget, engine.n_candidates)
    groups: list[list[int]] = []
    shares: list[int] = []
    weights: list[float] = []
    fill = _Fill([], {}, 0)
    lists: Ranked = []
    if target > 0:
        n_seeds = len(resolved.ids)
        if aggregation == "modes":
            groups = seed_modes(resolved, seed=seed)
            weights = mode_weights(store, dataset, resolved, groups, weighting=mode_weighting)
            shares = share_budget(weights, target)
        if aggregation == "mean":
            lists = engine.ranked(resolved.vectors, k)
            centroid = normalize(resolved.vectors.mean(axis=0, keepdims=True))
            depth = target + k
            while True:
                (ids, _), = engine.ranked(centroid, depth)
                exhausted = depth >= engine.n_candidates
                fill = _take([ids], target, _Deduper(engine, dedup_distance), exhausted)
                if fill.complete or exhausted:
                    break
                depth = min(engine.n_candidates, depth * 4)
        else:
            depth = max(k, math.ceil(2 * target / max(1, n_seeds)) + k)
            if aggregation == "reciprocal_rank" and engine.exact:
                depth = engine.n_candidates  # fuse the full rankings when they are cheap
            while True:
                lists = engine.ranked(resolved.vectors, depth)
                exhausted = depth >= engine.n_candidates
                deduper = _Deduper(engine, dedup_distance)
                if aggregation == "modes":
                    fill = _fill_modes(lists, groups, shares, target, deduper, exhausted)
                else:
                    fill = _fill_simple(lists, aggregation, target, deduper, exhausted)
                if fill.complete or exhausted:
                    break
                depth = min(engine.n_candidates, depth * 4)
    rows = _result_rows(store, dataset, engine, resolved, lists, fill, k, columns)
    modes_info = [
        {
            "mode": n,
            "size": len(g),
            "weight": round(w, 3),
            "share": s,
            "found": sum(1 for m in fill.mode_of.values() if m == n),
            "cluster": _mode_cluster(resolved, g),
            "seeds": [resolved.ids[j] for j in g[:50]],
        }
        for n, (g, s, w) in enumerate(zip(groups, shares, weights, strict=True))
    ]
    return MineResult(
        dataset=dataset,
        aggregation=aggregation,
        budget=budget,
        k=k,
        engine=engine.engine,
        candidates=engine.n_candidates,
        rows=rows,
        seeds=resolved,
        modes=modes_info,
        dedup_removed=fill.removed,
        version=version,
        took_ms=(time.perf_counter() - t0) * 1000,
    )


def _seeds_among_candidates(
    store: Store, dataset: str, resolved: ResolvedSeeds, include_labeled: bool
) -> list[str]:
    """Seed rows that would otherwise be candidates (unlabeled seeds, or any with include_labeled):
    only these need excluding, and an id exclusion costs the filter on every search."""
    row_ids = [i for i in resolved.ids if not i.startswith(("text:", "image:"))]
    if not row_ids:
        return []
    table = store.get_samples(dataset, row_ids, columns=["id", "labeled"])
    return [
        i
        for i, lab in zip(table["id"].to_pylist(), table["labeled"].to_pylist(), strict=True)
        if include_labeled or not lab
    ]


def _mode_cluster(resolved: ResolvedSeeds, group: list[int]) -> int | None:
    cs = {resolved.clusters[n] for n in group}
    if len(cs) == 1:
        c = next(iter(cs))
        return int(c) if c is not None and int(c) >= 0 else None
    return None


class _Deduper:
    """Greedy near-duplicate removal: a row closer than ``threshold`` to a kept row is skipped."""

    def __init__(self, engine: NeighbourSearch, threshold: float | None):
        self.engine = engine
        self.threshold = threshold
        self.kept = np.zeros((0, 0), np.float32)
        self.removed = 0

    def accept(self, ids: list[str], limit: int, taken: set[str]) -> list[str]:
        """Up to ``limit`` of ``ids`` in order, skipping taken rows and near-duplicates of kept ones."""
        out: list[str] = []
        fresh = [i for i in ids if i not in taken]
        if self.threshold is None:
            out = fresh[:limit]
            taken.update(out)
            return out
        for start in range(0, len(fresh), 256):
            if len(out) >= limit:
                break
            chunk = fresh[start : start + 256]
            vecs = self.engine.vectors_of(chunk)
            for i, v in zip(chunk, vecs, strict=True):
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
class _Fill:
    order: list[str]
    mode_of: dict[str, int]
    removed: int
    complete: bool = True


def _take(orders: list[list[str]], target: int, deduper: _Deduper, exhausted: bool) -> _Fill:
    taken: set[str] = set()
    picked = deduper.accept(orders[0], target, taken)
    return _Fill(picked, {}, deduper.removed, len(picked) >= target or exhausted)


def _fill_simple(lists: Ranked, aggregation: str, target: int, deduper: _Deduper, exhausted: bool) -> _Fill:
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
    return _Fill(picked, {}, deduper.removed, complete or exhausted)


def _best_distance(lists: Ranked) -> dict[str, float]:
    best: dict[str, float] = {}
    for ids, dist in lists:
        for i, d in zip(ids, dist.tolist(), strict=True):
            if d < best.get(i, math.inf):
                best[i] = d
    return best


def _fill_modes(
    lists: Ranked, groups: list[list[int]], shares: list[int], target: int, deduper: _Deduper, exhausted: bool
) -> _Fill:
    """Each mode's share by min_distance within the mode (larger modes first); shortfalls (overlap,
    dedup) are filled from all seeds by distance. Results interleave modes by rank."""
    taken: set[str] = set()
    complete = True
    per_mode: list[list[str]] = []
    best_all = _best_distance(lists)
    for g, share in zip(groups, shares, strict=True):
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
    return _Fill(ordered, mode_of, deduper.removed, complete or exhausted)


def _interleave(parts: list[list[str]]) -> list[str]:
    out: list[str] = []
    longest = max((len(p) for p in parts), default=0)
    for r in range(longest):
        for p in parts:
            if r < len(p):
                out.append(p[r])
    return out


def _result_rows(
    store: Store,
    dataset: str,
    engine: NeighbourSearch,
    resolved: ResolvedSeeds,
    lists: Ranked,
    fill: _Fill,
    k: int,
    columns: Sequence[str] | None,
) -> list[dict[str, Any]]:
    order = fill.order
    if not order:
        return []
    single = dict(zip(*lists[0], strict=True)) if len(resolved.ids) == 1 and lists else {}
    if single and all(i in single for i in order):
        dist = np.asarray([[single[i]] for i in order], np.float32)  # one seed: the search's distances
    else:
        vecs = engine.vectors_of(order)
        dist = 1.0 - vecs @ resolved.vectors.T  # (results, seeds)
    found_by: dict[str, list[int]] = {}
    for n, (ids, _) in enumerate(lists):
        for i in ids[:k]:
            found_by.setdefault(i, []).append(n)
    extra: dict[str, dict[str, Any]] = {}
    cols = [c for c in dict.fromkeys(columns or []) if c not in ("id", "embedding")]
    if cols:
        for r in store.get_samples(dataset, order, columns=["id", *cols]).to_pylist():
            extra[r["id"]] = r
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


def mine_record(result: MineResult, seeds: Seeds, params: Mapping[str, Any]) -> dict[str, Any]:
    """The selection document a mine call leaves behind (kind ``selection``), for exports."""
    return {
        "kind": "mine",
        "seeds": seeds.describe(),
        "params": dict(params),
        "ids": [r["id"] for r in result.rows],
        "summary": result.summary(),
    }

