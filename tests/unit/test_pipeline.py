"""The ingest pipeline end to end on real files: PNGs decoded by Pillow, a real TorchScript model,
a real LanceDB table on disk; idempotence, resume after an interruption (in-process and a killed
process), every kind of bad input, and the CLI's one-line failures."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from edgeminer.indexer.embedders import PrecomputedEmbedder, TorchScriptEmbedder
from edgeminer.indexer.errors import ValidationFailed
from edgeminer.indexer.pipeline import dataset_stats, errors_by_field, ingest
from edgeminer.indexer.sources import SourceError, open_source
from edgeminer.indexer.store import Store

CLASSES = ["circle", "square", "none"]
ROOT = Path(__file__).resolve().parents[2]


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 12), nn.ReLU())
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.body(x)
        return e, self.head(self.drop(e))


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "model.pt"
    meta = {"classes": CLASSES, "image_size": 16}
    torch.jit.script(_Net()).save(str(path), _extra_files={"edgeminer.json": json.dumps(meta)})
    return path


def _png(path: Path, seed: int, size: int = 24) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(path)


def _manifest(tmp_path: Path, n: int, *, extra_rows: list[dict] | None = None) -> Path:
    img = tmp_path / "img"
    img.mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        _png(img / f"{i:04d}.png", i)
        labeled = i % 3 != 0
        rows.append(
            {
                "id": f"s{i:04d}",
                "uri": f"img/{i:04d}.png",
                "split": "train" if labeled else "unlabeled",
                "label": CLASSES[i % 3] if labeled else "",
                "weather": ["sun", "rain"][i % 2],
            }
        )
    rows += extra_rows or []
    path = tmp_path / "manifest.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "uri", "split", "label", "weather"])
        w.writeheader()
        w.writerows(rows)
    return path


def test_ingest_embeds_scores_and_stores_every_row(tmp_path: Path, store: Store, model_file: Path) -> None:
    manifest = _manifest(tmp_path, 40)
    emb = TorchScriptEmbedder(model_file, mc_passes=4, device="cpu")
    report = ingest(store, "ds", open_source(manifest), emb, batch_size=8, workers=2, progress=False)
    assert (report.total, report.ok_rows, report.error_rows) == (40, 40, 0)
    info = store.get_dataset("ds")
    assert info.dim == 12 and info.classes == CLASSES and info.embedder["kind"] == "torchscript"
    own = {k: v for k, v in info.metadata_fields.items() if not k.startswith("img_")}
    assert own == {"weather": "string"}  # plus the image properties computed at ingest
    assert info.metadata_fields["img_brightness"] == "float" and info.metadata_fields["img_width"] == "int"
    assert str(tmp_path / "img") in info.media_roots
    rows = store.query("ds").to_pylist()
    assert len(rows) == 40
    for r in rows:
        assert r["status"] == "ok" and len(r["embedding"]) == 12
        assert abs(np.linalg.norm(r["embedding"]) - 1) < 1e-5
        assert len(r["probs"]) == 3 and abs(sum(r["probs"]) - 1) < 1e-4
        for col in ("confidence", "least_confidence", "margin", "ratio", "entropy", "mc_variance", "bald"):
            assert r[col] is not None, col
        assert r["pred_label"] in CLASSES and r["pred_label2"] in CLASSES
        assert r["width"] == 24 and r["height"] == 24
        if r["split"] == "unlabeled":
            assert r["labeled"] is False and r["correct"] is None and r["outcome"] is None
        else:
            assert r["correct"] == (r["pred_label"] == r["label"])
            assert r["outcome"] == ("correct" if r["correct"] else "wrong_class")
    stats = dataset_stats(store, "ds")
    assert stats["rows"] == 40 and stats["splits"]["unlabeled"]["rows"] == 14
    runs = store.list_docs("ds", "run")
    assert runs[-1]["status"] == "succeeded" and runs[-1]["version_written"] == store.version("ds")
    groups = {g["value"]: g for g in errors_by_field(store, "ds", "weather")}
    assert sum(g["labeled"] for g in groups.values()) == 26


def test_reingest_changes_nothing_and_a_changed_file_is_reembedded(
    tmp_path: Path, store: Store, model_file: Path
) -> None:
    manifest = _manifest(tmp_path, 20)
    emb = TorchScriptEmbedder(model_file, device="cpu")
    ingest(store, "ds", open_source(manifest), emb, batch_size=8, progress=False)
    version = store.version("ds")
    before = {r["id"]: r["embedding"] for r in store.query("ds", columns=["id", "embedding"]).to_pylist()}
    again = ingest(store, "ds", open_source(manifest), emb, batch_size=8, progress=False)
    assert again.skipped == 20 and again.inserted == 0 and again.updated == 0
    assert store.version("ds") == version
    # a cluster written by analysis survives a re-ingest of a changed row
    import pyarrow as pa

    store.update_columns("ds", pa.table({"id": ["s0005"], "cluster": pa.array([7], pa.int32())}))
    time.sleep(0.01)
    _png(tmp_path / "img" / "0005.png", 999)
    third = ingest(store, "ds", open_source(manifest), emb, batch_size=8, progress=False)
    assert third.updated == 1 and third.skipped == 19
    row = store.get_samples("ds", ["s0005"]).to_pylist()[0]
    assert row["cluster"] == 7
    assert not np.allclose(row["embedding"], before["s0005"])


class _Boom(Exception):
    pass


def test_interrupted_ingest_resumes_without_losing_or_duplicating(
    tmp_path: Path, store: Store, model_file: Path
) -> None:
    manifest = _manifest(tmp_path, 48)
    emb = TorchScriptEmbedder(model_file, device="cpu")
    calls = {"n": 0}
    real = emb.embed_batch

    def flaky(batch: np.ndarray):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the fourth batch
        return real(batch)

    emb.embed_batch = flaky  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        ingest(store, "ds", open_source(manifest), emb, batch_size=8, progress=False)
    committed = store.count("ds")
    assert 0 < committed < 48
    assert store.list_docs("ds", "run")[-1]["status"] == "failed"
    emb.embed_batch = real  # type: ignore[method-assign]
    report = ingest(store, "ds", open_source(manifest), emb, batch_size=8, progress=False)
    assert report.skipped == committed
    assert store.count("ds") == 48
    ids = store.query("ds", columns=["id"])["id"].to_pylist()
    assert len(set(ids)) == 48


def test_killed_cli_ingest_resumes(tmp_path: Path, model_file: Path) -> None:
    """SIGKILL a real `edgeminer ingest` process after its first batches land, then re-run it."""
    manifest = _manifest(tmp_path, 400)
    data = tmp_path / "db"
    cmd = [
        sys.executable, "-m", "edgeminer.service.cli", "--data-dir", str(data), "ingest", str(manifest),
        "--dataset", "ds", "--embedder", "torchscript", "--model-file", str(model_file),
        "--batch-size", "8", "--write-rows", "8", "--quiet",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    store = Store(data)
    deadline = time.time() + 120
    landed = 0
    while time.time() < deadline and proc.poll() is None:
        if store.has_dataset("ds"):
            landed = store.count("ds")
            if landed >= 16:
                break
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert landed >= 16, proc.stderr.read().decode() if proc.stderr else ""
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    store = Store(data)
    assert store.count("ds") == 400
    assert store.count("ds", "status = 'ok'") == 400
    assert "unchanged (skipped)" in done.stdout


def test_bad_inputs_become_error_rows_and_the_rest_lands(tmp_path: Path, store: Store, model_file: Path) -> None:
    img = tmp_path / "img"
    img.mkdir()
    good = []
    for i in range(6):
        _png(img / f"ok{i}.png", i)
        good.append({"id": f"ok{i}", "uri": f"img/ok{i}.png", "split": "train", "label": "circle"})
    _png(img / "trunc.png", 42, size=64)
    data = (img / "trunc.png").read_bytes()
    (img / "trunc.png").write_bytes(data[: len(data) // 2])
    (img / "text.png").write_text("this is not an image")
    bad = [
        {"id": "missing", "uri": "img/nope.png", "split": "train", "label": "circle"},
        {"id": "trunc", "uri": "img/trunc.png", "split": "train", "label": "circle"},
        {"id": "text", "uri": "img/text.png", "split": "train", "label": "circle"},
        {"id": "ok0", "uri": "img/ok1.png", "split": "train", "label": "square"},  # duplicate id
    ]
    path = tmp_path / "m.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "uri", "split", "label"])
        w.writeheader()
        w.writerows(good + bad)
    emb = TorchScriptEmbedder(model_file, device="cpu")
    report = ingest(store, "ds", open_source(path), emb, batch_size=4, progress=False)
    assert report.ok_rows == 6 and report.error_rows == 4
    errors = {r["id"]: r["error"] for r in store.query("ds", where="status = 'error'").to_pylist()}
    assert "not found" in errors["missing"]
    assert "truncated" in errors["trunc"] or "unreadable" in errors["trunc"]
    assert "not an image" in errors["text"]
    dup = [k for k in errors if k.startswith("ok0")]
    assert dup and "duplicate id" in errors[dup[0]]
    first = store.get_samples("ds", ["ok0"]).to_pylist()[0]
    assert first["status"] == "ok" and first["label"] == "circle"  # the first row is not overwritten
    assert dataset_stats(store, "ds")["errors"] == 4
    # re-running does not duplicate the error rows; fixing a file turns its row ok
    _png(img / "nope.png", 5)
    again = ingest(store, "ds", open_source(path), emb, batch_size=4, progress=False)
    assert again.updated == 1 and store.count("ds") == 10
    assert store.get_samples("ds", ["missing"]).to_pylist()[0]["status"] == "ok"


def test_bad_precomputed_vectors_and_probs(tmp_path: Path, store: Store) -> None:
    img = tmp_path / "img"
    img.mkdir()
    rows = []
    for i in range(5):
        _png(img / f"{i}.png", i)
        rows.append(
            {
                "id": f"v{i}",
                "uri": str(img / f"{i}.png"),
                "split": "val",
                "label": "a",
                "probs": [0.7, 0.3],
                "classes": ["a", "b"],
                "embedding": [1.0, float(i), 0.0, 0.5],
            }
        )
    rows[3]["embedding"] = [1.0, 2.0]  # wrong dimension
    rows[4]["probs"] = [0.2, 0.3, 0.5]  # wrong length
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    report = ingest(store, "pre", open_source(path), PrecomputedEmbedder(), progress=False)
    assert report.ok_rows == 3 and report.error_rows == 2
    errors = {r["id"]: r["error"] for r in store.query("pre", where="status = 'error'").to_pylist()}
    assert "4" in errors["v3"] and "expected" in errors["v3"] or "dimension" in errors["v3"]
    assert "3" in errors["v4"] and "2" in errors["v4"]
    ok = store.get_samples("pre", ["v0"]).to_pylist()[0]
    assert ok["pred_label"] == "a" and ok["correct"] is True
    assert ok["confidence"] == pytest.approx(0.7) and ok["margin"] == pytest.approx(1 - 0.4)
    assert store.get_dataset("pre").embedder == {"kind": "precomputed", "dim": 4}


def test_schema_level_problems_are_refused_before_writing(tmp_path: Path, store: Store) -> None:
    path = tmp_path / "m.csv"
    path.write_text("path,label\na.png,cat\n")
    with pytest.raises(SourceError, match="uri"):
        open_source(path)
    assert store.list_datasets() == []


def test_detection_rows_are_cropped_object_patches(tmp_path: Path, store: Store) -> None:
    img = tmp_path / "img"
    img.mkdir()
    _png(img / "a.png", 1, size=64)
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}],
        "categories": [{"id": 1, "name": "cone"}, {"id": 2, "name": "person"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [2, 2, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 2, "bbox": [30, 30, 20, 30], "area": 600, "iscrowd": 0},
        ],
    }
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [3, 2, 20, 20], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [40, 0, 10, 10], "score": 0.6},
    ]
    (tmp_path / "gt.json").write_text(json.dumps(coco))
    (tmp_path / "res.json").write_text(json.dumps(results))
    torch.manual_seed(0)
    model = tmp_path / "m.pt"
    torch.jit.script(_Net()).save(str(model), _extra_files={"edgeminer.json": json.dumps({"image_size": 16})})
    source = open_source(tmp_path / "gt.json", coco_results=tmp_path / "res.json", image_root=img)
    report = ingest(store, "det", source, TorchScriptEmbedder(model, device="cpu"), progress=False)
    assert report.ok_rows == 3
    rows = {r["outcome"]: r for r in store.query("det").to_pylist()}
    assert set(rows) == {"correct", "false_negative", "false_positive"}
    assert rows["correct"]["bbox"] == [2, 2, 20, 20] and rows["correct"]["area"] == 400
    assert rows["false_negative"]["pred_label"] is None and rows["false_negative"]["correct"] is False
    assert rows["false_positive"]["labeled"] is True and rows["false_positive"]["label"] is None
    assert all(r["width"] == 64 and r["parent_id"] for r in rows.values())
    assert store.get_dataset("det").task == "detection"


def test_cli_fails_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-m", "edgeminer.service.cli", "--data-dir", str(tmp_path / "db"), "ingest",
         str(tmp_path / "missing.csv"), "--dataset", "x", "--embedder", "precomputed"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "does not exist" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "edgeminer.service.cli", "--data-dir", str(tmp_path / "db"), "stats", "--dataset",
         "nope"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert r.returncode == 1 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_rows_are_written_in_few_large_writes(tmp_path: Path, store: Store, model_file: Path) -> None:
    """48 rows embedded 4 at a time: one write at the default write size, 12 when every batch writes."""
    manifest = _manifest(tmp_path, 48)
    emb = TorchScriptEmbedder(model_file, device="cpu")
    big = ingest(store, "big", open_source(manifest), emb, batch_size=4, progress=False, build_indexes=False)
    small = ingest(
        store, "small", open_source(manifest), emb, batch_size=4, progress=False, build_indexes=False, write_rows=4
    )
    assert store.count("big") == store.count("small") == 48
    assert big.inserted == small.inserted == 48
    # each write is a table version; the rest of the ingest (near-duplicate counts, run bookkeeping) is the same
    big_writes = big.version_written - big.version_read
    small_writes = small.version_written - small.version_read
    assert small_writes - big_writes == 11
    with pytest.raises(ValidationFailed, match="write_rows"):
        ingest(store, "x", open_source(manifest), emb, progress=False, write_rows=0)
