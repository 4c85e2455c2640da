"""Mining: seeds -> nearest unlabeled neighbours, on hand-made vectors in a real LanceDB store."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from edgeminer.indexer.store import Store
from edgeminer.service.mining import (
    EmbeddingUnavailable,
    MiningError,
    ResolvedSeeds,
    Seeds,
    SeedsNotFound,
    candidate_where,
    fits_training_split,
    learnable_rates,
    mine,
    normalize,
    seed_modes,
    share_budget,
)

DIM = 3


def _angle(axis: str, rad: float) -> list[float]:
    """Unit vector ``rad`` radians from the x (axis='a') or y (axis='b') axis, towards z."""
    if axis == "a":
        return [math.cos(rad), 0.0, math.sin(rad)]
    return [0.0, math.cos(rad), math.sin(rad)]


def _row(i: str, vec: list[float], *, labeled: bool = False, **extra: object) -> dict:
    row = {
        "id": i,
        "uri": f"/x/{i}.png",
        "split": "val" if labeled else "unlabeled",
        "labeled": labeled,
        "status": "ok",
        "fingerprint": i,
        "embedding": vec,
    }
    row.update(extra)
    return row


def _dataset(store: Store, rows: list[dict], name: str = "hand", dim: int = DIM) -> str:
    store.create_dataset(name, dim=dim, embedder={"kind": "precomputed"}, classes=["cat", "dog"])
    table = pa.Table.from_pylist(rows)
    emb = pa.array([r["embedding"] for r in rows], pa.list_(pa.float32(), dim))
    table = table.set_column(table.schema.get_field_index("embedding"), "embedding", emb)
    store.upsert_samples(name, table)
    return name


@pytest.fixture
def hand(store: Store) -> Store:
    """Seeds sA (x axis) and sB (y axis); a dense neighbourhood around sA (a1..a5), a sparse one
    around sB (b1, b2), and m exactly between them."""
    rows = [
        _row("sA", [1.0, 0.0, 0.0], labeled=True, label="cat", pred_label="dog", correct=False, cluster=1),
        _row("sB", [0.0, 1.0, 0.0], labeled=True, label="dog", pred_label="cat", correct=False, cluster=2),
        *[_row(f"a{n}", _angle("a", 0.1 * n)) for n in range(1, 6)],
        _row("b1", _angle("b", 0.15)),
        _row("b2", _angle("b", 0.35)),
        _row("m", [1.0, 1.0, 0.0]),
    ]
    _dataset(store, rows)
    return store


def ids(result) -> list[str]:
    return [r["id"] for r in result.rows]


def test_round_robin_takes_each_seed_in_turn(hand: Store) -> None:
    res = mine(hand, "hand", Seeds(ids=["sA", "sB"]), budget=4, aggregation="round_robin")
    assert ids(res) == ["a1", "b1", "a2", "b2"]
    assert res.rows[0]["seeds"][0] == "sA"
    assert res.rows[1]["seeds"][0] == "sB"
    assert res.rows[0]["distance"] == pytest.approx(1 - math.cos(0.1), abs=1e-5)


def test_min_distance_orders_by_nearest_seed(hand: Store) -> None:
    res = mine(hand, "hand", Seeds(ids=["sA", "sB"]), budget=4, aggregation="min_distance")
    assert ids(res) == ["a1", "b1", "a2", "a3"]
    assert [r["distance"] for r in res.rows] == sorted(r["distance"] for r in res.rows)


def test_mean_searches_around_the_centroid(hand: Store) -> None:
    res = mine(hand, "hand", Seeds(ids=["sA", "sB"]), budget=2, aggregation="mean")
    assert ids(res)[0] == "m"
    assert res.rows[0]["distance"] == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-5)


def test_seeds_labeled_and_exported_rows_are_not_candidates(hand: Store) -> None:
    hand.append_to_list("hand", ["a1"], "exported", "job-1")
    res = mine(hand, "hand", Seeds(ids=["sA"]), budget=100, aggregation="min_distance")
    got = ids(res)
    assert "a1" not in got and "sA" not in got and "sB" not in got
    assert len(got) == 7  # all unlabeled rows but the exported one
    res = mine(hand, "hand", Seeds(ids=["sA"]), budget=2, aggregation="min_distance", include_exported=True)
    assert ids(res) == ["a1", "a2"]
    res = mine(hand, "hand", Seeds(ids=["sA"]), budget=100, include_labeled=True, include_exported=True)
    assert set(ids(res)) == {"a1", "a2", "a3", "a4", "a5", "b1", "b2", "m", "sB"}


@pytest.mark.parametrize("aggregation", ["modes", "round_robin", "min_distance", "mean", "reciprocal_rank"])
def test_budget_is_min_of_budget_and_matching(hand: Store, aggregation: str) -> None:
    for budget in (1, 3, 8, 50):
        res = mine(hand, "hand", Seeds(ids=["sA", "sB"]), budget=budget, aggregation=aggregation, k=1)
        assert len(res.rows) == min(budget, 8)
        assert len(set(ids(res))) == len(res.rows)
    # a filter that leaves 2 rows: 2 results, not a post-filtered shortfall or an error
    res = mine(hand, "hand", Seeds(ids=["sA"]), budget=5, aggregation=aggregation, where="id IN ('b1', 'b2')")
    assert sorted(ids(res)) == ["b1", "b2"] and res.candidates == 2
    res = mine(hand, "hand", Seeds(ids=["sA"]), budget=5, aggregation=aggregation, where="id = 'nope'")
    assert res.rows == [] and res.candidates == 0


def test_k_is_the_attribution_depth(hand: Store) -> None:
    res = mine(hand, "hand", Seeds(ids=["sA", "sB"]), budget=8, aggregation="min_distance", k=2)
    by_id = {r["id"]: r for r in res.rows}
    assert by_id["a1"]["seeds"] == ["sA"] and by_id["a2"]["seeds"] == ["sA"]
    # a3 is sA's 3rd neighbour: beyond k=2 of every seed, so it names its nearest seed only
    assert by_id["a3"]["seeds"] == ["sA"]
    # m is 3rd for sB (after b1, b2) and 6th for sA: with k=2 nobody found it, nearest is a tie
    assert len(by_id["m"]["seeds"]) == 1
    res = mine(hand, "hand", Seeds(ids=["sA", "sB"]), budget=8, aggregation="min_distance", k=8)
    assert set({r["id"]: r for r in res.rows}["m"]["seeds"]) == {"sA", "sB"}


def test_near_duplicates_are_removed_and_budget_topped_up(store: Store) -> None:
    rows = [_row("s", [1.0, 0.0, 0.0], labeled=True)]
    # five copies of one image right next to the seed, then distinct rows further away
    rows += [_row(f"dup{n}", _angle("a", 0.05 + 1e-4 * n)) for n in range(5)]
    rows += [_row(f"far{n}", _angle("a", 0.3 + 0.2 * n)) for n in range(4)]
    _dataset(store, rows, "dups")
    plain = mine(store, "dups", Seeds(ids=["s"]), budget=3, aggregation="min_distance", k=2)
    assert ids(plain) == ["dup0", "dup1", "dup2"]
    res = mine(
        store, "dups", Seeds(ids=["s"]), budget=3, aggregation="min_distance", k=2, dedup_distance=0.01
    )
    assert ids(res) == ["dup0", "far0", "far1"]
    assert res.dedup_removed >= 4
    for agg in ("modes", "round_robin", "mean", "reciprocal_rank"):
        res = mine(store, "dups", Seeds(ids=["s"]), budget=5, aggregation=agg, k=1, dedup_distance=0.01)
        assert len(res.rows) == 5 and sum(i.startswith("dup") for i in ids(res)) == 1


def _random_dataset(store: Store, n: int = 600, dim: int = 8, seed: int = 1) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    vecs = normalize(rng.normal(size=(n, dim)))
    rows = [_row(f"r{n:04d}", v.tolist(), labeled=n < 40) for n, v in enumerate(vecs)]
    _dataset(store, rows, "rand", dim=dim)
    return [r["id"] for r in rows], vecs


def test_aggregations_match_brute_force(store: Store) -> None:
    all_ids, vecs = _random_dataset(store)
    seeds = list(range(0, 40, 5))
    cand = np.arange(40, len(all_ids))
    dist = 1 - vecs[seeds] @ vecs[cand].T  # (seeds, candidates)
    seed_ids = [all_ids[s] for s in seeds]
    budget = 25
    # min_distance
    expect = [all_ids[cand[j]] for j in np.argsort(dist.min(axis=0), kind="stable")[:budget]]
    assert ids(mine(store, "rand", Seeds(ids=seed_ids), budget=budget, aggregation="min_distance")) == expect
    # mean
    centroid = normalize(vecs[seeds].mean(axis=0, keepdims=True))[0]
    expect = [all_ids[cand[j]] for j in np.argsort(1 - vecs[cand] @ centroid, kind="stable")[:budget]]
    assert ids(mine(store, "rand", Seeds(ids=seed_ids), budget=budget, aggregation="mean")) == expect
    # reciprocal rank over the full rankings (the exact path fuses full rankings)
    ranks = np.argsort(np.argsort(dist, axis=1), axis=1) + 1
    rrf = (1.0 / (60 + ranks)).sum(axis=0)
    full = [all_ids[cand[j]] for j in np.argsort(-rrf, kind="stable")]
    got = ids(mine(store, "rand", Seeds(ids=seed_ids), budget=budget, aggregation="reciprocal_rank"))
    assert got == full[:budget]
    # round robin: seed s's r-th neighbour comes in turn r, skipping rows already taken
    order = np.argsort(dist, axis=1, kind="stable")
    expect, seen = [], set()
    for r in range(order.shape[1]):
        for s in range(len(seeds)):
            i = all_ids[cand[order[s, r]]]
            if i not in seen:
                seen.add(i)
                expect.append(i)
    got = ids(mine(store, "rand", Seeds(ids=seed_ids), budget=budget, aggregation="round_robin"))
    assert got == expect[:budget]


def test_modes_share_the_budget_by_mode_size(store: Store) -> None:
    rng = np.random.default_rng(3)
    centers = normalize(rng.normal(size=(3, 8)))
    rows = []
    for c, (n_seed, n_cand) in enumerate([(12, 40), (4, 40), (1, 40)]):
        for j in range(n_seed + n_cand):
            v = normalize(centers[c] + 0.05 * rng.normal(size=8)[None, :])[0]
            is_seed = j < n_seed
            rows.append(
                _row(f"c{c}-{j:02d}", v.tolist(), labeled=is_seed, cluster=c, correct=False if is_seed else None)
            )
    _dataset(store, rows, "modes", dim=8)
    seed_ids = [r["id"] for r in rows if r["labeled"]]
    res = mine(store, "modes", Seeds(ids=seed_ids), budget=17, aggregation="modes")
    assert [m["size"] for m in res.modes] == [12, 4, 1]
    assert [m["share"] for m in res.modes] == [12, 4, 1]
    assert [m["cluster"] for m in res.modes] == [0, 1, 2]
    per_cluster = [sum(r["id"].startswith(f"c{c}-") for r in res.rows) for c in range(3)]
    assert per_cluster == [12, 4, 1]
    assert {r["mode"] for r in res.rows} == {0, 1, 2}
    # round robin hands every seed the same share, whatever its mode's size
    rr = mine(store, "modes", Seeds(ids=seed_ids), budget=17, aggregation="round_robin")
    assert [sum(r["id"].startswith(f"c{c}-") for r in rr.rows) for c in range(3)] == [12, 4, 1]
    # seeds without clusters are grouped by their vectors instead
    seed_vecs = normalize(np.asarray([r["embedding"] for r in rows if r["labeled"]]))
    resolved = ResolvedSeeds(seed_ids, seed_vecs, [None] * 17)
    groups = seed_modes(resolved)
    names = [{seed_ids[n] for n in g} for g in groups]
    c0 = {i for i in seed_ids if i.startswith("c0-")}
    c1 = {i for i in seed_ids if i.startswith("c1-")}
    g0 = [n for n, g in enumerate(names) if c0 <= g]
    g1 = [n for n, g in enumerate(names) if c1 <= g]
    assert g0 and g1 and g0 != g1


def test_share_budget_largest_remainder() -> None:
    assert share_budget([10, 5, 5], 4) == [2, 1, 1]
    assert share_budget([1, 1, 1], 2) == [1, 1, 0]
    assert sum(share_budget([7, 3, 1, 1], 10)) == 10
    assert share_budget([], 5) == []


def test_seed_kinds(hand: Store) -> None:
    hand.put_doc("hand", "issue", "iss-1", {"name": "x", "sample_ids": ["sB"]})
    res = mine(hand, "hand", Seeds(issue="iss-1"), budget=2, aggregation="min_distance")
    assert ids(res) == ["b1", "b2"] and res.seeds.ids == ["sB"]
    res = mine(hand, "hand", Seeds(cluster=1), budget=1)
    assert ids(res) == ["a1"]
    res = mine(hand, "hand", Seeds(confusion=("dog", "cat")), budget=1)
    assert ids(res) == ["b1"]
    res = mine(hand, "hand", Seeds(failures=True, split="val"), budget=2, aggregation="round_robin")
    assert set(ids(res)) == {"a1", "b1"}
    hand.update_where("hand", "id = 'sA'", {"pred_label2": "cat"})
    res = mine(hand, "hand", Seeds(pair=("cat", "dog")), budget=1)
    assert res.seeds.ids == ["sA"]


def test_image_seed_is_embedded_with_the_dataset_embedder(hand: Store) -> None:
    import io

    from PIL import Image

    class Fake:
        kind = "fake"

        def embed_images(self, images: list) -> np.ndarray:
            assert images[0].size == (4, 4)
            return np.asarray([[0.0, 1.0, 0.0]], np.float32)

        def embed_text(self, texts: list) -> np.ndarray:
            raise NotImplementedError("no text tower")

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buf, format="PNG")
    res = mine(hand, "hand", Seeds(image=buf.getvalue()), budget=1, embedder=Fake())
    assert ids(res) == ["b1"] and res.rows[0]["seeds"] == ["image:upload"]
    with pytest.raises(MiningError, match="not a readable image"):
        mine(hand, "hand", Seeds(image=b"not an image"), budget=1, embedder=Fake())
    with pytest.raises(EmbeddingUnavailable, match="CLIP"):
        mine(hand, "hand", Seeds(text="a red cat"), budget=1, embedder=Fake())


def test_text_seed_on_a_precomputed_dataset_says_why(hand: Store) -> None:
    with pytest.raises(EmbeddingUnavailable) as err:
        mine(hand, "hand", Seeds(text="a red cat"), budget=1)
    assert "text" in str(err.value)


def test_bad_requests_name_the_problem(hand: Store) -> None:
    with pytest.raises(SeedsNotFound, match="'nope'"):
        mine(hand, "hand", Seeds(ids=["sA", "nope"]), budget=1)
    with pytest.raises(MiningError, match="no seeds"):
        mine(hand, "hand", Seeds(), budget=1)
    with pytest.raises(MiningError, match="aggregation must be one of"):
        mine(hand, "hand", Seeds(ids=["sA"]), budget=1, aggregation="median")
    with pytest.raises(MiningError, match="budget"):
        mine(hand, "hand", Seeds(ids=["sA"]), budget=0)
    with pytest.raises(MiningError, match="no cluster 99: the (valid cluster ids are|dataset has no clusters)"):
        mine(hand, "hand", Seeds(cluster=99), budget=1)
    with pytest.raises(Exception, match="not found"):
        mine(hand, "hand", Seeds(issue="missing"), budget=1)


def test_candidate_where_quotes_ids() -> None:
    clause = candidate_where("split = 'unlabeled'", exclude_ids=["a'b"])
    assert "'a''b'" in clause and "labeled = false" in clause and "array_length(exported) = 0" in clause


def test_index_engine_matches_exact(store: Store) -> None:
    _random_dataset(store, n=1500, dim=16, seed=4)
    store.ensure_indexes("rand", force=True)
    assert store.has_vector_index("rand")
    seed_ids = [f"r{n:04d}" for n in range(0, 40, 4)]
    exact = mine(store, "rand", Seeds(ids=seed_ids), budget=30, aggregation="min_distance", exact=True)
    approx = mine(store, "rand", Seeds(ids=seed_ids), budget=30, aggregation="min_distance", exact=False)
    assert approx.engine == "index" and exact.engine == "exact"
    assert len(approx.rows) == 30
    assert len(set(ids(exact)) & set(ids(approx))) >= 27
    # a filter leaving fewer rows than the budget: all of them, from the index path too
    res = mine(store, "rand", Seeds(ids=seed_ids), budget=30, where="id < 'r0060'", exact=False)
    assert len(res.rows) == 20


def test_the_exact_or_index_decision_is_made_once_by_the_store(store: Store) -> None:
    """Store.prefer_exact is the one place deciding; NeighbourSearch asks it (with its query count)."""
    from edgeminer.indexer.store import EXACT_SEARCH_MAX_CANDIDATES, MATRIX_MAX_ROWS, MATRIX_ROWS_PER_QUERY
    from edgeminer.service.mining import NeighbourSearch

    _random_dataset(store, n=1500, dim=16, seed=4)
    assert store.prefer_exact("rand", 10**7)  # no vector index yet: always exact
    store.ensure_indexes("rand", force=True)
    small = EXACT_SEARCH_MAX_CANDIDATES
    assert store.prefer_exact("rand", small) and not store.prefer_exact("rand", small + 1)
    many = 3 * MATRIX_ROWS_PER_QUERY  # three queries ranked at once: the matrix path pays up to here
    assert store.prefer_exact("rand", many, n_queries=3) and not store.prefer_exact("rand", many + 1, n_queries=3)
    assert not store.prefer_exact("rand", MATRIX_MAX_ROWS + 1, n_queries=10**6)
    ok = "status = 'ok'"  # 1500 candidates
    assert NeighbourSearch(store, "rand", ok).engine == "index"
    assert NeighbourSearch(store, "rand", ok, n_queries=3).engine == "exact"
    assert NeighbourSearch(store, "rand", ok, exact=True).engine == "exact"  # the caller may force a mode


def test_modes_weight_systematic_failures_over_stray_ones(store: Store) -> None:
    """Two modes of equal size: one where most labeled rows are wrong (a systematic failure), one where
    the seeds are rare errors among rows the model gets right. The budget goes to the first."""
    rng = np.random.default_rng(7)
    centers = normalize(rng.normal(size=(2, 8)))
    rows = []
    for c, (n_wrong, n_right) in enumerate([(20, 4), (6, 40)]):
        for j in range(n_wrong + n_right + 30):
            v = normalize(centers[c] + 0.05 * rng.normal(size=8)[None, :])[0].tolist()
            if j < n_wrong:
                rows.append(_row(f"m{c}-wrong{j:02d}", v, labeled=True, correct=False, cluster=c))
            elif j < n_wrong + n_right:
                rows.append(_row(f"m{c}-ok{j:02d}", v, labeled=True, correct=True, cluster=c))
            else:
                rows.append(_row(f"m{c}-pool{j:02d}", v, cluster=c))
    _dataset(store, rows, "sys", dim=8)
    seeds = Seeds(ids=[f"m{c}-wrong{j:02d}" for c in (0, 1) for j in range(6)])
    res = mine(store, "sys", seeds, budget=10)
    by_cluster = {m["cluster"]: m for m in res.modes}
    assert by_cluster[0]["size"] == by_cluster[1]["size"] == 6
    assert by_cluster[0]["weight"] > 3 * by_cluster[1]["weight"]
    assert sum(r["id"].startswith("m0-") for r in res.rows) >= 8
    flat = mine(store, "sys", seeds, budget=10, mode_weighting="size")
    assert sum(r["id"].startswith("m0-") for r in flat.rows) == 5
    with pytest.raises(MiningError, match="mode_weighting"):
        mine(store, "sys", seeds, budget=10, mode_weighting="vibes")


def test_learnable_weighting_spends_where_the_model_fits_its_training_rows(store: Store) -> None:
    """Two modes with the same held-out error rate (val rows): in mode 0 the model gets its own training
    rows wrong too (it cannot fit them: labels bought there teach it little), in mode 1 it fits them.
    ``learnable_error_rate`` sends the budget to mode 1; ``local_error_rate`` counts mode 0's training
    errors as more failure and sends it to mode 0."""
    rng = np.random.default_rng(3)
    centers = normalize(rng.normal(size=(2, 8)))
    rows = []
    for c, train_right in enumerate([False, True]):
        for j in range(80):
            v = normalize(centers[c] + 0.05 * rng.normal(size=8)[None, :])[0].tolist()
            if j < 12:  # held-out rows: 8 wrong (the seeds), 4 right, in both modes
                rows.append(_row(f"m{c}-val{j:02d}", v, labeled=True, correct=j >= 8, cluster=c))
            elif j < 40:
                rows.append(_row(f"m{c}-train{j:02d}", v, labeled=True, split="train", correct=train_right, cluster=c))
            else:
                rows.append(_row(f"m{c}-pool{j:02d}", v, cluster=c))
    healthy = normalize(rng.normal(size=(1, 8)))[0]
    for j in range(72):  # rows the model gets right, train and held out: it fits its training split
        v = normalize(healthy + 0.05 * rng.normal(size=8)[None, :])[0].tolist()
        name, split = (f"h-train{j:02d}", {"split": "train"}) if j < 60 else (f"h-val{j:02d}", {})
        rows.append(_row(name, v, labeled=True, correct=True, cluster=2, **split))
    _dataset(store, rows, "fit", dim=8)
    seeds = Seeds(ids=[f"m{c}-val{j:02d}" for c in (0, 1) for j in range(8)])
    learn = mine(store, "fit", seeds, budget=10, mode_weighting="learnable_error_rate")
    weight = {m["cluster"]: m["weight"] for m in learn.modes}
    assert weight[0] == pytest.approx(0.0) and weight[1] > 0  # nothing of mode 0's training rows is fitted
    assert all(r["id"].startswith("m1-") for r in learn.rows)
    local = mine(store, "fit", seeds, budget=10, mode_weighting="local_error_rate")
    assert sum(r["id"].startswith("m0-") for r in local.rows) >= 6
    # a model no more accurate on its training rows than on held-out ones was not fitted to them: there
    # the learnable weighting is the local error rate (the training rows' errors count as failures)
    for r in rows:
        if "-train" in r["id"]:
            r["correct"] = False  # the model gets every training row wrong: not a model fitted to them
    _dataset(store, rows, "unfitted", dim=8)
    unfitted = mine(store, "unfitted", seeds, budget=10, mode_weighting="learnable_error_rate")
    assert [r["id"] for r in unfitted.rows] == [
        r["id"] for r in mine(store, "unfitted", seeds, budget=10, mode_weighting="local_error_rate").rows
    ]
    assert fits_training_split(95, 100, 70, 100) and not fits_training_split(70, 100, 70, 100)
    assert not fits_training_split(57, 86, 57, 78) and not fits_training_split(0, 0, 5, 10)
    # without training rows the learnable weighting is the held-out error rate (no split: held out)
    assert learnable_rates(np.array([0.5, 0.25]), None).tolist() == [0.5, 0.25]
    assert learnable_rates(np.array([0.5, 0.25]), np.array([np.nan, 0.5])).tolist() == [0.5, 0.125]


def test_store_search_exact_and_index_paths(store: Store) -> None:
    all_ids, vecs = _random_dataset(store, n=1200, dim=16, seed=11)
    q = normalize(np.random.default_rng(2).normal(size=(1, 16)))[0]
    mask = np.asarray([i.endswith(("1", "2", "3")) for i in all_ids])
    d = 1 - vecs @ q
    d[~mask] = np.inf
    truth = [all_ids[j] for j in np.argsort(d)[:10]]
    where = "id LIKE '%1' OR id LIKE '%2' OR id LIKE '%3'"
    got = store.search("rand", q, k=10, where=where, columns=["split"])
    assert got["id"].to_pylist() == truth and got.column_names == ["id", "split", "_distance"]
    assert np.allclose(got["_distance"].to_numpy(), np.sort(d)[:10], atol=1e-5)
    full = store.search("rand", q, k=3, exact=True)
    assert "embedding" in full.column_names and "split" in full.column_names and full.num_rows == 3
    assert store.search("rand", q, k=5, where="id = 'none'", columns=["split"]).num_rows == 0
    store.ensure_indexes("rand", force=True)
    approx = store.search("rand", q, k=10, where=where, columns=["split"], exact=False)
    assert len(set(approx["id"].to_pylist()) & set(truth)) >= 9
    # a filter the probed partitions cannot fill: redone exactly, k rows still come back
    few = store.search("rand", q, k=10, where="id < 'r0012'", exact=False, nprobes=1)
    assert few.num_rows == 10


def test_probes_grow_with_filter_selectivity() -> None:
    from edgeminer.indexer.store import SEARCH_NPROBES, index_partitions, probes_for

    assert index_partitions(1_000_000) == 1000 and index_partitions(100_000) == 316 and index_partitions(300) == 1
    assert probes_for(1_000_000, None) == SEARCH_NPROBES
    assert probes_for(1_000_000, 500_000) == SEARCH_NPROBES  # plenty of matches in every partition
    assert probes_for(1_000_000, 10_000) == 50  # 10 matches a partition: 50 partitions hold ~500
    assert probes_for(1_000_000, 100) == 1000  # a needle: every partition
    assert probes_for(300, 10) == 1
