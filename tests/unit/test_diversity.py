"""Diversity-aware selection (service/diversity.py) against scikit-activeml's implementations, through
``select`` on a real store, and the diversity mode of mining (spread, class balance, old mode intact)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeminer.indexer.store import Store
from edgeminer.service import diversity as dv
from edgeminer.service.mining import Seeds, mine
from edgeminer.service.mining.errors import MiningError
from edgeminer.service.selection import select
from tests.factories import make_synthetic

skactiveml = pytest.importorskip("skactiveml")


def _pool(seed: int = 0, n: int = 300, d: int = 8, n_labeled: int = 20) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = np.full(n, np.nan)
    lab = rng.choice(n, n_labeled, replace=False)
    y[lab] = rng.integers(0, 3, n_labeled)
    return x, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coreset_same_picks_as_scikit_activeml(seed: int) -> None:
    from skactiveml.pool import CoreSet

    x, y = _pool(seed)
    theirs = CoreSet(random_state=seed).query(x, y, batch_size=15)
    unl = np.isnan(y)
    ours = dv.kcenter_greedy(x[unl], 15, centers=x[~unl])
    assert list(np.flatnonzero(unl)[ours]) == list(theirs)
    # and the k-center objective it minimises is the same value
    assert dv.coreset_objective(x[unl], np.vstack([x[~unl], x[theirs]])) == pytest.approx(
        dv.coreset_objective(x[unl], np.vstack([x[~unl], x[np.flatnonzero(unl)[ours]]]))
    )


@pytest.mark.parametrize("seed", [0, 3])
def test_typiclust_same_picks_as_scikit_activeml(seed: int) -> None:
    from skactiveml.pool import TypiClust

    x, y = _pool(seed)
    theirs = TypiClust(random_state=seed).query(x, y, batch_size=15)
    ours = dv.typiclust(x, ~np.isnan(y), np.isnan(y), 15, seed=seed)
    # the same rows; the order may differ only where two uncovered clusters have the same size
    # (scikit-activeml breaks such ties at random)
    assert sorted(ours) == sorted(int(i) for i in theirs)


@pytest.mark.parametrize("seed", [0, 5])
def test_badge_same_picks_as_scikit_activeml(seed: int) -> None:
    from skactiveml.classifier import SklearnClassifier
    from skactiveml.pool import Badge
    from sklearn.linear_model import LogisticRegression

    x, y = _pool(seed)
    clf = SklearnClassifier(LogisticRegression(), classes=[0, 1, 2], random_state=seed).fit(x, y)
    theirs = Badge(random_state=seed).query(x, y, clf=clf, fit_clf=False, batch_size=15)
    unl = np.isnan(y)
    # the same random stream scikit-activeml derives from its seed and the number of unlabeled rows
    mult = int(unl.sum()) + 1
    rs = np.random.RandomState((np.random.RandomState(seed).randint(1, 2**31) * mult) % (2**31))
    ours = dv.badge(clf.predict_proba(x[unl]), x[unl], 15, rng=rs)
    assert list(np.flatnonzero(unl)[ours]) == [int(i) for i in theirs]


def test_badge_implicit_distances_equal_materialised_gradients() -> None:
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.ones(5), size=60)
    x = rng.normal(size=(60, 7))
    a = p - np.eye(5)[p.argmax(axis=1)]
    g = (a[:, :, None] * x[:, None, :]).reshape(60, -1)  # the n x (C*d) matrix BADGE never builds
    first = int(np.argmax((g**2).sum(axis=1)))
    assert dv.badge(p, x, 1)[0] == first
    # a chunk smaller than the rows gives the same picks as one chunk
    assert dv.badge(p, x, 12, rng=9, chunk=7) == dv.badge(p, x, 12, rng=9, chunk=4096)
    d_explicit = np.minimum(((g - g[first]) ** 2).sum(axis=1), (g**2).sum(axis=1))
    expect = np.random.RandomState(3).choice(60, 1, replace=False, p=d_explicit / d_explicit.sum())[0]
    assert dv.badge(p, x, 2, rng=3)[1] == expect


def test_kcenter_chunks_and_cap() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 6))
    centers = rng.normal(size=(30, 6))
    d_small = dv.min_sq_distances(x, centers, chunk=7)
    d_full = ((x[:, None, :] - centers[None]) ** 2).sum(-1).min(1)
    assert np.allclose(d_small, d_full)
    groups = ["a" if v > 0 else "b" for v in x[:, 0]]
    picks = dv.capped_kcenter(x, 20, centers=centers, groups=groups, cap=5)
    assert len(picks) == 10 and all(sum(1 for j in picks if groups[j] == g) == 5 for g in "ab")


def test_select_coreset_through_the_store_matches_scikit_activeml(tmp_path) -> None:
    from skactiveml.pool import CoreSet

    store = Store(tmp_path / "data")
    make_synthetic(store, "s", seed=3)
    result = select(store, "s", strategy="coreset", budget=12, seed=0)
    assert result.counts == {"coreset": 12}
    cand_ids, cand = store.vectors("s", where="labeled = false")
    _, lab = store.vectors("s", where="labeled = true")
    order = np.argsort(np.asarray(cand_ids, dtype=object), kind="stable")  # select's base order: ids sorted
    cand_ids = [cand_ids[j] for j in order]
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731 - cosine geometry
    x = np.vstack([unit(cand[order]), unit(lab)])
    y = np.r_[np.full(len(cand_ids), np.nan), np.zeros(len(lab))]
    theirs = CoreSet(random_state=0).query(x, y, batch_size=12)
    assert [r["id"] for r in result.rows] == [cand_ids[j] for j in theirs]


@pytest.mark.parametrize("strategy", ["coreset", "typiclust", "badge"])
def test_select_diversity_strategies_budget_cap_explore(tmp_path, strategy: str) -> None:
    store = Store(tmp_path / "data")
    make_synthetic(store, "s", seed=1)
    a = select(store, "s", strategy=strategy, budget=10, seed=2)
    b = select(store, "s", strategy=strategy, budget=10, seed=2)
    assert [r["id"] for r in a.rows] == [r["id"] for r in b.rows] and len(a.rows) == 10
    capped = select(
        store, "s", strategy=strategy, budget=9, seed=2, per_class_cap=3, explore=0.34, columns=["pred_label"]
    )
    per_class: dict[str, int] = {}
    for r in capped.rows:
        per_class[r["pred_label"]] = per_class.get(r["pred_label"], 0) + 1
    assert max(per_class.values()) <= 3 and len(capped.rows) == 9
    assert set(capped.counts) <= {strategy, "explore"} and capped.counts.get(strategy, 0) >= 5


def test_mine_diversity_balances_classes_and_keeps_the_old_mode(tmp_path) -> None:
    store = Store(tmp_path / "data")
    make_synthetic(store, "s", n_clusters=6, per_cluster=50, error_clusters=(0, 3), seed=2)
    old = mine(store, "s", Seeds(failures=True), budget=12, columns=["pred_label"])
    again = mine(store, "s", Seeds(failures=True), budget=12, columns=["pred_label"], diversity=None)
    assert [r["id"] for r in old.rows] == [r["id"] for r in again.rows]  # the default is unchanged
    for method in ("kcenter", "typical"):
        new = mine(store, "s", Seeds(failures=True), budget=12, columns=["pred_label"], diversity=method)
        assert len(new.rows) == 12 and len({r["id"] for r in new.rows}) == 12
        assert new.record()["params"]["diversity"] == method
        # every pick comes from its mode's pool: the pool_factor x share nearest candidates of the seeds
        wide = mine(store, "s", Seeds(failures=True), budget=12 * 4, aggregation="min_distance")
        assert {r["id"] for r in new.rows} <= {r["id"] for r in wide.rows}
    with pytest.raises(MiningError, match="diversity must be one of"):
        mine(store, "s", Seeds(failures=True), budget=5, diversity="nope")


def test_spread_caps_predicted_classes_within_a_mode() -> None:
    from edgeminer.service.mining.aggregation import Spread

    rng = np.random.default_rng(0)
    ids = [f"r{i}" for i in range(40)]
    vec = {i: v / np.linalg.norm(v) for i, v in zip(ids, rng.normal(size=(40, 5)), strict=True)}
    pred = {i: ("a" if n < 30 else "b" if n < 36 else "c") for n, i in enumerate(ids)}
    for method in ("kcenter", "typical"):
        sp = Spread(method, lambda xs: np.stack([vec[i] for i in xs]), lambda xs: [pred[i] for i in xs])
        got = sp.pick(ids, 9, np.zeros((0, 5)))
        counts = {c: sum(1 for i in got if pred[i] == c) for c in "abc"}
        assert len(got) == 9 and counts["a"] <= 3 and counts == {"a": 3, "b": 3, "c": 3}
        # the cap yields to the budget when a class runs out
        got = sp.pick(ids, 15, np.zeros((0, 5)))
        assert len(got) == 15 and sum(1 for i in got if pred[i] == "c") == 4


def test_spread_uncertain_and_badge_use_the_probabilities() -> None:
    from edgeminer.service.mining.aggregation import Spread

    rng = np.random.default_rng(1)
    ids = [f"r{i}" for i in range(30)]
    vec = {i: v / np.linalg.norm(v) for i, v in zip(ids, rng.normal(size=(30, 4)), strict=True)}
    top = {i: 0.5 + 0.015 * n for n, i in enumerate(ids)}  # r0 least certain, r29 most
    probs = {i: np.array([top[i], 1 - top[i]]) if n % 2 else np.array([1 - top[i], top[i]]) for n, i in enumerate(ids)}
    pred = {i: "a" if n < 24 else "b" for n, i in enumerate(ids)}
    sp = Spread(
        "uncertain", lambda xs: np.stack([vec[i] for i in xs]), lambda xs: [pred[i] for i in xs],
        probs_of=lambda xs: np.stack([probs[i] for i in xs]),
    )
    got = sp.pick(ids, 6, np.zeros((0, 4)))
    # cap 3 per predicted class: the 3 least certain "a" rows, then the 3 least certain "b" rows
    assert got == ["r0", "r1", "r2", "r24", "r25", "r26"]
    bad = Spread("badge", sp.vectors_of, sp.preds_of, probs_of=sp.probs_of)
    assert len(set(bad.pick(ids, 6, np.zeros((0, 4))))) == 6
    with pytest.raises(ValueError, match="needs the rows' probabilities"):
        Spread("uncertain", sp.vectors_of, sp.preds_of).pick(ids, 3, np.zeros((0, 4)))


def test_mine_uncertain_share_mines_first_then_the_most_uncertain_rows(tmp_path) -> None:
    """``uncertain_share``: the mined part is what mining alone picks for that smaller budget; the rest
    are the highest-margin candidates not mined, ranked after them, marked ``picked_by`` and counted."""
    store = Store(tmp_path / "data")
    make_synthetic(store, "s", n_clusters=6, per_cluster=50, error_clusters=(0, 3), seed=2)
    seeds = Seeds(failures=True)
    mixed = mine(store, "s", seeds, budget=12, diversity="badge", uncertain_share=0.5, columns=["pred_label"])
    alone = mine(store, "s", seeds, budget=6, diversity="badge", columns=["pred_label"])
    assert [r["id"] for r in mixed.rows[:6]] == [r["id"] for r in alone.rows]
    assert [r["rank"] for r in mixed.rows] == list(range(1, 13)) and mixed.summary()["uncertain"] == 6
    rest = mixed.rows[6:]
    assert all(r["picked_by"] == "margin" and r["seeds"] == [] and "pred_label" in r for r in rest)
    # the six highest margin scores among the candidates the mined part left
    table = store.query("s", where="labeled = false", columns=["id", "margin"]).to_pylist()
    mined = {r["id"] for r in mixed.rows[:6]}
    best = sorted((r for r in table if r["id"] not in mined), key=lambda r: -r["margin"])[:6]
    assert sorted(r["margin"] for r in rest) == pytest.approx(sorted(r["margin"] for r in best))
    assert mixed.record()["params"]["uncertain_share"] == 0.5
    everything = mine(store, "s", seeds, budget=5, uncertain_share=1.0, uncertainty="entropy")
    assert [r["picked_by"] for r in everything.rows] == ["entropy"] * 5
    with pytest.raises(MiningError, match="uncertain_share must be a number in"):
        mine(store, "s", seeds, budget=5, uncertain_share=1.5)
    with pytest.raises(MiningError, match="uncertainty must be one of"):
        mine(store, "s", seeds, budget=5, uncertain_share=0.5, uncertainty="bald")


def test_mine_cover_spreads_each_mode_over_its_failure_cluster(tmp_path) -> None:
    """``diversity="cover"``: a mode whose seeds share an analysis cluster takes its share by k-center
    greedy over that cluster's candidates, the cluster's training rows as the first centers, not over
    the seeds' nearest rows; checked against ``kcenter_greedy`` run here on the store's own rows."""
    import pyarrow as pa

    store = Store(tmp_path / "data")
    syn = make_synthetic(store, "s", n_clusters=6, per_cluster=60, error_clusters=(0, 3), seed=2, noise=0.3)
    ids = sorted(syn.cluster_of)
    store.update_columns("s", pa.table({"id": ids, "cluster": pa.array([syn.cluster_of[i] for i in ids], pa.int32())}))
    got = mine(store, "s", Seeds(failures=True), budget=12, diversity="cover", columns=["cluster"])
    assert len(got.rows) == 12 and got.record()["params"]["diversity"] == "cover"
    shares = {m["cluster"]: m["share"] for m in got.modes if m["share"]}
    assert set(shares) == {0, 3} and sum(shares.values()) == 12
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731 - cosine geometry
    for c, share in shares.items():
        picked = {r["id"] for r in got.rows if r["cluster"] == c}
        cand_ids, cand = store.vectors("s", where=f"cluster = {c} AND labeled = false")
        order = np.argsort(np.asarray(cand_ids, dtype=object), kind="stable")
        cand_ids, cand = [cand_ids[j] for j in order], unit(cand[order])
        _, train = store.vectors("s", where=f"cluster = {c} AND labeled = true AND split = 'train'")
        assert len(train) > 0
        want = dv.kcenter_greedy(cand, share, centers=unit(train))
        assert picked == {cand_ids[j] for j in want}
        # spread over the cluster: the picks leave no candidate farther from a center than the nearest
        # rows of the seeds (what the plain mine takes) do
        near = mine(store, "s", Seeds(failures=True), budget=12, columns=["cluster"])
        near_ids = [r["id"] for r in near.rows if r["cluster"] == c]
        pos = {i: n for n, i in enumerate(cand_ids)}
        cover_obj = dv.coreset_objective(cand, np.vstack([unit(train), cand[[pos[i] for i in picked]]]))
        near_obj = dv.coreset_objective(cand, np.vstack([unit(train), cand[[pos[i] for i in near_ids]]]))
        assert cover_obj < near_obj
    # without an analysis (no cluster column) a mode is spread over its nearest rows, seeds first centers
    store2 = Store(tmp_path / "data2")
    make_synthetic(store2, "t", n_clusters=6, per_cluster=60, error_clusters=(0, 3), seed=2, noise=0.3)
    plain = mine(store2, "t", Seeds(failures=True), budget=12, diversity="cover")
    wide = mine(store2, "t", Seeds(failures=True), budget=12 * 4, aggregation="min_distance")
    assert len(plain.rows) == 12 and {r["id"] for r in plain.rows} <= {r["id"] for r in wide.rows}


def test_candidates_matching_is_the_same_on_the_loaded_and_the_store_path(tmp_path) -> None:
    """``NeighbourSearch.candidates_matching`` (what ``cover`` reads a cluster's candidates with): the same
    sorted ids whether the candidates' vectors are already in memory or read for the clause, and the same
    vectors for them from ``vectors_of``."""
    import pyarrow as pa

    from edgeminer.service.mining.search import NeighbourSearch, candidate_where

    store = Store(tmp_path / "data")
    syn = make_synthetic(store, "s", n_clusters=6, per_cluster=60, error_clusters=(0, 3), seed=2, noise=0.3)
    ids = sorted(syn.cluster_of)
    store.update_columns("s", pa.table({"id": ids, "cluster": pa.array([syn.cluster_of[i] for i in ids], pa.int32())}))
    in_cluster = sorted(store.query("s", where="cluster = 3 AND labeled = false", columns=["id"])["id"].to_pylist())
    ds = store.dataset("s")
    loaded = NeighbourSearch(ds, candidate_where(), exact=True)
    loaded.ranked(np.ones((300, 16)) / 4.0, 1)  # many queries: the exact path loads every candidate
    fresh = NeighbourSearch(ds, candidate_where(), exact=True)
    got = fresh.candidates_matching("cluster = 3")
    assert got == loaded.candidates_matching("cluster = 3") == in_cluster
    assert np.allclose(fresh.vectors_of(got), loaded.vectors_of(got))
