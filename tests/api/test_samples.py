"""Samples: filters, sort, paging (total order, large offsets), detail, bad input and empty results,
checked against the rows read straight from the store."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from factories import make_synthetic
from fastapi.testclient import TestClient

from edgeminer.indexer.store import Store
from edgeminer.service.settings import Settings


@pytest.fixture
def env(api_settings: Settings, make_client: Callable[..., TestClient]) -> tuple[TestClient, list[dict[str, Any]]]:
    store = Store(api_settings.data_dir)
    make_synthetic(store, "s", n_clusters=4, per_cluster=30)
    rows = store.query("s").to_pylist()
    return make_client(api_settings), rows


def page(client: TestClient, **params: Any) -> Any:
    if "filters" in params and not isinstance(params["filters"], str):
        params["filters"] = json.dumps(params["filters"])
    return client.get("/api/v1/datasets/s/samples", params=params)


def test_default_page_hides_embeddings_and_orders_by_id(env: Any) -> None:
    client, rows = env
    body = page(client).json()
    assert body["total"] == len(rows) == 120 and body["limit"] == 50 and body["offset"] == 0
    assert [r["id"] for r in body["items"]] == sorted(r["id"] for r in rows)[:50]
    first = body["items"][0]
    assert "embedding" not in first and "fingerprint" not in first
    assert {"id", "uri", "split", "confidence", "probs", "meta_group", "tags"} <= set(first)


def test_filters_and_sort_match_the_store(env: Any) -> None:
    client, rows = env
    filters = [
        {"field": "split", "op": "in", "value": ["val", "unlabeled"]},
        {"field": "brightness", "op": "between", "value": [0.2, 0.9]},
    ]
    want = [r for r in rows if r["split"] in ("val", "unlabeled") and 0.2 <= r["meta_brightness"] <= 0.9]
    want.sort(key=lambda r: (-r["confidence"], r["id"]))
    got: list[str] = []
    offset = 0
    while True:
        body = page(client, filters=filters, sort="-confidence", limit=7, offset=offset).json()
        assert body["total"] == len(want)
        if not body["items"]:
            break
        got.extend(r["id"] for r in body["items"])
        offset += 7
    assert got == [r["id"] for r in want]  # pages never overlap nor skip


def test_sort_ties_and_nulls_are_deterministic(env: Any) -> None:
    client, rows = env
    body = page(client, sort="label", limit=200).json()
    labels = [r["label"] for r in body["items"]]
    n_null = sum(1 for r in rows if r["label"] is None)
    assert labels[len(labels) - n_null :] == [None] * n_null  # nulls last
    non_null = [(r["label"], r["id"]) for r in body["items"][: len(labels) - n_null]]
    assert non_null == sorted(non_null)
    desc = page(client, sort="label:desc,-id", limit=200).json()["items"]
    assert [(r["label"], r["id"]) for r in desc[: len(labels) - n_null]] == sorted(non_null, reverse=True)


def test_large_offsets_and_empty_results(env: Any) -> None:
    client, _ = env
    far = page(client, offset=10**12).json()
    assert far == {"items": [], "total": 120, "limit": 50, "offset": 10**12}
    none = page(client, filters=[{"field": "label", "op": "eq", "value": "zebra"}]).json()
    assert none["items"] == [] and none["total"] == 0
    zero = page(client, limit=0).json()
    assert zero["items"] == [] and zero["total"] == 120


def test_columns_and_embedding(env: Any) -> None:
    client, _ = env
    body = page(client, columns="confidence,group", limit=3).json()
    assert set(body["items"][0]) == {"id", "confidence", "meta_group"}
    detail = client.get("/api/v1/datasets/s/samples/c0-000").json()
    assert detail["id"] == "c0-000" and "embedding" not in detail
    with_emb = client.get("/api/v1/datasets/s/samples/c0-000", params={"include_embedding": True}).json()
    assert len(with_emb["embedding"]) == 16
    bad = page(client, columns="confidence,colour")
    assert bad.status_code == 422 and bad.json()["field"] == "colour"


def test_post_query_takes_long_id_lists(env: Any) -> None:
    client, rows = env
    ids = [r["id"] for r in rows][::2]
    body = {"filters": [{"field": "id", "op": "in", "value": ids}], "sort": "id", "limit": 1000}
    resp = client.post("/api/v1/datasets/s/samples/query", json=body)
    assert resp.status_code == 200
    assert [r["id"] for r in resp.json()["items"]] == sorted(ids)
    bad = client.post("/api/v1/datasets/s/samples/query", json={"filters": [{"field": "x", "op": "like"}]})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "params,status,check",
    [
        ({"filters": [{"field": "colour", "value": "red"}]}, 422, lambda b: "brightness" in b["valid_fields"]),
        (
            {"filters": [{"field": "confidence", "op": "gt", "value": "high"}]},
            422,
            lambda b: b["field"] == "confidence",
        ),
        ({"filters": [{"field": "split", "op": "regex", "value": "."}]}, 422, lambda b: "unknown op" in b["detail"]),
        ({"filters": "[{not json"}, 422, lambda b: "not valid JSON" in b["detail"]),
        ({"filters": "42"}, 422, lambda b: "JSON list" in b["detail"]),
        ({"filters": "[42]"}, 422, lambda b: "filter is an object" in b["detail"]),
        ({"sort": "colour"}, 422, lambda b: "sort field" in b["detail"]),
        ({"sort": "tags"}, 422, lambda b: "scalar" in b["detail"]),
        ({"limit": -1}, 422, lambda b: "limit" in b["detail"]),
        ({"limit": 10**6}, 422, lambda b: "limit" in b["detail"]),
        ({"offset": "x"}, 422, lambda b: "offset" in b["detail"]),
    ],
)
def test_bad_queries_are_problems(env: Any, params: dict[str, Any], status: int, check: Any) -> None:
    client, _ = env
    resp = page(client, **params)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert check(resp.json())


def test_unknown_dataset_and_sample(env: Any) -> None:
    client, _ = env
    assert client.get("/api/v1/datasets/nope/samples").status_code == 404
    resp = client.get("/api/v1/datasets/s/samples/nope")
    assert resp.status_code == 404 and resp.json()["type"].endswith("sample-not-found")
    odd = client.get("/api/v1/datasets/s/samples/it's%20'odd'")
    assert odd.status_code == 404 and odd.json()["sample_id"] == "it's 'odd'"


def test_rows_json_matches_the_per_value_conversion() -> None:
    """rows_json converts only the columns that need it; the result is what jsonable gives per value."""
    import datetime as dt
    import json

    import pyarrow as pa

    from edgeminer.service.api.routes.samples import jsonable, rows_json

    table = pa.table(
        {
            "f": pa.array([1.5, float("nan"), None, float("inf")], pa.float32()),
            "ok": pa.array([0.25, 1.0, None, -2.0]),
            "probs": pa.array([[0.5, float("nan")], None, [], [1.0]]),
            "box": pa.array([[1, 2, 3, 4]] * 4, pa.list_(pa.float32(), 4)),
            "at": pa.array([dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)] * 3 + [None], pa.timestamp("us", "UTC")),
            "raw": pa.array([b"\x00\xff", None, b"", b"a"]),
            "s": pa.array(["a", None, "c", "d"]),
            "n": pa.array([1, 2, None, 4], pa.int32()),
            "tags": pa.array([["x"], [], None, ["y", "z"]]),
        }
    )
    expected = [{k: jsonable(v) for k, v in row.items()} for row in table.to_pylist()]
    got = rows_json(table)
    assert json.dumps(got, allow_nan=False) == json.dumps(expected, allow_nan=False)
    assert got[1]["f"] is None and got[0]["probs"] == [0.5, None] and got[0]["at"].startswith("2026-01-02T03:04:05")
    assert rows_json(table.slice(0, 0)) == []
