"""Scores against hand-computed values and edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeminer.indexer import scores
from edgeminer.indexer.scores import (
    SCORE_FUNCTIONS,
    bald,
    entropy,
    least_confidence,
    margin,
    mc_variance,
    ratio,
    score_all,
    top2,
    uncertainty,
)

P = [
    [0.7, 0.2, 0.1],
    [1 / 3, 1 / 3, 1 / 3],
    [1.0, 0.0, 0.0],
    [0.4, 0.4, 0.2],  # tie at the top
]


def test_least_confidence_hand_values() -> None:
    got = least_confidence(P)
    # (1 - p_max) * C / (C - 1) with C = 3
    np.testing.assert_allclose(got, [0.3 * 1.5, 1.0, 0.0, 0.6 * 1.5], atol=1e-12)


def test_margin_hand_values() -> None:
    np.testing.assert_allclose(margin(P), [1 - 0.5, 1.0, 0.0, 1.0], atol=1e-12)


def test_ratio_hand_values() -> None:
    np.testing.assert_allclose(ratio(P), [0.2 / 0.7, 1.0, 0.0, 1.0], atol=1e-12)


def test_entropy_hand_values() -> None:
    h0 = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)) / math.log(3)
    h3 = -(2 * 0.4 * math.log(0.4) + 0.2 * math.log(0.2)) / math.log(3)
    np.testing.assert_allclose(entropy(P), [h0, 1.0, 0.0, h3], atol=1e-12)


def test_direction_more_uncertain_scores_higher() -> None:
    sure, unsure = [[0.9, 0.05, 0.05]], [[0.5, 0.3, 0.2]]
    for name in ("least_confidence", "margin", "ratio", "entropy"):
        assert uncertainty(unsure, method=name)[0] > uncertainty(sure, method=name)[0], name


def test_one_class_scores_zero() -> None:
    one = [[1.0], [1.0]]
    for fn in (least_confidence, margin, ratio, entropy):
        np.testing.assert_array_equal(fn(one), [0.0, 0.0])
    out = score_all(one, np.ones((3, 2, 1)))
    np.testing.assert_array_equal(out["confidence"], [1.0, 1.0])
    for key in ("least_confidence", "margin", "ratio", "entropy", "mc_variance", "bald"):
        np.testing.assert_array_equal(out[key], [0.0, 0.0])
    assert top2(one, ["only"]) == (["only", "only"], [None, None])


def test_unnormalised_rows_renormalised_by_default() -> None:
    raw = [[2.0, 1.0, 1.0]]  # sums to 4 -> [0.5, 0.25, 0.25]
    np.testing.assert_allclose(least_confidence(raw), [0.5 * 1.5])
    np.testing.assert_allclose(margin(raw), [0.75])
    out = score_all(raw)
    assert out["confidence"][0] == pytest.approx(0.5)


def test_unnormalised_rows_raise_without_renormalize_naming_the_row() -> None:
    with pytest.raises(ValueError, match=r"row 1 sum to 1\.2"):
        entropy([[0.5, 0.5], [0.6, 0.6]], renormalize=False)
    # within tolerance is accepted as is
    entropy([[0.5, 0.5004]], renormalize=False)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ([[0.5, 0.5], [float("nan"), 1.0]], "NaN or infinity at row 1"),
        ([[0.5, 0.5], [0.5, 0.5], [float("inf"), 0.0]], "NaN or infinity at row 2"),
        ([[1.2, -0.2]], "non-negative; row 0"),
        ([[0.5, 0.5], [0.0, 0.0]], "row 1 sum to 0"),
    ],
)
def test_invalid_values_name_the_row(bad: list[list[float]], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        least_confidence(bad)
    with pytest.raises(ValueError, match=match):
        score_all(bad)


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="must be 2-D"):
        margin([0.2, 0.8])
    with pytest.raises(ValueError, match="at least one class"):
        margin(np.zeros((2, 0)))
    with pytest.raises(ValueError, match="numeric"):
        margin([["a", "b"]])
    with pytest.raises(ValueError, match="3-D"):
        mc_variance([[0.5, 0.5]])


def test_empty_batch() -> None:
    out = score_all(np.zeros((0, 4)), np.zeros((2, 0, 4)))
    assert all(v.shape == (0,) and v.dtype == np.float32 for v in out.values())
    assert top2(np.zeros((0, 2)), ["a", "b"]) == ([], [])


def test_mc_variance_hand_values() -> None:
    # two passes, one sample, two classes: [0.8, 0.2] and [0.4, 0.6]
    mc = [[[0.8, 0.2]], [[0.4, 0.6]]]
    # variance over passes per class: 0.04 and 0.04; mean over classes 0.04
    np.testing.assert_allclose(mc_variance(mc), [0.04], atol=1e-12)
    # identical passes -> 0
    np.testing.assert_allclose(mc_variance([[[0.3, 0.7]], [[0.3, 0.7]]]), [0.0], atol=1e-15)


def test_bald_hand_values() -> None:
    # passes disagree completely ([1, 0] and [0, 1]): mean is uniform, each pass certain -> MI = log 2
    mc = [[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.5, 0.5]]]
    got = bald(mc)
    np.testing.assert_allclose(got, [1.0, 0.0], atol=1e-12)  # normalised by log C
    # a partial case computed by hand
    mc2 = [[[0.9, 0.1]], [[0.5, 0.5]]]
    mean = np.array([0.7, 0.3])
    h_mean = -(mean * np.log(mean)).sum()
    h_each = (-(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) + math.log(2)) / 2
    np.testing.assert_allclose(bald(mc2), [(h_mean - h_each) / math.log(2)], atol=1e-12)


def test_mc_errors_name_pass_and_row() -> None:
    mc = np.full((3, 2, 2), 0.5)
    mc[2, 1] = [0.5, -0.5]
    with pytest.raises(ValueError, match="pass 2, row 1"):
        bald(mc)


def test_score_all_keys_dtype_and_mc_shape_check() -> None:
    out = score_all(P)
    assert set(out) == {"confidence", "least_confidence", "margin", "ratio", "entropy"}
    assert all(v.dtype == np.float32 and v.shape == (4,) for v in out.values())
    np.testing.assert_allclose(out["confidence"], [0.7, 1 / 3, 1.0, 0.4], rtol=1e-6)
    for name in ("least_confidence", "margin", "ratio", "entropy"):
        np.testing.assert_allclose(out[name], SCORE_FUNCTIONS[name](P), rtol=1e-6, atol=1e-7)

    rng = np.random.default_rng(0)
    mc = rng.dirichlet(np.ones(3), size=(5, 4))
    out = score_all(P, mc)
    np.testing.assert_allclose(out["mc_variance"], mc_variance(mc), rtol=1e-6)
    np.testing.assert_allclose(out["bald"], bald(mc), rtol=1e-5, atol=1e-7)
    assert (out["bald"] >= 0).all() and (out["bald"] <= 1).all()
    with pytest.raises(ValueError, match=r"shape \(T, 4, 3\)"):
        score_all(P, mc[:, :3])


def test_uncertainty_names_valid_methods() -> None:
    with pytest.raises(ValueError, match="valid methods: least_confidence, margin, ratio, entropy"):
        uncertainty(P, method="confusion")
    np.testing.assert_allclose(uncertainty(P, method="ratio"), ratio(P))
    assert scores.MC_METHODS == {"mc_variance", "bald"}


def test_keyword_only_options() -> None:
    with pytest.raises(TypeError):
        entropy(P, False)  # type: ignore[misc]


def test_top2_ties_go_to_first_class_and_shape_checked() -> None:
    first, second = top2(P, ["cat", "dog", "bird"])
    assert first == ["cat", "cat", "cat", "cat"]
    assert second == ["dog", "dog", "dog", "dog"]
    first, second = top2([[0.1, 0.3, 0.6]], ["a", "b", "c"])
    assert (first, second) == (["c"], ["b"])
    with pytest.raises(ValueError, match="2 class names for probabilities with 3 columns"):
        top2(P, ["a", "b"])
