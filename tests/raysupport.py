"""Shared by the Ray engine tests (tests/integration/test_ray_engine.py, tests/ray/test_two_node.py): a small
folder of real images with every kind of bad row, the demo's TorchScript model, and the comparisons of two
ingests' rows and run documents."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edgeminer.indexer.documents import RUN
from edgeminer.indexer.store import Store

N_IMAGES = 40
#: columns that differ between any two runs (when the row was written), not between engines
RUN_TIME_COLUMNS = {"ingested_at"}
FLOAT_TOL = 1e-5


def make_images(folder: Path, n: int = N_IMAGES) -> tuple[Path, Path]:
    """A manifest of ``n`` real PNGs of digits-like noise (labels '0'..'9', a third unlabeled), plus a
    truncated PNG, a text file named .png, a missing file and a repeated id; and the demo's TorchScript model
    (untrained, seeded) with MC dropout: the manifest and the model file."""
    import torch

    from edgeminer.indexer.demo import _make_model, export_torchscript

    img = folder / "img"
    img.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        path = img / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, (20 + i % 5, 24, 3), dtype=np.uint8)).save(path)
        label = "" if i % 3 == 0 else str(i % 10)
        rows.append([f"im{i:03d}", f"img/{path.name}", "unlabeled" if not label else "train", label])
    good = (img / "000.png").read_bytes()
    (img / "truncated.png").write_bytes(good[: len(good) // 2])
    (img / "text.png").write_text("not an image")
    rows += [
        ["bad-trunc", "img/truncated.png", "train", "3"],
        ["bad-text", "img/text.png", "train", "4"],
        ["bad-missing", "img/nope.png", "train", "5"],
        ["im005", "img/006.png", "train", "6"],  # a repeated id: an error row under its own id
    ]
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "uri", "split", "label"])
        w.writerows(rows)
    torch.manual_seed(0)
    model = folder / "digits.pt"
    export_torchscript(_make_model(), model)
    return manifest, model


def rows_by_id(store: Store, dataset: str = "ds") -> dict[str, dict[str, Any]]:
    rows = store.query(dataset).to_pylist()
    out = {r["id"]: r for r in rows}
    assert len(out) == len(rows), "an id is stored twice"
    return out


def assert_same_rows(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> None:
    """Same ids, same columns, equal values (floats and vectors within FLOAT_TOL)."""
    assert sorted(a) == sorted(b)
    for rid, ra in a.items():
        rb = b[rid]
        assert set(ra) == set(rb), rid
        for col, va in ra.items():
            if col in RUN_TIME_COLUMNS:
                continue
            vb = rb[col]
            if isinstance(va, float) or (isinstance(va, list) and va and isinstance(va[0], float)):
                np.testing.assert_allclose(np.asarray(va, float), np.asarray(vb, float), atol=FLOAT_TOL, err_msg=col)
            else:
                assert va == vb, (rid, col, va, vb)


def comparable_run_doc(store: Store, run_id: str) -> dict[str, Any]:
    doc = store.get_doc("ds", RUN, run_id)
    # times, ids and the table version written (the Ray engine writes fewer, larger batches) differ
    drop = {"id", "created_at", "started_at", "finished_at", "duration_s", "pid", "host", "version_written"}
    return {k: v for k, v in doc.items() if k not in drop and not k.startswith("_")}


def start_local_ray(temp_dir: str) -> None:
    """``ray.init`` of a local Ray for tests: 2 CPUs, 127.0.0.1, no dashboard, its files in ``temp_dir`` (keep
    it short: Ray's socket paths must stay under 108 characters)."""
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=temp_dir,
        log_to_driver=False,
    )
