"""The demo's label round trip: mine unlabeled rows near the failures, export to Label Studio and
COCO, answer with the demo's true labels, import back; the labeled count and the per-slice labeled
share change. Runs on a copy of the session's demo store (the shared one stays untouched)."""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path
from typing import Any

import pytest

from edgeminer.indexer.store import Store
from edgeminer.service.export.roundtrip import read_truth, run_round_trip, slice_shares
from edgeminer.service.settings import Settings


@pytest.fixture
def demo_copy(demo_env: Any, tmp_path: Path) -> tuple[Store, Path, Path]:
    data_dir = tmp_path / "db"
    shutil.copytree(demo_env.data_dir, data_dir, ignore=shutil.ignore_patterns("_exports", "_cache"))
    return Store(data_dir), data_dir, Path(demo_env.demo_dir)


def test_round_trip_on_the_demo(demo_copy: tuple[Store, Path, Path]) -> None:
    store, data_dir, demo_dir = demo_copy
    truth = read_truth(demo_dir / "pool_truth.csv")
    pool = store.count("demo", "split = 'unlabeled'")
    assert len(truth) == pool > 200
    before = slice_shares(store, "demo")
    rt = run_round_trip(store, "demo", data_dir=str(data_dir), truth=truth, budget=200)

    assert rt.mined == 200 and set(rt.exports) == {"label_studio", "coco"}
    assert rt.exports["label_studio"] != rt.exports["coco"]
    assert sum(r["matched"] for r in rt.imports.values()) == 200
    assert all(r["unmatched_count"] == 0 for r in rt.imports.values())
    assert rt.labeled_after == rt.labeled_before + 200 == store.count("demo", "labeled = true")
    after = slice_shares(store, "demo")
    assert sum(a[0] - b[0] for a, b in zip(after.values(), before.values(), strict=True)) == 200
    # mining near the failures finds the planted slices more often than their share of the pool
    pool_rows = store.query("demo", where="split = 'unlabeled'", columns=["meta_slice"])["meta_slice"].to_pylist()
    pool_in_slices = sum(1 for s in pool_rows if s != "none") / max(1, len(pool_rows))
    mined_in_slices = sum(n for s, n in rt.mined_per_slice.items() if s != "none") / rt.mined
    assert mined_in_slices > pool_in_slices
    # the imported labels are the labelers' answers, outcomes recomputed against the predictions
    exported = store.query(
        "demo", where="array_length(exported) > 0", columns=["id", "label", "pred_label", "correct", "split"]
    ).to_pylist()
    assert len(exported) == 200
    for row in exported:
        assert row["label"] == truth[row["id"]] and row["split"] == "train"
        assert row["correct"] == (row["pred_label"] == row["label"])
    text = rt.describe()
    assert "labeled rows: " in text and "inverted" in text


def test_demo_step_prints_the_figures(demo_copy: tuple[Store, Path, Path], capsys: Any) -> None:
    from edgeminer.service.cli_export import demo_round_trip

    store, data_dir, demo_dir = demo_copy
    labeled = store.count("demo", "labeled = true")
    demo_round_trip(argparse.Namespace(demo_dir=str(demo_dir)), Settings(data_dir=str(data_dir)), store)
    out = capsys.readouterr().out
    assert f"labeled rows: {labeled} -> {labeled + 200}" in out
    assert "slice" in out and "labeled before" in out
    # a demo dir without the truth file says so instead of failing
    empty = data_dir.parent / "nodemo"
    empty.mkdir()
    demo_round_trip(argparse.Namespace(demo_dir=str(empty)), Settings(data_dir=str(data_dir)), store)
    assert "skipped" in capsys.readouterr().out


def test_read_truth_needs_id_and_label(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([["id", "digit"], ["a", "1"]])
    with pytest.raises(ValueError, match="needs 'id' and 'label' columns"):
        read_truth(path)
