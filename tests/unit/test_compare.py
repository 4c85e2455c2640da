"""Compare two model versions (issue 14): numbers against a small case computed by hand, the bootstrap
against the textbook normal interval and against resampling rows one by one, the per-row outcomes and
the map's outcome codes, and the CLI (`versions`, `compare`, `ingest --model-version`) end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from versiondata import LABELS, V1_PRED, V2_PRED, write_dataset, write_v2

from edgeminer.indexer.embedders import PrecomputedEmbedder
from edgeminer.indexer.errors import NotFound, ValidationFailed
from edgeminer.indexer.pipeline import ingest
from edgeminer.indexer.sources import open_source
from edgeminer.indexer.store import Store
from edgeminer.indexer.versions import ingest_predictions
from edgeminer.service.cli import main
from edgeminer.service.compare import (
    ROW_OUTCOMES,
    CompareOptions,
    compare,
    compare_rows,
    group_stats,
    outcome_page,
    point_outcomes,
)


@pytest.fixture
def two(tmp_path: Path, store: Store) -> Store:
    ingest(store, "ds", open_source(write_dataset(tmp_path)), PrecomputedEmbedder(), progress=False)
    ingest_predictions(store, "ds", "v2", source=open_source(write_v2(tmp_path)))
    return store


def hand_outcomes() -> list[str]:
    out = []
    for label, a, b in zip(LABELS, V1_PRED, V2_PRED, strict=True):
        if label is None:
            out.append("unlabeled")
        else:
            out.append({(1, 1): "still_right", (0, 1): "fixed", (1, 0): "broken", (0, 0): "still_wrong"}[
                (int(a == label), int(b == label))
            ])  # fmt: skip
    return out


def test_the_small_case_by_hand(two: Store) -> None:
    rows = compare_rows(two, "ds", "v1", "v2")
    assert rows["outcome"].to_pylist() == hand_outcomes()
    assert hand_outcomes()[:8] == ["still_right", "broken", "still_right", "still_right", "fixed", "fixed",
                                   "still_right", "broken"]  # fmt: skip
    report = compare(two, "ds", "v1", "v2")
    overall = report["overall"]
    assert (overall["n"], overall["still_right"], overall["fixed"], overall["broken"], overall["still_wrong"]) == (
        8, 4, 2, 2, 0,
    )  # fmt: skip
    assert overall["accuracy_base"]["value"] == 0.75 and overall["accuracy_new"]["value"] == 0.75
    assert overall["delta"]["value"] == 0.0 and overall["p_value"] == 1.0 and overall["verdict"] == "no_change"
    assert report["rows"]["unlabeled"] == 2 and report["rows"]["no_prediction"] == 0
    by_slice = {g["value"]: g for g in report["slices"]}
    assert by_slice == {g["value"]: g for g in report["metadata"]["slice"]}
    # image properties (all 8x8 here: one img_width value) are measurements, never groups of the table
    assert set(report["metadata"]) == {"slice"} and {"img_width", "img_near_dups"} <= set(report["skipped_fields"])
    x, y = by_slice["x"], by_slice["y"]  # x: r0-r3, one broken; y: r4-r7, two fixed, one broken
    assert (x["n"], x["fixed"], x["broken"], x["accuracy_base"]["value"], x["accuracy_new"]["value"]) == (
        4, 0, 1, 1.0, 0.75,
    )  # fmt: skip
    assert (y["n"], y["fixed"], y["broken"], y["accuracy_base"]["value"], y["accuracy_new"]["value"]) == (
        4, 2, 1, 0.5, 0.75,
    )  # fmt: skip
    classes = {g["value"]: g for g in report["classes"]}
    assert (classes["a"]["fixed"], classes["a"]["broken"], classes["b"]["fixed"], classes["b"]["broken"]) == (
        2,
        1,
        0,
        1,
    )
    for g in [overall, x, y, *report["classes"]]:  # every interval holds its point estimate
        for name in ("accuracy_base", "accuracy_new", "delta"):
            iv = g[name]
            assert iv["low"] <= iv["value"] <= iv["high"]
    assert report["clusters"] == [] and report["analysis"] is None  # not analyzed yet
    assert compare(two, "ds", "v1", "v2") == report  # seeded: the same numbers every time


def test_the_bootstrap_matches_the_normal_interval_and_row_resampling() -> None:
    counts = [500, 100, 50, 350]  # still_right, fixed, broken, still_wrong
    opts = CompareOptions(resamples=4000, seed=3)
    g = group_stats(counts, key="big", opts=opts)
    n = 1000
    d = np.repeat([0, 1, -1, 0], counts)  # per-row difference new - base
    se = d.std() / np.sqrt(n)
    assert g["delta"]["value"] == pytest.approx(0.05)
    assert g["delta"]["low"] == pytest.approx(0.05 - 1.96 * se, abs=0.003)
    assert g["delta"]["high"] == pytest.approx(0.05 + 1.96 * se, abs=0.003)
    # the same as resampling the rows one by one (the slow way)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, n, size=(2000, n))
    boot = d[idx].mean(axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    assert g["delta"]["low"] == pytest.approx(low, abs=0.004) and g["delta"]["high"] == pytest.approx(high, abs=0.004)
    acc_base = np.repeat([1, 0, 1, 0], counts)[idx].mean(axis=1)
    assert g["accuracy_base"]["low"] == pytest.approx(np.percentile(acc_base, 2.5), abs=0.004)
    assert g["verdict"] == "improvement" and g["p_value"] < 0.001
    worse = group_stats([500, 50, 100, 350], key="big", opts=opts)
    assert worse["verdict"] == "regression" and worse["delta"]["high"] < 0
    # one broken row alone is not a regression: the interval is degenerate, the exact test says p = 1
    tiny = group_stats([0, 0, 1, 0], key="one", opts=opts)
    assert tiny["delta"]["high"] == -1.0 and tiny["p_value"] == 1.0 and tiny["verdict"] == "no_change"
    assert group_stats([0, 0, 0, 0], key="none", opts=opts)["verdict"] == "no_data"


def test_rows_pages_and_map_codes(two: Store) -> None:
    page = outcome_page(two, "ds", "v1", "v2", outcome="broken")
    assert [r["id"] for r in page["items"]] == ["r1", "r7"] and page["total"] == 2
    assert page["items"][0]["base_pred"] == "a" and page["items"][0]["new_pred"] == "b"
    assert page["counts"]["fixed"] == 2 and sum(page["counts"].values()) == 10
    sliced = outcome_page(two, "ds", "v1", "v2", field="slice", value="y", outcome="fixed", limit=1)
    assert [r["id"] for r in sliced["items"]] == ["r4"] and sliced["total"] == 2
    with pytest.raises(ValidationFailed, match="outcome must be one of"):
        outcome_page(two, "ds", "v1", "v2", outcome="better")
    # the map: only analyzed rows are points; codes in the order of /points (by id)
    from edgeminer.indexer.analysis.run import analyze

    analyze(two, "ds", {"min_cluster_size": 2, "n_neighbors": 3})
    pts = point_outcomes(two, "ds", "v1", "v2")
    assert pts["count"] == 10 and pts["outcomes"] == list(ROW_OUTCOMES)
    assert [ROW_OUTCOMES[c] for c in pts["codes"]] == hand_outcomes()
    report = compare(two, "ds", "v1", "v2")
    assert report["analysis"]["stale"] is False
    assert sum(g["n"] for g in report["clusters"]) == 8


def test_bad_pairs(two: Store) -> None:
    with pytest.raises(NotFound, match=r"no model version 'v3'.*Known versions: v1, v2"):
        compare(two, "ds", "v1", "v3")
    with pytest.raises(ValidationFailed, match="compare two different versions"):
        compare(two, "ds", "v2", "v2")
    with pytest.raises(ValidationFailed, match="resamples"):
        compare(two, "ds", "v1", "v2", CompareOptions(resamples=5))


def test_cli_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "db")
    manifest = write_dataset(tmp_path)
    base = ["--data-dir", data]
    ingest_args = ["ingest", str(manifest), "--dataset", "ds", "--embedder", "precomputed", "--quiet"]
    assert main([*base, *ingest_args, "--model-version", "first"]) == 0
    assert main([*base, "ingest", str(write_v2(tmp_path)), "--dataset", "ds", "--model-version", "second"]) == 0
    assert "model version 'second' of 'ds' (manifest): 10 predictions stored" in capsys.readouterr().out
    assert main([*base, "versions", "--dataset", "ds"]) == 0
    out = capsys.readouterr().out
    assert "* first" in out and "  second" in out
    assert main([*base, "compare", "--dataset", "ds", "--base", "first", "--new", "second"]) == 0
    out = capsys.readouterr().out
    assert "compare first -> second on 'ds'" in out and "slice=y" in out
    assert main([*base, "compare", "--dataset", "ds", "--base", "first", "--new", "second", "--json"]) == 0
    import json

    assert json.loads(capsys.readouterr().out)["overall"]["fixed"] == 2
    assert main([*base, "versions", "--dataset", "ds", "--set-current", "second"]) == 0
    assert "first -> second" in capsys.readouterr().out
    assert Store(data).query("ds", columns=["pred_label"]).num_rows == 10
    # user errors: one line, exit 1, naming the known versions
    assert main([*base, "compare", "--dataset", "ds", "--base", "first", "--new", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Known versions: first, second" in err
    assert main([*base, "compare", "--dataset", "ds", "--base", "first", "--new", "first"]) == 1
    assert "compare two different versions" in capsys.readouterr().err
    assert main([*base, "versions", "--dataset", "ds", "--set-current", "nope"]) == 1
    assert main([*base, "ingest", "--dataset", "ds", "--model-version", "third"]) == 1
    assert "needs a predictions manifest (SOURCE) or --model-file" in capsys.readouterr().err


def test_notebook_api(tmp_path: Path) -> None:
    import edgeminer

    ws = edgeminer.open(tmp_path / "db")
    ingest(ws.store, "ds", open_source(write_dataset(tmp_path)), PrecomputedEmbedder(), progress=False)
    report = ws.add_version("ds", "v2", predictions=write_v2(tmp_path))
    assert report.rows == 10 and not report.current
    assert [v["name"] for v in ws.versions("ds")["versions"]] == ["v1", "v2"]
    assert ws.compare("ds", "v1", "v2")["overall"]["fixed"] == 2
    assert ws.versions("ds", set_current="v2")["current"] == "v2"


def test_the_printed_tables_say_what_they_leave_out_and_name_noise(two: Store) -> None:
    from edgeminer.indexer.analysis.run import analyze
    from edgeminer.service.cli_compare import format_compare

    analyze(two, "ds", {"min_cluster_size": 2, "n_neighbors": 3})
    report = compare(two, "ds", "v1", "v2")
    classes, clusters = report["classes"], report["clusters"]
    assert len(classes) == 2
    cut = format_compare(report, top=1)
    assert "\n... 1 more class values (--top 2 shows them all, --json every figure)" in cut
    assert "class=a" in cut and "class=b" not in cut
    whole = format_compare(report, top=2)
    assert "more class values" not in whole and "class=b" in whole
    # ten rows are too few for a cluster of HDBSCAN's: every judged row is noise, named so
    assert [g["value"] for g in clusters] == [-1]
    assert "\nnoise " in whole and "cluster -1" not in whole
