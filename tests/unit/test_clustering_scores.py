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
    # failure cluster 3 holds errors of many classes along [1, 0, 0] (a mode with no one class, like
    # rotated digits all called 4); cluster 1 is healthy, cluster 4 is a second failure cluster.
    rows = [
        (3, True, "8", [1, 0, 0]),  # 0-4: the mode's errors, five classes
        (3, True, "9", [1, 0.02, 0]),
        (3, True, "1", [1, -0.02, 0]),
        (3, True, "6", [1, 0, 0.02]),
        (3, True, "0", [1, 0, -0.02]),
        (1, True, "2", [0.95, 0.3, 0]),  # 5: stray, its 3 nearest errors are 1, 0, 3 -> cluster 3
        (1, False, "2", [0.95, 0.3, 0.01]),  # 6: right, never moves
        (1, True, "5", [0, 1, 0]),  # 7: stray, nearest errors 8, 9 (cluster 4) and 5 (healthy): 2 votes
        (4, True, "7", [0, 1, 0.05]),  # 8, 9: failure cluster 4 (two classes: no class step for row 7)
        (4, True, "3", [0, 1, -0.05]),
        (-1, True, "3", [0.9, 0, 0.4]),  # 10: stray in noise, nearest errors 3, 0, 1 -> cluster 3
    ]
    labels = np.array([r[0] for r in rows])
    error = np.array([r[1] for r in rows])
    truth = [r[2] for r in rows]
    emb = np.array([r[3] for r in rows], dtype=np.float32)
    before = labels.copy()
    got = absorb_stray_errors(labels, [3, 4], emb, error, truth, vote_k=3, vote_min=3)
    expected = before.copy()
    expected[[5, 10]] = 3
    assert got.tolist() == expected.tolist()
    # 2 of 3 is enough for row 7 when vote_min is 2
    loose = absorb_stray_errors(labels, [3, 4], emb, error, truth, vote_k=3, vote_min=2)
    assert loose[7] == 4 and loose[5] == 3 and loose[10] == 3
    # no failure cluster or no vote: nothing moves
    assert absorb_stray_errors(labels, [], emb, error, truth, vote_k=3, vote_min=1).tolist() == before.tolist()
    assert absorb_stray_errors(labels, [3, 4], emb, error, truth, vote_k=0).tolist() == before.tolist()
