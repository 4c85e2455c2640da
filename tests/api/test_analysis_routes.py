"""Analysis routes on a real store: the binary map, ids order, clusters, stats, problem+json errors,
and the analyze job through a live server on 127.0.0.1."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from factories import make_synthetic
from fastapi.testclient import TestClient
from servers import wait_job

from edgeminer.indexer.analysis.points import OUTCOME_CODES, decode_points
from edgeminer.indexer.analysis.run import analyze
from edgeminer.indexer.store import Store
from edgeminer.service.settings import Settings

FAST = {"n_neighbors": 10, "n_epochs": 30, "min_cluster_size": 15}
API = "/api/v1/datasets/synth"


@pytest.fixture
def analyzed(api_settings: Settings) -> Settings:
    store = Store(api_settings.data_dir)
    make_synthetic(store, "synth", n_clusters=4, per_cluster=40, error_clusters=(2,), seed=4)
    analyze(store, "synth", FAST)
    return api_settings


def test_points_blob_and_ids_line_up(analyzed: Settings, make_client: Callable[..., TestClient]) -> None:
    client = make_client(analyzed)
    r = client.get(f"{API}/points")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    header, cols = decode_points(r.content)
    assert header["format"] == "edgeminer-points/1" and header["count"] == 160 and header["analyzed"]
    assert header["outcomes"] == list(OUTCOME_CODES)
    assert (8 + len(r.content[8:]) - 13 * 160) % 4 == 0  # header padded: columns start 4-aligned
    ids = client.get(f"{API}/points/ids", params={"version": header["version"]}).json()
    assert ids["count"] == 160 and ids["ids"] == sorted(ids["ids"])
    # compare with the store row by row
    store = Store(analyzed.data_dir)
    rows = store.get_samples("synth", ids["ids"], columns=["x", "y", "cluster", "labeled", "correct"])
    assert np.allclose(cols["x"], rows["x"].to_numpy()) and np.allclose(cols["y"], rows["y"].to_numpy())
    assert cols["cluster"].tolist() == rows["cluster"].to_pylist()
    expect = [
        0 if not lab else (1 if ok else 2)
        for lab, ok in zip(rows["labeled"].to_pylist(), rows["correct"].to_pylist(), strict=True)
    ]
    assert cols["outcome"].tolist() == expect
    assert 2 in expect and 0 in expect and 1 in expect
    bx = header["bounds"]
    assert bx[0] == pytest.approx(float(cols["x"].min())) and bx[3] == pytest.approx(float(cols["y"].max()))


def test_points_before_analysis_is_an_empty_map(api_settings: Settings, make_client: Callable[..., TestClient]) -> None:
    make_synthetic(Store(api_settings.data_dir), "synth", n_clusters=2, per_cluster=10)
    client = make_client(api_settings)
    header, cols = decode_points(client.get(f"{API}/points").content)
    assert header["count"] == 0 and header["analyzed"] is False and cols["x"].size == 0
    r = client.get(f"{API}/clusters")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    assert "has not been analyzed yet" in r.json()["detail"] and "edgeminer analyze" in r.json()["detail"]


def test_clusters_and_analysis(analyzed: Settings, make_client: Callable[..., TestClient]) -> None:
    client = make_client(analyzed)
    body = client.get(f"{API}/clusters").json()
    assert body["n_clusters"] >= 3 and body["rows"] == 160
    top = body["clusters"][0]
    assert top["failure_rank"] == 1 and top["errors"] >= 3 and top["lift"] > 1
    failures = client.get(f"{API}/clusters", params={"failures_only": True}).json()["clusters"]
    assert failures and all(c["is_failure"] for c in failures)
    one = client.get(f"{API}/clusters/{top['id']}").json()
    assert one["id"] == top["id"] and one["errors"] == top["errors"] and one["run_id"] == body["run_id"]
    missing = client.get(f"{API}/clusters/999")
    assert missing.status_code == 404 and "cluster 999 does not exist" in missing.json()["detail"]
    info = client.get(f"{API}/analysis").json()
    assert info["run_id"] == body["run_id"] and info["stale_rows"] == 0 and "clusters" not in info
    assert info["params"]["n_epochs"] == 30


def test_stats_routes(analyzed: Settings, make_client: Callable[..., TestClient]) -> None:
    client = make_client(analyzed)
    labels = client.get(f"{API}/stats/labels").json()
    assert labels["classes"] == ["cat", "dog", "bird"] and labels["total"]["rows"] == 160
    val = client.get(f"{API}/stats/labels", params={"split": "val"}).json()
    assert [s["split"] for s in val["splits"]] == ["val"]
    group = client.get(f"{API}/stats/metadata/group").json()
    by = {b["value"]: b for b in group["bins"]}
    # g2 is the generator's error cluster (the model mostly predicts the wrong class there)
    assert by["g2"]["error_rate"] > 0.8 and by["g0"]["error_rate"] == 0.0
    bright = client.get(f"{API}/stats/metadata/brightness", params={"bins": 4, "scale": "linear"}).json()
    assert bright["kind"] == "numeric" and len(bright["bins"]) == 4
    assert sum(b["total"] for b in bright["bins"]) == 160
    edges = client.get(f"{API}/stats/metadata/confidence", params=[("edges", 0.0), ("edges", 0.7), ("edges", 1.0)])
    assert [b["hi"] for b in edges.json()["bins"]] == [0.7, 1.0]
    conf = client.get(f"{API}/stats/confusion").json()
    assert conf["labels"] == ["cat", "dog", "bird"] and conf["errors"] > 0
    rows = Store(analyzed.data_dir).query("synth", where="labeled AND NOT correct", columns=["label", "pred_label"])
    pairs = Counter(zip(rows["label"].to_pylist(), rows["pred_label"].to_pylist(), strict=True))
    (gt, pred), n = pairs.most_common(1)[0]
    assert conf["errors"] == rows.num_rows and conf["top_errors"][0] == {"label": gt, "pred": pred, "count": n}
    unknown = client.get(f"{API}/stats/metadata/weather")
    assert unknown.status_code == 422 and unknown.json()["field"] == "weather"
    assert "brightness" in unknown.json()["valid_fields"]
    bad = client.get(f"{API}/stats/metadata/group", params={"scale": "cubic"})
    assert bad.status_code == 422
    assert client.get("/api/v1/datasets/nope/stats/labels").status_code == 404


def test_analyze_job_on_a_live_server(api_settings: Settings, live_server: Callable[..., str]) -> None:
    store = Store(api_settings.data_dir)
    make_synthetic(store, "synth", n_clusters=3, per_cluster=40, error_clusters=(1,), seed=1)
    base = live_server(api_settings, api_key="s3cret")
    with httpx.Client(base_url=base, timeout=30) as http:
        denied = http.post(f"{API}/analyze", json=FAST)
        assert denied.status_code == 401
        bad = http.post(f"{API}/analyze", json={"pca": "maybe"}, headers={"X-API-Key": "s3cret"})
        assert bad.status_code == 422
        wrong_truth = http.post(f"{API}/analyze", json={"truth_field": "nope"}, headers={"X-API-Key": "s3cret"})
        assert wrong_truth.status_code == 422 and "truth field 'nope'" in wrong_truth.json()["detail"]
        r = http.post(f"{API}/analyze", json={**FAST, "truth_field": "group"}, headers={"X-API-Key": "s3cret"})
        assert r.status_code == 202
        job_id = r.json()["id"]
        job = wait_job(http, job_id)
        assert job["status"] == "succeeded", job
        assert job["kind"] == "analyze" and job["result"]["mode"] == "fit"
        assert job["counts"]["rows"] == 120 and job["version_written"] > job["version_read"]
        assert len(job["result"]["slices"]) == 3
        header, cols = decode_points(http.get(f"{API}/points").content)
        assert header["count"] == 120 and header["run_id"] == job_id
        assert (cols["cluster"] >= -1).all()


def test_analyze_job_fits_on_the_requested_sample(api_settings: Settings, live_server: Callable[..., str]) -> None:
    """``sample_rows`` in the request: the map is fitted on that many rows and every other row is placed."""
    store = Store(api_settings.data_dir)
    make_synthetic(store, "synth", n_clusters=3, per_cluster=40, error_clusters=(1,), seed=1)
    base = live_server(api_settings)
    with httpx.Client(base_url=base, timeout=30) as http:
        too_small = http.post(f"{API}/analyze", json={**FAST, "sample_rows": 3})
        assert too_small.status_code == 422 and "sample_rows" in too_small.text
        r = http.post(f"{API}/analyze", json={**FAST, "sample_rows": 60})
        assert r.status_code == 202
        job = wait_job(http, r.json()["id"])
        assert job["status"] == "succeeded", job
        assert job["counts"]["fitted"] == 60 and job["counts"]["placed"] == 60
        header, cols = decode_points(http.get(f"{API}/points").content)
        assert header["count"] == 120 and np.isfinite(cols["x"]).all()


def test_outcome_codes_cover_every_combination() -> None:
    """The vectorised codes: a labeled row's stored outcome wins, else correct/wrong from ``correct``,
    else no_prediction; an unlabeled row is 0 whatever else it holds (nulls included)."""
    import pyarrow as pa

    from edgeminer.indexer.analysis.points import OUTCOME_CODES, outcome_codes

    rows = [
        # labeled, correct, outcome -> expected
        (True, True, None, "correct"),
        (True, False, None, "wrong_class"),
        (True, None, None, "no_prediction"),
        (True, True, "false_positive", "false_positive"),
        (True, None, "false_negative", "false_negative"),
        (True, False, "something else", "wrong_class"),
        (False, True, "correct", "unlabeled"),
        (None, None, None, "unlabeled"),
    ]
    table = pa.table(
        {
            "labeled": pa.array([r[0] for r in rows], pa.bool_()),
            "correct": pa.array([r[1] for r in rows], pa.bool_()),
            "outcome": pa.array([r[2] for r in rows], pa.string()),
        }
    )
    assert [OUTCOME_CODES[c] for c in outcome_codes(table)] == [r[3] for r in rows]
    assert outcome_codes(table.slice(0, 0)).dtype.name == "uint8"
