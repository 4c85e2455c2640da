"""HDBSCAN clustering, new-point assignment, cluster summaries / failure ranking, slice quality."""

from __future__ import annotations

import numpy as np
import pytest

from edgeminer.indexer.analysis.clustering import Clusterer, auto_min_cluster_size, slice_quality, summarize_clusters


def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    pts = np.concatenate([c + rng.normal(scale=0.5, size=(80, 2)) for c in centres])
    truth = np.repeat(np.arange(3), 80)
    return pts, truth, centres


@pytest.mark.parametrize("backend", ["hdbscan", "sklearn"])
def test_clusterer_finds_blobs_and_places_new_points(backend: str) -> None:
    pts, truth, centres = _blobs()
    model = Clusterer(min_cluster_size=15, backend=backend).fit(pts)
    assert model.n_clusters_ == 3
    assert model.labels_.dtype == np.int32
    for k in range(3):  # each blob is one cluster (allowing a few noise points)
        got = model.labels_[truth == k]
        got = got[got >= 0]
        assert len(set(got.tolist())) == 1 and got.size >= 70
    new = np.array([centres[1] + 0.1, [50.0, 50.0]])
    pred = model.predict(new)
    blob1 = np.bincount(model.labels_[truth == 1][model.labels_[truth == 1] >= 0]).argmax()
    assert pred.tolist() == [blob1, -1]


def test_clusterer_small_and_invalid_inputs() -> None:
    few = Clusterer(min_cluster_size=10).fit(np.zeros((4, 2)))
    assert few.labels_.tolist() == [-1] * 4 and few.n_clusters_ == 0
    assert Clusterer().fit(np.zeros((0, 2))).labels_.size == 0
    with pytest.raises(ValueError, match="backend must be one of hdbscan, sklearn"):
        Clusterer(backend="dbscan").fit(np.zeros((20, 2)))
    with pytest.raises(RuntimeError, match="not fitted"):
        Clusterer().predict(np.zeros((1, 2)))


def test_auto_min_cluster_size() -> None:
    assert auto_min_cluster_size(100) == 10
    assert auto_min_cluster_size(1_800) == 21
    assert auto_min_cluster_size(100_000) == 158


def _fixture() -> tuple[np.ndarray, dict]:
    """cluster 0: 20 labeled, 15 errors (cat->dog); cluster 1: 5 labeled, 2 errors (tiny);
    cluster 2: 20 labeled + 10 unlabeled, 1 error; cluster 3: 10 labeled, 6 errors; noise: 5 labeled, 4 errors.
    base = (15 + 2 + 1 + 6 + 4) / (20 + 5 + 20 + 10 + 5) = 28 / 60."""
    labels, rows = (
        [],
        {
            k: []
            for k in (
                "id",
                "labeled",
                "correct",
                "label",
                "pred_label",
                "confidence",
                "x",
                "y",
                "margin",
                "meta_time",
                "meta_size",
            )
        },
    )

    def add(cid: int, n: int, errors: int, unlabeled: int = 0, x: float = 0.0) -> None:
        for j in range(n + unlabeled):
            lab = j < n
            err = lab and j < errors
            labels.append(cid)
            rows["id"].append(f"c{cid}-{j}")
            rows["labeled"].append(lab)
            rows["correct"].append(None if not lab else not err)
            rows["label"].append("cat" if lab else None)
            rows["pred_label"].append("dog" if err else "cat")
            rows["confidence"].append(0.5 + j / 100)
            rows["x"].append(x + j * 0.01)
            rows["y"].append(0.0)
            rows["margin"].append(0.5)
            rows["meta_time"].append("night" if cid == 0 else "day")
            rows["meta_size"].append(float(cid))

    add(0, 20, 15, x=0)
    add(1, 5, 2, x=10)
    add(2, 20, 1, unlabeled=10, x=20)
    add(3, 10, 6, x=30)
    add(-1, 5, 4, x=40)
    return np.array(labels), rows


def test_summaries_and_failure_ranking() -> None:
    labels, rows = _fixture()
    out = summarize_clusters(labels, rows, metadata_fields={"time": "string", "size": "float"}, top_k=3)
    base = 28 / 60
    assert out["base_error_rate"] == pytest.approx(base)
    assert (out["rows"], out["judged"], out["errors"], out["n_clusters"]) == (70, 60, 28, 4)
    by = {c["id"]: c for c in out["clusters"]}
    c0 = by[0]
    assert (c0["size"], c0["labeled"], c0["unlabeled"], c0["errors"]) == (20, 20, 0, 15)
    assert c0["error_rate"] == pytest.approx(0.75)
    assert c0["lift"] == pytest.approx(0.75 / base)
    assert c0["excess_errors"] == pytest.approx(15 - 20 * base)
    assert c0["top_confusions"] == [{"label": "cat", "pred": "dog", "count": 15}]
    assert c0["dominant_label"] == {"value": "cat", "count": 20, "share": 1.0}
    assert c0["dominant_pred"] == {"value": "dog", "count": 15, "share": 0.75}
    assert c0["mean_uncertainty"] == {"margin": pytest.approx(0.5)}
    # worst failures: the most confident errors first (confidence grows with j)
    assert c0["worst_failures"] == ["c0-14", "c0-13", "c0-12"]
    # typical members: nearest the 2-D centroid (x = 0 .. 0.19, centre 0.095)
    assert sorted(c0["typical"]) == ["c0-10", "c0-8", "c0-9"]
    assert c0["metadata"]["time"] == {"value": "night", "share": 1.0, "dataset_share": pytest.approx(20 / 70)}
    assert c0["metadata"]["size"] == {"mean": 0.0, "dataset_mean": pytest.approx((0 * 20 + 5 + 2 * 30 + 30 - 5) / 70)}
    # ranking: cluster 0 (excess 5.67) before cluster 3 (excess 1.33); the tiny cluster 1 (2 errors),
    # the low-error cluster 2 and noise are not failure clusters
    assert [c["id"] for c in out["clusters"] if c["is_failure"]] == [0, 3]
    assert (by[0]["failure_rank"], by[3]["failure_rank"]) == (1, 2)
    assert by[1]["failure_rank"] is None and by[2]["failure_rank"] is None and by[-1]["failure_rank"] is None
    assert by[2]["unlabeled"] == 10 and by[2]["error_rate"] == pytest.approx(1 / 20)
    assert out["clusters"][-1]["id"] == -1  # noise last


def test_summaries_tiny_cluster_with_one_error_never_ranks() -> None:
    labels, rows = _fixture()
    out = summarize_clusters(labels, rows, min_errors=1, prior_strength=10)
    by = {c["id"]: c for c in out["clusters"]}
    # cluster 1 (2 of 5 wrong, 40% < base 47%) stays out even with min_errors=1
    assert by[1]["is_failure"] is False


def test_summaries_typical_members_use_embeddings() -> None:
    labels = np.zeros(4, dtype=int)
    rows = {"id": ["a", "b", "c", "d"], "labeled": [True] * 4, "correct": [True] * 4}
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.8, 0.2]])
    out = summarize_clusters(labels, rows, embeddings=emb, top_k=2)
    # centroid of the unit vectors points at ~24 degrees: d (14 deg) is nearer than b (6 deg), a, c
    assert out["clusters"][0]["typical"] == ["d", "b"]


def test_summaries_all_correct_and_empty() -> None:
    labels = np.array([0, 0, 1, 1])
    rows = {
        "id": list("abcd"),
        "labeled": [True] * 4,
        "correct": [True] * 4,
        "label": ["x"] * 4,
        "pred_label": ["x"] * 4,
    }
    out = summarize_clusters(labels, rows)
    assert out["base_error_rate"] == 0.0 and out["n_failure_clusters"] == 0
    assert all(c["lift"] is None and c["error_rate"] == 0.0 for c in out["clusters"])
    empty = summarize_clusters(np.array([], dtype=int), {"id": []})
    assert empty["clusters"] == [] and empty["rows"] == 0
    unlabeled = summarize_clusters(np.array([0, 0]), {"id": ["a", "b"], "labeled": [False, False]})
    assert unlabeled["clusters"][0]["error_rate"] is None and unlabeled["clusters"][0]["unlabeled"] == 2


def test_slice_quality() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, -1])
    truth = ["inv", "inv", "inv", "none", "none", "none", "inv", "rot", "rot", "rot"]
    out = slice_quality(labels, truth, failure_rank={0: 2, 1: None, 2: 1})
    assert [s["slice"] for s in out] == ["inv", "rot"]  # "none" is ignored
    inv, rot = out
    assert inv["rows"] == 4 and inv["cluster"] == 0
    assert inv["precision"] == pytest.approx(3 / 4) and inv["recall"] == pytest.approx(3 / 4)
    assert inv["failure_rank"] == 2 and inv["majority_clusters"] == [0]
    assert inv["majority_recall"] == pytest.approx(3 / 4)
    assert rot["cluster"] == 2 and rot["precision"] == 1.0 and rot["recall"] == pytest.approx(2 / 3)
    assert rot["noise"] == 1 and rot["failure_rank"] == 1 and rot["majority_best_rank"] == 1
    with pytest.raises(ValueError, match="truth has 2 values for 10"):
        slice_quality(labels, ["a", "b"])
