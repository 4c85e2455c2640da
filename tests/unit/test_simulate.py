"""The active-learning simulator (service/simulate.py): hidden labels stay hidden (poisoning them changes
no pick), held-out rows are never picked, a seed makes a run repeatable, the win matrix on a tiny case,
and `edgeminer simulate` end to end on a real store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeminer.indexer.store import Store
from edgeminer.service import simulate as sim
from edgeminer.service.cli import main
from tests.factories import make_synthetic


def _data(seed: int = 0, n_per: int = 30) -> sim.SimData:
    """Six blobs (true class = blob % 3); blobs 4 and 5 are a planted slice, rare in train."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(6, 12))
    xs, ys, splits, groups = [], [], [], []
    for b in range(6):
        for j in range(n_per):
            xs.append(centers[b] + 0.35 * rng.normal(size=12))
            ys.append(b % 3)
            rare = b >= 4
            splits.append("train" if (j < (2 if rare else 12)) else "val")
            groups.append("odd" if rare else "none")
    x = np.asarray(xs, dtype=np.float32)
    return sim.SimData(
        dataset="toy",
        ids=np.asarray([f"r{i:03d}" for i in range(len(xs))], dtype=object),
        x=x / np.linalg.norm(x, axis=1, keepdims=True),
        y=np.asarray(ys, dtype=np.int64),
        split=np.asarray(splits, dtype=object),
        groups=np.asarray(groups, dtype=object),
        cluster=np.asarray([i // n_per for i in range(len(xs))], dtype=np.int64),
        classes=["a", "b", "c"],
        uris=[""] * len(xs),
    )


def test_roles_partition_the_labeled_rows() -> None:
    data = _data()
    roles = sim.assign_roles(data, sim.Protocol(test_share=0.4, seen_share=0.2), seed=1)
    assert set(np.unique(roles).tolist()) == {sim.TRAIN, sim.SEEN, sim.POOL, sim.TEST}
    assert (roles[data.split == "train"] == sim.TRAIN).all()
    rest = int((data.split != "train").sum())
    assert int((roles == sim.TEST).sum()) == round(0.4 * rest) and int((roles == sim.SEEN).sum()) == round(0.2 * rest)
    with pytest.raises(sim.SimulationError, match="test_share and seen_share"):
        sim.assign_roles(data, sim.Protocol(test_share=0.7, seen_share=0.4), seed=0)


@pytest.mark.parametrize("name", sim.strategy_names())
def test_hidden_labels_never_reach_a_strategy(name: str) -> None:
    """Poison every hidden label (pool and test): the first round's picks are unchanged, and the view a
    strategy gets has -1 for every row that is not train, seen or revealed."""
    data = _data()
    roles = sim.assign_roles(data, sim.Protocol(), seed=0)
    start = sim.fit_probe(data, roles == sim.TRAIN, 0)
    seen_views: list[sim.View] = []
    real = sim.make_strategy(name, data.planted)

    def spy(view: sim.View, budget: int) -> np.ndarray:
        seen_views.append(view)
        return real(view, budget)

    def first_round(d: sim.SimData) -> list[int]:
        run = sim._run_strategy(d, roles, name, start, sim.fit_probe, budget=8, rounds=1, seed=0)
        return run.picked

    clean = first_round(data)
    poisoned = sim.SimData(**{**data.__dict__, "y": data.y.copy()})
    hidden = (roles == sim.POOL) | (roles == sim.TEST)
    poisoned.y[hidden] = (poisoned.y[hidden] + 1) % 3
    assert first_round(poisoned) == clean
    # the view itself: hidden labels are -1
    orig = sim.make_strategy
    try:
        sim.make_strategy = lambda n, planted=None: spy  # type: ignore[assignment]
        sim._run_strategy(data, roles, name, start, sim.fit_probe, budget=8, rounds=2, seed=0)
    finally:
        sim.make_strategy = orig  # type: ignore[assignment]
    for view in seen_views:
        visible = view.trained | view.seen
        assert (view.labels[~visible] == -1).all() and (view.labels[visible] == data.y[visible]).all()
        assert not view.candidates[roles == sim.TEST].any()


def test_held_out_never_picked_and_runs_repeat_exactly() -> None:
    data = _data(seed=2)
    names = ["entropy", "coreset", "badge", "typiclust", "mine-modes", "mine-modes+typical", "mine-mean+kcenter"]
    a = sim.simulate(data, names, budget=6, rounds=3, repeats=2, seed=4)
    b = sim.simulate(data, names, budget=6, rounds=3, repeats=2, seed=4)
    assert a.strategies[0] == "random" and a.labels == [0, 6, 12, 18]
    for s in a.strategies:
        for m in a.curves[s]:
            assert np.array_equal(a.curves[s][m], b.curves[s][m], equal_nan=True)
    for rep in range(2):
        roles = sim.assign_roles(data, sim.Protocol(), seed=4 + rep)
        start = sim.fit_probe(data, roles == sim.TRAIN, 4 + rep)
        for s in a.strategies:
            run = sim._run_strategy(data, roles, s, start, sim.fit_probe, budget=6, rounds=3, seed=4 + rep)
            assert len(run.picked) == 18 and len(set(run.picked)) == 18
            assert (roles[run.picked] == sim.POOL).all()
    assert set(a.metrics()) >= {"overall", "planted", "slice:odd", "slice:none", "cluster:0"}


def test_oracle_picks_the_planted_pool_rows_first_and_needs_slices() -> None:
    data = _data(seed=3)
    roles = sim.assign_roles(data, sim.Protocol(), seed=0)
    start = sim.fit_probe(data, roles == sim.TRAIN, 0)
    in_pool = int(((roles == sim.POOL) & data.planted).sum())
    run = sim._run_strategy(data, roles, sim.ORACLE, start, sim.fit_probe, budget=5, rounds=6, seed=0)
    picked = np.asarray(run.picked)
    assert 5 < in_pool < 30 and data.planted[picked[:in_pool]].all() and not data.planted[picked[in_pool:]].any()
    assert (roles[picked] == sim.POOL).all() and len(set(run.picked)) == 30
    flat = sim.SimData(**{**data.__dict__, "groups": np.full(len(data.ids), "none", dtype=object)})
    with pytest.raises(sim.SimulationError, match="slice column"):
        sim.simulate(flat, [sim.ORACLE], budget=5, rounds=1, repeats=1)


def _first_round_view() -> tuple[sim.SimData, sim.View]:
    """A first round's view of ``_data(seed=1)``: the probe fitted on train, train and seen labels shown."""
    data = _data(seed=1)
    roles = sim.assign_roles(data, sim.Protocol(), seed=0)
    start = sim.fit_probe(data, roles == sim.TRAIN, 0)
    trained = roles == sim.TRAIN
    view = sim.View(
        x=start.x, probs=start.probs, labels=np.where(trained | (roles == sim.SEEN), data.y, -1),
        candidates=roles == sim.POOL, trained=trained, seen=roles == sim.SEEN, cluster=data.cluster, ids=data.ids,
        seed=3,
    )
    return data, view


def test_mining_mix_is_mining_then_the_highest_margin_rows() -> None:
    """``mine-modes+badge+margin`` picks what ``mine-modes+badge`` picks for half the budget, then the
    highest-margin candidates it left: ``edgeminer mine --uncertain-share 0.5`` in memory."""
    from edgeminer.indexer.scores import uncertainty

    assert "mine-modes+badge+margin" in sim.standard_strategies()
    data, view = _first_round_view()
    mixed = sim.make_strategy("mine-modes+badge+margin")(view, 9)
    mined = sim.make_strategy("mine-modes+badge")(view, 9 - 4)  # round(9 * 0.5) = 4 by margin
    assert mixed[:5].tolist() == mined.tolist() and len(set(mixed.tolist())) == 9
    left = np.flatnonzero(view.candidates & ~np.isin(np.arange(len(data.ids)), mined))
    margin = uncertainty(view.probs[left], method="margin")
    assert sorted(uncertainty(view.probs[mixed[5:]], method="margin")) == pytest.approx(sorted(margin)[-4:])


def test_cover_mix_spreads_the_mined_half_over_the_failure_clusters() -> None:
    """``mine-modes+cover+margin``: the mined half of each mode is k-center greedy over the pool rows of
    the mode's analysis cluster, the cluster's trained rows as the first centers (the mining library's
    ``cover``), then the highest-margin rows left."""
    from edgeminer.service.diversity import kcenter_greedy

    assert sim.DEFAULT_STRATEGY == "mine-modes+cover+margin" and sim.DEFAULT_STRATEGY in sim.standard_strategies()
    data, view = _first_round_view()
    trained = view.trained
    mined = sim.make_strategy("mine-modes+cover")(view, 8)
    mixed = sim.make_strategy("mine-modes+cover+margin")(view, 16)
    assert mixed[:8].tolist() == mined.tolist() and len(set(mixed.tolist())) == 16
    wrong = view.seen & (view.probs.argmax(axis=1) != data.y)
    seed_clusters = set(data.cluster[wrong].tolist()) - {-1}
    assert seed_clusters and set(data.cluster[mined].tolist()) <= seed_clusters
    for c in set(data.cluster[mined].tolist()):
        got = mined[data.cluster[mined] == c]
        pool = np.flatnonzero(view.candidates & (data.cluster == c))
        if len(got) < len(pool):  # the share is k-center greedy over the cluster's pool rows
            want = pool[kcenter_greedy(view.x[pool], len(got), centers=view.x[trained & (data.cluster == c)])]
            assert sorted(got.tolist()) == sorted(want.tolist())


def test_aubc_and_win_matrix_tiny_case() -> None:
    labels = [0, 10, 20]
    curves = np.asarray([[0.5, 0.6, 0.7], [0.5, 0.5, 0.5]])
    assert sim.aubc(curves, labels).tolist() == pytest.approx([0.6, 0.5])
    better = np.asarray([0.70, 0.72, 0.69, 0.71, 0.70])
    same = np.asarray([0.60, 0.61, 0.60, 0.59, 0.60])
    noisy = np.asarray([0.61, 0.58, 0.63, 0.57, 0.62])
    wins = sim.win_matrix({"a": better, "b": same, "c": noisy})
    assert wins["a"]["b"]["win"] == 1 and wins["b"]["a"]["win"] == -1
    assert wins["b"]["c"]["win"] == 0 and wins["c"]["b"]["win"] == 0  # inside the noise
    assert wins["a"]["a"]["win"] == 0 and wins["a"]["b"]["diff"] == pytest.approx(0.104)
    assert sim.win_matrix({"a": better[:1], "b": same[:1]})["a"]["b"]["win"] == 0  # one repeat: nothing significant


def test_cli_round_trip(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    make_synthetic(Store(data), "synth", n_clusters=6, per_cluster=40, error_clusters=(0, 3), seed=1)
    base = ["--data-dir", data, "simulate", "--dataset", "synth", "--budget", "4", "--rounds", "2", "--repeats", "2"]
    png = tmp_path / "curves.png"
    args = [*base, "--strategies", "entropy,mine-modes+typical", "--slice-column", "group", "--background", "g1"]
    assert main([*args, "--quiet", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "overall test accuracy (2 repeats, 2 rounds of 4)" in out and "mine-modes+typical" in out
    assert "win matrix" in out and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["strategies"] == ["random", "entropy", "mine-modes+typical"] and doc["labels"] == [0, 4, 8]
    assert set(doc["metrics"]["planted"]["win_matrix_aubc"]) == set(doc["strategies"])
    # user errors: one line, exit 1
    assert main([*base, "--strategies", "nope"]) == 1
    assert "unknown nope" in capsys.readouterr().err
    assert main([*base, "--slice-column", "colour"]) == 1
    assert "no metadata column 'colour'" in capsys.readouterr().err
    truth = tmp_path / "t.csv"
    truth.write_text("name,label\n")
    assert main([*base, "--truth", str(truth)]) == 1
    assert "needs the columns id and label" in capsys.readouterr().err
