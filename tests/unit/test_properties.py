"""Image properties (indexer/properties.py): measured on real image files of known brightness, blur and
colour, stored as img_* metadata by a real ingest (decoded and precomputed paths), and the
near-duplicate count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from torch import nn

from edgeminer.indexer.embedders import PrecomputedEmbedder, TorchScriptEmbedder
from edgeminer.indexer.pipeline import ingest
from edgeminer.indexer.properties import (
    PROPERTY_FIELDS,
    image_properties,
    laplacian_variance,
    near_duplicate_counts,
)
from edgeminer.indexer.sources import open_source
from edgeminer.indexer.store import Store


def _checker(size: int = 64, cell: int = 4) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size]
    board = (((yy // cell) + (xx // cell)) % 2 * 255).astype(np.uint8)
    return Image.fromarray(board).convert("RGB")


def test_brightness_contrast_and_saturation_of_known_images(tmp_path: Path) -> None:
    for value in (20, 128, 230):
        path = tmp_path / f"flat{value}.png"
        Image.new("RGB", (40, 30), (value, value, value)).save(path)
        with Image.open(path) as img:
            props = image_properties(img)
        assert props["img_brightness"] == pytest.approx(value / 255, abs=1e-6)
        assert props["img_contrast"] == pytest.approx(0.0, abs=1e-9)
        assert props["img_saturation"] == pytest.approx(0.0, abs=1e-9)
        assert props["img_sharpness"] == pytest.approx(0.0, abs=1e-9)
        assert (props["img_width"], props["img_height"], props["img_aspect"]) == (40, 30, pytest.approx(40 / 30))
    red = tmp_path / "red.png"
    Image.new("RGB", (10, 10), (255, 0, 0)).save(red)
    with Image.open(red) as img:
        assert image_properties(img)["img_saturation"] == pytest.approx(1.0)
    board = tmp_path / "board.png"
    _checker().save(board)
    with Image.open(board) as img:
        props = image_properties(img)
    assert props["img_brightness"] == pytest.approx(0.5, abs=0.01)
    assert props["img_contrast"] == pytest.approx(0.5, abs=0.01)  # half black, half white


def test_blur_lowers_sharpness_monotonically(tmp_path: Path) -> None:
    sharp = _checker()
    values = []
    for radius in (0, 1, 2, 4):
        path = tmp_path / f"blur{radius}.png"
        (sharp if radius == 0 else sharp.filter(ImageFilter.GaussianBlur(radius))).save(path)
        with Image.open(path) as img:
            values.append(image_properties(img)["img_sharpness"])
    assert values == sorted(values, reverse=True) and values[-1] < values[0] / 20


def test_laplacian_variance_matches_a_direct_convolution() -> None:
    from scipy.ndimage import convolve

    gray = np.random.default_rng(0).random((20, 17)) * 255
    kernel = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=float)
    expected = convolve(gray, kernel, mode="constant")[1:-1, 1:-1].var()
    assert laplacian_variance(gray) == pytest.approx(expected)


def test_large_images_are_measured_on_a_bounded_copy() -> None:
    img = Image.new("RGB", (3000, 1000), (100, 50, 25))
    props = image_properties(img)
    assert (props["img_width"], props["img_height"]) == (3000, 1000)  # the true size is reported
    assert props["img_brightness"] == pytest.approx(np.asarray(img.convert("L")).mean() / 255, abs=1e-3)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _images(folder: Path) -> list[Path]:
    folder.mkdir()
    paths = []
    for n, value in enumerate((15, 60, 200, 240)):
        path = folder / f"{n}.png"
        img = Image.new("RGB", (48, 32), (value, value, value))
        if n == 3:
            img = _checker(32).resize((48, 32))  # sharp, mid-grey on average
        img.save(path)
        paths.append(path)
    return paths


def test_ingest_stores_properties_as_metadata_and_the_user_column_wins(tmp_path: Path, store: Store) -> None:
    torch.manual_seed(0)
    model = tmp_path / "m.pt"
    torch.jit.script(_Net()).save(str(model), _extra_files={"edgeminer.json": json.dumps({"image_size": 16})})
    paths = _images(tmp_path / "img")
    rows = [{"id": f"i{n}", "uri": str(p), "split": "val", "img_contrast": 0.123 * n} for n, p in enumerate(paths)]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = ingest(store, "props", open_source(manifest), TorchScriptEmbedder(model, device="cpu"), progress=False)
    assert report.ok_rows == 4
    info = store.get_dataset("props")
    assert info.metadata_fields["img_brightness"] == "float" and info.metadata_fields["img_near_dups"] == "int"
    got = {r["id"]: r for r in store.query("props").to_pylist()}
    assert got["i0"]["meta_img_brightness"] == pytest.approx(15 / 255, abs=1e-6)
    assert got["i2"]["meta_img_brightness"] == pytest.approx(200 / 255, abs=1e-6)
    assert got["i3"]["meta_img_sharpness"] > 1000 > got["i1"]["meta_img_sharpness"]
    assert got["i1"]["meta_img_contrast"] == pytest.approx(0.123)  # the source's own column is kept
    assert got["i0"]["meta_img_width"] == 48 and got["i0"]["meta_img_aspect"] == pytest.approx(1.5)
    assert all(r["meta_img_near_dups"] is not None for r in got.values())
    # a second ingest of the same rows changes nothing (properties are not part of the fingerprint)
    again = ingest(store, "props", open_source(manifest), TorchScriptEmbedder(model, device="cpu"), progress=False)
    assert again.skipped == 4 and again.inserted == again.updated == 0


def test_precomputed_rows_get_properties_and_near_duplicate_counts(tmp_path: Path, store: Store) -> None:
    paths = _images(tmp_path / "img")
    vectors = [[1, 0, 0, 0], [1, 0.001, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]  # i0 and i1 are near-duplicates
    rows = [
        {"id": f"p{n}", "uri": str(p), "split": "val", "embedding": vectors[n]} for n, p in enumerate(paths)
    ]
    manifest = tmp_path / "p.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ingest(store, "pre", open_source(manifest), PrecomputedEmbedder(), progress=False)
    got = {r["id"]: r for r in store.query("pre").to_pylist()}
    assert [got[f"p{n}"]["meta_img_near_dups"] for n in range(4)] == [1, 1, 0, 0]
    assert got["p2"]["meta_img_brightness"] == pytest.approx(200 / 255, abs=1e-6)
    assert set(PROPERTY_FIELDS) <= set(store.get_dataset("pre").metadata_fields)


def test_datasets_without_properties_keep_working(store: Store) -> None:
    from factories import make_synthetic

    from edgeminer.indexer.analysis.metaslices import load_slices
    from edgeminer.indexer.properties import update_near_duplicates

    make_synthetic(store, "old")
    assert update_near_duplicates(store, "old") == 0  # no img_near_dups column: nothing to do
    assert "meta_img_brightness" not in store.schema("old").names
    assert {f["field"] for f in load_slices(store, "old")["features"]} <= {"group", "brightness"}


def test_near_duplicate_counts_exact_and_partitioned_agree() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3000, 32)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    copies = base[:300] + 0.001 * rng.normal(size=(300, 32)).astype(np.float32)  # 300 near-duplicate pairs
    x = np.concatenate([base, copies])
    brute = ((x / np.linalg.norm(x, axis=1, keepdims=True)) @ (x / np.linalg.norm(x, axis=1, keepdims=True)).T)
    expected = (brute >= 1 - 0.02).sum(axis=1) - 1
    exact = near_duplicate_counts(x)
    assert np.array_equal(exact, expected) and exact[:300].min() == 1 and exact[300:3000].max() == 0
    partitioned = near_duplicate_counts(x, exact_max_rows=100)
    assert (partitioned == expected).mean() > 0.99 and (partitioned <= expected).all()
