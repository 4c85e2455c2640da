"""The class-set policy of a label import, and the checks every labels file goes through first.

A label that is not one of the dataset's classes refuses the whole import (nothing written, the unknown
labels listed with where they occur, the known classes listed) unless classes may be added; added
classes go at the end of the list and the dataset remembers how many classes the model's probabilities
cover, so older probs stay aligned. Malformed files and bad label values are refused naming the file,
the item / line and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from exportdata import build_classification, build_detection

from edgeminer.indexer.scores import classes_for_probs, pad_probs
from edgeminer.indexer.store import Store
from edgeminer.service.errors import to_problem
from edgeminer.service.export.labels import LabelImportError, UnknownLabels, import_labels


@pytest.fixture
def cls(store: Store, tmp_path: Path) -> Any:
    return build_classification(store, tmp_path / "media")


def _pool(cls: Any) -> list[str]:
    return [i for i in cls.ids if not cls.rows[i]["labeled"]]


def _unchanged(store: Store, version: int, classes: list[str]) -> None:
    assert store.version("cls") == version
    info = store.get_dataset("cls")
    assert info.classes == classes and info.model_classes is None


def test_a_typo_is_refused_with_the_known_classes(store: Store, cls: Any) -> None:
    a, b, c = _pool(cls)[:3]
    text = f"id,label\n{a},bird\n{b},brid\n{c},brid\n"
    before = store.version("cls")
    with pytest.raises(UnknownLabels) as err:
        import_labels(store, "cls", text.encode(), name="typo.csv")
    exc = err.value
    problem = to_problem(exc)
    assert problem.status == 422 and problem.slug == "unknown-labels"
    assert "typo.csv: 1 label is not a class of dataset 'cls'" in exc.detail
    assert "'brid' (line 3, line 4; did you mean 'bird'?)" in exc.detail
    assert "Known classes: cat, dog, bird" in exc.detail and "add_classes=true (CLI: --add-classes)" in exc.detail
    assert exc.extras["unknown_labels"] == [
        {"label": "brid", "count": 2, "sources": ["line 3", "line 4"], "did_you_mean": "bird"}
    ]
    assert exc.extras["known_classes"] == ["cat", "dog", "bird"]
    _unchanged(store, before, ["cat", "dog", "bird"])
    # the known label in the same file was not written either
    assert store.get_samples("cls", [a], columns=["labeled"]).to_pylist() == [{"labeled": False}]


def test_add_classes_appends_at_the_end_and_keeps_probs_aligned(store: Store, cls: Any) -> None:
    a, b = _pool(cls)[:2]
    report = import_labels(store, "cls", f"id,label\n{a},zebra\n{b},cat\n".encode(), add_classes=True)
    assert report.matched == 2 and report.new_classes == ["zebra"]
    info = store.get_dataset("cls")
    assert info.classes == ["cat", "dog", "bird", "zebra"] and info.model_classes == 3
    # a fresh Store reads the same from the catalog
    again = Store(store.uri).get_dataset("cls")
    assert again.classes == info.classes and again.model_classes == 3
    rows = store.get_samples("cls", [a], columns=["label", "correct", "outcome", "probs"]).to_pylist()[0]
    assert rows["label"] == "zebra" and rows["correct"] is False and rows["outcome"] == "wrong_class"
    # the stored probs (3 values) still name the first three classes; the new one reads as 0
    assert len(rows["probs"]) == 3
    assert classes_for_probs(3, info.classes, info.model_classes) == ["cat", "dog", "bird"]
    assert classes_for_probs(4, info.classes, info.model_classes) == info.classes
    assert pad_probs(np.array([rows["probs"]]), 4)[0, 3] == 0.0
    # a second import with the same new class needs no flag; another new one does, and changes nothing
    import_labels(store, "cls", f"id,label\n{b},zebra\n".encode())
    before = store.version("cls")
    with pytest.raises(UnknownLabels, match="'yak'"):
        import_labels(store, "cls", f"id,label\n{b},yak\n".encode())
    assert store.version("cls") == before and store.get_dataset("cls").classes[-1] == "zebra"
    # model_classes stays at the model's count when more classes come
    import_labels(store, "cls", f"id,label\n{b},yak\n".encode(), add_classes=True)
    assert store.get_dataset("cls").classes[-2:] == ["zebra", "yak"] and store.get_dataset("cls").model_classes == 3


def test_classes_for_probs_names_the_accepted_lengths() -> None:
    classes = ["cat", "dog", "bird", "zebra"]
    assert classes_for_probs(4, classes) == classes
    with pytest.raises(ValueError, match="probs has 3 values, the dataset has 4 classes .*: send one value per class"):
        classes_for_probs(3, classes)
    with pytest.raises(ValueError, match=r"send 3 to 4 values.*\(zebra\) may be left out"):
        classes_for_probs(2, classes, 3)
    with pytest.raises(ValueError, match="probs has 5 values"):
        classes_for_probs(5, classes, 3)
    mc = pad_probs(np.full((2, 1, 3), 1 / 3), 4)
    assert mc.shape == (2, 1, 4) and np.all(mc[..., 3] == 0)
    with pytest.raises(ValueError, match="more than the 2 classes"):
        pad_probs([[0.5, 0.25, 0.25]], 2)


def test_update_dataset_records_the_model_prefix_once(store: Store) -> None:
    store.create_dataset("d", dim=2, embedder={"kind": "precomputed"}, classes=["a", "b"])
    assert store.get_dataset("d").model_classes is None
    store.update_dataset("d", classes=["a", "b"])  # nothing new: nothing recorded
    assert store.get_dataset("d").model_classes is None
    store.update_dataset("d", classes=["c", "c"])
    info = store.get_dataset("d")
    assert info.classes == ["a", "b", "c"] and info.model_classes == 2
    store.create_dataset("e", dim=2, embedder={"kind": "precomputed"})
    store.update_dataset("e", classes=["x"])  # no classes before: no probs to keep aligned
    assert store.get_dataset("e").model_classes is None


BAD_LABELS = [
    ("nul", "ca\x00t", "control characters"),
    ("newline", "ca\nt", "control characters"),
    ("tab", "c\tat", "control characters"),
    ("too long", "x" * 201, "201 characters long; labels are at most 200"),
    ("blank", "   ", "the label is empty"),
    ("number", 3, "must be a string, not a number"),
    ("list", ["cat"], "must be a string, not a list"),
    ("null", None, "must be a string, not null"),
]


@pytest.mark.parametrize(("case", "label", "message"), BAD_LABELS, ids=[c[0] for c in BAD_LABELS])
def test_bad_label_values_are_refused(store: Store, cls: Any, case: str, label: Any, message: str) -> None:
    sid = _pool(cls)[0]
    before = store.version("cls")
    task = {"id": 7, "data": {"edgeminer_id": sid}, "annotations": [{"result": [{"value": {"choices": [label]}}]}]}
    with pytest.raises(LabelImportError, match=message) as err:
        import_labels(store, "cls", json.dumps([task]).encode(), name="ls.json", add_classes=True)
    assert err.value.extras["errors"][0]["source"] == "task 7 (item 0)"
    assert err.value.extras["errors"][0]["field"] == "annotations[0].result[0].value.choices[0]"
    assert err.value.detail.startswith("ls.json: 1 problem: task 7 (item 0)")
    _unchanged(store, before, ["cat", "dog", "bird"])


def test_nul_in_a_csv_label_is_refused_even_with_add_classes(store: Store, cls: Any) -> None:
    sid = _pool(cls)[0]
    before = store.version("cls")
    with pytest.raises(LabelImportError, match=r"line 2, label: the label 'b\\x00ird' holds control characters"):
        import_labels(store, "cls", f"id,label\n{sid},b\x00ird\n".encode(), add_classes=True)
    _unchanged(store, before, ["cat", "dog", "bird"])


def test_coco_category_with_a_null_name_is_refused(store: Store, cls: Any) -> None:
    sid = _pool(cls)[0]
    doc = {
        "images": [{"id": 1, "file_name": "x.png", "edgeminer_id": sid}],
        "categories": [{"id": 1, "name": None}, {"id": 2, "name": ""}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}],
    }
    before = store.version("cls")
    with pytest.raises(LabelImportError) as err:
        import_labels(store, "cls", json.dumps(doc).encode(), name="coco.json", add_classes=True)
    problems = err.value.extras["errors"]
    assert [(p["source"], p["field"]) for p in problems[:2]] == [
        ("category 1 (item 0)", "name"),
        ("category 2 (item 1)", "name"),
    ]
    assert "must be a string, not null" in problems[0]["message"] and problems[1]["message"] == "the label is empty"
    _unchanged(store, before, ["cat", "dog", "bird"])
    assert "None" not in store.get_dataset("cls").classes


def test_detection_unknown_box_label_is_refused_then_added(store: Store, tmp_path: Path) -> None:
    build_detection(store, tmp_path / "media")
    csv_text = b"id,label\nphoto-3#0,giraffe\n"
    before = store.version("det")
    with pytest.raises(UnknownLabels, match="'giraffe' \\(line 2\\)"):
        import_labels(store, "det", csv_text)
    assert store.version("det") == before
    report = import_labels(store, "det", csv_text, add_classes=True)
    assert report.matched == 1 and report.new_classes == ["giraffe"]
    assert store.get_dataset("det").classes == ["cat", "dog", "bird", "giraffe"]


def test_a_file_with_many_problems_lists_them_all(store: Store, cls: Any) -> None:
    tasks: list[Any] = [
        5,
        {"data": "x", "annotations": []},
        {"data": {"edgeminer_id": ["a"]}, "annotations": [1]},
        {"data": {"edgeminer_id": "ok"}, "annotations": "no"},
        {"data": {}, "annotations": [{"result": [{"type": "rectanglelabels", "value": {"x": "a"}}]}]},
        {},
    ]
    with pytest.raises(LabelImportError) as err:
        import_labels(store, "cls", json.dumps(tasks).encode(), name="many.json")
    got = [(p["source"], p["field"]) for p in err.value.extras["errors"]]
    assert got == [
        ("task #0", None),
        ("task #1", "data"),
        ("task #2", "data.edgeminer_id"),
        ("task #2", "annotations[0]"),
        ("task #3", "annotations"),
        ("task #4", "annotations[0].result[0].value.rectanglelabels"),
        ("task #4", "annotations[0].result[0].original_width"),
        ("task #4", "annotations[0].result[0].value.x"),
        ("task #4", "annotations[0].result[0].value.y"),
        ("task #4", "annotations[0].result[0].value.width"),
        ("task #4", "annotations[0].result[0].value.height"),
        ("task #5", None),
    ]
    assert err.value.extras["problem_count"] == 12 and "(and 7 more, listed in 'errors')" in err.value.detail


def test_cli_refuses_unknown_labels_unless_add_classes(
    store: Store, cls: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgeminer.service.cli import main

    sid = _pool(cls)[0]
    path = tmp_path / "labels.csv"
    path.write_text(f"id,label\n{sid},china_lft\n")
    before = store.version("cls")
    args = ["--data-dir", store.uri, "labels", "import", str(path), "--dataset", "cls"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "labels.csv: 1 label is not a class of dataset 'cls': 'china_lft' (line 2)" in err
    assert "Known classes: cat, dog, bird" in err and "--add-classes" in err
    assert Store(store.uri).version("cls") == before
    assert main([*args, "--json"]) == 1
    problem = json.loads(capsys.readouterr().out)
    assert problem["status"] == 422 and problem["unknown_labels"][0]["label"] == "china_lft"
    assert main([*args, "--add-classes"]) == 0
    assert "new classes china_lft" in capsys.readouterr().out
    assert Store(store.uri).get_dataset("cls").classes == ["cat", "dog", "bird", "china_lft"]
