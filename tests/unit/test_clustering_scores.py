"""Failure-mode scores and stray-error absorption on cases small enough to work out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from edgeminer.indexer.analysis.clustering import absorb_stray_errors, failure_scores


def test_failure_scores_put_known_errors_first_and_need_similarity_and_failure() -> None:
    # cluster 5 = rows 0-2; its only error is row 0, so the errors' centroid is [1, 0].
    emb = np.array([[1, 0], [1, 0], [0.6, 0.8], [0, 1], [1, 0], [0.8, 0.6], [-1, 0]], dtype=np.float32)
    labels = np.array([5, 5, 5, 1, 1, 1, -1])
    error = np.array([True, False, False, True, False, True, False])
    conf = np.array([0.9, 0.9, 0.5, 0.2, 0.95, 0.9, np.nan])
    got = failure_scores(labels, [5], emb, error, conf)[:, 0]
    # soft = max(cos, 0) * (1 + f) / 2 with f = max(1 - conf, 0.5 if a known error):
    #   row 0: cos 1, f 0.5 -> 0.75     row 1: cos 1, f 0.1 -> 0.55    row 2: cos 0.6, f 0.5 -> 0.45
    #   row 3: cos 0 -> 0               row 4: cos 1, f 0.05 -> 0.525  row 5: cos 0.8, f 0.5 -> 0.6
    #   row 6: cos -1 -> 0 (unlabeled, confidence unknown: f 0.5)
    soft = np.array([0.75, 0.55, 0.45, 0.0, 0.525, 0.6, 0.0])
    member = np.array([1, 1, 1, 0, 0, 0, 0])
    assert got == pytest.approx(member + 0.999 * soft, abs=1e-6)
    assert np.argsort(-got, kind="stable").tolist() == [0, 1, 2, 5, 4, 3, 6]
    # the known error ranks above the equally similar, equally confident right member (the previous
    # score, the mean of similarity and uncertainty, tied them and put row 2 first)
    assert got[0] > got[1] > got[2]
    # a confident error far from the cluster's errors stays below a close, right row
    assert got[4] > got[3]


def test_failure_scores_without_confidence_use_known_errors_only() -> None:
    emb = np.array([[1, 0], [1, 0], [1, 0]], dtype=np.float32)
    got = failure_scores(np.array([0, 0, 1]), [0], emb, np.array([True, False, True]))[:, 0]
    assert got == pytest.approx([1 + 0.999 * 0.75, 1 + 0.999 * 0.5, 0.999 * 0.75])


def _strays() -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str | None]]:
    rows = [
        # (cluster, error, true label, embedding)
        (0, True, "7", [1, 0, 0]),  # 0-2: failure cluster 0, its errors are 7s
        (0, True, "7", [1, 0.05, 0]),
        (0, True, "7", [1, -0.05, 0]),
        (0, False, "7", [1, 0, 0.05]),
        (1, True, "7", [0, 1, 0]),  # 4, 5: 7s the model gets wrong inside a healthy cluster, side by side
        (1, True, "7", [0, 1, 0.05]),
        (1, True, "7", [0, 0, 1]),  # 6: an isolated wrong 7 (its neighbours 7, 8 are right)
        (1, False, "3", [0.1, 0, 1]),
        (1, False, "3", [-0.1, 0, 1]),
        (1, True, "4", [0, 1, 0.3]),  # 9: a wrong 4 next to them (no failure cluster of 4s)
        (1, False, "7", [0, 1, -0.3]),  # 10: a right 7
        (2, True, "7", [0.7, 0.7, 0]),  # 11, 12: failure cluster 2, also wrong 7s, nearer to rows 4/5
        (2, True, "7", [0.7, 0.72, 0]),
        (-1, True, "7", [0, 1, -0.05]),  # 13: a wrong 7 in noise, next to 4
        (1, False, None, [0, 1, 0.01]),  # 14: unlabeled
    ]
    labels = np.array([r[0] for r in rows])
    error = np.array([r[1] for r in rows])
    emb = np.array([r[3] for r in rows], dtype=np.float32)
    return labels, error, emb, [r[2] for r in rows]


def test_absorb_stray_errors_moves_grouped_errors_of_the_clusters_class_to_the_nearest_mode() -> None:
    labels, error, emb, truth = _strays()
    before = labels.copy()
    got = absorb_stray_errors(labels, [0, 2], emb, error, truth, k=2, vote_k=0)
    expected = before.copy()
    expected[[4, 5, 13]] = 2  # closer to cluster 2's errors (cos ~0.71) than to cluster 0's (~0)
    assert got.tolist() == expected.tolist()
    assert labels.tolist() == before.tolist()  # the input is not modified
    # a failure cluster whose errors are not mostly one class takes nothing
    none = absorb_stray_errors(labels, [0, 2], emb, error, truth, k=2, min_share=1.01, vote_k=0)
    assert none.tolist() == before.tolist()
    # with only cluster 0 as a failure cluster, rows 11 and 12 are strays too (and neighbours of each other)
    only0 = absorb_stray_errors(labels, [0], emb, error, truth, k=2, vote_k=0)
    expected0 = before.copy()
    expected0[[4, 5, 11, 12, 13]] = 0
    assert only0.tolist() == expected0.tolist()
    assert absorb_stray_errors(labels, [], emb, error, truth).tolist() == before.tolist()


def test_absorb_stray_errors_vote_moves_errors_whose_nearest_errors_are_one_failure_clusters() -> None:
    # failure cluster 3 holds errors of many classes around [1, 0, 0] (a mode with no one class, like
    # rotated digits all called 4); cluster 1 is healthy, cluster 4 is a second failure cluster.
    rows = [
        (3, True, "8", [1, 0, 0]),  # 0-4: the mode's errors, five classes; the loosest one's 3rd
        (3, True, "9", [1, 0.3, 0]),  # nearest other error is at cosine 0.917 (the cluster's reach)
        (3, True, "1", [1, -0.3, 0]),
        (3, True, "6", [1, 0, 0.3]),
        (3, True, "0", [1, 0, -0.3]),
        (1, True, "2", [1, 0.1, 0.1]),  # 5: stray, 3 nearest errors 0, 1, 3 (cos >= 0.977) -> cluster 3
        (1, False, "2", [1, 0.1, 0.11]),  # 6: right, never moves
        (1, True, "5", [0, 1, 0]),  # 7: stray, nearest errors 11 (healthy), then two of cluster 4
        (4, True, "7", [0, 1, 0.05]),  # 8-10: failure cluster 4 (three classes: no class step)
        (4, True, "3", [0, 1, -0.05]),
        (4, True, "4", [0.05, 1, 0]),
        (1, True, "1", [0, 1, 0.02]),  # 11: stray, nearest errors 7 (healthy), then two of cluster 4
        (-1, True, "3", [1, -0.1, -0.35]),  # 12: stray in noise, nearest errors 4, 0, 2 -> cluster 3
    ]
    labels = np.array([r[0] for r in rows])
    error = np.array([r[1] for r in rows])
    truth = [r[2] for r in rows]
    emb = np.array([r[3] for r in rows], dtype=np.float32)
    before = labels.copy()
    got = absorb_stray_errors(labels, [3, 4], emb, error, truth, vote_k=3, vote_min=3)
    expected = before.copy()
    expected[[5, 12]] = 3
    assert got.tolist() == expected.tolist()
    # 2 of 3 is enough for rows 7 and 11 when vote_min is 2
    loose = absorb_stray_errors(labels, [3, 4], emb, error, truth, vote_k=3, vote_min=2)
    assert loose[[5, 12]].tolist() == [3, 3] and loose[[7, 11]].tolist() == [4, 4]
    # a stray as well voted for but farther from the mode than its loosest error is from the others stays
    far = emb.copy()
    far[5] = [1, 0.45, 0.45]  # 3 nearest errors still 1, 3, 0, but the 3rd at cosine 0.84 < 0.917
    assert absorb_stray_errors(labels, [3, 4], far, error, truth, vote_k=3, vote_min=3)[5] == 1
    # no failure cluster or no vote: nothing moves
    assert absorb_stray_errors(labels, [], emb, error, truth, vote_k=3, vote_min=1).tolist() == before.tolist()
    assert absorb_stray_errors(labels, [3, 4], emb, error, truth, vote_k=0).tolist() == before.tolist()


def test_absorb_stray_errors_leaves_isolated_errors_and_searches_approximately_above_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from edgeminer.indexer.analysis import clustering

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)).astype(np.float32) * 4
    blob = np.repeat(np.arange(4), 500)
    emb = centres[blob] + rng.normal(size=(2000, 16)).astype(np.float32) * 0.2
    labels = blob.copy()  # cluster = blob; blob 0 is the failure mode
    error = np.zeros(2000, dtype=bool)
    error[:200] = True  # 200 of blob 0's rows are errors...
    labels[:5] = 3  # ...5 of them sit in healthy cluster 3 (as the map might put them)
    # isolated errors of the healthy blobs: all their nearest errors are blob 0's, but far away
    error[[600, 1100, 1600]] = True
    truth = [str(v) for v in rng.integers(0, 10, 2000)]  # many classes: the class step has no mode
    exact = absorb_stray_errors(labels, [0], emb, error, truth)
    assert exact[:5].tolist() == [0] * 5 and exact[5:].tolist() == labels[5:].tolist()
    monkeypatch.setattr(clustering, "EXACT_SEARCH_PAIRS", 0)  # every search approximate (faiss IVF)
    assert absorb_stray_errors(labels, [0], emb, error, truth).tolist() == exact.tolist()
