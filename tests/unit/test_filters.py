"""service/filters.py against a real LanceDB table: every op's clause selects exactly the rows a plain
Python predicate selects, and bad filters raise errors that name the field / op."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pytest
from factories import make_synthetic

from edgeminer.indexer.store import Store
from edgeminer.service.errors import InvalidFilter, UnknownField, to_problem
from edgeminer.service.filters import build_where, field_types, parse_filters, parse_sort, resolve_field


@pytest.fixture
def ds(store: Store) -> tuple[Store, list[dict[str, Any]]]:
    make_synthetic(store, "f", n_clusters=3, per_cluster=20)
    # awkward strings, tags and a keyword-named metadata column
    store.update_dataset("f", metadata_fields={"split": "string", "when": "timestamp", "count": "int"})
    ids = [f"c0-{j:03d}" for j in range(6)]
    base = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    store.update_columns(
        "f",
        pa.table(
            {
                "id": ids,
                "meta_group": ["it's", "50%_x", "a\\b", "%", "_", "g0"],
                "tags": pa.array([["hard", "a_b"], ["hard"], [], ["x'y"], ["%"], ["night"]], pa.list_(pa.string())),
                "meta_split": ["s1", "s2", None, "s1", "s2", "s3"],
                "meta_when": pa.array([base + dt.timedelta(days=d) for d in range(6)], pa.timestamp("us", tz="UTC")),
                "meta_count": pa.array([0, 5, 10, None, 20, 25], pa.int64()),
                "width": pa.array([16, 64, 16, 64, 8, 8], pa.int32()),
            }
        ),
    )
    rows = store.query("f").to_pylist()
    return store, rows


def ids_for(store: Store, filters: list[dict[str, Any]]) -> set[str]:
    info = store.get_dataset("f")
    where = build_where(info, store.schema("f"), filters)
    return set(store.query("f", where=where, columns=["id"])["id"].to_pylist())


def expect(rows: list[dict[str, Any]], pred: Any) -> set[str]:
    return {r["id"] for r in rows if pred(r)}


CASES = [
    ({"field": "split", "op": "eq", "value": "val"}, lambda r: r["split"] == "val"),
    ({"field": "label", "op": "ne", "value": "cat"}, lambda r: r["label"] != "cat"),  # nulls kept
    ({"field": "confidence", "op": "lt", "value": 0.6}, lambda r: r["confidence"] < 0.6),
    ({"field": "confidence", "op": "le", "value": "0.6"}, lambda r: r["confidence"] <= 0.6),
    ({"field": "brightness", "op": "gt", "value": 0.5}, lambda r: r["meta_brightness"] > 0.5),
    ({"field": "width", "op": "ge", "value": 32}, lambda r: r["width"] >= 32),
    ({"field": "confidence", "op": "between", "value": [0.5, 0.9]}, lambda r: 0.5 <= r["confidence"] <= 0.9),
    ({"field": "brightness", "op": "between", "value": [None, 0.3]}, lambda r: r["meta_brightness"] <= 0.3),
    ({"field": "pred_label", "op": "in", "value": ["dog", "bird"]}, lambda r: r["pred_label"] in ("dog", "bird")),
    ({"field": "group", "op": "contains", "value": "%"}, lambda r: "%" in r["meta_group"]),
    ({"field": "group", "op": "contains", "value": "_"}, lambda r: "_" in r["meta_group"]),
    ({"field": "group", "op": "contains", "value": "'"}, lambda r: "'" in r["meta_group"]),
    ({"field": "group", "op": "eq", "value": "a\\b"}, lambda r: r["meta_group"] == "a\\b"),
    ({"field": "tags", "op": "contains", "value": "hard"}, lambda r: "hard" in (r["tags"] or [])),
    ({"field": "tags", "op": "contains", "value": ["night", "%"]}, lambda r: {"night", "%"} & set(r["tags"] or [])),
    ({"field": "tags", "op": "contains", "value": "x'y"}, lambda r: "x'y" in (r["tags"] or [])),
    ({"field": "correct", "op": "is_null", "value": True}, lambda r: r["correct"] is None),
    ({"field": "correct", "op": "is_null", "value": False}, lambda r: r["correct"] is not None),
    ({"field": "labeled", "op": "eq", "value": True}, lambda r: r["labeled"] is True),
    ({"field": "labeled", "op": "ne", "value": "true"}, lambda r: r["labeled"] is not True),
    ({"field": "meta_split", "op": "eq", "value": "s1"}, lambda r: r["meta_split"] == "s1"),  # clash: prefixed
    ({"field": "count", "op": "gt", "value": 5}, lambda r: r["meta_count"] is not None and r["meta_count"] > 5),
    ({"field": "count", "op": "in", "value": [0, "10"]}, lambda r: r["meta_count"] in (0, 10)),
    (
        {"field": "when", "op": "ge", "value": "2024-05-03"},
        lambda r: r["meta_when"] is not None and r["meta_when"] >= dt.datetime(2024, 5, 3, tzinfo=dt.UTC),
    ),
    (
        {"field": "when", "op": "lt", "value": "2024-05-03T02:00:00+02:00"},  # = 2024-05-03T00:00Z
        lambda r: r["meta_when"] is not None and r["meta_when"] < dt.datetime(2024, 5, 3, tzinfo=dt.UTC),
    ),
    ({"field": "embedding", "op": "is_null"}, lambda r: r["embedding"] is None),
]


@pytest.mark.parametrize("flt,pred", CASES, ids=[f"{c[0]['field']}-{c[0]['op']}" for c in CASES])
def test_each_op_selects_exactly_the_matching_rows(ds: Any, flt: dict[str, Any], pred: Any) -> None:
    store, rows = ds
    want = expect(rows, pred)
    got = ids_for(store, [flt])
    assert got == want
    assert 0 < len(want) < len(rows) or flt["op"] == "is_null"


def test_filters_are_anded(ds: Any) -> None:
    store, rows = ds
    got = ids_for(store, [{"field": "split", "value": "val"}, {"field": "confidence", "op": "lt", "value": 0.7}])
    assert got == expect(rows, lambda r: r["split"] == "val" and r["confidence"] < 0.7)
    assert build_where(store.get_dataset("f"), store.schema("f"), []) is None


def test_injection_attempts_stay_values(ds: Any) -> None:
    store, rows = ds
    for evil in ["x' OR '1'='1", "'); DROP TABLE f__samples; --", "\\' OR 1=1 --"]:
        assert ids_for(store, [{"field": "label", "op": "eq", "value": evil}]) == set()
        assert ids_for(store, [{"field": "tags", "op": "contains", "value": evil}]) == set()
    assert store.count("f") == len(rows)


def test_unknown_field_lists_valid_fields(ds: Any) -> None:
    store, _ = ds
    info, schema = store.get_dataset("f"), store.schema("f")
    with pytest.raises(UnknownField) as err:
        build_where(info, schema, [{"field": "split", "value": "val"}, {"field": "colour", "value": "red"}])
    body = to_problem(err.value).to_dict()
    assert body["status"] == 422 and body["field"] == "colour" and body["filter_index"] == 1
    assert "brightness" in body["valid_fields"] and "confidence" in body["valid_fields"]
    with pytest.raises(UnknownField):
        build_where(info, schema, [{"field": "1=1 OR split", "value": "x"}])


@pytest.mark.parametrize(
    "flt,needle",
    [
        ({"field": "confidence", "op": "like", "value": 1}, "unknown op 'like'"),
        ({"field": "confidence", "op": "contains", "value": "a"}, "does not apply to 'confidence'"),
        ({"field": "confidence", "op": "eq", "value": "high"}, "expected a number"),
        ({"field": "confidence", "op": "eq", "value": float("nan")}, "finite"),
        ({"field": "confidence", "op": "eq", "value": None}, "is_null"),
        ({"field": "confidence", "op": "between", "value": [0.9, 0.1]}, "above the high bound"),
        ({"field": "confidence", "op": "between", "value": [0.1]}, "[low, high]"),
        ({"field": "width", "op": "eq", "value": 32.5}, "whole number"),
        ({"field": "labeled", "op": "eq", "value": 1}, "true or false"),
        ({"field": "label", "op": "in", "value": []}, "non-empty list"),
        ({"field": "label", "op": "eq", "value": ["a", "b"]}, "not a list"),
        ({"field": "label", "op": "eq", "value": {"a": 1}}, "expected a string"),
        ({"field": "when", "op": "gt", "value": "yesterday"}, "ISO 8601"),
        ({"field": "embedding", "op": "eq", "value": 1}, "use one of is_null"),
        ({"field": "correct", "op": "is_null", "value": "maybe"}, "true or false"),
        ({"field": "split", "op": "eq", "value": "a\x00b"}, "NUL"),
        ({"field": "split", "valu": "val"}, "unknown key(s) 'valu'"),
    ],
)
def test_bad_filters_name_field_and_op(ds: Any, flt: dict[str, Any], needle: str) -> None:
    store, _ = ds
    with pytest.raises(InvalidFilter) as err:
        build_where(store.get_dataset("f"), store.schema("f"), [flt])
    assert needle in err.value.detail
    body = to_problem(err.value).to_dict()
    assert body["status"] == 422 and body["type"].endswith("invalid-filter")
    if "valu" not in flt:
        assert body["field"] == flt["field"]


def test_parse_filters_and_sort(ds: Any) -> None:
    store, _ = ds
    info, schema = store.get_dataset("f"), store.schema("f")
    assert parse_filters('[{"field": "split", "value": "val"}]') == [{"field": "split", "value": "val"}]
    assert parse_filters('{"field": "split", "value": "val"}') == [{"field": "split", "value": "val"}]
    assert parse_filters(None) == [] and parse_filters("") == []
    with pytest.raises(InvalidFilter, match="not valid JSON"):
        parse_filters("[{field: split}]")
    with pytest.raises(InvalidFilter, match="JSON list"):
        parse_filters('"split"')
    assert parse_sort("-confidence", info, schema) == [("confidence", "descending"), ("id", "ascending")]
    assert parse_sort("brightness:asc,id:desc", info, schema) == [
        ("meta_brightness", "ascending"),
        ("id", "descending"),
    ]
    assert parse_sort(None, info, schema) == [("id", "ascending")]
    with pytest.raises(UnknownField, match="unknown sort field 'nope'"):
        parse_sort("nope", info, schema)
    with pytest.raises(InvalidFilter, match="not a scalar"):
        parse_sort("tags", info, schema)
    assert resolve_field("brightness", info, schema) == "meta_brightness"
    types = field_types(info, schema)
    assert types["tags"] == "list<string>" and types["when"] == "timestamp" and types["embedding"] == "vector"
