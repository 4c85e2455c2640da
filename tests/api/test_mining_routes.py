"""Mining, selection and stream routes against a real server on 127.0.0.1 (uvicorn in a thread)."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from factories import make_synthetic
from PIL import Image
from servers import LiveServer, run_schemathesis

from edgeminer.indexer.store import Store
from edgeminer.service.api.app import create_app
from edgeminer.service.settings import Settings

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Store, object]]:
    base = tmp_path_factory.mktemp("mining-api")
    store = Store(base / "db")
    syn = make_synthetic(store, "syn", n_clusters=6, per_cluster=30, error_clusters=(0, 3), seed=1)
    make_synthetic(store, "nomc", with_mc=False, seed=2)
    _ensure_correct(store, syn)
    settings = Settings(data_dir=str(base / "db"), api_key=KEY, max_budget=500, media_roots=[str(base / "media")])
    srv = LiveServer(create_app(settings, store=store))
    srv.start()
    try:
        yield f"{srv.url}/api/v1", store, syn
    finally:
        srv.stop()


@pytest.fixture
def api(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0], headers={"X-API-Key": KEY}, timeout=30) as client:
        yield client


def _ensure_correct(store: Store, syn) -> None:
    """make_synthetic builds its table with pa.Table.from_pylist, which takes the columns of the first
    row: when that row is unlabeled, ``correct`` is dropped. Write it from the generating clusters."""
    import pyarrow as pa

    labeled = [i for i in syn.ids if syn.labeled[i]]
    correct = [syn.cluster_of[i] not in syn.error_clusters for i in labeled]
    store.update_columns("syn", pa.table({"id": labeled, "correct": correct}))


def _problem(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["status"] == status and body["detail"]
    return body


def _val_failures(store: Store) -> list[str]:
    return store.query("syn", where="split = 'val' AND correct = false", columns=["id"])["id"].to_pylist()


def test_mine_returns_budget_unlabeled_neighbours(server, api: httpx.Client) -> None:
    _, store, syn = server
    seeds = _val_failures(store)
    resp = api.post("/datasets/syn/mine", json={"seeds": {"ids": seeds}, "budget": 20, "columns": ["split", "group"]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["returned"] == 20 == len(body["items"]) and body["aggregation"] == "modes"
    assert body["seeds"] == len(seeds) and body["engine"] == "exact"
    for item in body["items"]:
        assert item["split"] == "unlabeled" and item["seeds"] and 0 <= item["distance"] <= 2
        assert syn.cluster_of[item["id"]] in (0, 3)  # the error clusters the failures come from
        assert "meta_group" in item
    doc = store.get_doc("syn", "selection", body["selection_id"])
    assert doc["ids"] == [i["id"] for i in body["items"]]


@pytest.mark.parametrize("diversity", ["cover", "badge"])
def test_mine_with_an_uncertain_share(server, api: httpx.Client, diversity: str) -> None:
    """edgeminer's labeling pick over HTTP: half mined (``cover``: spread over each failure mode; this store
    has no analysis, so over its nearest rows, as the mining library documents; or BADGE within each
    mode), half by margin; an unknown diversity mode is a 422."""
    _, store, syn = server
    body = {"seeds": {"ids": _val_failures(store)}, "budget": 10, "diversity": diversity, "uncertain_share": 0.5}
    resp = api.post("/datasets/syn/mine", json=body)
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert got["returned"] == 10 and got["uncertain"] == 5
    assert all(syn.cluster_of[i["id"]] in (0, 3) for i in got["items"][:5])
    assert store.get_doc("syn", "selection", got["selection_id"])["params"]["diversity"] == diversity
    assert "diversity" in _problem(api.post("/datasets/syn/mine", json={**body, "diversity": "spread"}), 422)["detail"]
    assert [i.get("picked_by") for i in got["items"]] == [None] * 5 + ["margin"] * 5
    assert all(i["seeds"] for i in got["items"][:5]) and all(not i["seeds"] for i in got["items"][5:])
    doc = store.get_doc("syn", "selection", got["selection_id"])
    assert doc["params"]["uncertain_share"] == 0.5 and doc["ids"] == [i["id"] for i in got["items"]]
    bad = api.post("/datasets/syn/mine", json={**body, "uncertain_share": 1.5})
    assert "uncertain_share" in _problem(bad, 422)["detail"]
    bad = api.post("/datasets/syn/mine", json={**body, "uncertainty": "bald"})
    assert "uncertainty" in _problem(bad, 422)["detail"]


def test_mine_mode_weighting_is_a_request_field(server, api: httpx.Client) -> None:
    """``mode_weighting`` reaches the mining library: with ``size`` each failure mode's share of the budget
    follows its seed count alone (share_budget of the sizes), and the choice is recorded."""
    from edgeminer.service.mining.aggregation import share_budget

    _, store, _ = server
    body = {"seeds": {"ids": _val_failures(store)}, "budget": 20, "mode_weighting": "size"}
    resp = api.post("/datasets/syn/mine", json=body)
    assert resp.status_code == 200, resp.text
    modes = resp.json()["modes"]
    assert len(modes) >= 2
    assert [m["share"] for m in modes] == share_budget([float(m["size"]) for m in modes], 20)
    doc = store.get_doc("syn", "selection", resp.json()["selection_id"])
    assert doc["params"]["mode_weighting"] == "size"
    bad = api.post("/datasets/syn/mine", json={**body, "mode_weighting": "accuracy"})
    assert "mode_weighting" in _problem(bad, 422)["detail"]
    # the request's choices are the mining library's, with its default
    from typing import get_args

    from edgeminer.service.api.routes.mining import MineRequest
    from edgeminer.service.mining.aggregation import DEFAULT_MODE_WEIGHTING, MODE_WEIGHTINGS

    field = MineRequest.model_fields["mode_weighting"]
    assert set(get_args(field.annotation)) == set(MODE_WEIGHTINGS) and field.default == DEFAULT_MODE_WEIGHTING


def test_mine_seed_kinds_and_filters(server, api: httpx.Client) -> None:
    resp = api.post(
        "/datasets/syn/mine",
        json={
            "seeds": {"failures": True, "split": "val"},
            "budget": 5,
            "aggregation": "round_robin",
            "filters": [{"field": "group", "op": "eq", "value": "g3"}],
        },
    )
    assert resp.status_code == 200, resp.text
    assert all(i["id"].startswith("c3-") for i in resp.json()["items"])
    resp = api.post(
        "/datasets/syn/mine",
        json={"seeds": {"confusion": {"label": "cat", "pred_label": "dog"}}, "budget": 3},
    )
    assert resp.status_code == 200 and resp.json()["returned"] == 3
    # empty results: a filter no candidate matches
    resp = api.post(
        "/datasets/syn/mine",
        json={
            "seeds": {"failures": True},
            "budget": 5,
            "filters": [{"field": "group", "op": "eq", "value": "zzz"}],
        },
    )
    assert resp.status_code == 200 and resp.json()["items"] == [] and resp.json()["candidates"] == 0


def test_mine_bad_requests(server, api: httpx.Client) -> None:
    _problem(api.post("/datasets/syn/mine", json={"seeds": {"ids": ["c0-000", "nope"]}}), 404)
    body = _problem(api.post("/datasets/syn/mine", json={"seeds": {"ids": ["nope"]}}), 404)
    assert body["missing_ids"] == ["nope"]
    _problem(api.post("/datasets/syn/mine", json={"seeds": {"issue": "no-such-issue"}}), 404)
    _problem(api.post("/datasets/nosuch/mine", json={"seeds": {"ids": ["a"]}}), 404)
    body = _problem(api.post("/datasets/syn/mine", json={"seeds": {"failures": True}, "budget": 501}), 422)
    assert "budget-too-large" in body["type"] and body["max_budget"] == 500
    _problem(api.post("/datasets/syn/mine", json={"seeds": {"failures": True}, "budget": 0}), 422)
    _problem(api.post("/datasets/syn/mine", json={"seeds": {}}), 422)
    _problem(api.post("/datasets/syn/mine", json={"seeds": {"failures": True}, "aggregation": "median"}), 422)
    body = _problem(
        api.post(
            "/datasets/syn/mine",
            json={"seeds": {"failures": True}, "filters": [{"field": "nope", "op": "eq", "value": 1}]},
        ),
        422,
    )
    assert "unknown-field" in body["type"]
    _problem(
        api.post(
            "/datasets/syn/mine",
            json={
                "seeds": {"failures": True},
                "filters": [{"field": "brightness", "op": "contains", "value": "x"}],
            },
        ),
        422,
    )
    body = _problem(api.post("/datasets/syn/mine", json={"seeds": {"text": "a cat on a sofa"}}), 422)
    assert "text" in body["detail"]
    _problem(api.post("/datasets/syn/mine", json={"seeds": {"image_base64": "***"}}), 422)
    _problem(api.post("/datasets/syn/mine", json={"seeds": {"failures": True}, "columns": ["nope"]}), 422)


def test_writes_need_the_api_key(server) -> None:
    with httpx.Client(base_url=server[0], timeout=30) as anon:
        _problem(anon.post("/datasets/syn/mine", json={"seeds": {"failures": True}}), 401)
        _problem(anon.post("/datasets/syn/select", json={}, headers={"X-API-Key": "wrong"}), 401)
        _problem(anon.post("/datasets/syn/stream", json={}), 401)
        assert anon.get("/datasets/syn/stream/decisions").status_code == 200


def test_select_counts_and_errors(server, api: httpx.Client) -> None:
    resp = api.post("/datasets/syn/select", json={"strategy": "entropy", "budget": 10, "explore": 0.3, "seed": 4})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["counts"] == {"entropy": 7, "explore": 3} and len(body["items"]) == 10
    again = api.post("/datasets/syn/select", json={"strategy": "entropy", "budget": 10, "explore": 0.3, "seed": 4})
    assert [i["id"] for i in again.json()["items"]] == [i["id"] for i in body["items"]]
    resp = api.post(
        "/datasets/syn/select",
        json={"budget": 500, "filters": [{"field": "group", "op": "in", "value": ["g1"]}]},
    )
    assert resp.status_code == 200 and resp.json()["returned"] == resp.json()["candidates"] < 30
    body = _problem(api.post("/datasets/nomc/select", json={"strategy": "bald"}), 422)
    assert "bald" in body["detail"]
    _problem(api.post("/datasets/syn/select", json={"strategy": "vibes"}), 422)
    _problem(api.post("/datasets/syn/select", json={"explore": 2}), 422)
    _problem(api.post("/datasets/syn/select", json={"budget": 10_000}), 422)


def test_stream_decisions(server, api: httpx.Client, tmp_path: Path) -> None:
    _, store, syn = server
    rng = np.random.default_rng(0)
    sent = []
    for n in range(3):
        vec = rng.normal(size=16).tolist()
        resp = api.post(
            "/datasets/syn/stream",
            json={
                "embedding": vec,
                "probs": [0.4, 0.3, 0.3],
                "budget": 2,
                "period": "week",
                "id": f"frame-{n}",
            },
        )
        assert resp.status_code == 200, resp.text
        sent.append(resp.json()["send"])
    assert sent == [True, True, False]
    assert store.get_samples("syn", ["frame-0"]).num_rows == 1
    page = api.get("/datasets/syn/stream/decisions", params={"send": True}).json()
    assert page["total"] == 2 and all(d["send"] for d in page["items"])
    assert api.get("/datasets/syn/stream/decisions").json()["total"] == 3
    # an image upload on a precomputed dataset cannot be embedded: a 422 saying why
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    _problem(api.post("/datasets/syn/stream", json={"image_base64": b64, "probs": [0.5, 0.3, 0.2]}), 422)
    outside = tmp_path / "x.png"
    outside.write_bytes(buf.getvalue())
    _problem(api.post("/datasets/syn/stream", json={"uri": str(outside), "probs": [0.5, 0.3, 0.2]}), 403)
    _problem(api.post("/datasets/syn/stream", json={"embedding": [1.0, 2.0], "probs": [0.5, 0.3, 0.2]}), 422)
    _problem(api.post("/datasets/syn/stream", json={"embedding": vec, "probs": [0.5, 0.5]}), 422)
    _problem(
        api.post("/datasets/syn/stream", json={"embedding": vec, "probs": [0.5, 0.3, 0.2], "issues": ["x"]}),
        404,
    )
    _problem(api.get("/datasets/nosuch/stream/decisions"), 404)


@pytest.fixture(scope="module")
def demo_server(demo_env, tmp_path_factory) -> Iterator[tuple[str, Store]]:
    demo = demo_env.copy(tmp_path_factory.mktemp("demo-mining"))  # the stream tests add rows
    settings = Settings(data_dir=str(demo.data_dir), max_budget=1000)
    srv = LiveServer(create_app(settings, store=demo.store))
    srv.start()
    try:
        yield f"{srv.url}/api/v1", demo.store
    finally:
        srv.stop()


def _slice_precision(store: Store, ids: list[str]) -> float:
    slices = store.get_samples("demo", ids, columns=["meta_slice"])["meta_slice"].to_pylist()
    return float(np.mean([s not in (None, "none") for s in slices]))


@pytest.mark.slow
def test_demo_mining_beats_random_and_least_confidence(demo_server) -> None:
    base, store = demo_server
    budget = 150
    with httpx.Client(base_url=base, timeout=120) as api:
        resp = api.post("/datasets/demo/mine", json={"seeds": {"failures": True, "split": "val"}, "budget": budget})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        ids = [i["id"] for i in body["items"]]
        assert len(ids) == budget and body["aggregation"] == "modes"
        labeled = store.get_samples("demo", ids, columns=["labeled"])["labeled"].to_pylist()
        assert not any(labeled)
        lc = api.post("/datasets/demo/select", json={"strategy": "least_confidence", "budget": budget}).json()
        rnd = [
            api.post("/datasets/demo/select", json={"strategy": "random", "budget": budget, "seed": s}).json()
            for s in range(5)
        ]
    p_mine = _slice_precision(store, ids)
    p_lc = _slice_precision(store, [i["id"] for i in lc["items"]])
    p_rnd = np.mean([_slice_precision(store, [i["id"] for i in r["items"]]) for r in rnd])
    assert p_mine > p_lc and p_mine > p_rnd + 0.3, (p_mine, p_lc, p_rnd)


@pytest.mark.slow
def test_demo_stream_embeds_an_uploaded_image_with_the_dataset_model(demo_server) -> None:
    base, store = demo_server
    row = store.query("demo", where="meta_slice = 'inverted' AND labeled = false", columns=["uri"], limit=1)
    data = Path(row["uri"][0].as_py()).read_bytes()
    payload = {"image_base64": base64.b64encode(data).decode(), "budget": 1, "period": "hour", "confidence_below": 1.0}
    with httpx.Client(base_url=base, timeout=120) as api:
        first = api.post("/datasets/demo/stream", json=payload)
        assert first.status_code == 200, first.text
        doc = first.json()
        assert doc["send"] is True and doc["reasons"][0]["reason"] == "low_confidence"
        stored = store.get_samples("demo", [doc["sample_id"]], columns=["probs", "split", "embedding"]).to_pylist()[0]
        assert stored["split"] == "unlabeled" and len(stored["probs"]) == 10 and stored["embedding"]
        second = api.post("/datasets/demo/stream", json={**payload, "id": "another-frame"}).json()
        assert second["send"] is False and "budget of 1 is spent" in second["why"]


def test_mining_routes_have_no_server_errors(server, tmp_path: Path) -> None:
    """Schemathesis on the mining tag only, with the API key (so the routes run, not just the guard)."""
    base = server[0].removesuffix("/api/v1")
    result = run_schemathesis(
        base, tmp_path, "--include-tag-regex", "^mining$", "-H", f"X-API-Key: {KEY}", max_examples=8
    )
    out = result.stdout
    start = min((i for i in (out.find("= FAILURES ="), out.find("= ERRORS =")) if i >= 0), default=0)
    assert result.returncode == 0, out[start : start + 8000]
    summary = out.split("SUMMARY")[-1]
    assert "4 selected" in out or " passed" in summary, summary[:2000]
