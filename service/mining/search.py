"""Candidates and neighbour search: which rows may be mined, and each seed's nearest ones among them.

Candidates are the rows a caller may want to label: unlabeled rows by default, AND the caller's filter,
minus rows already exported (unless ``include_exported``), minus the seeds themselves
(:func:`candidate_where`). :class:`NeighbourSearch` ranks them for any number of query vectors, to any
depth.

Exact or index: the decision is made once per search, by :meth:`Store.prefer_exact
<edgeminer.indexer.store.Store.prefer_exact>` (the only place it is made); :class:`NeighbourSearch` asks
it in its constructor and then runs that mode, in memory or through ``Store.search_many(exact=...)``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pyarrow.compute as pc

from edgeminer.indexer.store import (
    FEW_QUERIES,
    Dataset,
    Store,
    embeddings_to_numpy,
    ids_in,
    usable_vectors,
)
from edgeminer.indexer.where import OK, and_, unlabeled

__all__ = [
    "FEW_QUERIES",
    "MAX_EXCLUDED_IDS",
    "NeighbourSearch",
    "Ranked",
    "as_dataset",
    "cached_count",
    "candidate_where",
    "exported_ids",
    "normalize",
    "seed_rows_among_candidates",
]

#: most ids an exclusion list may hold before the clause tests the exported column instead.
MAX_EXCLUDED_IDS = 20_000

#: per query vector: (candidate ids, cosine distances), nearest first.
Ranked = list[tuple[list[str], np.ndarray]]

_EXPORTED_CACHE: dict[tuple[str, str, str, int], list[str]] = {}
_COUNT_CACHE: dict[tuple[str, str, str, int, str], int] = {}
_CACHE_LOCK = threading.Lock()


def as_dataset(source: Dataset | Store, dataset: str | None = None) -> Dataset:
    """The handle the mining functions work on: ``source`` itself when it is one, else
    ``source.dataset(dataset)`` (a ``(store, name)`` caller; the name is checked there, once).

    Parameters
    ----------
    source : Dataset or Store
    dataset : str, optional
        The dataset's name, with a Store.

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetNotFound
        ``dataset`` is not in the store.
    """
    if isinstance(source, Dataset):
        if dataset is not None and dataset != source.name:
            raise ValueError(f"a handle on {source.name!r} passed with the dataset name {dataset!r}")
        return source
    if dataset is None:
        raise TypeError("a Store needs the dataset's name (or pass a Dataset handle)")
    return source.dataset(dataset)


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit length (float32; an all-zero row stays zero).

    Parameters
    ----------
    x : np.ndarray
        A vector or a matrix of row vectors.

    Returns
    -------
    np.ndarray
        ``x / ||x||`` along the last axis.
    """
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def candidate_where(
    where: str | None = None,
    *,
    include_labeled: bool = False,
    include_exported: bool = False,
    exclude_ids: Sequence[str] = (),
    exported_ids: Sequence[str] | None = None,
) -> str:
    """The candidate clause: unlabeled (unless include_labeled), the caller's filter, not exported
    (unless include_exported), not a seed, ok rows.

    Parameters
    ----------
    where : str or None
        The caller's filter, already built (and quoted) by service/filters.py.
    include_labeled, include_exported : bool
        Let labeled / already exported rows be candidates too.
    exclude_ids : sequence of str
        Rows that are never candidates (the seeds).
    exported_ids : sequence of str or None
        The rows whose ``exported`` list is non-empty (see :func:`exported_ids`): turns the "not
        exported" test into an id exclusion that the id index answers. Without it (or when it holds
        more than MAX_EXCLUDED_IDS ids) the clause tests the list column, which reads it for every row.

    Returns
    -------
    str
        A LanceDB where-clause.
    """
    parts = [OK]  # ok rows carry an embedding; testing it would read every vector
    if not include_labeled:
        parts.append(unlabeled())
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


def _version_key(ds: Dataset) -> tuple[str, str, str, int]:
    """What a cached answer about ``ds`` is valid for: the store, the dataset (its creation: a dataset
    dropped and created again under the same name starts over) and the samples table's version."""
    return (ds.store.uri, ds.name, ds.info.created_at, ds.version)


def cached_count(ds: Dataset, where: str) -> int:
    """Rows matching ``where``, remembered per table version.

    A count costs a filter pass over the table (~15 ms at 1M rows); the dashboard and repeated mines
    ask the same question again.

    Parameters
    ----------
    ds : Dataset
    where : str
        A trusted where-clause.

    Returns
    -------
    int
        The number of matching rows at the table's current version.
    """
    key = (*_version_key(ds), where)
    with _CACHE_LOCK:
        hit = _COUNT_CACHE.get(key)
    if hit is not None:
        return hit
    n = ds.count(where)
    with _CACHE_LOCK:
        if len(_COUNT_CACHE) > 1024:
            _COUNT_CACHE.clear()
        _COUNT_CACHE[key] = n
    return n


def exported_ids(source: Dataset | Store, dataset: str | None = None) -> list[str]:
    """Ids of rows already exported (non-empty ``exported``), cached per table version.

    Parameters
    ----------
    source : Dataset or Store
        The dataset's handle (or its store, with ``dataset``).
    dataset : str, optional
        The dataset's name, with a Store.

    Returns
    -------
    list of str
        The exported rows' ids, in table order.
    """
    ds = as_dataset(source, dataset)
    key = _version_key(ds)
    with _CACHE_LOCK:
        hit = _EXPORTED_CACHE.get(key)
    if hit is not None:
        return hit
    ids = ds.query(where="array_length(exported) > 0", columns=["id"])["id"].to_pylist()
    with _CACHE_LOCK:
        if len(_EXPORTED_CACHE) > 64:
            _EXPORTED_CACHE.clear()
        _EXPORTED_CACHE[key] = ids
    return ids


def seed_rows_among_candidates(ds: Dataset, seed_ids: Sequence[str], *, include_labeled: bool) -> list[str]:
    """Seed rows that would otherwise be candidates (unlabeled seeds, or any with include_labeled).

    Only these need excluding, and an id exclusion costs the filter on every search.

    Parameters
    ----------
    ds : Dataset
    seed_ids : sequence of str
        The seeds' ids; embedded seeds (``text:...``, ``image:...``) are not rows and are skipped.
    include_labeled : bool
        Whether labeled rows are candidates.

    Returns
    -------
    list of str
        The seed ids to exclude from the candidates.
    """
    row_ids = [i for i in seed_ids if not i.startswith(("text:", "image:"))]
    if not row_ids:
        return []
    table = ds.get_samples(row_ids, columns=["id", "labeled"])
    return [
        i
        for i, lab in zip(table["id"].to_pylist(), table["labeled"].to_pylist(), strict=True)
        if include_labeled or not lab
    ]


class NeighbourSearch:
    """Ranked candidates per query vector, to any depth.

    The exact-vs-index decision is not made here: the constructor asks :meth:`Store.prefer_exact
    <edgeminer.indexer.store.Store.prefer_exact>` once (the one place that decides, from the candidate
    count, the number of queries and whether the dataset has a vector index) unless the caller forces
    ``exact``, and every :meth:`ranked` call then runs that mode. Exact: many queries (or candidates
    already loaded) are ranked in numpy, the candidates' vectors loaded once (one matrix product for all
    queries); a few queries go through ``Store.search_many(exact=True)`` (one pass over the candidates).
    Index: ``Store.search_many(exact=False)``, every query vector in one batched Lance query (vector
    index, prefilter, refine), re-queried deeper when asked.

    Parameters
    ----------
    ds : Dataset
        The dataset searched. ``NeighbourSearch(store, name, where)`` works too (the handle is taken
        from the store).
    where : str
        The candidate clause (see :func:`candidate_where`).
    exact : bool or None
        Force the exact (True) or index (False) path; None lets ``Store.prefer_exact`` decide.
    n_queries : int
        How many query vectors the caller will rank at once (more queries make exact search pay up to
        more candidates).

    Attributes
    ----------
    n_candidates : int
        Rows matching ``where``.
    exact : bool
        The mode every search runs in.
    engine : str
        ``"exact"`` or ``"index"``.
    """

    def __init__(
        self,
        ds: Dataset | Store,
        where: str,
        legacy_where: str | None = None,
        *,
        exact: bool | None = None,
        n_queries: int = 1,
    ):
        if isinstance(ds, Store):  # NeighbourSearch(store, name, where)
            if legacy_where is None:
                raise TypeError("NeighbourSearch(store, dataset, where): the where-clause is missing")
            ds, where = ds.dataset(where), legacy_where
        elif legacy_where is not None:
            raise TypeError("NeighbourSearch(ds, where): one where-clause")
        self.ds = ds
        self.where = where
        self.n_candidates = cached_count(ds, where)
        if exact is None:
            exact = ds.prefer_exact(self.n_candidates, n_queries=n_queries)
        self.exact = bool(exact)
        self.engine = "exact" if self.exact else "index"
        self._ids: np.ndarray | None = None
        self._vecs: np.ndarray | None = None
        self._vec_cache: dict[str, np.ndarray] = {}
        self._pos: dict[str, int] | None = None

    @property
    def store(self) -> Store:
        """The store searched (``ds.store``)."""
        return self.ds.store

    @property
    def dataset(self) -> str:
        """The dataset's name (``ds.name``)."""
        return self.ds.name

    def _read(self, where: str) -> tuple[np.ndarray, np.ndarray]:
        """Ids and normalised vectors of the rows matching ``where`` that have a usable vector."""
        table = self.ds.query(where=where, columns=["id", "embedding"])
        table = table.filter(pc.is_valid(table["embedding"]))
        vecs = embeddings_to_numpy(table["embedding"], self.ds.dim)
        ok = usable_vectors(vecs)  # a damaged vector (NaN, inf) never ranks as anyone's neighbour
        return np.asarray(table["id"].to_pylist(), dtype=object)[ok], normalize(vecs[ok])

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        if self._ids is None or self._vecs is None:
            self._ids, self._vecs = self._read(self.where)
        return self._ids, self._vecs

    def candidates_matching(self, clause: str) -> list[str]:
        """The candidates that also match ``clause`` and have a usable vector (sorted ids); their vectors
        are then at hand for :meth:`vectors_of` without another read.

        Parameters
        ----------
        clause : str
            A trusted where-clause (built by the caller from stored values, never from a request).

        Returns
        -------
        list of str
        """
        if self._ids is not None:  # loaded: every usable candidate's vector is in memory
            table = self.ds.query(where=and_(self.where, clause), columns=["id"])
            return sorted(i for i in table["id"].to_pylist() if i in self._positions())
        ids, vecs = self._read(and_(self.where, clause))
        for i, v in zip(ids.tolist(), vecs, strict=True):
            self._vec_cache[i] = v
        return sorted(ids.tolist())

    def ranked(self, queries: np.ndarray, depth: int) -> Ranked:
        """For each query, its ``depth`` nearest candidates.

        Parameters
        ----------
        queries : np.ndarray
            Normalised query vectors, shape ``(n, dim)``.
        depth : int
            How many candidates per query (capped at the candidate count).

        Returns
        -------
        Ranked
            Per query: (candidate ids, cosine distances ascending).
        """
        depth = max(0, min(int(depth), self.n_candidates))
        if depth == 0:
            return [([], np.zeros(0, np.float32)) for _ in range(len(queries))]
        if self.exact and (self._ids is not None or len(queries) > FEW_QUERIES):
            return self._ranked_in_memory(queries, depth)
        # the index path, or a few queries on the exact path: LanceDB searches (flat when exact), which
        # beats loading every candidate vector for one or two seeds
        return self._ranked_by_store(queries, depth)

    def _ranked_in_memory(self, queries: np.ndarray, depth: int) -> Ranked:
        ids, vecs = self._load()
        out: Ranked = []
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

    def _ranked_by_store(self, queries: np.ndarray, depth: int) -> Ranked:
        # one store call for every seed: the index path runs a single batched Lance query (the filter's
        # row set built once), the exact path one pass over the candidates' vectors
        tables = self.ds.search_many(
            queries, k=depth, where=self.where, columns=["id"], exact=self.exact, candidates=self.n_candidates
        )
        return [(t["id"].to_pylist(), np.asarray(t["_distance"].to_numpy(), np.float32)) for t in tables]

    def _positions(self) -> dict[str, int]:
        """Loaded candidates: id -> row of the in-memory matrix (built once)."""
        if self._ids is None:
            return {}
        if self._pos is None:
            self._pos = {i: n for n, i in enumerate(self._ids.tolist())}
        return self._pos

    def vectors_of(self, ids: Sequence[str]) -> np.ndarray:
        """Normalised vectors of candidate ids (from memory when loaded, else from the store).

        Parameters
        ----------
        ids : sequence of str
            Candidate ids (as returned by :meth:`ranked`).

        Returns
        -------
        np.ndarray
            Shape ``(len(ids), dim)``, in the order of ``ids``.
        """
        if self._ids is not None and self._vecs is not None:
            pos, vecs = self._positions(), self._vecs
            return vecs[[pos[i] for i in ids]] if ids else np.zeros((0, vecs.shape[1]), np.float32)
        missing = [i for i in ids if i not in self._vec_cache]
        if missing:
            got, vecs = self.ds.vectors(ids=missing)
            for i, v in zip(got, normalize(vecs), strict=True):
                self._vec_cache[i] = v
        dim = self.ds.dim
        return np.stack([self._vec_cache[i] for i in ids]) if ids else np.zeros((0, dim), np.float32)
