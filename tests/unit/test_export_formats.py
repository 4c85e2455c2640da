"""Every export target, read back with the tool's own library: pycocotools (COCO + loadRes),
datumaro (CVAT XML, COCO, YOLO), label-studio-sdk (LabelInterface validates the predictions; its
converter turns answered tasks into COCO), the Labelbox SDK (its NDJSON serialiser writes the same
pre-label lines). SageMaker's manifest has no validating library: its documented fields are checked
one by one. Boxes must survive every encoding to within a pixel."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from exportdata import CLASSES, DETECTION_IMAGES, build_classification, build_detection

from edgeminer.indexer.store import Store
from edgeminer.service.export import common
from edgeminer.service.export.common import ExportRequest
from edgeminer.service.export.runner import plan_export, run_export

DM_WARNINGS = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def _export(store: Store, tmp: Path, dataset: str, target: str, ids: list[str], **kw: Any) -> Path:
    req = ExportRequest(target=target, ids=ids, **kw)
    doc, _ = plan_export(store, dataset, req, data_dir=str(tmp / "db"))
    summary = run_export(store, dataset, doc["id"])
    assert summary["status"] == "done"
    with zipfile.ZipFile(summary["zip"]) as zf:
        assert "export.json" in zf.namelist()
    return Path(doc["path"])


@pytest.fixture
def det(store: Store, tmp_path: Path) -> Any:
    return build_detection(store, tmp_path / "media")


@pytest.fixture
def cls(store: Store, tmp_path: Path) -> Any:
    return build_classification(store, tmp_path / "media")


def _true_boxes(built: Any) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    """image key -> [(pre-label, pixel box)] straight from the rows."""
    out: dict[str, list[tuple[str, tuple[float, ...]]]] = {}
    for row in built.rows.values():
        label = row["pred_label"] or row["label"]
        out.setdefault(row["parent_id"], []).append((label, tuple(row["bbox"])))
    return out


def _close(a: Any, b: Any, tol: float = 1.0) -> bool:
    return all(abs(float(x) - float(y)) <= tol for x, y in zip(a, b, strict=True))


def _match_all(expected: dict[str, list[tuple[str, tuple[float, ...]]]], got: dict[str, list[Any]]) -> None:
    assert set(got) == set(expected)
    for key, boxes in expected.items():
        assert len(got[key]) == len(boxes), key
        for label, box in boxes:
            assert any(g[0] == label and _close(g[1], box) for g in got[key]), (key, label, box, got[key])


# -- geometry ------------------------------------------------------------------------------------


@pytest.mark.parametrize("box", [(3.5, 4.25, 20.75, 10.5), (0, 0, 640, 480), (639.4, 1.0, 0.6, 478.9)])
def test_box_encodings_round_trip(box: tuple[float, float, float, float]) -> None:
    w, h = 640, 480
    assert _close(common.percent_to_xywh(common.xywh_to_percent(box, w, h), w, h), box, 1e-6)
    assert _close(common.yolo_to_xywh(common.xywh_to_yolo(box, w, h), w, h), box, 1e-6)
    assert _close(common.corners_to_xywh(common.xywh_to_corners(box)), box, 1e-9)
    # what the files hold is rounded: YOLO 6 decimals, CVAT 2 decimals -- still well within a pixel
    yolo = [round(v, 6) for v in common.xywh_to_yolo(box, w, h)]
    assert _close(common.yolo_to_xywh(yolo, w, h), box, 0.01)


def test_unique_file_names_by_stem() -> None:
    taken: set[str] = set()
    a = common.unique_file_name("/x/a/pic.png", "k1", taken)
    b = common.unique_file_name("/x/b/pic.png", "k2", taken)
    c = common.unique_file_name("/x/c/PIC.jpg", "k3", taken)
    d = common.unique_file_name("https://h/p/we%20ird$.png?x=1", "k4", taken)
    assert a == "pic.png" and b != a and c.lower() != a and len({a, b, c, d}) == 4
    assert all(ch.isalnum() or ch in "._-" for ch in d)


# -- COCO -----------------------------------------------------------------------------------------


def test_coco_detection_loads_with_pycocotools(store: Store, tmp_path: Path, det: Any) -> None:
    from pycocotools.coco import COCO

    out = _export(store, tmp_path, "det", "coco", det.ids, media="copy")
    gt = COCO(str(out / "annotations/instances_default.json"))
    assert [c["name"] for c in gt.loadCats(gt.getCatIds())] == CLASSES
    assert len(gt.getImgIds()) == len(DETECTION_IMAGES)
    # ground truth: only labeled rows with a label
    labeled = [r for r in det.rows.values() if r["labeled"] and r["label"]]
    assert len(gt.getAnnIds()) == len(labeled)
    for ann in gt.loadAnns(gt.getAnnIds()):
        row = det.rows[ann["edgeminer_id"]]
        assert gt.loadCats(ann["category_id"])[0]["name"] == row["label"]
        assert _close(ann["bbox"], row["bbox"], 0.01)
        img = gt.loadImgs(ann["image_id"])[0]
        assert (img["width"], img["height"]) == (row["width"], row["height"])
        assert (out / "images/default" / img["file_name"]).is_file()
    res = gt.loadRes(str(out / "predictions.json"))
    preds = [r for r in det.rows.values() if r["pred_label"]]
    assert len(res.getAnnIds()) == len(preds)
    for ann in res.loadAnns(res.getAnnIds()):
        row = det.rows[ann["edgeminer_id"]]
        assert res.loadCats(ann["category_id"])[0]["name"] == row["pred_label"]
        assert ann["score"] == pytest.approx(row["confidence"], abs=1e-6)
        assert _close(ann["bbox"], row["bbox"], 0.01)


def test_coco_classification_whole_image_boxes(store: Store, tmp_path: Path, cls: Any) -> None:
    from pycocotools.coco import COCO

    out = _export(store, tmp_path, "cls", "coco", cls.ids)
    gt = COCO(str(out / "annotations/instances_default.json"))
    assert len(gt.getImgIds()) == len(cls.ids)
    for ann in gt.loadAnns(gt.getAnnIds()):
        img = gt.loadImgs(ann["image_id"])[0]
        assert ann["bbox"] == [0.0, 0.0, img["width"], img["height"]]
        assert gt.loadCats(ann["category_id"])[0]["name"] == cls.rows[img["edgeminer_id"]]["label"]
    res = gt.loadRes(str(out / "predictions.json"))
    assert len(res.getAnnIds()) == len(cls.ids)
    # relative media: the file names are unique although two folders share names
    names = [i["file_name"] for i in gt.loadImgs(gt.getImgIds())]
    assert len(set(names)) == len(names)


@DM_WARNINGS
def test_coco_detection_imports_with_datumaro(store: Store, tmp_path: Path, det: Any) -> None:
    import datumaro as dm

    out = _export(store, tmp_path, "det", "coco", det.ids, media="copy")
    ds = dm.Dataset.import_from(str(out), "coco_instances")
    names = [c.name for c in ds.categories()[dm.AnnotationType.label]]
    expected: dict[str, list[tuple[str, tuple[float, ...]]]] = {}
    for row in det.rows.values():
        expected.setdefault(f"photo{row['parent_id'].split('-')[1]}", [])
        if row["labeled"] and row["label"]:
            expected[f"photo{row['parent_id'].split('-')[1]}"].append((row["label"], tuple(row["bbox"])))
    got = {item.id: [(names[a.label], a.get_bbox()) for a in item.annotations] for item in ds}
    _match_all(expected, got)


# -- CVAT ------------------------------------------------------------------------------------------


@DM_WARNINGS
def test_cvat_xml_detection_imports_with_datumaro(store: Store, tmp_path: Path, det: Any) -> None:
    import datumaro as dm

    out = _export(store, tmp_path, "det", "cvat", det.ids, media="copy")
    ds = dm.Dataset.import_from(str(out / "annotations.xml"), "cvat")
    names = [c.name for c in ds.categories()[dm.AnnotationType.label]]
    assert names == CLASSES
    got = {item.id: [(names[a.label], a.get_bbox()) for a in item.annotations] for item in ds}
    expected = {f"photo{k.split('-')[1]}": v for k, v in _true_boxes(det).items()}
    _match_all(expected, got)
    for item in ds:
        assert item.media.size == tuple(reversed(DETECTION_IMAGES[int(item.id[-1])][:2]))
    # the COCO 1.0 copy for CVAT's COCO import holds the same pre-labels
    coco_ds = dm.Dataset.import_from(str(out), "coco_instances")
    got = {item.id: [(names[a.label], a.get_bbox()) for a in item.annotations] for item in coco_ds}
    _match_all(expected, got)


@DM_WARNINGS
def test_cvat_xml_classification_tags(store: Store, tmp_path: Path, cls: Any) -> None:
    import datumaro as dm

    out = _export(store, tmp_path, "cls", "cvat", cls.ids, media="copy")
    ds = dm.Dataset.import_from(str(out / "annotations.xml"), "cvat")
    names = [c.name for c in ds.categories()[dm.AnnotationType.label]]
    assert len(ds) == len(cls.ids)
    coco = json.loads((out / "annotations/instances_default.json").read_text())
    row_of = {Path(i["file_name"]).stem: cls.rows[i["edgeminer_id"]] for i in coco["images"]}
    assert len(row_of) == len(cls.ids)  # clashing file names were made unique
    for item in ds:
        (ann,) = item.annotations
        assert ann.type == dm.AnnotationType.label
        assert names[ann.label] == row_of[item.id]["pred_label"]
        assert item.media.size == (24, row_of[item.id]["width"])


# -- YOLO ------------------------------------------------------------------------------------------


@DM_WARNINGS
def test_yolo_detection_imports_with_datumaro(store: Store, tmp_path: Path, det: Any) -> None:
    import datumaro as dm

    out = _export(store, tmp_path, "det", "yolo", det.ids, media="copy")
    text = (out / "data.yaml").read_text()
    assert "train: images/train" in text and "nc: 3" in text
    ds = dm.Dataset.import_from(str(out), "yolo")
    names = [c.name for c in ds.categories()[dm.AnnotationType.label]]
    assert names == CLASSES
    got = {item.id: [(names[a.label], a.get_bbox()) for a in item.annotations] for item in ds}
    expected = {f"photo{k.split('-')[1]}": v for k, v in _true_boxes(det).items()}
    _match_all(expected, got)
    for line in (out / "labels/train/photo0.txt").read_text().splitlines():
        values = [float(v) for v in line.split()[1:]]
        assert len(values) == 4 and all(0.0 <= v <= 1.0 for v in values)


def test_yolo_relative_media_lists_images(store: Store, tmp_path: Path, det: Any) -> None:
    out = _export(store, tmp_path, "det", "yolo", det.ids, media="relative")
    listed = (out / "train.txt").read_text().split()
    assert sorted(listed) == [f"photo{n}.png" for n in range(len(DETECTION_IMAGES))]
    assert "train: train.txt" in (out / "data.yaml").read_text()
    assert not (out / "images").exists()


# -- Label Studio ------------------------------------------------------------------------------------


def test_label_studio_detection_tasks_validate_and_convert(store: Store, tmp_path: Path, det: Any) -> None:
    from label_studio_sdk.converter import Converter
    from label_studio_sdk.label_interface import LabelInterface

    out = _export(store, tmp_path, "det", "label_studio", det.ids, media="copy")
    config = (out / "labeling_config.xml").read_text()
    li = LabelInterface(config)
    tasks = json.loads((out / "tasks.json").read_text())
    assert len(tasks) == len(DETECTION_IMAGES)
    for task in tasks:
        assert task["data"]["image"].startswith("/data/local-files/?d=images/")
        for pred in task.get("predictions", []):
            assert li.validate_prediction(pred, return_errors=True) == []
            assert pred["model_version"] == "det-1"
    # a labeler accepts every pre-label; Label Studio's own converter turns the export into COCO pixels
    answered = [
        {**t, "id": n, "annotations": [{"id": n, "result": t["predictions"][0]["result"]}]}
        for n, t in enumerate(tasks, start=1)
    ]
    (tmp_path / "ls.json").write_text(json.dumps(answered))
    conv = Converter(config=config, project_dir=str(tmp_path), download_resources=False)
    conv.convert_to_coco(str(tmp_path / "ls.json"), str(tmp_path / "ls_coco"), is_dir=False)
    result = json.loads((tmp_path / "ls_coco/result.json").read_text())
    cat = {c["id"]: c["name"] for c in result["categories"]}
    by_task: dict[str, list[Any]] = {}
    for img in result["images"]:
        key = tasks[img["id"]]["data"]["edgeminer_id"]
        by_task[key] = [(cat[a["category_id"]], a["bbox"]) for a in result["annotations"] if a["image_id"] == img["id"]]
    _match_all(_true_boxes(det), by_task)


def test_label_studio_classification_tasks(store: Store, tmp_path: Path, cls: Any) -> None:
    from label_studio_sdk.label_interface import LabelInterface

    out = _export(store, tmp_path, "cls", "label_studio", cls.ids)
    li = LabelInterface((out / "labeling_config.xml").read_text())
    tasks = json.loads((out / "tasks.json").read_text())
    assert [t["data"]["edgeminer_id"] for t in tasks] == cls.ids
    for task in tasks:
        row = cls.rows[task["data"]["edgeminer_id"]]
        (pred,) = task["predictions"]
        assert li.validate_prediction(pred, return_errors=True) == []
        assert pred["result"][0]["value"]["choices"] == [row["pred_label"]]
        assert pred["score"] == pytest.approx(row["confidence"], abs=1e-6)
        rel = Path(row["uri"]).relative_to(cls.root).as_posix()
        assert task["data"]["image"] == f"/data/local-files/?d={rel}"
        assert task["data"]["meta_slice"] == row["meta_slice"]
    # a prediction with a class the config does not have is rejected by the same validator
    bad = json.loads(json.dumps(tasks[0]["predictions"][0]))
    bad["result"][0]["value"]["choices"] = ["zebra"]
    assert li.validate_prediction(bad, return_errors=True)


# -- Labelbox (the SDK serialises the same annotations: lines must agree) ---------------------------


def _labelbox_sdk_lines(lines: list[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    """The NDJSON the Labelbox SDK itself writes for the annotations our lines describe."""
    lb_types = pytest.importorskip("labelbox.types")
    from labelbox.data.serialization import NDJsonConverter

    labels = []
    for line in lines:
        if task == "detection":
            b = line["bbox"]
            ann: Any = lb_types.ObjectAnnotation(
                name=line["name"],
                confidence=line.get("confidence"),
                value=lb_types.Rectangle(
                    start=lb_types.Point(x=b["left"], y=b["top"]),
                    end=lb_types.Point(x=b["left"] + b["width"], y=b["top"] + b["height"]),
                ),
            )
        else:
            answer = lb_types.ClassificationAnswer(name=line["answer"]["name"], confidence=line["answer"]["confidence"])
            ann = lb_types.ClassificationAnnotation(name=line["name"], value=lb_types.Radio(answer=answer))
        labels.append(lb_types.Label(data={"global_key": line["dataRow"]["globalKey"]}, annotations=[ann]))
    return [dict(x) for x in NDJsonConverter.serialize(labels)]


def _same_lines(sdk: list[dict[str, Any]], ours: list[dict[str, Any]]) -> None:
    """Equal but for the random uuids (and float noise of the SDK's corner -> size arithmetic)."""
    assert len(sdk) == len(ours)
    for a, b in zip(sdk, ours, strict=True):
        assert set(a) - {"uuid"} == set(b) - {"uuid"}
        for key in set(a) - {"uuid", "bbox"}:
            assert a[key] == b[key], key
        if "bbox" in a:
            assert a["bbox"].keys() == b["bbox"].keys()
            assert all(a["bbox"][k] == pytest.approx(b["bbox"][k], abs=1e-6) for k in a["bbox"])


def test_labelbox_data_rows_and_prelabels(store: Store, tmp_path: Path, det: Any) -> None:
    out = _export(store, tmp_path, "det", "labelbox", det.ids, media="url", media_base_url="https://cdn.example/img")
    rows = json.loads((out / "data_rows.json").read_text())
    assert {r["global_key"] for r in rows} == {f"det/photo-{n}" for n in range(len(DETECTION_IMAGES))}
    for r in rows:
        assert r["media_type"] == "IMAGE"
        assert r["row_data"].startswith("https://cdn.example/img/photo")
    lines = [json.loads(line) for line in (out / "prelabels.ndjson").read_text().splitlines()]
    assert len(lines) == len(det.rows)
    assert len({line["uuid"] for line in lines}) == len(lines)
    got: dict[str, list[Any]] = {}
    for line in lines:
        assert set(line["bbox"]) == {"top", "left", "height", "width"}
        b = line["bbox"]
        got.setdefault(line["dataRow"]["globalKey"].split("/", 1)[1], []).append(
            (line["name"], (b["left"], b["top"], b["width"], b["height"]))
        )
    _match_all(_true_boxes(det), got)
    onto = json.loads((out / "ontology.json").read_text())
    assert [t["name"] for t in onto["tools"]] == CLASSES and {t["tool"] for t in onto["tools"]} == {"rectangle"}
    sdk = _labelbox_sdk_lines(lines, "detection")
    _same_lines(sdk, lines)


def test_labelbox_classification_answers(store: Store, tmp_path: Path, cls: Any) -> None:
    out = _export(store, tmp_path, "cls", "labelbox", cls.ids)
    lines = [json.loads(line) for line in (out / "prelabels.ndjson").read_text().splitlines()]
    for line in lines:
        assert line["name"] == "label"
        assert line["answer"]["name"] == cls.rows[line["dataRow"]["globalKey"].split("/", 1)[1]]["pred_label"]
    onto = json.loads((out / "ontology.json").read_text())
    assert [o["value"] for o in onto["classifications"][0]["options"]] == CLASSES
    sdk = _labelbox_sdk_lines(lines, "classification")
    _same_lines(sdk, lines)


# -- SageMaker (no library for the manifest here: documented fields, one by one) ---------------------


def test_sagemaker_manifest(store: Store, tmp_path: Path, det: Any, cls: Any) -> None:
    out = _export(store, tmp_path, "det", "sagemaker", det.ids, media="url", media_base_url="s3://bucket/pre")
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == len(DETECTION_IMAGES)
    got: dict[str, list[Any]] = {}
    for line in lines:
        assert line["source-ref"].startswith("s3://bucket/pre/photo")
        meta = line["prelabel-metadata"]
        assert meta["type"] == "groundtruth/object-detection" and meta["human-annotated"] == "no"
        assert len(meta["objects"]) == len(line["prelabel"]["annotations"])
        (size,) = line["prelabel"]["image_size"]
        n = int(line["edgeminer-id"].split("-")[1])
        assert (size["width"], size["height"]) == DETECTION_IMAGES[n][:2]
        got[line["edgeminer-id"]] = [
            (meta["class-map"][str(a["class_id"])], (a["left"], a["top"], a["width"], a["height"]))
            for a in line["prelabel"]["annotations"]
        ]
    _match_all(_true_boxes(det), got)
    out = _export(store, tmp_path, "cls", "sagemaker", cls.ids, media="url", media_base_url="s3://b/p")
    for line in (json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()):
        row = cls.rows[line["edgeminer-id"]]
        assert CLASSES[line["prelabel"]] == row["pred_label"] == line["prelabel-metadata"]["class-name"]
        assert line["prelabel-metadata"]["type"] == "groundtruth/image-classification"


# -- CSV ------------------------------------------------------------------------------------------


def test_csv_one_row_per_sample(store: Store, tmp_path: Path, det: Any) -> None:
    out = _export(store, tmp_path, "det", "csv", det.ids)
    with open(out / "samples.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == det.ids
    for r in rows:
        src = det.rows[r["id"]]
        assert r["label"] == (src["label"] or "") and r["pred_label"] == (src["pred_label"] or "")
        assert _close([float(r[k]) for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")], src["bbox"], 0.001)
        assert r["image_key"] == src["parent_id"]
        assert r["outcome"] == (src["outcome"] or "")
