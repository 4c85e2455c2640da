"""YOLO export (issue 13): a classification dataset comes out in the Ultralytics classification layout
(``train/<class>/``, ``val/<class>/``; no boxes, no ``val: images/train``), read back with Ultralytics'
own dataset check and torchvision's ImageFolder (what Ultralytics trains from); detection keeps its
layout; a uri with a line break cannot corrupt train.txt."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from exportdata import CLASSES, build_classification, build_detection

from edgeminer.indexer.store import Store
from edgeminer.service.export.common import ExportRequest
from edgeminer.service.export.runner import plan_export, run_export
from edgeminer.service.export.yolo import class_dirs


def _export(store: Store, tmp: Path, dataset: str, ids: list[str], **kw: Any) -> tuple[dict[str, Any], Path]:
    doc, _ = plan_export(store, dataset, ExportRequest(target="yolo", ids=ids, **kw), data_dir=str(tmp / "db"))
    try:
        summary = run_export(store, dataset, doc["id"])
    except Exception as exc:  # noqa: BLE001 - the caller checks the failure
        return {"status": "failed", "error": str(exc)}, Path(doc["path"])
    return summary, Path(doc["path"])


# Ultralytics patches PIL.Image.open process-wide when it is imported (it retries failed opens with pi_heif),
# which changes what every later test sees: its checker runs in a child process instead.
_CHECK = """
import json, sys
from ultralytics.data.utils import check_cls_dataset
data = check_cls_dataset(sys.argv[1])
print(json.dumps({"train": str(data["train"]), "val": str(data["val"]), "test": data["test"],
                  "names": sorted(data["names"].values()), "nc": data["nc"]}))
"""


@pytest.fixture
def ultralytics(tmp_path: Path) -> dict[str, str]:
    if importlib.util.find_spec("ultralytics") is None:
        pytest.skip("pip install ultralytics (dev extra) to check the layout")
    env = dict(os.environ, YOLO_CONFIG_DIR=str(tmp_path / "ultralytics-config"), YOLO_OFFLINE="1")
    return env  # no writes to ~/.config, no update checks


def _check_cls_dataset(folder: Path, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _CHECK, str(folder)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_classification_export_is_the_ultralytics_classification_layout(
    store: Store, tmp_path: Path, ultralytics: dict[str, str]
) -> None:
    import torchvision

    built = build_classification(store, tmp_path / "media")
    summary, out = _export(store, tmp_path, "cls", built.ids, media="copy")
    assert summary["status"] == "done", summary
    assert not (out / "data.yaml").exists() and not (out / "labels").exists() and not (out / "images").exists()
    data = _check_cls_dataset(out, ultralytics)
    assert Path(data["train"]) == out / "train" and Path(data["val"]) == out / "val" and data["test"] is None
    assert data["names"] == sorted(CLASSES) and data["nc"] == len(CLASSES)
    # every row sits in the folder of its pre-label (prediction, else label), in its split's folder
    for split in ("train", "val"):
        folder = torchvision.datasets.ImageFolder(str(out / split), allow_empty=True)
        got = {(Path(f).name, folder.classes[t]) for f, t in folder.samples}
        rows = [r for r in built.rows.values() if (r["split"] == "val") == (split == "val")]
        assert len(got) == len(rows)
        assert {lab for _, lab in got} <= set(CLASSES)
        want = sorted(r["pred_label"] or r["label"] for r in rows)
        assert sorted(lab for _, lab in got) == want
    with zipfile.ZipFile(summary["zip"]) as zf:
        names = zf.namelist()
    assert sum(n.startswith(("train/", "val/")) for n in names) == len(built.ids)
    assert not any(n.endswith(".txt") for n in names)


def test_classification_needs_copied_media(store: Store, tmp_path: Path) -> None:
    built = build_classification(store, tmp_path / "media")
    summary, _ = _export(store, tmp_path, "cls", built.ids, media="relative")
    assert summary["status"] == "failed"
    assert "export with media 'copy' (CLI --media copy)" in summary["error"]


def test_class_folder_names_are_safe_and_distinct() -> None:
    dirs = class_dirs(["cat", "a/b", "a_b", "..", "A_B", ".hidden"])
    assert dirs["cat"] == "cat" and dirs["a_b"] == "a_b"
    assert len({d.lower() for d in dirs.values()}) == 6
    for d in dirs.values():
        assert "/" not in d and d not in (".", "..") and not d.startswith(".")


def test_detection_keeps_its_layout_and_a_line_break_in_a_uri_is_an_error_row(store: Store, tmp_path: Path) -> None:
    built = build_detection(store, tmp_path / "media")
    bad = tmp_path / "media" / "photo\n3.png"
    os.replace(tmp_path / "media" / "photo3.png", bad)
    moved = [
        dict(r, uri=str(bad), fingerprint=r["fingerprint"] + "-moved")
        for r in built.rows.values()
        if r["parent_id"] == "photo-3"
    ]
    store.upsert_samples("det", pa.Table.from_pylist(moved))
    summary, out = _export(store, tmp_path, "det", built.ids, media="relative")
    assert summary["status"] == "done" and summary["media_errors"] == len(moved)
    listed = (out / "train.txt").read_text().splitlines()
    assert sorted(listed) == ["photo0.png", "photo1.png", "photo2.png"]  # every line a whole path
    text = (out / "data.yaml").read_text()
    assert "train: train.txt" in text and "nc: 3" in text
    assert sorted(p.name for p in (out / "labels" / "train").iterdir()) == [f"photo{n}.txt" for n in range(3)]
