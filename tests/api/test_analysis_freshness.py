"""The analysis' ``freshness`` (GET /clusters and /analysis): after a labels import the cluster figures
are out of date and the API says so, naming how many rows changed; a write that changes no label nor
prediction (an export tagging rows) is not staleness; new rows count as not on the map yet."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pytest
from factories import make_synthetic
from fastapi.testclient import TestClient

from edgeminer.indexer.analysis.run import analyze
from edgeminer.indexer.store import Store
from edgeminer.service.export.labels import import_labels
from edgeminer.service.settings import Settings

# 15 rows: below MIN_UMAP_ROWS the map is laid out by PCA (no numba warm-up in these tests)
FAST = {"min_cluster_size": 3}
API = "/api/v1/datasets/synth"


@pytest.fixture
def analyzed(api_settings: Settings) -> Settings:
    store = Store(api_settings.data_dir)
    make_synthetic(store, "synth", n_clusters=3, per_cluster=5, error_clusters=(2,), seed=4)
    analyze(store, "synth", FAST)
    return api_settings


def freshness(client: TestClient) -> dict:  # type: ignore[type-arg]
    body = client.get(f"{API}/clusters").json()
    fresh = body["freshness"]
    assert client.get(f"{API}/analysis").json()["freshness"] == fresh  # both routes say the same
    return fresh  # type: ignore[no-any-return]


def test_fresh_then_stale_after_a_labels_import(analyzed: Settings, make_client: Callable[..., TestClient]) -> None:
    client = make_client(analyzed)
    store = Store(analyzed.data_dir)
    fresh = freshness(client)
    assert fresh["stale"] is False and fresh["checked"] is True
    assert fresh["analyzed_version"] == fresh["current_version"] == store.version("synth")
    assert (fresh["new_rows"], fresh["changed_rows"], fresh["removed_rows"]) == (0, 0, 0)
    assert fresh["analyzed_at"] == client.get(f"{API}/clusters").json()["analyzed_at"]

    # an export tags rows: a newer table version, but no label or prediction changed
    some = store.query("synth", columns=["id"], limit=5)["id"].to_pylist()
    store.append_to_list("synth", some, "exported", "exp-1")
    fresh = freshness(client)
    assert fresh["current_version"] > fresh["analyzed_version"] and fresh["stale"] is False

    # a labels import of 3 unlabeled rows: those rows changed since the analysis
    unlabeled = store.query("synth", where="labeled = false", columns=["id"])["id"].to_pylist()[:3]
    assert len(unlabeled) == 3
    csv = "id,label\n" + "".join(f"{i},cat\n" for i in unlabeled)
    report = import_labels(store, "synth", csv.encode(), format="csv")
    assert report.matched == 3
    fresh = freshness(client)
    assert fresh["stale"] is True and fresh["changed_rows"] == 3
    assert fresh["new_rows"] == 0 and fresh["removed_rows"] == 0 and fresh["checked"] is True
    # the cluster figures are indeed the old ones: the analysis' judged count is below the data's now
    body = client.get(f"{API}/clusters").json()
    assert body["judged"] < store.count("synth", "labeled = true AND correct IS NOT NULL")

    # analyzing again makes it fresh
    analyze(store, "synth", FAST)
    assert freshness(client)["stale"] is False


def test_new_rows_are_counted_as_not_on_the_map(analyzed: Settings, make_client: Callable[..., TestClient]) -> None:
    client = make_client(analyzed)
    store = Store(analyzed.data_dir)
    row = store.query("synth", where="id = 'c0-000'").to_pylist()[0]
    extra = []
    for k in range(3):
        r = dict(row, id=f"new-{k}", uri=f"/synthetic/new-{k}.png", fingerprint=f"fp-new-{k}", x=None, y=None)
        r["cluster"] = None
        r["embedding"] = (np.asarray(row["embedding"]) + 0.01 * k).tolist()
        extra.append(r)
    table = pa.Table.from_pylist(extra, schema=store.query("synth", limit=1).schema)
    store.upsert_samples("synth", table)
    fresh = freshness(client)
    assert fresh["stale"] is True and fresh["new_rows"] == 3 and fresh["changed_rows"] == 0
