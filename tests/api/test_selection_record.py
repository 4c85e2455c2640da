"""Recording a selection happens in the library (service/selection.py's record_selection): `edgeminer
mine` / `edgeminer select` and POST /mine / POST /select leave the same document for the same request."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from factories import make_synthetic
from fastapi.testclient import TestClient

from edgeminer.indexer.store import Store
from edgeminer.service.cli import main
from edgeminer.service.settings import Settings

FILTERS = [{"field": "group", "op": "eq", "value": "g3"}]
CONFUSION = {"label": "cat", "pred_label": "dog"}  # the failures of clusters 0 and 3 (make_synthetic)


def _cli_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, Any]:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _stored(store: Store, selection_id: str) -> dict[str, Any]:
    """The recorded document without the store's own keys (id, _created_at, _updated_at)."""
    doc = store.get_doc("syn", "selection", selection_id)
    return {k: v for k, v in doc.items() if k != "id" and not k.startswith("_")}


@pytest.fixture
def client_and_store(make_client: Callable[..., TestClient], api_settings: Settings) -> tuple[TestClient, Store]:
    store = Store(api_settings.data_dir)
    make_synthetic(store, "syn", n_clusters=6, per_cluster=30, error_clusters=(0, 3), seed=1)
    return make_client(api_settings), store


def test_cli_and_api_record_the_same_mine_document(
    client_and_store: tuple[TestClient, Store], api_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    client, store = client_and_store
    resp = client.post(
        "/api/v1/datasets/syn/mine",
        json={"seeds": {"confusion": CONFUSION}, "budget": 5, "aggregation": "round_robin", "filters": FILTERS},
    )
    assert resp.status_code == 200, resp.text
    api_doc = _stored(store, resp.json()["selection_id"])
    out = _cli_json(
        capsys,
        ["--data-dir", api_settings.data_dir, "mine", "--dataset", "syn", "--confusion", "cat:dog", "--budget", "5",
         "--aggregation", "round_robin", "--filters", json.dumps(FILTERS), "--json"],
    )
    assert out["selection_id"].startswith("mine-")
    cli_doc = _stored(Store(api_settings.data_dir), out["selection_id"])
    assert set(cli_doc) == set(api_doc) == {"kind", "seeds", "params", "ids", "summary"}
    assert cli_doc["kind"] == api_doc["kind"] == "mine"
    assert set(cli_doc["params"]) == set(api_doc["params"]) and set(cli_doc["summary"]) == set(api_doc["summary"])
    assert cli_doc["seeds"] == api_doc["seeds"] == {"confusion": CONFUSION}
    assert cli_doc["params"]["filters"] == api_doc["params"]["filters"] == FILTERS
    assert cli_doc["ids"] == api_doc["ids"] and len(api_doc["ids"]) == 5
    assert {k: v for k, v in cli_doc["params"].items() if k != "columns"} == {
        k: v for k, v in api_doc["params"].items() if k != "columns"
    }


def test_cli_and_api_record_the_same_select_document(
    client_and_store: tuple[TestClient, Store], api_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    client, store = client_and_store
    resp = client.post(
        "/api/v1/datasets/syn/select",
        json={"strategy": "entropy", "budget": 6, "explore": 0.5, "seed": 3, "filters": FILTERS},
    )
    assert resp.status_code == 200, resp.text
    api_doc = _stored(store, resp.json()["selection_id"])
    out = _cli_json(
        capsys,
        ["--data-dir", api_settings.data_dir, "select", "--dataset", "syn", "--strategy", "entropy", "--budget",
         "6", "--explore", "0.5", "--seed", "3", "--where-eq", "group=g3", "--json"],
    )
    cli_doc = _stored(Store(api_settings.data_dir), out["selection_id"])
    assert set(cli_doc) == set(api_doc) == {"kind", "params", "ids", "summary"}
    assert cli_doc["kind"] == api_doc["kind"] == "select"
    assert set(cli_doc["params"]) == set(api_doc["params"]) and set(cli_doc["summary"]) == set(api_doc["summary"])
    assert cli_doc["params"]["filters"] == api_doc["params"]["filters"] == FILTERS
    assert cli_doc["ids"] == api_doc["ids"] and len(api_doc["ids"]) == 6


def test_no_record_leaves_no_document(
    client_and_store: tuple[TestClient, Store], api_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    client, store = client_and_store
    resp = client.post("/api/v1/datasets/syn/select", json={"budget": 3, "record": False})
    assert resp.status_code == 200 and resp.json()["selection_id"] is None
    out = _cli_json(
        capsys, ["--data-dir", api_settings.data_dir, "select", "--dataset", "syn", "--budget", "3", "--no-record",
                 "--json"],
    )
    assert out["selection_id"] is None
    assert store.list_docs("syn", "selection") == []
