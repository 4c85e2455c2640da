"""Index maintenance on real LanceDB tables: rows appended after the vector index was built are still found
exactly, ensure_indexes folds them in or retrains the index when the table outgrew it, scalar indexes are
refreshed after a rewrite, and compaction merges only the small fragments that batch writes leave."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from edgeminer.indexer import store as store_mod
from edgeminer.indexer.errors import ValidationFailed
from edgeminer.indexer.store import Store, index_partitions

DIM = 16


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _table(start: int, vectors: np.ndarray, *, errors: int = 0) -> pa.Table:
    """Rows ``r<start>``... with these vectors; the last ``errors`` of them error rows without a vector."""
    n = len(vectors)
    ids = [f"r{start + i:05d}" for i in range(n)]
    ok = [i < n - errors for i in range(n)]
    emb = [vectors[i].tolist() if ok[i] else None for i in range(n)]
    return pa.table(
        {
            "id": ids,
            "uri": [f"/img/{i}.png" for i in ids],
            "split": ["unlabeled" if (start + i) % 2 else "train" for i in range(n)],
            "labeled": [(start + i) % 2 == 0 for i in range(n)],
            "status": ["ok" if o else "error" for o in ok],
            "fingerprint": ids,
            "meta_weather": ["rain" if (start + i) % 3 else "sun" for i in range(n)],
            "embedding": pa.array(emb, pa.list_(pa.float32(), DIM)),
        }
    )


@pytest.fixture
def ds(store: Store) -> str:
    store.create_dataset(
        "ds", dim=DIM, embedder={"kind": "precomputed", "dim": DIM}, classes=["cat", "dog"],
        metadata_fields={"weather": "string"},
    )
    return "ds"


def _indexed(store: Store, ds: str, n: int, *, seed: int = 0) -> np.ndarray:
    """``n`` random rows (one write) with every index built; their vectors."""
    vecs = _unit(np.random.default_rng(seed), n)
    store.upsert_samples(ds, _table(0, vecs))
    done = store.ensure_indexes(ds, force=True)
    assert done["vector_index"].startswith("built IVF_SQ")
    assert not any(store.unindexed_rows(ds).values())
    return vecs


def _vector_index(store: Store, ds: str) -> str:
    names = [n for n in store.unindexed_rows(ds) if n.startswith("embedding")]
    assert len(names) == 1
    return names[0]


def _partitions(store: Store, ds: str) -> int:
    stats = store._read_ds(ds).stats.index_stats(_vector_index(store, ds))
    return int(stats["indices"][0]["num_partitions"])


# -- rows added after the index was built ------------------------------------------------------------


def test_index_search_finds_rows_added_after_the_index_exactly(store: Store, ds: str) -> None:
    _indexed(store, ds, 1200)
    rng = np.random.default_rng(7)
    query = _unit(rng, 1)[0]
    # 40 new rows right around the query: they are its true nearest neighbours, and no index covers them
    near = query + 0.05 * rng.normal(size=(40, DIM)).astype(np.float32)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    store.upsert_samples(ds, _table(5000, near))
    assert store.unindexed_rows(ds)[_vector_index(store, ds)] == 40
    assert store.prefer_exact(ds, 1240) is False  # the caller would take the index path

    new_ids = {f"r{5000 + i:05d}" for i in range(40)}
    for where in (None, "split = 'train'"):
        exact = store.search(ds, query, k=10, where=where, columns=["id"], exact=True)
        indexed = store.search(ds, query, k=10, where=where, columns=["id"], exact=False)
        assert set(exact["id"].to_pylist()) <= new_ids
        assert indexed["id"].to_pylist() == exact["id"].to_pylist()
        np.testing.assert_allclose(indexed["_distance"].to_numpy(), exact["_distance"].to_numpy(), atol=1e-4)
    # several queries at once take the same path
    top5 = store.search(ds, query, k=5, columns=["id"], exact=True)["id"].to_pylist()
    many = store.search_many(ds, np.stack([query, query]), k=5, columns=["id"], exact=False)
    assert [t["id"].to_pylist() for t in many] == [top5, top5]


def test_mining_through_the_index_finds_unlabeled_rows_added_after_it(store: Store, ds: str) -> None:
    from edgeminer.service.mining import Seeds, mine

    vecs = _indexed(store, ds, 1200)
    rng = np.random.default_rng(12)
    near = vecs[0] + 0.15 * rng.normal(size=(30, DIM)).astype(np.float32)  # around the seed r00000
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    new = _table(5001, near)
    new = new.set_column(new.schema.get_field_index("split"), "split", pa.array(["unlabeled"] * 30))
    new = new.set_column(new.schema.get_field_index("labeled"), "labeled", pa.array([False] * 30))
    store.upsert_samples(ds, new)
    assert store.unindexed_rows(ds)[_vector_index(store, ds)] == 30

    exact = mine(store, ds, Seeds(ids=["r00000"]), budget=10, aggregation="min_distance", exact=True)
    indexed = mine(store, ds, Seeds(ids=["r00000"]), budget=10, aggregation="min_distance", exact=False)
    assert (exact.engine, indexed.engine) == ("exact", "index")
    got = [r["id"] for r in indexed.rows]
    assert len(got) == 10 and got == [r["id"] for r in exact.rows]
    assert set(got) <= {f"r{5001 + i:05d}" for i in range(30)}  # the new rows are the nearest


def test_ensure_indexes_folds_new_rows_in_once_enough_arrived(
    store: Store, ds: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_mod, "REINDEX_UNINDEXED_ROWS", 100)
    _indexed(store, ds, 1200)
    vname = _vector_index(store, ds)
    store.upsert_samples(ds, _table(5000, _unit(np.random.default_rng(1), 60)))
    assert store.ensure_indexes(ds)["vector_index"] == "up to date"  # 60 < 100: left to the flat scan
    assert store.unindexed_rows(ds)[vname] == 60
    store.upsert_samples(ds, _table(6000, _unit(np.random.default_rng(2), 60)))
    done = store.ensure_indexes(ds)
    assert done["vector_index"] == "optimized (120 new rows folded in)"
    assert store.unindexed_rows(ds)[vname] == 0
    assert store.vector_index_info(ds)["rows_indexed"] == 1320  # type: ignore[index]
    assert _partitions(store, ds) == index_partitions(1200)  # folded in, not retrained
    # the folded-in rows are found through the index like the others
    ids, vecs = store.vectors(ds, ids=["r06010"])
    hit = store.search(ds, vecs[0], k=1, columns=["id"], exact=False)
    assert hit["id"].to_pylist() == ["r06010"]


def test_compact_at_the_end_of_a_write_session_folds_rows_in_too(
    store: Store, ds: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_mod, "REINDEX_UNINDEXED_ROWS", 100)
    _indexed(store, ds, 1200)
    store.upsert_samples(ds, _table(5000, _unit(np.random.default_rng(3), 150)))
    assert store.compact(ds) is False  # one small fragment: no compaction, but the index is due
    assert store.unindexed_rows(ds)[_vector_index(store, ds)] == 0


def test_error_rows_without_a_vector_do_not_count_as_unindexed(store: Store, ds: str) -> None:
    vecs = _unit(np.random.default_rng(4), 1200)
    store.upsert_samples(ds, _table(0, vecs, errors=30))
    store.ensure_indexes(ds, force=True)
    assert store.unindexed_rows(ds)[_vector_index(store, ds)] == 0
    version = store.version(ds)
    assert store.ensure_indexes(ds)["vector_index"] == "up to date"
    assert store.version(ds) == version  # nothing due: nothing written


def test_vector_index_is_retrained_when_the_table_outgrew_it(store: Store, ds: str) -> None:
    _indexed(store, ds, 600)
    assert _partitions(store, ds) == index_partitions(600) == 2
    store.upsert_samples(ds, _table(5000, _unit(np.random.default_rng(5), 500)))  # 1100: under 2 x 600
    assert store.ensure_indexes(ds, force=True)["vector_index"] == "optimized (500 new rows folded in)"
    assert _partitions(store, ds) == 2
    store.upsert_samples(ds, _table(6000, _unit(np.random.default_rng(6), 400)))  # 1500: over 2 x 600
    done = store.ensure_indexes(ds)
    assert done["vector_index"].startswith("retrained IVF_SQ ({'num_partitions': 5}) on 1500 vectors (trained on 600)")
    assert _partitions(store, ds) == index_partitions(1500) == 5
    assert store.unindexed_rows(ds)[_vector_index(store, ds)] == 0
    assert store.ensure_indexes(ds)["vector_index"] == "up to date"  # trained on 1500 now
    ids, vecs = store.vectors(ds, ids=["r06123"])
    assert store.search(ds, vecs[0], k=1, columns=["id"], exact=False)["id"].to_pylist() == ["r06123"]


def test_an_index_built_with_another_type_is_retrained_as_that_type(store: Store, ds: str) -> None:
    store.upsert_samples(ds, _table(0, _unit(np.random.default_rng(8), 600)))
    store.ensure_indexes(ds, force=True, vector_index={"type": "IVF_PQ", "num_partitions": 2, "num_sub_vectors": 4})
    store.upsert_samples(ds, _table(5000, _unit(np.random.default_rng(9), 700)))
    assert store.ensure_indexes(ds)["vector_index"].startswith("retrained IVF_PQ")
    assert store.vector_index_info(ds)["type"] == "IVF_PQ"  # type: ignore[index]


# -- scalar indexes ----------------------------------------------------------------------------------


def test_scalar_indexes_are_refreshed_after_an_analysis_rewrote_a_column(store: Store, ds: str) -> None:
    _indexed(store, ds, 1200)
    ids = [f"r{i:05d}" for i in range(1200)]
    cluster = np.arange(1200, dtype=np.int32) % 7
    # what an analysis writes: x, y, cluster of every row
    store.update_columns(
        ds,
        pa.table({"id": ids, "x": np.zeros(1200, np.float32), "y": np.ones(1200, np.float32), "cluster": cluster}),
    )
    assert store.unindexed_rows(ds)["cluster_idx"] == 1200  # the rewritten column's index covers nothing now
    want = sorted(i for i, c in zip(ids, cluster, strict=True) if c == 3)
    assert sorted(store.query(ds, where="cluster = 3", columns=["id"])["id"].to_pylist()) == want  # still exact
    assert store.compact(ds) is False  # nothing to merge; the stale index is refreshed
    missing = store.unindexed_rows(ds)
    assert missing["cluster_idx"] == 0 and not any(missing.values())
    assert sorted(store.query(ds, where="cluster = 3", columns=["id"])["id"].to_pylist()) == want
    # a few rewritten rows are left to the scan until a forced refresh
    store.update_columns(ds, pa.table({"id": ids[:5], "cluster": pa.array([99] * 5, pa.int32())}))
    assert store.unindexed_rows(ds)["cluster_idx"] == 1200  # the column's fragment is out of the index
    store.update_columns(ds, pa.table({"id": ids[:5], "label": ["cat"] * 5}))
    assert store.refresh_indexes(ds, force=True)
    assert not any(store.unindexed_rows(ds).values())
    assert sorted(store.query(ds, where="cluster = 99", columns=["id"])["id"].to_pylist()) == ids[:5]


def test_ensure_indexes_refuses_an_unknown_engine(store: Store, ds: str) -> None:
    with pytest.raises(ValidationFailed, match="unknown index engine 'spark'"):
        store.ensure_indexes(ds, engine="spark")


# -- compaction --------------------------------------------------------------------------------------


def test_compaction_merges_the_small_fragments_and_leaves_big_ones_alone(
    store: Store, ds: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_mod, "COMPACT_TARGET_ROWS", 500)
    rng = np.random.default_rng(10)
    start = 0
    for _ in range(3):  # three bulk writes: fragments at the target size
        store.upsert_samples(ds, _table(start, _unit(rng, 600)))
        start += 600
    for _ in range(10):  # ten small batches, as an ingest of small batches leaves them
        store.upsert_samples(ds, _table(start, _unit(rng, 20)))
        start += 20
    lds = store._read_ds(ds)
    big_files = {f.fragment_id: [d.path for d in f.data_files()] for f in lds.get_fragments() if f.count_rows() == 600}
    assert len(big_files) == 3 and len(lds.get_fragments()) == 13
    before = store.query(ds).sort_by("id")
    version = store.version(ds)

    assert store.compact(ds) is True
    lds = store._read_ds(ds)
    frags = lds.get_fragments()
    assert sorted(f.count_rows() for f in frags) == [200, 600, 600, 600]
    assert {f.fragment_id: [d.path for d in f.data_files()] for f in frags if f.count_rows() == 600} == big_files
    assert store.query(ds).sort_by("id").equals(before)
    assert store.compact(ds) is False  # nothing small left to merge
    assert store.query(ds, version=version).num_rows == 2000  # earlier versions stay readable


def test_compaction_prunes_the_versions_past_the_retention(
    store: Store, ds: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(11)
    for start in range(0, 200, 20):
        store.upsert_samples(ds, _table(start, _unit(rng, 20)))
    assert len(store.list_versions(ds)) == 11
    assert store.compact(ds, min_fragments=20) is False  # not due: nothing pruned either
    assert len(store.list_versions(ds)) == 11
    monkeypatch.setattr(store_mod, "VERSION_RETENTION", store_mod.dt.timedelta(0))
    assert store.compact(ds) is True
    assert [v["version"] for v in store.list_versions(ds)] == [store.version(ds)]  # only the latest left
    assert store.count(ds) == 200
