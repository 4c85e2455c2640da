"""Row counts in one place (indexer/counts.py): the numbers the dataset detail and `edgeminer stats` show."""

from __future__ import annotations

import pyarrow as pa

from edgeminer.indexer.counts import RowCounts, SplitCounts, count_rows


def _table(rows: list[tuple[str | None, bool | None, str, bool | None, float | None]]) -> pa.Table:
    split, labeled, status, correct, x = zip(*rows, strict=True)
    return pa.table(
        {
            "split": pa.array(split, pa.string()),
            "labeled": pa.array(labeled, pa.bool_()),
            "status": pa.array(status, pa.string()),
            "correct": pa.array(correct, pa.bool_()),
            "x": pa.array(x, pa.float32()),
        }
    )


def test_counts_overall_and_per_split() -> None:
    table = _table(
        [
            ("train", True, "ok", True, 0.0),
            ("train", True, "ok", False, 1.0),
            ("train", None, "error", None, None),
            (None, False, "ok", None, 2.0),
            ("val", True, "ok", False, None),
            (None, True, "error", None, None),
        ]
    )
    c = count_rows(table)
    assert (c.total, c.ok, c.errors, c.labeled, c.unlabeled, c.wrong, c.analyzed) == (6, 4, 2, 4, 2, 2, 3)
    assert list(c.splits) == ["train", None, "val"]  # order of first appearance
    assert c.splits["train"] == SplitCounts(rows=3, ok=2, errors=1, labeled=2, wrong=1)
    assert c.splits[None] == SplitCounts(rows=2, ok=1, errors=1, labeled=1, wrong=0)
    assert c.by_split("(none)") == {"(none)": 2, "train": 3, "val": 1}
    assert c.splits["val"].as_dict() == {"rows": 1, "labeled": 1, "errors": 0, "wrong": 1, "ok": 1}


def test_empty_table() -> None:
    c = count_rows(_table([("a", True, "ok", True, 0.0)]).slice(0, 0))
    assert c == RowCounts() and c.unlabeled == 0 and c.by_split("(none)") == {}
