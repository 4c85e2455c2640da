"""The search paths issue 15 made faster, on real LanceDB tables with real vector indexes: the IVF_SQ
index's recall against exact search, the exact-vs-index crossover, batched queries (one Lance query for
several vectors) giving the same answers as single ones, and the index type a table already has (an
IVF_PQ table keeps its deeper re-rank)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from edgeminer.indexer.errors import SchemaMismatch, ValidationFailed
from edgeminer.indexer.store import EXACT_SEARCH_MAX_CANDIDATES, REFINE_FACTORS, VECTOR_INDEX_TYPE, Store
from edgeminer.service.mining import NeighbourSearch, ResolvedSeeds, mine, normalize

DIM = 32
N = 6000


def _clustered(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around 60 centres, and a uniform bucket in [0, 100) per row."""
    rng = np.random.default_rng(seed)
    centers = normalize(rng.normal(size=(60, DIM)).astype(np.float32))
    vecs = normalize(centers[rng.integers(0, 60, size=n)] + rng.normal(scale=0.35, size=(n, DIM)).astype(np.float32))
    return vecs, rng.integers(0, 100, size=n)


def _table(store: Store, name: str, vecs: np.ndarray, buckets: np.ndarray, index: dict | None = None) -> list[str]:
    store.create_dataset(name, dim=DIM, embedder={"kind": "precomputed", "dim": DIM}, metadata_fields={"bucket": "int"})
    ids = [f"r{i:05d}" for i in range(len(vecs))]
    store.upsert_samples(
        name,
        pa.table(
            {
                "id": ids,
                "split": ["unlabeled"] * len(ids),
                "labeled": [False] * len(ids),
                "status": ["ok"] * len(ids),
                "meta_bucket": buckets.astype(np.int64),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), DIM),
            }
        ),
    )
    store.ensure_indexes(name, force=True, vector_index=index)
    return ids


@pytest.fixture
def indexed(store: Store) -> tuple[Store, list[str], np.ndarray, np.ndarray]:
    vecs, buckets = _clustered(N)
    ids = _table(store, "big", vecs, buckets)
    return store, ids, vecs, buckets


def _truth(vecs: np.ndarray, keep: np.ndarray, q: np.ndarray, k: int) -> list[int]:
    d = 1.0 - vecs @ q
    d[~keep] = np.inf
    return [int(i) for i in np.argsort(d, kind="stable")[:k]]


def _queries(vecs: np.ndarray, count: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(vecs), size=count, replace=False)
    return normalize(vecs[picks] + rng.normal(scale=0.05, size=(count, DIM)).astype(np.float32))


def test_the_default_index_is_ivf_sq_and_its_recall_holds_at_every_filter(indexed) -> None:
    store, ids, vecs, buckets = indexed
    info = store.vector_index_info("big")
    assert info is not None and info["type"] == VECTOR_INDEX_TYPE == "IVF_SQ" and info["rows_indexed"] == N
    assert info["disk_bytes"] > N * DIM  # one byte a dimension, plus the partitions' row ids
    queries = _queries(vecs, 20)
    for sel in (20, 50, 100):
        where = f"meta_bucket < {sel}"
        assert store.count("big", where) > EXACT_SEARCH_MAX_CANDIDATES  # the index path, not the exact one
        hits = 0
        for q in queries:
            got = store.search("big", q, k=10, where=where, columns=["meta_bucket"], exact=False)
            assert got.num_rows == 10 and all(b < sel for b in got["meta_bucket"].to_pylist())
            truth = {ids[i] for i in _truth(vecs, buckets < sel, q, 10)}
            hits += len(truth & set(got["id"].to_pylist()))
            d = got["_distance"].to_numpy()
            assert np.all(np.diff(d) >= -1e-6)  # nearest first
            exact_d = 1.0 - vecs[[int(i[1:]) for i in got["id"].to_pylist()]] @ q
            assert np.allclose(d, exact_d, atol=1e-4)  # the re-rank reports full-vector distances
        assert hits / (10 * len(queries)) >= 0.95, sel
    after = store.vector_index_info("big")
    assert after is not None and after["cache_bytes"] > 0  # the reader kept what it loaded


def test_prewarming_loads_the_whole_index_into_a_fresh_stores_reader(indexed) -> None:
    store = indexed[0]
    fresh = Store(store.uri)
    before = fresh.vector_index_info("big")
    assert before is not None and before["cache_bytes"] < before["disk_bytes"] // 10  # metadata only
    cached = fresh.prewarm_vector_index("big")
    after = fresh.vector_index_info("big")
    assert after is not None and cached == after["cache_bytes"] > before["cache_bytes"]
    assert cached >= after["disk_bytes"] // 2  # the partitions, not only the centroids


def test_the_crossover_sends_small_filters_to_exact_search_and_large_ones_to_the_index(indexed) -> None:
    store, ids, vecs, buckets = indexed
    small, large = "meta_bucket < 5", "meta_bucket < 60"
    n_small, n_large = store.count("big", small), store.count("big", large)
    assert n_small <= EXACT_SEARCH_MAX_CANDIDATES < n_large
    assert store.prefer_exact("big", n_small) and not store.prefer_exact("big", n_large)
    ds = store.dataset("big")
    assert NeighbourSearch(ds, f"status = 'ok' AND {small}").engine == "exact"
    assert NeighbourSearch(ds, f"status = 'ok' AND {large}").engine == "index"
    q = _queries(vecs, 1)[0]
    # exact=None on the small filter: exactly numpy's answer, distances included
    got = store.search("big", q, k=10, where=small, columns=["id"])
    truth = _truth(vecs, buckets < 5, q, 10)
    assert got["id"].to_pylist() == [ids[i] for i in truth]
    assert np.allclose(got["_distance"].to_numpy(), 1.0 - vecs[truth] @ q, atol=1e-5)
    # many queries at once pay for more candidates on the exact path (the vectors are read once)
    assert store.prefer_exact("big", n_large, n_queries=n_large // 1000 + 1)


def test_batched_queries_equal_single_queries_on_both_paths(indexed) -> None:
    store, ids, vecs, buckets = indexed
    queries = _queries(vecs, 7, seed=3)
    for where, exact in (
        ("meta_bucket < 40", False),
        ("meta_bucket < 40", True),
        (None, False),
        ("meta_bucket < 3", None),
    ):
        many = store.search_many("big", queries, k=12, where=where, columns=["meta_bucket"], exact=exact)
        assert len(many) == len(queries)
        for q, table in zip(queries, many, strict=True):
            one = store.search("big", q, k=12, where=where, columns=["meta_bucket"], exact=exact)
            assert table.column_names == one.column_names == ["id", "meta_bucket", "_distance"]
            assert table["id"].to_pylist() == one["id"].to_pylist(), (where, exact)
            assert np.allclose(table["_distance"].to_numpy(), one["_distance"].to_numpy(), atol=1e-6)
    full = store.search_many("big", queries[:2], k=3, exact=False)  # every column, the vectors included
    assert all("embedding" in t.column_names and t.num_rows == 3 for t in full)
    assert store.search_many("big", np.zeros((0, DIM), np.float32), k=5) == []
    bad = queries[:2].copy()
    bad[1, 0] = np.nan
    with pytest.raises(SchemaMismatch, match="NaN"):
        store.search_many("big", bad, k=5)


def test_mining_many_seeds_through_the_batched_index_path_matches_one_seed_at_a_time(indexed) -> None:
    store, ids, vecs, buckets = indexed
    queries = _queries(vecs, 5, seed=4)
    ds = store.dataset("big")
    search = NeighbourSearch(ds, "status = 'ok' AND meta_bucket < 50", exact=False, n_queries=len(queries))
    ranked = search.ranked(queries, 15)
    for q, (got_ids, dist) in zip(queries, ranked, strict=True):
        alone = NeighbourSearch(ds, "status = 'ok' AND meta_bucket < 50", exact=False).ranked(q[None, :], 15)[0]
        assert got_ids == alone[0] and np.allclose(dist, alone[1], atol=1e-6)
    seeds = ResolvedSeeds([f"s{i}" for i in range(5)], queries, [None] * 5)
    res = mine(store, "big", seeds, budget=20, where="meta_bucket < 50", exact=False)
    assert res.engine == "index" and len(res.rows) == 20
    exact = mine(store, "big", seeds, budget=20, where="meta_bucket < 50", exact=True)
    assert len({r["id"] for r in res.rows} & {r["id"] for r in exact.rows}) >= 19


def test_a_table_indexed_with_ivf_pq_keeps_its_index_and_its_deeper_rerank(store: Store) -> None:
    vecs, buckets = _clustered(3000, seed=5)
    ids = _table(store, "pq", vecs, buckets, index={"type": "IVF_PQ", "num_partitions": 8, "num_sub_vectors": 8})
    info = store.vector_index_info("pq")
    assert info is not None and info["type"] == "IVF_PQ"
    assert REFINE_FACTORS["IVF_PQ"] > REFINE_FACTORS["IVF_SQ"]
    assert store.ensure_indexes("pq")["vector_index"] == "up to date"  # not rebuilt as IVF_SQ
    hits = 0
    queries = _queries(vecs, 10, seed=6)
    for q in queries:
        got = store.search("pq", q, k=10, where="meta_bucket < 50", columns=["id"], exact=False)
        hits += len({ids[i] for i in _truth(vecs, buckets < 50, q, 10)} & set(got["id"].to_pylist()))
    assert hits / 100 >= 0.95
    without = [store.search("pq", q, k=10, columns=["id"], exact=False, refine_factor=None) for q in queries]
    assert all(t.num_rows == 10 for t in without)


def test_an_unknown_index_type_is_refused_by_name(store: Store) -> None:
    vecs, buckets = _clustered(600, seed=7)
    with pytest.raises(ValidationFailed, match="IVF_NOPE.*IVF_SQ"):
        _table(store, "odd", vecs, buckets, index={"type": "IVF_NOPE"})
