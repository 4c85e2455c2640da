"""Planted-slice generators: the plan plants each slice at its requested share of its eligible rows;
the styles change the images as documented; each generator builds a real dataset (images, a trained
TorchScript model, the ordinary ingest) whose model is worse on the slices; unknown names are refused."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from edgeminer.indexer import slicegen
from edgeminer.indexer.errors import ValidationFailed
from edgeminer.indexer.store import Store


@pytest.mark.parametrize("name", slicegen.GENERATORS)
def test_plan_plants_each_slice_at_its_requested_share(name: str) -> None:
    spec = slicegen._spec(name)
    target = load_digits().target
    splits, slices = slicegen._plan(spec, target, np.random.default_rng(0))
    assert (splits == "train").sum() == slicegen.SPLIT_SIZES["train"]
    assert (splits == "val").sum() == slicegen.SPLIT_SIZES["val"]
    rates = slicegen._planted(spec, target, splits, slices)
    for s in spec.slices:
        assert not (slices == s.name)[~s.eligible(target)].any()  # only eligible classes
        for split in slicegen.SPLITS:
            eligible = int((s.eligible(target) & (splits == split)).sum())
            # rounding to whole rows: within one row of the requested share
            assert abs(rates[s.name][split] - s.share[split]) <= 1 / eligible + 1e-9, (s.name, split)
    info = slicegen.generator_info(name)
    assert [x["slice"] for x in info["slices"]] == [s.name for s in spec.slices]


def test_styles_change_the_images() -> None:
    digit = load_digits().images[0]
    base = slicegen._render(digit, "none", np.random.default_rng(0))
    arr = np.asarray(base)
    dark = np.asarray(slicegen._render_image(base, 0, "dark", np.random.default_rng(0)))
    assert dark.max() <= 0.3 * arr.max() + 1
    blurred = np.asarray(slicegen._render_image(base, 0, "blurred", np.random.default_rng(0)), dtype=float)
    assert np.abs(np.diff(blurred, axis=1)).mean() < 0.6 * np.abs(np.diff(arr.astype(float), axis=1)).mean()
    mirrored = np.asarray(slicegen._render_subpop(base, 7, "mirrored_7", np.random.default_rng(0)))
    assert np.array_equal(mirrored, arr[:, ::-1])
    grey = np.asarray(slicegen._render_spurious(base, 5, "grey_bg", np.random.default_rng(0)))
    assert grey.min() == slicegen.GREY
    three_train = np.asarray(slicegen._render_spurious(base, 3, "none", np.random.default_rng(0)))
    three_plain = np.asarray(slicegen._render_spurious(base, 3, "plain_3", np.random.default_rng(0)))
    assert three_train.min() == slicegen.GREY and three_plain.min() == arr.min()
    assert np.array_equal(np.asarray(slicegen._render_subpop(base, 1, "none", np.random.default_rng(0))), arr)


def test_unknown_generator_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed, match="unknown slice generator 'nope'; known: subpop, image, spurious"):
        slicegen.build_generator("nope", tmp_path / "out", tmp_path / "db")


def _pool_truth(path: Path) -> dict[str, str]:
    with open(path, newline="") as f:
        return {r["id"]: r["label"] for r in csv.DictReader(f)}


@pytest.mark.slow
@pytest.mark.parametrize("name", slicegen.GENERATORS)
def test_generator_builds_a_dataset_the_model_fails_on(name: str, tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    summary = slicegen.build_generator(name, tmp_path / "out", store, seed=0)
    assert summary.dataset == f"slicegen-{name}" and summary.rows == 1797
    work = tmp_path / "out" / name
    assert (work / "model.pt").exists() and len(list((work / "images").glob("*.png"))) == 1797
    with Image.open(next((work / "images").glob("*.png"))) as img:
        assert img.size == (32, 32)

    # the planted shares, read back from the store (labels) and the pool's hidden truth
    rows = store.query(summary.dataset, columns=["id", "split", "label", "meta_slice"]).to_pylist()
    truth = _pool_truth(work / "pool_truth.csv")
    spec = slicegen._spec(name)
    for s in spec.slices:
        for split in slicegen.SPLITS:
            here = [r for r in rows if r["split"] == split]
            labels = [int(r["label"] if r["label"] is not None else truth[r["id"]]) for r in here]
            in_slice = [r["meta_slice"] == s.name for r in here]
            eligible = np.asarray(s.eligible(np.asarray(labels)))
            share = float(np.asarray(in_slice)[eligible].mean())
            assert abs(share - s.share[split]) <= 1 / eligible.sum() + 1e-9, (s.name, split, share)
            assert summary.rates[s.name][split] == pytest.approx(share)

    # the model is clearly worse on every slice than on ordinary rows
    ordinary = summary.val_error_rate["none"]
    assert ordinary is not None and ordinary < 0.1
    for s in spec.slices:
        rate = summary.val_error_rate[s.name]
        assert rate is not None and rate >= max(0.2, 3 * ordinary), (s.name, rate, ordinary)
    assert "val err%" in summary.describe()

    # building again reuses everything: nothing new is ingested
    again = slicegen.build_generator(name, tmp_path / "out", store, seed=0)
    assert again.rows == 1797 and store.count(summary.dataset) == 1797
