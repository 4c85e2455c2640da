"""Sources: each format with real files in tmp_path, row-level and schema-level errors, id stability."""

from __future__ import annotations

import csv
import datetime as dt
import json
import types
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from edgeminer.indexer.sources import (
    CocoSource,
    FolderSource,
    ManifestSource,
    SourceError,
    SourceRecord,
    iou_xywh,
    make_id,
    open_source,
)


def png(path: Path, size: tuple[int, int] = (16, 12), value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value // 2, 255 - value)).save(path)
    return path


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def by_id(source: Any) -> dict[str, SourceRecord]:
    return {r.id: r for r in source}


# ----------------------------------------------------------------------------------------------
# manifests
# ----------------------------------------------------------------------------------------------


def test_csv_manifest_with_probs_metadata_and_relative_uris(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        png(tmp_path / "imgs" / f"{name}.png")
    m = write_csv(
        tmp_path / "m.csv",
        ["id", "uri", "split", "label", "probs", "classes", "camera", "hour", "lux", "night", "taken_at"],
        [
            [
                "a",
                "imgs/a.png",
                "val",
                "cat",
                "[0.9, 0.1]",
                '["cat", "dog"]',
                "cam1",
                "7",
                "0.5",
                "true",
                "2024-05-01T10:00:00Z",
            ],
            [
                "b",
                "imgs/b.png",
                "",
                "dog",
                "[0.3, 0.7]",
                '["cat", "dog"]',
                "cam2",
                "23",
                "2",
                "FALSE",
                "2024-05-02 11:30:00",
            ],
            ["c", str(tmp_path / "imgs" / "c.png"), "", "", "[0.5, 0.5]", '["cat", "dog"]', "", "", "", "", ""],
        ],
    )
    src = open_source(m)
    assert isinstance(src, ManifestSource)
    assert len(src) == 3
    assert src.classes == ["cat", "dog"] and src.has_probs and src.task == "classification"
    assert src.metadata_fields == {
        "camera": "string",
        "hour": "int",
        "lux": "float",
        "night": "bool",
        "taken_at": "timestamp",
    }
    assert src.roots == [str(tmp_path / "imgs")]
    recs = by_id(src)
    a, b, c = recs["a"], recs["b"], recs["c"]
    assert a.uri == str(tmp_path / "imgs" / "a.png") and Path(a.uri).is_file()
    assert c.uri == str(tmp_path / "imgs" / "c.png")
    assert (a.split, b.split, c.split) == ("val", "train", "unlabeled")
    assert (a.label, c.label, a.labeled, c.labeled) == ("cat", None, True, False)
    assert a.probs == [0.9, 0.1] and a.error is None and b.error is None and c.error is None
    assert a.metadata == {
        "camera": "cam1",
        "hour": 7,
        "lux": 0.5,
        "night": True,
        "taken_at": dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC),
    }
    assert b.metadata["night"] is False and b.metadata["lux"] == 2.0
    assert b.metadata["taken_at"] == dt.datetime(2024, 5, 2, 11, 30, tzinfo=dt.UTC)
    assert c.metadata == {"camera": None, "hour": None, "lux": None, "night": None, "taken_at": None}


def test_jsonl_manifest_pred_label_and_score_and_split_argument(tmp_path: Path) -> None:
    png(tmp_path / "x.png")
    m = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"uri": "x.png", "label": 3, "pred_label": 5, "score": 0.8, "weather": "rain", "tags": ["a"]},
            {"uri": "x2.png", "pred_label": "3", "score": 0.4, "weather": None},
        ],
    )
    src = open_source(m, split="holdout")
    assert src.classes == ["3", "5"]  # no probs, no class names: sorted labels and predictions
    assert src.metadata_fields == {"weather": "string", "tags": "string"}
    one, two = list(src)
    assert (one.label, one.pred_label, one.score, one.split) == ("3", "5", 0.8, "holdout")
    assert two.split == "holdout" and two.label is None
    assert one.metadata == {"weather": "rain", "tags": '["a"]'}
    assert one.id == make_id(str(tmp_path / "x.png")) and one.error is None


def test_parquet_manifest_streams_with_lists_and_embeddings(tmp_path: Path) -> None:
    n = 20_000  # several Parquet batches
    table = pa.table(
        {
            "uri": [f"img/{i}.png" for i in range(n)],
            "label": ["a" if i % 2 else "b" for i in range(n)],
            "probs": [[0.25, 0.75] for _ in range(n)],
            "embedding": [[float(i), 1.0, 0.0] for i in range(n)],
            "size": list(range(n)),
        }
    )
    path = tmp_path / "m.parquet"
    pq.write_table(table, path, row_group_size=4096)
    src = open_source(path, classes=["a", "b"])
    assert len(src) == n and src.dim == 3 and src.metadata_fields == {"size": "int"}
    it = iter(src)
    assert isinstance(it, types.GeneratorType)  # records are produced lazily, not built up front
    first = next(it)
    assert first.embedding == [0.0, 1.0, 0.0] and first.probs == [0.25, 0.75] and first.metadata == {"size": 0}
    count = 1 + sum(1 for r in it if r.error is None)
    assert count == n


def test_vectors_npy_aligned_with_rows(tmp_path: Path) -> None:
    m = write_csv(tmp_path / "m.csv", ["uri"], [["a.png"], ["b.png"]])
    vec = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.save(tmp_path / "v.npy", vec)
    src = open_source(m, vectors=tmp_path / "v.npy")
    assert src.dim == 4
    assert [r.embedding for r in src] == [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]]


def test_vector_column_option(tmp_path: Path) -> None:
    m = write_jsonl(tmp_path / "m.jsonl", [{"uri": "a.png", "clip": [1, 2]}, {"uri": "b.png", "clip": [1, 2, 3]}])
    src = open_source(m, vector_column="clip")
    assert src.dim == 2 and src.metadata_fields == {}
    a, b = list(src)
    assert a.embedding == [1.0, 2.0] and a.error is None
    assert b.embedding is None and b.error == "row 2: clip has 3 values, expected 2"


def test_image_root_resolves_relative_uris(tmp_path: Path) -> None:
    png(tmp_path / "elsewhere" / "p.png")
    m = write_csv(tmp_path / "m.csv", ["uri"], [["p.png"]])
    (rec,) = list(open_source(m, image_root=tmp_path / "elsewhere"))
    assert rec.uri == str(tmp_path / "elsewhere" / "p.png")
    (url,) = list(open_source(write_csv(tmp_path / "u.csv", ["uri"], [["https://example.com/x.jpg"]])))
    assert url.uri == "https://example.com/x.jpg"


def test_row_level_errors_and_the_rest_lands(tmp_path: Path) -> None:
    m = write_csv(
        tmp_path / "m.csv",
        ["id", "uri", "label", "pred_label", "probs", "score"],
        [
            ["ok", "a.png", "cat", "", "[0.6, 0.4]", ""],
            ["short", "b.png", "cat", "", "[1.0]", ""],
            ["text", "c.png", "cat", "", '[0.5, "x"]', ""],
            ["notjson", "d.png", "cat", "", "[0.5, 0.5", ""],
            ["badlabel", "e.png", "cow", "", "[0.5, 0.5]", ""],
            ["badpred", "f.png", "cat", "horse", "", ""],
            ["ok", "g.png", "dog", "", "[0.2, 0.8]", ""],
            ["noscore", "h.png", "dog", "dog", "", "high"],
            ["nouri", "", "dog", "", "", ""],
            ["neg", "i.png", "dog", "", "[-0.5, 1.5]", ""],
        ],
    )
    recs = list(open_source(m, classes=["cat", "dog"]))
    assert len(recs) == 10
    err = {r.id: r.error for r in recs}
    assert err["ok"] is None
    assert err["short"] == "row 2: probs has 1 values, expected 2 (one per class)"
    assert err["text"] == "row 3: probs holds a non-numeric value 'x'"
    assert err["notjson"] is not None and err["notjson"].startswith("row 4: probs is not a JSON list of numbers")
    assert err["badlabel"] == "row 5: label 'cow' is not one of the 2 classes"
    assert err["badpred"] == "row 6: pred_label 'horse' is not one of the 2 classes"
    assert err["ok#dup7"] == "row 7: duplicate id, first at row 1"
    assert err["noscore"] == "row 8: score 'high' is not a number"
    assert err["nouri"] == "row 9: 'uri' is empty; every row needs the image's path or URL"
    assert err["neg"] == "row 10: probs must be non-negative with a positive sum"
    dup = next(r for r in recs if r.id == "ok#dup7")
    assert dup.uri.endswith("g.png") and dup.label == "dog"  # what could be read is kept
    assert all(r.probs is None for r in recs if r.error and "probs" in r.error)


def test_duplicate_derived_ids_from_the_same_uri(tmp_path: Path) -> None:
    m = write_csv(tmp_path / "m.csv", ["uri"], [["a.png"], ["b.png"], ["a.png"]])
    recs = list(open_source(m))
    assert recs[2].id == recs[0].id + "#dup3"
    assert recs[2].error == "row 3: duplicate id, first at row 1"


def test_jsonl_bad_lines_are_error_rows(tmp_path: Path) -> None:
    path = tmp_path / "m.ndjson"
    path.write_text('{"uri": "a.png"}\n\n{"uri": "b.png"\n[1, 2]\n{"uri": "c.png"}\n')
    recs = list(open_source(path))
    assert [r.error is None for r in recs] == [True, False, False, True]
    assert recs[1].error is not None and recs[1].error.startswith("row 2 is not valid JSON")
    assert recs[2].error == "row 3 is a JSON list, expected an object"
    assert recs[1].id != recs[2].id  # error rows keep distinct, stable ids


def test_csv_row_with_wrong_cell_count(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("uri,camera\na.png,c1\nb.png,c2,extra\n")
    recs = list(open_source(path))
    assert recs[0].error is None
    assert recs[1].error == "row 2 has 3 cells, the header has 2 columns"


def test_classes_column_mismatch_is_a_row_error(tmp_path: Path) -> None:
    m = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"uri": "a.png", "probs": [0.5, 0.5], "classes": ["x", "y"]},
            {"uri": "b.png", "probs": [0.5, 0.5], "classes": ["y", "x"]},
        ],
    )
    src = open_source(m)
    assert src.classes == ["x", "y"]
    a, b = list(src)
    assert a.error is None and b.error is not None and "differ" in b.error and b.probs is None


@pytest.mark.parametrize(
    ("header", "rows", "kwargs", "match"),
    [
        (["path", "label"], [["a.png", "x"]], {}, r"m\.csv: no 'uri' column \(found: path, label\)"),
        (["uri", "camera id"], [["a.png", "x"]], {}, r"column 'camera id' would become metadata.*rename"),
        (["uri", "1st"], [["a.png", "x"]], {}, r"column '1st' would become metadata"),
        (["uri", "probs"], [["a.png", "[0.5, 0.5]"]], {}, r"'probs' column needs class names"),
        (["uri", "uri"], [["a.png", "b.png"]], {}, r"column 'uri' appears twice"),
        (["uri"], [["a.png"]], {"vector_column": "emb"}, r"vector column 'emb' not found"),
        (["uri"], [["a.png"]], {"coco_results": "r.json"}, r"coco_results does not apply to a manifest"),
        (["uri"], [["a.png"]], {"kind": "xml"}, r"unknown source kind 'xml'; valid kinds: manifest, folders"),
    ],
)
def test_manifest_schema_errors(
    tmp_path: Path, header: list[str], rows: list[list[str]], kwargs: dict[str, Any], match: str
) -> None:
    m = write_csv(tmp_path / "m.csv", header, rows)
    with pytest.raises(SourceError, match=match):
        open_source(m, **kwargs)


def test_vectors_count_mismatch_is_a_schema_error(tmp_path: Path) -> None:
    m = write_csv(tmp_path / "m.csv", ["uri"], [["a.png"], ["b.png"], ["c.png"]])
    np.save(tmp_path / "v.npy", np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(SourceError, match=r"v\.npy: 2 vectors for 3 manifest rows in m\.csv"):
        open_source(m, vectors=tmp_path / "v.npy")
    np.save(tmp_path / "flat.npy", np.zeros(3, dtype=np.float32))
    with pytest.raises(SourceError, match="2-D numeric array"):
        open_source(m, vectors=tmp_path / "flat.npy")


def test_unknown_paths_and_extensions(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        open_source(tmp_path / "nope.csv")
    (tmp_path / "m.txt").write_text("uri\na.png\n")
    with pytest.raises(SourceError, match="cannot tell the source kind"):
        open_source(tmp_path / "m.txt")
    (tmp_path / "list.json").write_text('[{"uri": "a.png"}]')
    with pytest.raises(SourceError, match="use .jsonl"):
        open_source(tmp_path / "list.json")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(SourceError, match="empty"):
        open_source(tmp_path / "empty.csv")
    (tmp_path / "latin.csv").write_bytes(b"uri,place\na.png,M\xfcnchen\n")
    with pytest.raises(SourceError, match="not UTF-8"):
        open_source(tmp_path / "latin.csv")


def test_roots_collapse_nested_and_many_folders(tmp_path: Path) -> None:
    rows = [[f"shard{i}/x/{i}.png"] for i in range(40)] + [["shard0/x/deeper/y.png"], ["/elsewhere/z.png"]]
    src = open_source(write_csv(tmp_path / "m.csv", ["uri"], rows))
    # 40 shard folders exceed the limit: they collapse to the manifest's folder; /elsewhere stays apart
    assert src.roots == ["/elsewhere", str(tmp_path)]
    few = open_source(write_csv(tmp_path / "f.csv", ["uri"], [["a/1.png"], ["a/b/2.png"], ["c/3.png"]]))
    assert few.roots == [str(tmp_path / "a"), str(tmp_path / "c")]
    top = open_source(write_csv(tmp_path / "t.csv", ["uri"], [[f"/d{i}/1.png"] for i in range(40)]))
    assert len(top.roots) == 40  # never widened to "/"


def test_ids_stable_across_runs_and_paths(tmp_path: Path) -> None:
    m = write_csv(tmp_path / "m.csv", ["uri"], [["a.png"], ["sub/b.png"]])
    first = [r.id for r in open_source(m)]
    again = [r.id for r in open_source(str(m))]
    assert first == again and len(set(first)) == 2
    assert first[0] == make_id(str(tmp_path / "a.png"))
    assert make_id("/x/a.png") == make_id("/x/a.png") and len(make_id("/x/a.png")) == 16
    assert make_id("/x/a.png", "gt0") == make_id("/x/a.png") + ":gt0"
    assert make_id("/x/a.png") != make_id("/x/b.png")


# ----------------------------------------------------------------------------------------------
# class folders
# ----------------------------------------------------------------------------------------------


def test_class_folders_with_unlabeled_pool(tmp_path: Path) -> None:
    root = tmp_path / "data"
    png(root / "dog" / "1.png")
    png(root / "dog" / "nested" / "2.jpg")
    png(root / "cat" / "3.png")
    (root / "cat" / "notes.txt").write_text("not an image")
    png(root / "cat" / ".hidden.png")
    png(tmp_path / "pool" / "day1" / "u1.png")
    png(tmp_path / "pool" / "u2.webp")
    src = open_source(root, unlabeled=tmp_path / "pool")
    assert isinstance(src, FolderSource)
    assert src.classes == ["cat", "dog"] and len(src) == 5 and not src.has_probs
    assert src.roots == [str(root), str(tmp_path / "pool")]
    recs = list(src)
    got = {(Path(r.uri).name, r.label, r.split) for r in recs}
    assert got == {
        ("3.png", "cat", "train"),
        ("1.png", "dog", "train"),
        ("2.jpg", "dog", "train"),
        ("u1.png", None, "unlabeled"),
        ("u2.webp", None, "unlabeled"),
    }
    assert all(r.id == make_id(r.uri) and r.error is None for r in recs)
    assert [r.id for r in open_source(root, unlabeled=tmp_path / "pool")] == [r.id for r in recs]
    assert {r.split for r in open_source(root, split="val") if r.label} == {"val"}


def test_unlabeled_folder_inside_root_is_not_a_class(tmp_path: Path) -> None:
    root = tmp_path / "data"
    png(root / "a" / "1.png")
    png(root / "pool" / "2.png")
    src = open_source(root, unlabeled=root / "pool")
    assert src.classes == ["a"]
    assert sorted((Path(r.uri).name, r.split) for r in src) == [("1.png", "train"), ("2.png", "unlabeled")]


def test_flat_folder_is_an_unlabeled_pool_and_empty_folder_fails(tmp_path: Path) -> None:
    png(tmp_path / "flat" / "1.png")
    src = open_source(tmp_path / "flat")
    assert src.classes == [] and [r.split for r in src] == ["unlabeled"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no class sub-folders and no images"):
        open_source(tmp_path / "empty")
    with pytest.raises(SourceError, match="unlabeled folder .* does not exist"):
        open_source(tmp_path / "flat", unlabeled=tmp_path / "missing")


# ----------------------------------------------------------------------------------------------
# COCO
# ----------------------------------------------------------------------------------------------


def coco_files(tmp_path: Path) -> tuple[Path, Path]:
    png(tmp_path / "images" / "one.png", size=(100, 80))
    png(tmp_path / "images" / "two.png", size=(60, 60))
    gt = {
        "images": [
            {"id": 1, "file_name": "one.png", "width": 100, "height": 80},
            {"id": 2, "file_name": "two.png", "width": 60, "height": 60},
        ],
        "categories": [{"id": 2, "name": "dog"}, {"id": 1, "name": "cat"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "iscrowd": 0},  # matched, cat
            {"id": 11, "image_id": 1, "category_id": 2, "bbox": [50, 40, 30, 30], "iscrowd": 0},  # wrong class
            {"id": 12, "image_id": 2, "category_id": 1, "bbox": [5, 5, 10, 10], "iscrowd": 1},  # missed
        ],
    }
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [1, 1, 20, 20], "score": 0.9},  # -> ann 10 (IoU 0.82)
        {"image_id": 1, "category_id": 1, "bbox": [52, 42, 30, 30], "score": 0.8},  # -> ann 11, cat vs dog
        {"image_id": 1, "category_id": 2, "bbox": [0, 0, 20, 20], "score": 0.7},  # ann 10 taken -> FP
        {"image_id": 2, "category_id": 2, "bbox": [40, 40, 15, 15], "score": 0.6},  # no GT there -> FP
        {"image_id": 2, "category_id": 1, "bbox": [5, 5, 10, 10], "score": 0.01},  # below threshold
    ]
    gt_path = tmp_path / "ann" / "instances.json"
    gt_path.parent.mkdir()
    gt_path.write_text(json.dumps(gt))
    res_path = tmp_path / "ann" / "results.json"
    res_path.write_text(json.dumps(results))
    return gt_path, res_path


def test_coco_four_outcomes(tmp_path: Path) -> None:
    gt_path, res_path = coco_files(tmp_path)
    src = open_source(gt_path, coco_results=res_path, image_root=tmp_path / "images")
    assert isinstance(src, CocoSource)
    assert src.task == "detection" and src.classes == ["cat", "dog"]  # category id order
    assert src.metadata_fields == {"coco_image_id": "int", "iscrowd": "bool"}
    assert src.roots == [str(tmp_path / "images")]
    recs = list(src)
    assert len(src) == len(recs) == 5
    one, two = str(tmp_path / "images" / "one.png"), str(tmp_path / "images" / "two.png")
    r = by_id(recs)
    c = r[make_id(one, "gt0")]
    assert (c.label, c.pred_label, c.score, c.outcome, c.bbox) == ("cat", "cat", 0.9, "correct", [0, 0, 20, 20])
    assert (c.uri, c.parent_id, c.width, c.height) == (one, make_id(one), 100, 80)
    assert c.metadata == {"coco_image_id": 1, "iscrowd": False} and c.labeled
    w = r[make_id(one, "gt1")]
    assert (w.label, w.pred_label, w.outcome, w.bbox) == ("dog", "cat", "wrong_class", [50, 40, 30, 30])
    fp = r[make_id(one, "pred2")]
    assert (fp.label, fp.pred_label, fp.score, fp.outcome) == (None, "dog", 0.7, "false_positive")
    assert fp.bbox == [0, 0, 20, 20] and fp.labeled and fp.metadata["iscrowd"] is None
    fp2 = r[make_id(two, "pred0")]
    assert (fp2.outcome, fp2.parent_id, fp2.width) == ("false_positive", make_id(two), 60)
    fn = r[make_id(two, "gt0")]
    assert (fn.label, fn.pred_label, fn.score, fn.outcome) == ("cat", None, None, "false_negative")
    assert fn.metadata == {"coco_image_id": 2, "iscrowd": True}
    assert all(x.error is None for x in recs)
    assert [x.id for x in open_source(gt_path, coco_results=res_path, image_root=tmp_path / "images")] == [
        x.id for x in recs
    ]


def test_coco_threshold_and_iou_options(tmp_path: Path) -> None:
    gt_path, res_path = coco_files(tmp_path)
    root = tmp_path / "images"
    low = list(open_source(gt_path, coco_results=res_path, image_root=root, score_threshold=0.0))
    assert {x.outcome for x in low if x.parent_id == make_id(str(root / "two.png"))} == {
        "correct",
        "false_positive",
    }
    strict = list(open_source(gt_path, coco_results=res_path, image_root=root, iou=0.9))
    outcomes = sorted(x.outcome or "" for x in strict)
    # IoU 0.82 and 0.77 no longer match; the dog box exactly on the cat (IoU 1) now takes that GT
    assert outcomes == ["false_negative"] * 2 + ["false_positive"] * 3 + ["wrong_class"]


def test_coco_without_results_and_default_image_root(tmp_path: Path) -> None:
    gt_path, _ = coco_files(tmp_path)
    with pytest.raises(SourceError, match="none of the first images exists.*image_root"):
        open_source(gt_path)
    # images next to the annotation file are found without image_root
    gt = json.loads(gt_path.read_text())
    for img in gt["images"]:
        img["file_name"] = "../images/" + img["file_name"]
    gt_path.write_text(json.dumps(gt))
    recs = list(open_source(gt_path))
    assert len(recs) == 3
    assert all(x.outcome is None and x.pred_label is None and x.label for x in recs)
    assert recs[0].uri == str(tmp_path / "images" / "one.png")


def test_coco_bad_entries_become_error_rows(tmp_path: Path) -> None:
    gt_path, res_path = coco_files(tmp_path)
    gt = json.loads(gt_path.read_text())
    gt["annotations"] += [
        {"id": 13, "image_id": 99, "category_id": 1, "bbox": [0, 0, 5, 5]},
        {"id": 14, "image_id": 2, "category_id": 7, "bbox": [0, 0, 5, 5]},
        {"id": 15, "image_id": 2, "category_id": 1, "bbox": [0, 0, 0, 5]},
    ]
    gt_path.write_text(json.dumps(gt))
    res = json.loads(res_path.read_text()) + [{"image_id": 1, "category_id": 1, "bbox": "x", "score": 0.5}]
    res_path.write_text(json.dumps(res))
    recs = list(open_source(gt_path, coco_results=res_path, image_root=tmp_path / "images"))
    errors = sorted(x.error for x in recs if x.error)
    assert errors == [
        "instances.json: annotations[3]: unknown image_id 99",
        "instances.json: annotations[4]: unknown category_id 7",
        "instances.json: annotations[5]: bbox [0, 0, 0, 5] is not [x, y, w, h] with w, h > 0",
        "results[5]: bbox 'x' is not [x, y, w, h] with w, h > 0",
    ]
    assert len({x.id for x in recs}) == len(recs)
    assert sum(1 for x in recs if x.error is None) == 5  # the good objects still land


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"images": [], "annotations": []}, "missing or non-list 'categories'"),
        ({"images": [{"id": 1}], "annotations": [], "categories": []}, r"images\[0\] needs an 'id' and a 'file_name'"),
        (
            {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "a"}]},
            "two categories share a name",
        ),
    ],
)
def test_coco_schema_errors(tmp_path: Path, doc: dict[str, Any], match: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(SourceError, match=match):
        open_source(path, kind="coco")


def test_coco_results_must_be_a_list(tmp_path: Path) -> None:
    gt_path, res_path = coco_files(tmp_path)
    res_path.write_text('{"oops": 1}')
    with pytest.raises(SourceError, match="results.json: COCO results are a JSON list"):
        open_source(gt_path, coco_results=res_path, image_root=tmp_path / "images")


def test_iou() -> None:
    assert iou_xywh([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert iou_xywh([0, 0, 10, 10], [10, 0, 10, 10]) == 0.0
    assert iou_xywh([0, 0, 10, 10], [5, 0, 10, 10]) == pytest.approx(50 / 150)
