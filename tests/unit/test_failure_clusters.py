"""Failure-aware clusters: the condensed-tree walk finds an error-dense sub-blob that density clustering
merges into a big cluster; without errors it is plain HDBSCAN; the fitted state still pickles and
reloads; analyze uses it by default and keeps ``clusters=density`` available."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from factories import make_synthetic

from edgeminer.indexer.analysis.clustering import Clusterer, failure_tree_labels, summarize_clusters
from edgeminer.indexer.analysis.projection import load_own_pickle
from edgeminer.indexer.analysis.run import AnalyzeParams, analyze, load_analysis
from edgeminer.indexer.errors import ValidationFailed
from edgeminer.indexer.store import Store


def _planted(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A big blob holding a small dense sub-blob (60 points) where 80% of judged rows are errors (4%
    elsewhere), and a far blob. Returns points, sub-blob mask, judged, error."""
    rng = np.random.default_rng(seed)
    big = rng.normal(size=(600, 2))
    sub = np.array([2.0, 0.0]) + 0.15 * rng.normal(size=(60, 2))
    far = np.array([8.0, 0.0]) + rng.normal(size=(300, 2))
    pts = np.concatenate([big, sub, far])
    n = pts.shape[0]
    in_sub = np.r_[np.zeros(600, bool), np.ones(60, bool), np.zeros(300, bool)]
    judged = rng.random(n) < 0.6
    error = judged & np.where(in_sub, rng.random(n) < 0.8, rng.random(n) < 0.04)
    return pts, in_sub, judged, error


def _best(labels: np.ndarray, truth: np.ndarray) -> tuple[int, float, float]:
    """The cluster holding most of ``truth``: (id, precision, recall)."""
    ids = [c for c in set(labels[truth].tolist()) if c != -1]
    best = max(ids, key=lambda c: int((labels[truth] == c).sum()))
    member = labels == best
    hits = int((member & truth).sum())
    return best, hits / int(member.sum()), hits / int(truth.sum())


def test_failure_walk_finds_error_dense_sub_blob_that_density_merges() -> None:
    pts, in_sub, judged, error = _planted()
    density = Clusterer(min_cluster_size=20, mode="density").fit(pts, error=error, judged=judged)
    _, p_density, _ = _best(density.labels_, in_sub)
    assert p_density < 0.2  # HDBSCAN's most stable clusters hide the sub-blob inside the big one

    model = Clusterer(min_cluster_size=20, mode="failure").fit(pts, error=error, judged=judged)
    cid, precision, recall = _best(model.labels_, in_sub)
    assert precision >= 0.8 and recall >= 0.8, (precision, recall)
    assert model.n_failure_nodes_ >= 1 and model.labels_.dtype == np.int32
    # consecutive ids, noise -1
    used = sorted(set(model.labels_.tolist()) - {-1})
    assert used == list(range(len(used))) and model.n_clusters_ == len(used)
    rows = {
        "labeled": judged.tolist(),
        "correct": [None if not j else not e for j, e in zip(judged, error, strict=True)],
    }
    summary = summarize_clusters(model.labels_, rows)
    top = summary["clusters"][0]
    assert top["id"] == cid and top["failure_rank"] == 1


def test_without_errors_failure_mode_is_plain_hdbscan() -> None:
    pts, _, judged, error = _planted(seed=1)
    plain = Clusterer(min_cluster_size=20, mode="density").fit(pts).labels_
    assert np.array_equal(Clusterer(min_cluster_size=20).fit(pts).labels_, plain)  # no error flags given
    none = np.zeros_like(error)
    assert np.array_equal(Clusterer(min_cluster_size=20).fit(pts, error=none, judged=judged).labels_, plain)
    tree = np.zeros(0, dtype=[("parent", "i8"), ("child", "i8"), ("lambda_val", "f8"), ("child_size", "i8")])
    same, made = failure_tree_labels(tree, plain, error, judged)
    assert made == 0 and np.array_equal(same, plain)


@pytest.mark.parametrize("backend", ["hdbscan", "sklearn"])
def test_both_backends_walk_the_tree(backend: str) -> None:
    pts, in_sub, judged, error = _planted(seed=2)
    model = Clusterer(min_cluster_size=20, backend=backend).fit(pts, error=error, judged=judged)
    _, precision, recall = _best(model.labels_, in_sub)
    assert precision >= 0.7 and recall >= 0.8, (backend, precision, recall)


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="clusters must be one of failure, density"):
        Clusterer(mode="gmm").fit(np.zeros((30, 2)))
    with pytest.raises(ValidationFailed, match="clusters must be one of failure, density"):
        AnalyzeParams(clusters="gmm").check()


def test_fitted_failure_clusterer_pickles_and_places_new_points() -> None:
    pts, in_sub, judged, error = _planted(seed=3)
    model = Clusterer(min_cluster_size=20).fit(pts, error=error, judged=judged)
    again = load_own_pickle(pickle.dumps(model))
    assert np.array_equal(again.labels_, model.labels_) and again.mode == "failure"
    cid, _, _ = _best(model.labels_, in_sub)
    assert again.predict(np.array([[2.0, 0.0], [50.0, 50.0]])).tolist() == [cid, -1]


FAST = {"n_neighbors": 10, "n_epochs": 30, "min_cluster_size": 15}


def test_analyze_defaults_to_failure_clusters_and_keeps_density(store: Store) -> None:
    make_synthetic(store, "synth", n_clusters=5, per_cluster=50, error_clusters=(1,), seed=2)
    rep = analyze(store, "synth", FAST)
    doc = load_analysis(store, "synth") or {}
    assert rep.mode == "fit" and doc["params"]["clusters"] == "failure" and rep.n_failure_clusters >= 1
    assert analyze(store, "synth", FAST).mode == "reuse"
    rep = analyze(store, "synth", {**FAST, "clusters": "density"})
    assert rep.mode == "recluster"  # the map is kept, only the clusters change
    doc = load_analysis(store, "synth") or {}
    assert doc["params"]["clusters"] == "density"
    failing = [c for c in doc["clusters"] if c["is_failure"]]
    assert failing and failing[0]["failure_rank"] == 1
    # the saved state reloads (the analysis after a restart places new rows with it)
    from edgeminer.indexer.analysis.run import _load_state

    state = _load_state(Store(store.uri), "synth", doc["state"])
    assert state is not None and state[1].mode == "density"


def test_failure_scores_rank_members_first_and_auroc_matches_sklearn() -> None:
    from sklearn.metrics import roc_auc_score

    from edgeminer.indexer.analysis.clustering import auroc, failure_scores, precision_at_k, slice_quality

    rng = np.random.default_rng(4)
    emb = rng.normal(size=(200, 8)).astype(np.float32)
    labels = np.repeat([0, 1, -1, 1], 50)
    error = rng.random(200) < 0.3
    conf = rng.random(200)
    conf[3] = np.nan
    scores = failure_scores(labels, [1, 0], emb, error, conf)
    assert scores.shape == (200, 2)
    member = labels == 1
    assert scores[member, 0].min() >= 1.0 > scores[~member, 0].max()  # members first
    assert np.all((scores[:, 1] >= 0) & (scores[:, 1] < 2))
    truth = member & (rng.random(200) < 0.7)
    for j in range(2):
        assert auroc(truth, scores[:, j]) == pytest.approx(roc_auc_score(truth, scores[:, j]))
    assert auroc(np.zeros(5, bool), np.arange(5.0)) is None
    assert precision_at_k(truth, scores[:, 0], 10) == pytest.approx(truth[np.argsort(-scores[:, 0])[:10]].mean())
    # a cluster of tied scores keeps row order (dcbench's rankdata "ordinal")
    assert precision_at_k(np.array([1, 0, 1, 1], bool), np.ones(4), 2) == 0.5

    out = slice_quality(labels, np.where(truth, "s", "none"), scores={1: scores[:, 0]})
    assert out[0]["cluster"] == 1 and out[0]["auroc"] == pytest.approx(roc_auc_score(truth, scores[:, 0]))
    assert out[0]["p_at_10"] is not None and out[0]["p_at_25"] is not None
    assert slice_quality(labels, np.where(truth, "s", "none"))[0]["p_at_10"] is None


def test_analyze_moves_a_failure_modes_stray_errors_into_its_cluster(store: Store) -> None:
    """Cluster 1 (true "dog") is a failure mode; five labeled dogs of healthy cluster 4 (also "dog"),
    next to each other, are made errors too: the failure cluster takes them in (and the map keeps them
    where they are). With ``clusters=density`` nothing moves."""
    import pyarrow as pa

    syn = make_synthetic(store, "synth", n_clusters=5, per_cluster=50, error_clusters=(1,), seed=2)
    four = [i for i in syn.ids if syn.cluster_of[i] == 4 and syn.labeled[i]]
    vec = {i: syn.vectors[syn.ids.index(i)] for i in four}
    anchor = vec[four[0]]
    strays = sorted(four, key=lambda i: -float(vec[i] @ anchor))[:5]  # a tight group of five
    store.update_columns(
        "synth",
        pa.table({"id": strays, "pred_label": ["cat"] * 5, "correct": [False] * 5, "outcome": ["wrong_class"] * 5}),
    )
    rep = analyze(store, "synth", FAST)
    assert rep.strays_moved == 5
    assert "5 labeled errors away from their failure mode joined its cluster" in rep.describe()
    rows = store.query("synth", columns=["id", "cluster"]).to_pylist()
    cluster = {r["id"]: r["cluster"] for r in rows}
    doc = load_analysis(store, "synth") or {}
    mode = max(
        (c for c in doc["clusters"] if c["is_failure"]),
        key=lambda c: sum(cluster[i] == c["id"] for i in syn.ids if syn.cluster_of[i] == 1),
    )
    assert all(cluster[i] == mode["id"] for i in strays), [cluster[i] for i in strays]
    assert sum(cluster[i] == mode["id"] for i in four) == 5  # only the errors moved, not their neighbours

    assert analyze(store, "synth", {**FAST, "clusters": "density"}).strays_moved == 0
    cluster = {r["id"]: r["cluster"] for r in store.query("synth", columns=["id", "cluster"]).to_pylist()}
    assert len({cluster[i] for i in strays} | {cluster[four[-1]]}) == 1  # the strays stay with their cluster
