"""Slices and label issues end to end: GET /slices and /label-issues on a real server, the CLI commands
(`edgeminer slices`, `label-issues`, `mine --slice N`) on the same data, and --slice mining returning
the slice's unlabeled rows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from metafactory import make_planted_meta
from servers import LiveServer

from edgeminer.indexer.analysis.metaslices import slice_where
from edgeminer.indexer.store import Store
from edgeminer.service.api.app import create_app
from edgeminer.service.cli import main
from edgeminer.service.settings import Settings

KEY = "k3y"
T = 120  # seconds: the machine the tests run on may be busy


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Store, Path, object]]:
    base = tmp_path_factory.mktemp("slices-api")
    store = Store(base / "db")
    planted = make_planted_meta(store, n=3000)
    settings = Settings(data_dir=str(base / "db"), api_key=KEY, media_roots=[str(base / "media")])
    srv = LiveServer(create_app(settings, store=store))
    srv.start()
    try:
        yield f"{srv.url}/api/v1", store, base / "db", planted
    finally:
        srv.stop()


def _slice_ids(store: Store, item: dict) -> set[str]:
    where = slice_where(store.get_dataset("planted"), item)
    return set(store.query("planted", where=where, columns=["id"])["id"].to_pylist())


def test_slices_route_shape_and_planted_slice(env: tuple) -> None:
    url, store, _, planted = env
    r = httpx.get(f"{url}/datasets/planted/slices", headers={"X-API-Key": KEY}, timeout=T)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == body["current_version"] == store.version("planted") and body["stale"] is False
    top = body["slices"][0]
    assert top["id"] == 1 and top["description"] == "camera=C and img_brightness=dark"
    assert {"summary", "conditions", "filters", "error_rate", "lift", "judged", "unlabeled", "rows"} <= set(top)
    assert body["clusters"] == {
        "analyzed": False, "stale": False, "run_id": None, "analyzed_at": None,
        "version_written": None, "base_error_rate": None, "items": [],
    }  # fmt: skip
    # the slice's filters work as /samples filters and give the same rows
    r = httpx.get(
        f"{url}/datasets/planted/samples",
        params={"filters": json.dumps(top["filters"]), "limit": 1, "columns": "id"},
        headers={"X-API-Key": KEY},
        timeout=T,
    )
    assert r.status_code == 200 and r.json()["total"] == top["rows"] == len(_slice_ids(store, top))
    bad = httpx.get(f"{url}/datasets/planted/slices", params={"max_l": 9}, headers={"X-API-Key": KEY}, timeout=T)
    assert bad.status_code == 422
    missing = httpx.get(f"{url}/datasets/nope/slices", headers={"X-API-Key": KEY}, timeout=T)
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")


def test_mine_slice_returns_unlabeled_rows_of_the_slice(env: tuple) -> None:
    url, store, _, planted = env
    top = httpx.get(f"{url}/datasets/planted/slices", headers={"X-API-Key": KEY}, timeout=T).json()["slices"][0]
    r = httpx.post(
        f"{url}/datasets/planted/mine",
        json={"seeds": {"slice": 1}, "budget": 30, "record": False},
        headers={"X-API-Key": KEY},
        timeout=T,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    ids = [item["id"] for item in body["items"]]
    assert len(ids) == min(30, top["unlabeled"])
    inside = _slice_ids(store, top)
    labeled = dict(zip(*store.get_samples("planted", ids, columns=["id", "labeled"]).to_pydict().values(), strict=True))
    assert set(ids) <= inside and not any(labeled.values())
    assert all(planted.in_slice[i] for i in ids)
    assert body["seeds"] == top["errors"] + _train_failures(store, top)  # every failure of the slice seeds
    nope = httpx.post(
        f"{url}/datasets/planted/mine",
        json={"seeds": {"slice": 77}, "budget": 5},
        headers={"X-API-Key": KEY},
        timeout=T,
    )
    assert nope.status_code == 404 and "no metadata slice 77" in nope.json()["detail"]


def _train_failures(store: Store, item: dict) -> int:
    where = slice_where(store.get_dataset("planted"), item)
    return store.count("planted", f"({where}) AND labeled = true AND correct = false AND split = 'train'")


def test_label_issues_route_and_filter(env: tuple) -> None:
    url, store, _, _ = env
    r = httpx.get(
        f"{url}/datasets/planted/label-issues",
        params={"limit": 5, "train_rows": "skip", "other_rows": "model"},
        headers={"X-API-Key": KEY},
        timeout=T,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["limit"] == 5 and len(body["items"]) == min(5, body["total"]) and body["stale"] is False
    assert body["counts"]["probe"] == 0 and body["params"]["train_rows"] == "skip"
    first = body["items"][0]
    assert {"id", "rank", "split", "label", "suggested", "self_confidence", "judged_by"} <= set(first)
    assert first["rank"] == 1 and first["judged_by"] == "model"
    bad = httpx.get(
        f"{url}/datasets/planted/label-issues", params={"train_rows": "x"}, headers={"X-API-Key": KEY}, timeout=T
    )
    assert bad.status_code == 422


def test_cli_round_trip(env: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    url, store, data_dir, planted = env
    assert main(["--data-dir", str(data_dir), "slices", "--dataset", "planted", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    api = httpx.get(f"{url}/datasets/planted/slices", headers={"X-API-Key": KEY}, timeout=T).json()
    assert [s["summary"] for s in doc["slices"]] == [s["summary"] for s in api["slices"]]
    assert main(["--data-dir", str(data_dir), "slices", "--dataset", "planted"]) == 0
    out = capsys.readouterr().out
    assert "camera=C and img_brightness=dark" in out and "--slice N" in out and "failure clusters: none yet" in out
    assert "numbers the default listing" not in out
    # --refinements: SliceLine's own listing (the planted slice narrowed by the weather too), as the API's
    argv = ["--data-dir", str(data_dir), "slices", "--dataset", "planted", "--max-l", "3", "--refinements"]
    assert main([*argv, "--json"]) == 0
    every = json.loads(capsys.readouterr().out)
    api = httpx.get(
        f"{url}/datasets/planted/slices",
        params={"max_l": 3, "refinements": "true"},
        headers={"X-API-Key": KEY},
        timeout=T,
    ).json()
    assert [s["summary"] for s in every["slices"]] == [s["summary"] for s in api["slices"]]
    assert any(len(s["conditions"]) == 3 for s in every["slices"]) and every["params"]["refinements"] is True
    assert main(argv) == 0
    assert "numbers the default listing" in capsys.readouterr().out  # --slice N is not this listing's N
    ids_out = data_dir.parent / "mined.txt"
    code = main(
        ["--data-dir", str(data_dir), "mine", "--dataset", "planted", "--slice", "1", "--budget", "10",
         "--ids-out", str(ids_out), "--no-record"]
    )  # fmt: skip
    assert code == 0
    mined = ids_out.read_text().split()
    assert len(mined) == 10 and all(planted.in_slice[i] for i in mined)
    capsys.readouterr()
    assert (
        main(
            [
                "--data-dir",
                str(data_dir),
                "label-issues",
                "--dataset",
                "planted",
                "--train-rows",
                "skip",
                "--other-rows",
                "model",
            ]
        )
        == 0
    )
    assert "likely label mistakes" in capsys.readouterr().out
    assert main(["--data-dir", str(data_dir), "slices", "--dataset", "planted", "--top", "0"]) == 1
    assert "top_k" in capsys.readouterr().err


def test_slices_after_an_analysis_list_the_failure_clusters(env: tuple) -> None:
    """Once the dataset is analyzed, /slices carries its failure clusters beside the metadata slices
    (their summaries hold the dominant label as {value, count, share}: the response gives the class)."""
    url, store, _, _ = env
    from edgeminer.indexer.analysis.run import analyze, load_analysis

    analyze(store, "planted")
    doc = load_analysis(store, "planted")
    assert doc is not None
    failures = sorted((c for c in doc["clusters"] if c.get("failure_rank")), key=lambda c: c["failure_rank"])
    r = httpx.get(f"{url}/datasets/planted/slices", headers={"X-API-Key": KEY}, timeout=T)
    assert r.status_code == 200, r.text
    clusters = r.json()["clusters"]
    assert clusters["analyzed"] is True and clusters["stale"] is False
    assert [c["id"] for c in clusters["items"]] == [c["id"] for c in failures] and failures
    for item, summary in zip(clusters["items"], failures, strict=True):
        dominant = summary.get("dominant_label")
        assert item["dominant_label"] == (None if dominant is None else str(dominant["value"]))
