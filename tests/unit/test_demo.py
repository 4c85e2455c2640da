"""The bundled demo: built from scikit-learn's digits, a real CNN, the real pipeline."""

from __future__ import annotations

from typing import Any as DemoEnv

from edgeminer.indexer.demo import SLICES
from edgeminer.indexer.pipeline import dataset_stats, errors_by_field


def test_demo_has_every_split_and_complete_rows(demo_env: DemoEnv) -> None:
    store = demo_env.store
    stats = dataset_stats(store, "demo")
    assert stats["rows"] > 1500 and stats["errors"] == 0
    assert set(stats["splits"]) == {"train", "val", "unlabeled"}
    assert stats["with_embedding"] == stats["ok"]
    assert all(v == stats["ok"] for v in stats["scores_present"].values())
    assert stats["embedder"]["kind"] == "torchscript" and stats["embedder"]["mc_passes"] > 0
    assert (demo_env.demo_dir / "pool_truth.csv").exists()
    pngs = list((demo_env.demo_dir / "images").glob("*.png"))
    assert len(pngs) == stats["rows"]


def test_demo_slices_are_rare_in_train_and_hold_most_val_errors(demo_env: DemoEnv) -> None:
    store = demo_env.store
    rows = store.query("demo", columns=["split", "meta_slice", "correct"]).to_pylist()
    for split, lo, hi in (("train", 0.0, 0.03), ("val", 0.2, 0.4), ("unlabeled", 0.3, 0.5)):
        part = [r for r in rows if r["split"] == split]
        share = sum(r["meta_slice"] != "none" for r in part) / len(part)
        assert lo <= share <= hi, (split, share)
    val = [r for r in rows if r["split"] == "val"]
    errors = [r for r in val if r["correct"] is False]
    in_slices = sum(r["meta_slice"] != "none" for r in errors)
    assert in_slices / len(errors) >= 0.75
    by_slice = {g["value"]: g for g in errors_by_field(store, "demo", "slice")}
    for name in SLICES:
        assert by_slice[name]["error_rate"] > 0.25, (name, by_slice[name])
    assert by_slice["none"]["error_rate"] < 0.05


def test_demo_is_built_at_a_fixed_thread_count(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """torch's float sums depend on its thread count: a process left at 1 thread by earlier work trained a
    different demo model (the small slice's recall fell from 0.53 to 0.49). build_demo trains and ingests at
    DEMO_TORCH_THREADS whatever the caller set, and gives the caller its setting back."""
    import torch

    from edgeminer.indexer import demo
    from edgeminer.indexer.store import Store

    seen: list[int] = []
    monkeypatch.setattr(demo, "_build_demo", lambda *a, **k: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        demo.build_demo(tmp_path / "demo", Store(tmp_path / "db"), progress=False)
        assert seen == [demo.DEMO_TORCH_THREADS]
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
