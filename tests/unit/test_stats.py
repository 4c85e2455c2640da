"""Stats against hand-computed values: a small fixture with missing values, an empty dataset, an
all-correct dataset, and the store wrappers on a real LanceDB table."""

from __future__ import annotations

import pyarrow as pa
import pytest

from edgeminer.indexer.analysis.stats import (
    confusion,
    confusion_for,
    label_distribution,
    label_distribution_for,
    metadata_distribution,
    metadata_distribution_for,
    outcome_buckets,
)
from edgeminer.indexer.errors import UnknownField
from edgeminer.indexer.store import Store

CLASSES = ["cat", "dog", "bird"]
COLS = ["id", "split", "labeled", "label", "pred_label", "pred_label2", "margin", "correct", "meta_time", "meta_size"]
# fmt: off
ROWS = [
    ("a", "train", True, "cat", "cat", "dog", 0.2, True, "day", 10.0),
    ("b", "train", True, "cat", "dog", "cat", 0.6, False, "night", 1000.0),
    ("c", "train", True, "dog", "dog", "cat", 0.1, True, "day", None),
    ("d", "val", True, "dog", "cat", "dog", 0.9, False, "night", 50000.0),
    ("e", "val", True, "bird", "bird", "cat", 0.3, True, None, 100.0),
    ("f", "unlabeled", False, None, "cat", "dog", 0.4, None, "day", 20.0),
    ("g", "unlabeled", False, None, "dog", "cat", 0.5, None, "night", 5.0),
    ("h", "val", True, "bird", None, None, None, None, "day", None),  # labeled, no prediction
]
# fmt: on


def _table(rows: list[tuple] = ROWS) -> pa.Table:
    data = {c: [r[i] for r in rows] for i, c in enumerate(COLS)}
    types = {"labeled": pa.bool_(), "correct": pa.bool_(), "margin": pa.float32(), "meta_size": pa.float64()}
    return pa.table({c: pa.array(v, types.get(c, pa.string())) for c, v in data.items()})


def _counts(d: dict) -> tuple:
    return (d["correct"], d["wrong"], d["unlabeled"], d["no_prediction"], d["total"], d["error_rate"])


def test_outcome_buckets() -> None:
    assert outcome_buckets(_table()) == [
        "correct",
        "wrong",
        "correct",
        "wrong",
        "correct",
        "unlabeled",
        "unlabeled",
        "no_prediction",
    ]


def test_label_distribution_by_split() -> None:
    out = label_distribution(_table(), classes=CLASSES)
    assert out["classes"] == CLASSES
    by = {s["split"]: s for s in out["splits"]}
    assert [s["split"] for s in out["splits"]] == ["train", "unlabeled", "val"]
    assert by["train"]["rows"] == 3 and by["train"]["labeled"] == 3
    assert by["train"]["label"] == {"cat": 2, "dog": 1, "bird": 0}
    assert by["train"]["pred_label"] == {"cat": 1, "dog": 2, "bird": 0}
    assert by["unlabeled"]["label"] == {"cat": 0, "dog": 0, "bird": 0}
    assert by["unlabeled"]["pred_label"] == {"cat": 1, "dog": 1, "bird": 0}
    assert by["val"]["label"] == {"cat": 0, "dog": 1, "bird": 2}
    assert by["val"]["pred_label"] == {"cat": 1, "dog": 0, "bird": 1}
    assert out["total"] == {
        "rows": 8,
        "labeled": 6,
        "label": {"cat": 2, "dog": 2, "bird": 2},
        "pred_label": {"cat": 3, "dog": 3, "bird": 1},
    }


def test_label_distribution_appends_unknown_classes() -> None:
    rows = [("x", "train", True, "zebra", "cat", "dog", 0.5, False, None, None)]
    out = label_distribution(_table(rows), classes=CLASSES)
    assert out["classes"] == ["cat", "dog", "bird", "zebra"]
    assert out["total"]["label"]["zebra"] == 1


def test_categorical_distribution_with_missing_values() -> None:
    out = metadata_distribution(_table(), "meta_time", kind="string")
    assert out["kind"] == "categorical"
    bins = {b["value"]: b for b in out["bins"]}
    assert [b["value"] for b in out["bins"]] == ["day", "night"]  # most frequent first
    assert _counts(bins["day"]) == (2, 0, 1, 1, 4, 0.0)
    assert _counts(bins["night"]) == (0, 2, 1, 0, 3, 1.0)
    assert _counts(out["missing"]) == (1, 0, 0, 0, 1, 0.0)
    assert _counts(out["overall"]) == (3, 2, 2, 1, 8, 0.4)


def test_categorical_folds_rare_values_into_other() -> None:
    out = metadata_distribution(_table(), "meta_time", kind="string", max_categories=1)
    assert [b["value"] for b in out["bins"]] == ["day", "(other)"]
    assert _counts(out["bins"][1]) == (0, 2, 1, 0, 3, 1.0)


def test_numeric_distribution_auto_log_scale() -> None:
    out = metadata_distribution(_table(), "meta_size", kind="float", bins=4)
    assert out["kind"] == "numeric" and out["scale"] == "log"  # 5 .. 50000 spans four decades
    assert [round(b["lo"], 6) for b in out["bins"]] == [5.0, 50.0, 500.0, 5000.0]
    assert out["bins"][-1]["hi"] == 50000.0
    got = [_counts(b) for b in out["bins"]]
    assert got == [
        (1, 0, 2, 0, 3, 0.0),  # 5 (unlabeled), 10 (correct), 20 (unlabeled)
        (1, 0, 0, 0, 1, 0.0),  # 100
        (0, 1, 0, 0, 1, 1.0),  # 1000
        (0, 1, 0, 0, 1, 1.0),  # 50000 (top edge is inside the last bin)
    ]
    assert _counts(out["missing"]) == (1, 0, 0, 1, 2, 0.0)


def test_numeric_distribution_linear_and_explicit_edges() -> None:
    lin = metadata_distribution(_table(), "meta_size", kind="float", bins=2, scale="linear")
    assert lin["scale"] == "linear"
    assert [_counts(b) for b in lin["bins"]] == [(2, 1, 2, 0, 5, pytest.approx(1 / 3)), (0, 1, 0, 0, 1, 1.0)]
    exp = metadata_distribution(_table(), "meta_size", kind="float", edges=[100, 10_000])
    assert exp["scale"] == "explicit"
    assert [_counts(b) for b in exp["bins"]] == [(1, 1, 0, 0, 2, 0.5)]  # 100 correct, 1000 wrong
    assert _counts(exp["below"]) == (1, 0, 2, 0, 3, 0.0)
    assert _counts(exp["above"]) == (0, 1, 0, 0, 1, 1.0)


def test_numeric_distribution_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="scale must be one of auto, linear, log"):
        metadata_distribution(_table(), "meta_size", kind="float", scale="cubic")
    with pytest.raises(ValueError, match="strictly increasing"):
        metadata_distribution(_table(), "meta_size", kind="float", edges=[5, 5])
    with pytest.raises(ValueError, match="log scale needs positive values"):
        rows = [r[:9] + (0.0,) for r in ROWS]
        metadata_distribution(_table(rows), "meta_size", kind="float", scale="log")


def test_confusion_matrix_and_top2_pairs() -> None:
    out = confusion(_table(), classes=CLASSES)
    assert out["labels"] == CLASSES
    assert out["matrix"] == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert (out["judged"], out["errors"], out["accuracy"]) == (5, 2, 0.6)
    assert out["top_errors"] == [
        {"label": "cat", "pred": "dog", "count": 1},
        {"label": "dog", "pred": "cat", "count": 1},
    ]
    pairs = [(p["first"], p["second"], p["count"]) for p in out["pairs"]]
    assert pairs == [("cat", "dog", 3), ("dog", "cat", 3), ("bird", "cat", 1)]
    # mean gap p1 - p2 = 1 - margin: (0.8 + 0.1 + 0.6) / 3 and (0.4 + 0.9 + 0.5) / 3
    assert out["pairs"][0]["mean_margin"] == pytest.approx(0.5, abs=1e-6)
    assert out["pairs"][1]["mean_margin"] == pytest.approx(0.6, abs=1e-6)
    assert out["pairs"][2]["mean_margin"] == pytest.approx(0.7, abs=1e-6)


def test_empty_dataset() -> None:
    empty = _table([])
    labels = label_distribution(empty, classes=CLASSES)
    assert labels["splits"] == []
    assert labels["total"]["rows"] == 0 and labels["total"]["label"] == {"cat": 0, "dog": 0, "bird": 0}
    cat = metadata_distribution(empty, "meta_time", kind="string")
    assert cat["bins"] == [] and cat["overall"]["total"] == 0 and cat["overall"]["error_rate"] is None
    num = metadata_distribution(empty, "meta_size", kind="float")
    assert num["bins"] == []
    conf = confusion(empty, classes=CLASSES)
    assert conf["matrix"] == [[0] * 3] * 3
    assert conf["accuracy"] is None and conf["pairs"] == [] and conf["top_errors"] == []


def test_all_correct_dataset() -> None:
    rows = [r[:6] + (0.1, True) + r[8:] for r in ROWS[:5]]
    rows = [(r[0], r[1], True, r[3], r[3], r[5], r[6], True, r[8], r[9]) for r in rows]
    conf = confusion(_table(rows), classes=CLASSES)
    assert conf["errors"] == 0 and conf["accuracy"] == 1.0 and conf["top_errors"] == []
    assert conf["matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 1]]
    dist = metadata_distribution(_table(rows), "meta_time", kind="string")
    assert all(b["error_rate"] == 0.0 for b in dist["bins"])
    assert dist["overall"]["error_rate"] == 0.0


# ----------------------------------------------------------------------------------------------
# Through the store
# ----------------------------------------------------------------------------------------------


def _stored(store: Store) -> str:
    store.create_dataset(
        "st",
        dim=4,
        embedder={"kind": "precomputed"},
        classes=CLASSES,
        metadata_fields={"time": "string", "size": "float"},
    )
    table = _table()
    table = table.append_column("status", pa.array(["ok"] * table.num_rows))
    table = table.append_column(
        "embedding", pa.array([[float(i), 1.0, 0.0, 0.0] for i in range(table.num_rows)], pa.list_(pa.float32(), 4))
    )
    bad = pa.table(
        {
            "id": ["z"],
            "split": ["train"],
            "labeled": [True],
            "label": ["cat"],
            "pred_label": ["dog"],
            "correct": [False],
            "meta_time": ["night"],
            "status": ["error"],
            "error": ["z.png: cannot decode image"],
            # (LanceDB's merge_insert refuses null vectors, so the error row carries one; the
            # wrappers must still skip it by its status)
            "embedding": pa.array([[0.0, 0.0, 1.0, 0.0]], pa.list_(pa.float32(), 4)),
        }
    )
    store.upsert_samples("st", pa.concat_tables([table, bad], promote_options="default"))
    return "st"


def test_store_wrappers_skip_error_rows(store: Store) -> None:
    ds = _stored(store)
    assert label_distribution_for(store, ds)["total"]["labeled"] == 6
    dist = metadata_distribution_for(store, ds, "time")
    bins = {b["value"]: b for b in dist["bins"]}
    assert dist["field"] == "time" and dist["column"] == "meta_time"
    assert _counts(bins["night"]) == (0, 2, 1, 0, 3, 1.0)  # the error row "z" is not counted
    assert metadata_distribution_for(store, ds, "meta_size", bins=4)["scale"] == "log"
    conf = confusion_for(store, ds)
    assert conf["matrix"] == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    split_only = label_distribution_for(store, ds, where="split = 'val'")
    assert [s["split"] for s in split_only["splits"]] == ["val"]


def test_store_wrapper_core_field_and_unknown_field(store: Store) -> None:
    ds = _stored(store)
    dist = metadata_distribution_for(store, ds, "split")
    assert {b["value"]: b["total"] for b in dist["bins"]} == {"train": 3, "val": 3, "unlabeled": 2}
    with pytest.raises(UnknownField, match="unknown field 'weather'.*valid: area, .*size, split, time"):
        metadata_distribution_for(store, ds, "weather")
