"""Labels back in: CSV, Label Studio (full and JSON-MIN) and COCO files written the way the tools
write them, matched by id, by path and (detection) by box overlap; outcomes recomputed; unmatched
entries reported; previous labels readable at the reported version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from exportdata import build_classification, build_detection

from edgeminer.indexer.store import Store
from edgeminer.service.export.common import ExportRequest
from edgeminer.service.export.labels import LabelImportError, UnknownLabels, import_labels
from edgeminer.service.export.roundtrip import answer_coco, answer_label_studio
from edgeminer.service.export.runner import plan_export, run_export


def _rows(store: Store, ds: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    cols = ["id", "split", "labeled", "label", "correct", "outcome", "pred_label"]
    return {r["id"]: r for r in store.get_samples(ds, ids, columns=cols).to_pylist()}


def _export(store: Store, tmp: Path, ds: str, target: str, ids: list[str], **kw: Any) -> Path:
    doc, _ = plan_export(store, ds, ExportRequest(target=target, ids=ids, **kw), data_dir=str(tmp / "db"))
    run_export(store, ds, doc["id"])
    return Path(doc["path"])


@pytest.fixture
def cls(store: Store, tmp_path: Path) -> Any:
    return build_classification(store, tmp_path / "media")


def test_csv_by_id_and_path(store: Store, tmp_path: Path, cls: Any) -> None:
    pool = [i for i in cls.ids if not cls.rows[i]["labeled"]]
    a, b, c = pool[:3]
    rel_b = Path(cls.rows[b]["uri"]).relative_to(cls.root).as_posix()
    text = "\n".join(
        [
            "id,uri,label",
            f"{a},,{cls.rows[a]['pred_label']}",  # agrees with the model
            f",{rel_b},zebra",  # by relative path; a class the dataset did not have
            ",pic00.png,cat",  # two images share this file name
            f"{c},,",  # empty label
            "ghost,,cat",
        ]
    )
    before = store.version("cls")
    old = _rows(store, "cls", [a, b])
    # a label outside the classes refuses the whole file (nothing written) unless classes may be added
    with pytest.raises(UnknownLabels, match=r"'zebra' \(line 3\).*Known classes: cat, dog, bird.*add_classes=true"):
        import_labels(store, "cls", text.encode(), format="csv", split="val")
    assert store.version("cls") == before and store.get_dataset("cls").classes == ["cat", "dog", "bird"]
    report = import_labels(store, "cls", text.encode(), format="csv", split="val", add_classes=True)
    assert report.matched == 2 and report.changed == 2 and report.entries == 5
    reasons = {u["source"]: u["reason"] for u in report.unmatched}
    assert reasons == {
        "line 4": "2 images share the file name 'pic00.png'; give ids or full paths",
        "line 5": "empty label",
        "line 6": "no row has id 'ghost'",
    }
    assert report.new_classes == ["zebra"] and store.get_dataset("cls").classes[-1] == "zebra"
    rows = _rows(store, "cls", [a, b])
    assert rows[a]["labeled"] and rows[a]["split"] == "val" and rows[a]["correct"] and rows[a]["outcome"] == "correct"
    assert rows[b]["label"] == "zebra" and rows[b]["correct"] is False and rows[b]["outcome"] == "wrong_class"
    assert report.labeled_after == report.labeled_before + 2
    # the previous labels stay reachable by time travel
    assert report.version_before == before
    then = store.query("cls", where=f"id = '{a}'", columns=["labeled", "label", "split"], version=before).to_pylist()
    assert then == [{"labeled": old[a]["labeled"], "label": old[a]["label"], "split": old[a]["split"]}]


def test_label_studio_export_from_our_tasks(store: Store, tmp_path: Path, cls: Any) -> None:
    pool = [i for i in cls.ids if not cls.rows[i]["labeled"]]
    out = _export(store, tmp_path, "cls", "label_studio", pool)
    tasks = json.loads((out / "tasks.json").read_text())
    truth = {i: "bird" for i in pool[:4]}
    answered = answer_label_studio(tasks, truth)
    # a labeler cancelled the 4th task: that annotation does not count
    answered[3]["annotations"][0]["was_cancelled"] = True
    # the last task was matched by image path only (no edgeminer_id), e.g. tasks made in the tool itself
    answered[-1]["data"].pop("edgeminer_id")
    answered[-1]["annotations"] = answer_label_studio([tasks[0]], {pool[0]: "dog"})[0]["annotations"]
    path = tmp_path / "ls-export.json"
    path.write_text(json.dumps(answered))
    report = import_labels(store, "cls", path, split="train")
    assert report.format == "label_studio" and report.skipped_tasks == 2
    assert report.matched == 4 and report.unmatched_count == 0
    rows = _rows(store, "cls", pool)
    assert [rows[i]["label"] for i in pool[:3]] == ["bird"] * 3 and rows[pool[3]]["labeled"] is False
    assert rows[pool[-1]]["label"] == "dog" and rows[pool[-1]]["split"] == "train"


def test_label_studio_json_min(store: Store, cls: Any) -> None:
    pool = [i for i in cls.ids if not cls.rows[i]["labeled"]]
    data = [
        {"image": "/data/local-files/?d=x.png", "edgeminer_id": pool[0], "label": "cat", "id": 1},
        {"image": "/data/local-files/?d=y.png", "edgeminer_id": pool[1], "id": 2},
    ]
    report = import_labels(store, "cls", json.dumps(data).encode(), format="label_studio")
    assert report.matched == 1 and report.skipped_tasks == 1
    assert _rows(store, "cls", [pool[0]])[pool[0]]["label"] == "cat"


def test_coco_classification_and_conflicts(store: Store, tmp_path: Path, cls: Any) -> None:
    pool = [i for i in cls.ids if not cls.rows[i]["labeled"]]
    out = _export(store, tmp_path, "cls", "coco", pool)
    doc = json.loads((out / "annotations/instances_default.json").read_text())
    answered = answer_coco(doc, {i: "dog" for i in pool})
    first = answered["annotations"][0]
    answered["annotations"].append({**first, "id": 999, "category_id": 1})  # a second, different class
    report = import_labels(store, "cls", json.dumps(answered).encode())
    assert report.format == "coco" and report.conflicts == 1
    assert report.matched == len(pool) - 1
    assert report.unmatched[0]["reason"].startswith("2 different categories")
    assert all(r["label"] == "dog" for i, r in _rows(store, "cls", pool).items() if i != pool[0])


def test_bad_files_say_what_is_wrong(store: Store, tmp_path: Path, cls: Any) -> None:
    with pytest.raises(LabelImportError, match="needs a 'label' column and an 'id' or 'uri' column; it has: id, name"):
        import_labels(store, "cls", b"id,name\nimg-000,cat\n", format="csv")
    with pytest.raises(LabelImportError, match="not valid JSON"):
        import_labels(store, "cls", b"[{oops", format="coco")
    with pytest.raises(LabelImportError, match="does not exist"):
        import_labels(store, "cls", tmp_path / "missing.json")
    with pytest.raises(LabelImportError, match="cannot tell the format"):
        import_labels(store, "cls", b'{"hello": 1}')


def test_detection_boxes_matched_by_overlap(store: Store, tmp_path: Path) -> None:
    det = build_detection(store, tmp_path / "media")
    out = _export(store, tmp_path, "det", "label_studio", det.ids)
    tasks = json.loads((out / "tasks.json").read_text())
    answered = []
    for n, task in enumerate(tasks, start=1):
        result = json.loads(json.dumps(task.get("predictions", [{}])[0].get("result", [])))
        for r in result:
            r["id"] = f"new-{r['id']}"  # the tool made fresh region ids: match by IoU
            r["value"]["x"] += 1.0  # the labeler nudged the box a little
        answered.append({**task, "id": n, "annotations": [{"id": n, "result": result}]})
    photo0 = answered[0]["annotations"][0]["result"]
    photo0[1]["value"]["rectanglelabels"] = ["dog"]  # corrected the wrong class
    photo2 = answered[2]["annotations"][0]["result"]
    removed = photo2.pop(0)["id"].removeprefix("new-")  # a false positive the labeler deleted
    photo2.append({**photo2[0], "id": "drawn", "value": {**photo2[0]["value"], "x": 70.0, "y": 70.0}})
    report = import_labels(store, "det", json.dumps(answered).encode(), split="train")
    assert report.false_positives == 1 and report.unmatched_count == 1
    assert "new objects need an ingest" in report.unmatched[0]["reason"]
    rows = _rows(store, "det", det.ids)
    assert rows["photo-0#1"]["label"] == "dog" and rows["photo-0#1"]["outcome"] == "wrong_class"
    assert rows["photo-0#0"]["outcome"] == "correct"
    assert rows[removed]["label"] is None and rows[removed]["outcome"] == "false_positive"
    assert rows["photo-3#0"]["labeled"] and rows["photo-3#0"]["split"] == "train"
    assert rows["photo-3#0"]["label"] == "bird" and rows["photo-3#0"]["outcome"] == "correct"
    # COCO boxes in pixels work the same way
    coco = {
        "images": [{"id": 1, "file_name": "photo1.png", "width": 80, "height": 60}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 1, 77, 58]}],
    }
    report = import_labels(store, "det", json.dumps(coco).encode())
    assert report.matched == 1 and _rows(store, "det", ["photo-1#0"])["photo-1#0"]["outcome"] == "wrong_class"


def test_detection_csv_by_object_id(store: Store, tmp_path: Path) -> None:
    build_detection(store, tmp_path / "media")
    report = import_labels(store, "det", b"id,label\nphoto-3#0,cat\nphoto-9#0,dog\n", format="csv", split="val")
    assert report.matched == 1 and report.false_positives == 0
    assert report.unmatched == [
        {"source": "line 3", "id": "photo-9#0", "image": None, "label": "dog", "reason": "no row has id 'photo-9#0'"}
    ]
    row = _rows(store, "det", ["photo-3#0"])["photo-3#0"]
    assert (row["label"], row["outcome"], row["split"], row["correct"]) == ("cat", "wrong_class", "val", False)
