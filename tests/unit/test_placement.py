"""Sampled analysis (issue 11 part 3): the seeded sample, the chunked reader, the placement of every other
row (the same result whatever the chunking, the worker count or the engine), and analyze() on a real
LanceDB table larger than its sample."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from factories import make_synthetic

from edgeminer.indexer.analysis.placement import (
    BLOCK,
    EXACT_ROWS,
    NeighbourIndex,
    PlacementState,
    knn_graph,
    place_chunks,
    place_xy,
    vote_labels,
)
from edgeminer.indexer.analysis.run import AnalyzeParams, analyze, load_analysis
from edgeminer.indexer.analysis.sampling import chunk_rows_for, sample_positions
from edgeminer.indexer.errors import SchemaMismatch, ValidationFailed
from edgeminer.indexer.store import Store

FAST = {"n_neighbors": 10, "n_epochs": 30, "min_cluster_size": 15}


def _blobs(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, dim))
    return (centres[rng.integers(0, 8, n)] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)


def test_sample_positions_are_seeded_sorted_and_sized() -> None:
    pos = sample_positions(1000, 100, seed=3)
    assert pos.size == 100 and np.all(np.diff(pos) > 0) and pos.min() >= 0 and pos.max() < 1000
    assert np.array_equal(pos, sample_positions(1000, 100, seed=3))
    assert not np.array_equal(pos, sample_positions(1000, 100, seed=4))
    assert np.array_equal(sample_positions(80, 100, seed=3), np.arange(80))  # smaller table: every row
    assert chunk_rows_for(1) == BLOCK and chunk_rows_for(BLOCK + 1) == 2 * BLOCK


def test_scan_chunks_yields_chunks_of_the_configured_size_in_table_order(store: Store) -> None:
    make_synthetic(store, "synth", n_clusters=5, per_cluster=50)
    before = store.version("synth")
    whole = store.query("synth", columns=["id"])["id"].to_pylist()
    chunks = list(store.scan_chunks("synth", columns=["id", "embedding"], chunk_rows=64))
    assert [c.num_rows for c in chunks] == [64, 64, 64, 58]
    assert [i for c in chunks for i in c["id"].to_pylist()] == whole
    store.delete_samples("synth", f"id = '{whole[0]}'")
    pinned = list(store.scan_chunks("synth", columns=["id"], chunk_rows=100, version=before))
    assert sum(c.num_rows for c in pinned) == 250  # the pinned version still has the deleted row
    assert sum(c.num_rows for c in store.scan_chunks("synth", columns=["id"], chunk_rows=100)) == 249
    with pytest.raises(ValueError, match="chunk_rows"):
        list(store.scan_chunks("synth", columns=["id"], chunk_rows=0))


def _chunks(x: np.ndarray, size: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    return [(s, x[s : s + size], np.ones(min(size, x.shape[0] - s), dtype=bool)) for s in range(0, x.shape[0], size)]


@pytest.mark.parametrize("train_rows", [500, EXACT_ROWS + 500])  # exact search, then HNSW
def test_placement_is_the_same_for_any_chunking_and_worker_count(train_rows: int) -> None:
    train = _blobs(train_rows, seed=1)
    rows = _blobs(5 * BLOCK + 77, seed=2)
    state = PlacementState(
        normalize=True, pca=None, index=NeighbourIndex(train / np.linalg.norm(train, axis=1)[:, None]), k=10
    )
    runs = [
        list(place_chunks(state, _chunks(rows, BLOCK), workers=1)),
        list(place_chunks(state, _chunks(rows, 3 * BLOCK), workers=1)),
        list(place_chunks(state, _chunks(rows, 2 * BLOCK), workers=2)),
    ]
    joined = [(np.concatenate([r.idx for r in run]), np.concatenate([r.dist for r in run])) for run in runs]
    for idx, dist in joined[1:]:
        assert np.array_equal(idx, joined[0][0]) and np.array_equal(dist, joined[0][1])
    idx, dist = joined[0]
    assert idx.shape == (rows.shape[0], 10) and (idx >= 0).all() and (np.diff(dist, axis=1) >= 0).all()
    # the neighbours are (nearly) the exact ones: on these dense blobs many are near ties, so the HNSW
    # search may swap a few for others as close (k-th distance within 1% of the exact one)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    d = np.sqrt(((unit(rows[:200])[:, None, :] - unit(train)[None, :, :]) ** 2).sum(-1))
    exact = np.argsort(d, axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, idx[:200], strict=True)])
    kth = np.take_along_axis(d, exact, axis=1)[:, -1]
    assert recall > 0.9 and np.mean(dist[:200, -1] / kth) < 1.01


def test_rows_to_place_only_are_searched_and_skipped_blocks_stay_empty() -> None:
    train = _blobs(300, seed=1)
    rows = _blobs(3 * BLOCK, seed=2)
    need = np.zeros(rows.shape[0], dtype=bool)
    need[BLOCK + 5] = True
    state = PlacementState(normalize=False, pca=None, index=NeighbourIndex(train), k=5)
    (res,) = place_chunks(state, [(0, rows, need)])
    assert res.features.shape == rows.shape
    assert (res.idx[:BLOCK] == -1).all() and (res.idx[2 * BLOCK :] == -1).all()
    assert (res.idx[BLOCK : 2 * BLOCK] >= 0).all()


def test_knn_graph_puts_each_row_first_and_matches_umaps_convention() -> None:
    train = _blobs(EXACT_ROWS + 200, seed=4)
    idx, dist, _ = knn_graph(train, 8, threads=2)
    assert idx.shape == (train.shape[0], 8) and np.array_equal(idx[:, 0], np.arange(train.shape[0]))
    assert (dist[:, 0] == 0).all() and (dist[:, 1:] >= 0).all()
    again, _, _ = knn_graph(train, 8, threads=1)
    assert np.array_equal(idx, again)  # the thread count does not change the graph


def test_place_xy_and_vote_labels() -> None:
    emb = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=np.float32)
    idx = np.array([[0, 0, 0], [1, 2, 1], [0, 1, 2]])
    dist = np.array([[0.1, 0.1, 0.1], [0.1, 0.1, 0.1], [0.0, 1.0, 1.0]], dtype=np.float32)
    xy = place_xy(emb, idx, dist)
    assert np.allclose(xy[0], [0, 0]) and np.allclose(xy[1], [20 / 3, 10 / 3])
    assert xy[2, 0] < 5 and xy[2, 1] < 5  # the nearest neighbour weighs most
    labels = np.array([4, -1, 7])
    # noise votes like a cluster; a tie (equal weights, one row each) goes to the smallest id
    votes = vote_labels(labels, np.array([[1, 1, 0], [0, 2, 2], [0, 2, 1]]), np.zeros((3, 3), np.float32))
    assert votes.tolist() == [-1, 7, -1]


def _map(store: Store, ds: str) -> dict[str, tuple[float, float, int]]:
    t = store.query(ds, columns=["id", "x", "y", "cluster"])
    return {
        i: (x, y, c)
        for i, x, y, c in zip(
            t["id"].to_pylist(), t["x"].to_pylist(), t["y"].to_pylist(), t["cluster"].to_pylist(), strict=True
        )
    }


def test_analyze_fits_on_the_sample_and_places_every_other_row(store: Store) -> None:
    syn = make_synthetic(store, "synth", n_clusters=5, per_cluster=500, error_clusters=(1,), seed=2)
    rep = analyze(store, "synth", {**FAST, "sample_rows": 600}, chunk_rows=BLOCK, workers=2)
    assert rep.mode == "fit" and rep.rows == 2500 and rep.fitted == 600 and rep.placed == 1900
    placed = _map(store, "synth")
    assert len(placed) == 2500 and all(
        v[0] is not None and v[1] is not None and v[2] is not None for v in placed.values()
    )
    doc = load_analysis(store, "synth") or {}
    assert doc["fitted_rows"] == 600 and doc["rows"] == 2500
    assert sum(c["size"] for c in doc["clusters"]) == 2500  # summaries count every row, not the sample
    top = doc["clusters"][0]
    members = {i for i, v in placed.items() if v[2] == top["id"]}
    gen = {i for i, c in syn.cluster_of.items() if c == 1}
    assert top["failure_rank"] == 1 and len(members & gen) / len(gen) > 0.9 and len(members & gen) / len(members) > 0.9
    assert top["size"] == len(members) and top["errors"] > 0
    # the same result in one process with other chunks
    again = analyze(store, "synth", {**FAST, "sample_rows": 600}, refit=True, chunk_rows=3 * BLOCK, workers=1)
    assert again.fitted == 600 and _map(store, "synth") == placed
    # new rows are placed on the saved map; re-clustering keeps the map
    assert analyze(store, "synth", {**FAST, "sample_rows": 600}).mode == "reuse"
    re = analyze(store, "synth", {**FAST, "sample_rows": 600, "min_cluster_size": 40}, chunk_rows=BLOCK)
    assert re.mode == "recluster"
    after = _map(store, "synth")
    assert all(after[i][:2] == placed[i][:2] for i in placed)


def test_sample_rows_setting_is_checked_and_reaches_the_cli(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    from edgeminer.service.cli import main

    with pytest.raises(ValidationFailed, match="sample_rows"):
        AnalyzeParams(sample_rows=3).check()
    make_synthetic(store, "synth", n_clusters=5, per_cluster=50, error_clusters=(1,), seed=2)
    args = ["--data-dir", store.uri, "analyze", "--dataset", "synth", "--n-epochs", "30", "--min-cluster-size", "15"]
    assert main([*args, "--sample-rows", "120", "--workers", "1"]) == 0
    assert "fitted the map on 120 rows and placed the other 130" in capsys.readouterr().out
    assert main([*args, "--ray-address", "auto"]) == 1
    assert "--ray-address needs --engine ray" in capsys.readouterr().err


def test_ray_engine_places_rows_like_the_local_engine(store: Store) -> None:
    ray = pytest.importorskip("ray")
    make_synthetic(store, "synth", n_clusters=4, per_cluster=400, error_clusters=(1,), seed=2)
    params = {**FAST, "sample_rows": 500}
    analyze(store, "synth", params, chunk_rows=BLOCK, workers=1)
    local = _map(store, "synth")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        rep = analyze(store, "synth", params, refit=True, chunk_rows=BLOCK, engine="ray")
    finally:
        ray.shutdown()
    assert rep.placed == 1100 and _map(store, "synth") == local


def test_unknown_engine_is_refused(store: Store) -> None:
    make_synthetic(store, "synth", n_clusters=2, per_cluster=20)
    with pytest.raises(ValidationFailed, match="engine"):
        analyze(store, "synth", FAST, engine="spark")


def test_chunk_results_carry_features_as_the_fit_saw_them() -> None:
    from sklearn.decomposition import PCA

    x = _blobs(3000, dim=32, seed=5)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    pca = PCA(8, random_state=0).fit(unit)
    state = PlacementState(
        normalize=True, pca=pca, index=NeighbourIndex(pca.transform(unit[:400]).astype(np.float32)), k=5
    )
    (res,) = place_chunks(state, [(0, x, np.ones(3000, bool))])
    assert res.features.shape == (3000, 8) and np.allclose(res.features, pca.transform(unit), atol=1e-5)
    assert pa.array(res.idx[:, 0]).null_count == 0


def test_analyze_reads_vectors_only_in_chunks_of_the_configured_size(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_synthetic(store, "synth", n_clusters=5, per_cluster=500, error_clusters=(1,), seed=2)
    seen: list[int] = []
    scan, query = store.scan_chunks, store.query

    def spy_scan(*args: object, **kwargs: object) -> object:
        for table in scan(*args, **kwargs):  # type: ignore[arg-type]
            if "embedding" in table.column_names:
                seen.append(table.num_rows)
            yield table

    def no_whole_vectors(*args: object, **kwargs: object) -> object:
        assert "embedding" not in (kwargs.get("columns") or ["embedding"]), "vectors read in one piece"
        return query(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "scan_chunks", spy_scan)
    monkeypatch.setattr(store, "query", no_whole_vectors)
    rep = analyze(store, "synth", {**FAST, "sample_rows": 700}, chunk_rows=BLOCK, workers=1)
    assert rep.fitted == 700 and rep.placed == 1800
    assert seen and max(seen) == BLOCK and sum(seen) == 2 * 2500  # two passes: the sample, then every row


def test_map_columns_are_written_in_place_and_indexed_filters_see_them(store: Store) -> None:
    make_synthetic(store, "synth", n_clusters=5, per_cluster=100, error_clusters=(1,), seed=2)
    store.ensure_indexes("synth", force=True)  # a BTREE on cluster, built before the map exists
    rep = analyze(store, "synth", {**FAST, "sample_rows": 200}, workers=1)
    assert rep.placed == 300
    placed = _map(store, "synth")
    for cid in sorted({v[2] for v in placed.values()}):
        got = set(store.query("synth", where=f"cluster = {cid}", columns=["id"])["id"].to_pylist())
        assert got == {i for i, v in placed.items() if v[2] == cid}
    assert store.count("synth") == 500 and len(set(store.query("synth", columns=["id"])["id"].to_pylist())) == 500


def test_set_columns_at_checks_its_input(store: Store) -> None:
    make_synthetic(store, "synth", n_clusters=2, per_cluster=10)
    version = store.version("synth")
    (chunk,) = store.scan_chunks("synth", columns=["id"], with_row_address=True, version=version)
    addr = chunk["_rowaddr"].to_numpy()
    with pytest.raises(SchemaMismatch, match="embedding"):
        store.set_columns_at("synth", addr, {"embedding": [None] * 20}, read_version=version)
    with pytest.raises(SchemaMismatch, match="one value per address"):
        store.set_columns_at("synth", addr, {"x": [1.0]}, read_version=version)
    new = store.set_columns_at("synth", addr[:3], {"x": [1.0, 2.0, 3.0]}, read_version=version)
    assert new == version + 1
    xs = dict(zip(*store.query("synth", columns=["id", "x"]).to_pydict().values(), strict=True))
    assert [xs[i] for i in chunk["id"].to_pylist()[:4]] == [1.0, 2.0, 3.0, None]
