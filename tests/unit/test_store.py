"""The store on a real LanceDB directory: datasets, idempotent upserts, derived columns kept, partial
updates, time travel, documents, exact search with a filter, indexes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from edgeminer.indexer.store import (
    DatasetExists,
    DatasetNotFound,
    DocNotFound,
    InvalidDatasetName,
    SchemaMismatch,
    Store,
    sql_quote,
)


def _rows(n: int, dim: int = 4, *, fp: str = "f1", seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        v = rng.normal(size=dim)
        out.append(
            {
                "id": f"r{i}",
                "uri": f"/img/{i}.png",
                "split": "unlabeled" if i % 2 else "train",
                "labeled": i % 2 == 0,
                "label": None if i % 2 else "cat",
                "embedding": (v / np.linalg.norm(v)).tolist(),
                "fingerprint": fp,
                "meta_weather": "rain" if i % 3 else "sun",
            }
        )
    return out


@pytest.fixture
def ds(store: Store) -> str:
    store.create_dataset(
        "ds", dim=4, embedder={"kind": "precomputed", "dim": 4}, classes=["cat", "dog"],
        metadata_fields={"weather": "string"},
    )
    return "ds"


def test_datasets_create_list_get_drop(store: Store) -> None:
    assert store.list_datasets() == []
    info = store.create_dataset("cones", dim=8, embedder={"kind": "open_clip"}, classes=["cone"])
    assert info.dim == 8 and store.get_dataset("cones").classes == ["cone"]
    assert [d.name for d in Store(store.uri).list_datasets()] == ["cones"]  # persisted on disk
    with pytest.raises(DatasetExists):
        store.create_dataset("cones", dim=8, embedder={})
    assert store.create_dataset("cones", dim=8, embedder={}, exist_ok=True).name == "cones"
    for bad in ("", "a b", "../x", "x__y", "-x", "a" * 70, "x;drop"):
        with pytest.raises(InvalidDatasetName):
            store.create_dataset(bad, dim=4, embedder={})
    with pytest.raises(DatasetNotFound, match="Known datasets: cones"):
        store.get_dataset("nope")
    store.drop_dataset("cones")
    assert store.list_datasets() == [] and not store.has_dataset("cones")


def test_upsert_is_idempotent_and_keeps_derived_columns(store: Store, ds: str) -> None:
    first = store.upsert_samples(ds, _rows(10))
    assert (first.inserted, first.updated, first.unchanged) == (10, 0, 0)
    v = store.version(ds)
    again = store.upsert_samples(ds, _rows(10))
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 10)
    assert store.version(ds) == v  # nothing written
    store.update_columns(
        ds,
        pa.table({"id": ["r1", "r2"], "cluster": pa.array([3, 4], pa.int32()), "x": pa.array([1.5, 2.5])}),
    )
    store.append_to_list(ds, ["r1"], "exported", "exp-1")
    store.append_to_list(ds, ["r1"], "exported", "exp-1")  # once only
    changed = _rows(10)
    changed[1]["fingerprint"] = "f2"
    changed[1]["uri"] = "/img/moved.png"
    res = store.upsert_samples(ds, changed)
    assert (res.inserted, res.updated, res.unchanged) == (0, 1, 9)
    row = store.get_samples(ds, ["r1"]).to_pylist()[0]
    assert row["uri"] == "/img/moved.png" and row["cluster"] == 3 and row["x"] == 1.5
    assert row["exported"] == ["exp-1"] and row["tags"] == []
    assert store.count(ds) == 10


def test_rows_with_different_keys_keep_every_column(store: Store, ds: str) -> None:
    rows = _rows(2)
    rows[1]["bbox"] = [1.0, 2.0, 3.0, 4.0]  # only the second row has a box
    store.upsert_samples(ds, rows)
    assert store.get_samples(ds, ["r1"]).to_pylist()[0]["bbox"] == [1.0, 2.0, 3.0, 4.0]


def test_schema_mismatches_are_refused_with_the_column_named(store: Store, ds: str) -> None:
    rows = _rows(2)
    rows[0]["embedding"] = [1.0, 0.0]
    with pytest.raises(SchemaMismatch, match="dimension is 4"):
        store.upsert_samples(ds, rows)
    bad = _rows(1)
    bad[0]["colour"] = "red"
    with pytest.raises(SchemaMismatch, match="colour"):
        store.upsert_samples(ds, bad)
    dup = _rows(2)
    dup[1]["id"] = "r0"
    with pytest.raises(SchemaMismatch, match="duplicate"):
        store.upsert_samples(ds, dup)
    assert store.count(ds) == 0  # nothing half-written
    with pytest.raises(SchemaMismatch, match="weather"):
        store.update_dataset(ds, metadata_fields={"weather": "int"})
    with pytest.raises(SchemaMismatch, match="valid field name"):
        store.update_dataset(ds, metadata_fields={"bad name": "string"})


def test_new_metadata_fields_and_classes_extend_the_dataset(store: Store, ds: str) -> None:
    store.upsert_samples(ds, _rows(3))
    info = store.update_dataset(ds, metadata_fields={"camera": "int"}, classes=["dog", "bird"])
    assert info.classes == ["cat", "dog", "bird"]  # order kept: probs are aligned with it
    assert "meta_camera" in store.schema(ds).names
    rows = _rows(3)
    rows[0]["meta_camera"] = 7
    rows[0]["fingerprint"] = "f9"
    store.upsert_samples(ds, rows)
    got = store.get_samples(ds, ["r0", "r1"], columns=["meta_camera"]).to_pylist()
    assert got == [{"meta_camera": 7}, {"meta_camera": None}]


def test_time_travel_reads_an_older_version(store: Store, ds: str) -> None:
    store.upsert_samples(ds, _rows(4))
    v1 = store.version(ds)
    store.update_where(ds, "id = 'r0'", {"label": "dog"})
    assert store.get_samples(ds, ["r0"]).to_pylist()[0]["label"] == "dog"
    assert store.get_samples(ds, ["r0"], version=v1).to_pylist()[0]["label"] == "cat"
    assert [v["version"] for v in store.list_versions(ds)][-1] == store.version(ds)


def test_filtered_search_returns_k_whenever_k_rows_match(store: Store, ds: str) -> None:
    store.upsert_samples(ds, _rows(40))
    ids, vecs = store.vectors(ds)
    q = vecs[ids.index("r3")]
    res = store.search(ds, q, k=5, where="split = 'unlabeled'", columns=["id", "split"])
    assert res.num_rows == 5 and set(res["split"].to_pylist()) == {"unlabeled"}
    assert res["id"][0].as_py() == "r3" and res["_distance"][0].as_py() == pytest.approx(0.0, abs=1e-5)
    # exact ranking matches numpy
    mask = [int(i[1:]) % 2 == 1 for i in ids]
    cand = vecs[mask]
    want = [np.array(ids)[mask][j] for j in np.argsort(1 - cand @ q)[:5]]
    assert res["id"].to_pylist() == want
    assert store.search(ds, q, k=100, where="split = 'unlabeled'").num_rows == 20
    assert store.search(ds, q, k=5, where="split = 'nothing'").num_rows == 0


def test_docs_round_trip(store: Store, ds: str) -> None:
    store.put_doc(ds, "issue", "i1", {"name": "person as chair", "sample_ids": ["r1"]}, name="person as chair")
    store.put_doc(ds, "issue", "i2", {"name": "cones", "sample_ids": []})
    store.put_doc(ds, "run", "j1", {"status": "running"})
    assert [d["id"] for d in store.list_docs(ds, "issue")] == ["i1", "i2"]
    first = store.get_doc(ds, "issue", "i1")
    store.put_doc(ds, "issue", "i1", {"name": "person as chair", "sample_ids": ["r1", "r2"]})
    again = store.get_doc(ds, "issue", "i1")
    assert again["sample_ids"] == ["r1", "r2"] and again["_created_at"] == first["_created_at"]
    store.delete_doc(ds, "issue", "i1")
    with pytest.raises(DocNotFound):
        store.get_doc(ds, "issue", "i1")
    with pytest.raises(DocNotFound):
        store.get_doc(ds, "run", "i2")  # kinds are separate


def test_values_are_quoted_never_interpreted(store: Store, ds: str) -> None:
    rows = _rows(2)
    rows[0]["label"] = "it's a 'cat'; DROP TABLE x"
    store.upsert_samples(ds, rows)
    hit = store.query(ds, where=f"label = {sql_quote(rows[0]['label'])}", columns=["id"]).to_pylist()
    assert hit == [{"id": "r0"}]


def test_indexes_are_built_when_forced_and_search_still_exact_for_small_filters(store: Store, ds: str) -> None:
    store.upsert_samples(ds, _rows(600, seed=1))
    done = store.ensure_indexes(ds, force=True)
    assert "IVF_SQ" in done["vector_index"] and "split" in done["scalar_indexes"]
    assert store.has_vector_index(ds)
    assert store.ensure_indexes(ds)["vector_index"] == "up to date"
    ids, vecs = store.vectors(ds)
    res = store.search(ds, vecs[0], k=3, where="split = 'train'")
    assert res.num_rows == 3 and res["id"][0].as_py() == ids[0]


def test_compact_merges_small_fragments_and_keeps_every_row(store: Store, ds: str) -> None:
    rows = _rows(200)
    for start in range(0, 200, 20):  # ten writes -> ten fragments, as ten ingest batches leave them
        store.upsert_samples(ds, rows[start : start + 20])
    tbl = store._samples(ds)
    assert tbl.stats()["fragment_stats"]["num_fragments"] == 10
    before = store.query(ds).sort_by("id")
    version = store.version(ds)

    assert store.compact(ds, min_fragments=20) is False  # not due: nothing written
    assert store.version(ds) == version
    assert store.compact(ds) is True
    assert store._samples(ds).stats()["fragment_stats"]["num_fragments"] == 1
    assert store.version(ds) > version
    assert store.query(ds).sort_by("id").equals(before)  # same rows, same values
    assert store.compact(ds) is False  # one fragment: nothing to do
    # time travel to before the compaction still reads
    assert store.query(ds, version=version).num_rows == 200


def test_dataset_handle_reads_and_writes_like_the_store(store: Store, ds: str) -> None:
    from edgeminer.indexer.errors import DatasetNotFound as NotThere

    store.upsert_samples(ds, _rows(6))
    handle = store.dataset(ds)
    assert handle.name == ds and handle.dim == 4 and handle.classes == ["cat", "dog"]
    assert handle.version == store.version(ds) and handle.schema == store.schema(ds)
    assert handle.count() == 6 and handle.count("labeled = true") == store.count(ds, "labeled = true")
    assert handle.get_samples(["r3", "r1"])["id"].to_pylist() == ["r3", "r1"]
    handle.put_doc("issue", "i1", {"name": "x"})
    assert store.get_doc(ds, "issue", "i1")["name"] == "x" and handle.get_doc("issue", "i1")["name"] == "x"
    handle.update_where("id = 'r0'", {"label": "dog"})
    assert store.get_samples(ds, ["r0"])["label"].to_pylist() == ["dog"]
    assert handle.version == store.version(ds)  # read live, not frozen at creation
    with pytest.raises(NotThere):
        store.dataset("nope")


def test_where_helpers_build_the_clauses_the_store_runs(store: Store, ds: str) -> None:
    from edgeminer.indexer.where import OK, and_, ok_and, unlabeled

    store.upsert_samples(ds, _rows(6))
    assert ok_and() == OK and and_(None, "", "a = 1") == "a = 1"
    assert store.count(ds, ok_and(unlabeled())) == 3
    assert store.count(ds, ok_and("labeled = true", "meta_weather = 'sun'")) == store.count(
        ds, "status = 'ok' AND labeled = true AND meta_weather = 'sun'"
    )
    assert "(" in and_("a = 1 OR b = 2", "c = 3")  # an OR keeps its meaning inside an AND


def test_a_handle_to_a_dropped_dataset_says_it_is_gone(store: Store, ds: str) -> None:
    from edgeminer.indexer.errors import DatasetNotFound as NotThere

    store.upsert_samples(ds, _rows(4))
    handle = store.dataset(ds)
    assert handle.count() == 4
    store.drop_dataset(ds)
    with pytest.raises(NotThere):
        handle.count()
