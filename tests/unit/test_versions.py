"""Model versions (issue 14): the first ingest records its predictions as v1, a second model's predictions
land as another version without touching embeddings or labels, and making a version current switches what
selection, mining and the analysis read. Real ingest (pipeline, precomputed vectors, PNG files), real store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from PIL import Image
from versiondata import LABELS, V1_PRED, V2_PRED, write_dataset, write_v2

from edgeminer.indexer.embedders import PrecomputedEmbedder
from edgeminer.indexer.errors import InvalidSource, NotFound, NotSupported, SchemaMismatch, ValidationFailed
from edgeminer.indexer.pipeline import ingest
from edgeminer.indexer.sources import open_source
from edgeminer.indexer.store import Store
from edgeminer.indexer.versions import (
    ingest_predictions,
    list_versions,
    record_ingest_version,
    registry,
    require_version,
    set_current,
)


@pytest.fixture
def ds(tmp_path: Path, store: Store) -> Store:
    ingest(store, "ds", open_source(write_dataset(tmp_path)), PrecomputedEmbedder(), progress=False)
    return store


def _column(store: Store, col: str) -> list[Any]:
    return store.query("ds", columns=["id", col]).sort_by("id")[col].to_pylist()


def test_the_first_ingest_is_version_v1(ds: Store) -> None:
    reg = list_versions(ds, "ds")
    assert reg["current"] == reg["ingest_version"] == "v1"
    assert [(v["name"], v["kind"], v["rows"]) for v in reg["versions"]] == [("v1", "ingest", 10)]
    preds = ds.query_predictions("ds", "v1", columns=["pred_label", "probs"])
    assert preds["id"].to_pylist() == [f"r{i}" for i in range(10)]
    assert preds["pred_label"].to_pylist() == V1_PRED
    # re-running the same ingest writes nothing new: v1 stays as it was
    before = ds.prediction_counts("ds")
    assert before == {"v1": 10}


def test_a_new_version_keeps_embeddings_and_labels_byte_equal(tmp_path: Path, ds: Store) -> None:
    keep = ["id", "embedding", "label", "labeled", "split", "meta_slice", "uri", "fingerprint", "x", "y", "tags"]
    before = ds.query("ds", columns=keep).sort_by("id")
    samples_before = ds.query("ds").sort_by("id")
    report = ingest_predictions(ds, "ds", "v2", source=open_source(write_v2(tmp_path)))
    assert report.rows == 10 and report.error_count == 0 and not report.current
    after = ds.query("ds", columns=keep).sort_by("id")
    assert after.equals(before)  # embeddings, labels, metadata: byte-equal
    assert ds.query("ds").sort_by("id").equals(samples_before)  # v1 current: the samples table is untouched
    v2 = ds.query_predictions("ds", "v2")
    assert v2["pred_label"].to_pylist() == V2_PRED
    assert v2["model_version"].to_pylist() == ["v2"] * 10
    assert all(m is not None for m in v2["margin"].to_pylist())
    assert [v["name"] for v in list_versions(ds, "ds")["versions"]] == ["v1", "v2"]


def test_set_current_switches_predictions_scores_and_correctness(tmp_path: Path, ds: Store) -> None:
    ingest_predictions(ds, "ds", "v2", source=open_source(write_v2(tmp_path)))
    emb_before = ds.query("ds", columns=["id", "embedding", "label"]).sort_by("id")
    out = set_current(ds, "ds", "v2")
    assert out["previous"] == "v1" and out["current"] == "v2" and registry(ds, "ds")["current"] == "v2"  # type: ignore[index]
    assert _column(ds, "pred_label") == V2_PRED
    correct = [None if lb is None else lb == p for lb, p in zip(LABELS, V2_PRED, strict=True)]
    assert _column(ds, "correct") == correct
    assert _column(ds, "model_version") == ["v2"] * 10
    v2_margin = ds.query_predictions("ds", "v2", columns=["margin"])["margin"].to_pylist()
    assert _column(ds, "margin") == v2_margin
    assert ds.query("ds", columns=["id", "embedding", "label"]).sort_by("id").equals(emb_before)
    # and back: v1's values, exactly as the ingest wrote them
    set_current(ds, "ds", "v1")
    assert _column(ds, "pred_label") == V1_PRED
    assert _column(ds, "correct") == [None if lb is None else lb == p for lb, p in zip(LABELS, V1_PRED, strict=True)]


def test_set_current_switches_what_selection_mining_and_analysis_read(tmp_path: Path, ds: Store) -> None:
    from edgeminer.indexer.analysis.run import analyze, load_analysis
    from edgeminer.service.mining import Seeds, mine
    from edgeminer.service.selection import select

    ingest_predictions(ds, "ds", "v2", source=open_source(write_v2(tmp_path)))

    def state() -> tuple[list[str], list[str], tuple[int, list[str]]]:
        picked = select(ds, "ds", strategy="margin", budget=2, include_labeled=True)
        seeds = mine(ds, "ds", Seeds(failures=True), budget=1).seeds.ids
        analyze(ds, "ds", {"min_cluster_size": 2, "n_neighbors": 3}, refit=True)
        doc = load_analysis(ds, "ds") or {}
        wrong_in_clusters = sorted(i for c in doc["clusters"] for i in c["worst_failures"])
        return [r["id"] for r in picked.rows], sorted(seeds), (doc["errors"], wrong_in_clusters)

    sel1, seeds1, errors1 = state()
    set_current(ds, "ds", "v2")
    sel2, seeds2, errors2 = state()
    wrong = {1: ["r4", "r5"], 2: ["r1", "r7"]}
    assert seeds1 == wrong[1] and seeds2 == wrong[2]
    assert errors1 == (2, wrong[1]) and errors2 == (2, wrong[2])  # the analysis counts the current version's
    # margin = 1 - (p1 - p2): v1's least sure rows are its last ones, v2's its first ones
    assert sel1 == ["r9", "r8"] and sel2 == ["r0", "r1"]


def test_an_ordinary_ingest_while_another_version_is_current(tmp_path: Path, ds: Store) -> None:
    ingest_predictions(ds, "ds", "v2", source=open_source(write_v2(tmp_path)), make_current=True)
    assert _column(ds, "pred_label") == V2_PRED
    # a changed row comes in through the ordinary ingest: recorded under v1, the samples keep showing v2
    manifest = tmp_path / "m.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows[0]["probs"] = [0.1, 0.9]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ingest(ds, "ds", open_source(manifest), PrecomputedEmbedder(), progress=False)
    assert ds.query_predictions("ds", "v1", ids=["r0"])["pred_label"].to_pylist() == ["b"]
    assert _column(ds, "pred_label") == V2_PRED


def test_pred_label_and_score_versions_and_refused_rows(tmp_path: Path, ds: Store) -> None:
    extra = [
        {"id": "nope", "uri": str(tmp_path / "img" / "0.png"), "pred_label": "a", "score": 0.5},
        {"id": "r0", "uri": str(tmp_path / "img" / "0.png"), "pred_label": "b", "score": 0.5},
    ]
    report = ingest_predictions(ds, "ds", "v3", source=open_source(write_v2(tmp_path, with_probs=False, extra=extra)))
    assert report.rows == 10 and report.error_count == 2
    errors = {e["id"]: e["error"] for e in report.errors}
    dup = next(k for k in errors if k.startswith("r0#dup"))  # the manifest reader renames a repeated id
    assert "no ok row with this id" in errors["nope"] and "duplicate id" in errors[dup]
    v3 = ds.query_predictions("ds", "v3", columns=["pred_label", "confidence", "least_confidence", "probs"])
    assert v3["pred_label"].to_pylist() == V2_PRED
    assert v3["confidence"].to_pylist() == pytest.approx([0.8] * 10)
    assert v3["probs"].null_count == 10


def test_bad_input(tmp_path: Path, ds: Store) -> None:
    with pytest.raises(NotFound, match=r"no model version 'v9'.*Known versions: v1"):
        require_version(ds, "ds", "v9")
    with pytest.raises(NotFound, match="Known versions: v1"):
        set_current(ds, "ds", "v9")
    with pytest.raises(ValidationFailed, match="not valid"):
        ingest_predictions(ds, "ds", "../x", source=open_source(write_v2(tmp_path)))
    with pytest.raises(ValidationFailed, match="exactly one"):
        ingest_predictions(ds, "ds", "v2")
    bad_classes = tmp_path / "c.jsonl"
    bad_classes.write_text(json.dumps({"id": "r0", "uri": "x.png", "probs": [0.5, 0.5], "classes": ["a", "z"]}) + "\n")
    with pytest.raises(SchemaMismatch, match="classes dataset 'ds' does not have: z"):
        ingest_predictions(ds, "ds", "v2", source=open_source(bad_classes))
    nothing = tmp_path / "n.jsonl"
    nothing.write_text(json.dumps({"id": "zz", "uri": "x.png", "pred_label": "a"}) + "\n")
    with pytest.raises(InvalidSource, match="no prediction could be matched"):
        ingest_predictions(ds, "ds", "v2", source=open_source(nothing))
    assert [v["name"] for v in list_versions(ds, "ds")["versions"]] == ["v1"]


def test_a_dataset_from_before_versions_gets_v1_when_a_version_is_added(tmp_path: Path, store: Store) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from factories import make_synthetic

    syn = make_synthetic(store, "old")
    assert list_versions(store, "old")["versions"] == []
    rows = [{"id": i, "uri": f"/synthetic/{i}.png", "pred_label": "cat", "score": 0.9} for i in syn.ids]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ingest_predictions(store, "old", "cats", source=open_source(path))
    reg = list_versions(store, "old")
    assert [(v["name"], v["rows"]) for v in reg["versions"]] == [("v1", 200), ("cats", 200)]
    assert reg["current"] == "v1" and reg["versions"][0]["model"] == "synthetic-1"


def _coco(tmp_path: Path, results: list[dict[str, Any]], name: str) -> tuple[Path, Path, Path]:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    Image.new("RGB", (100, 80)).save(images / "one.png")
    Image.new("RGB", (60, 60)).save(images / "two.png")
    gt = {
        "images": [
            {"id": 1, "file_name": "one.png", "width": 100, "height": 80},
            {"id": 2, "file_name": "two.png", "width": 60, "height": 60},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20]},
            {"id": 11, "image_id": 1, "category_id": 2, "bbox": [50, 40, 30, 30]},
            {"id": 12, "image_id": 2, "category_id": 1, "bbox": [5, 5, 10, 10]},
        ],
    }
    gt_path = tmp_path / "instances.json"
    gt_path.write_text(json.dumps(gt))
    res = tmp_path / f"{name}.json"
    res.write_text(json.dumps(results))
    return gt_path, res, images


V1_DETECTIONS = [
    {"image_id": 1, "category_id": 1, "bbox": [1, 1, 20, 20], "score": 0.9},  # ann 10: correct
    {"image_id": 1, "category_id": 1, "bbox": [52, 42, 30, 30], "score": 0.8},  # ann 11: wrong class
    {"image_id": 1, "category_id": 2, "bbox": [0, 50, 10, 10], "score": 0.7},  # false positive
    {"image_id": 2, "category_id": 2, "bbox": [40, 40, 15, 15], "score": 0.6},  # false positive; ann 12 missed
]
V2_DETECTIONS = [
    {"image_id": 1, "category_id": 2, "bbox": [1, 1, 20, 20], "score": 0.9},  # ann 10: now wrong (broken)
    {"image_id": 1, "category_id": 2, "bbox": [52, 42, 30, 30], "score": 0.8},  # ann 11: fixed
    {"image_id": 2, "category_id": 1, "bbox": [5, 5, 10, 10], "score": 0.7},  # ann 12: found (fixed)
    {"image_id": 2, "category_id": 2, "bbox": [40, 0, 15, 15], "score": 0.6},  # false positive
]


def test_detection_versions_compare_objects(tmp_path: Path, store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    """A detector's new COCO results: each ground-truth object's outcome under v1 and v2, false positives
    counted per version (new boxes are not rows: they would need embeddings)."""
    from edgeminer.service.compare import compare

    gt, v1, images = _coco(tmp_path, V1_DETECTIONS, "v1")
    records = list(open_source(gt, coco_results=v1, image_root=images))
    store.create_dataset("det", dim=4, embedder={"kind": "precomputed"}, classes=["cat", "dog"], task="detection")
    rows = [
        {"id": r.id, "uri": r.uri, "parent_id": r.parent_id, "bbox": r.bbox, "label": r.label,
         "pred_label": r.pred_label, "outcome": r.outcome, "correct": r.outcome == "correct", "labeled": True,
         "split": "val", "status": "ok", "confidence": r.score}
        for r in records
    ]  # fmt: skip
    vectors = pa.array([[1.0, float(n), 0.0, 0.5] for n in range(len(rows))], pa.list_(pa.float32(), 4))
    store.upsert_samples("det", pa.Table.from_pylist(rows).append_column("embedding", vectors))
    record_ingest_version(store, "det", name=None, model="det-1", since=None)
    _, v2, _ = _coco(tmp_path, V2_DETECTIONS, "v2")
    report = ingest_predictions(store, "det", "v2", source=open_source(gt, coco_results=v2, image_root=images))
    assert (report.rows, report.error_count) == (3, 0)
    entry = require_version(store, "det", "v2")
    assert entry["kind"] == "coco" and entry["false_positives"] == 1

    out = compare(store, "det", "v1", "v2")
    overall = out["overall"]
    assert (overall["n"], overall["fixed"], overall["broken"], overall["still_right"]) == (3, 2, 1, 0)
    assert out["detection"]["transitions"] == {
        "correct": {"wrong_class": 1}, "wrong_class": {"correct": 1}, "false_negative": {"correct": 1},
    }  # fmt: skip
    assert out["detection"]["false_positives"] == {"v1": 2, "v2": 1}
    assert out["rows"]["no_prediction"] == 2  # v1's false-positive rows: v2 has no box there

    set_current(store, "det", "v2")
    now = {r["id"]: r["outcome"] for r in store.query("det", columns=["id", "outcome"]).to_pylist()}
    assert sorted(v for v in now.values() if v) == ["correct", "correct", "wrong_class"]
    # the same through the CLI: `ingest GT --coco-results NEW --model-version NAME`, then `compare`
    from edgeminer.service.cli import main

    cli = ["--data-dir", store.uri]
    args = ["ingest", str(gt), "--coco-results", str(v2), "--image-root", str(images), "--dataset", "det"]
    assert main([*cli, *args, "--model-version", "v2b", "--quiet"]) == 0
    assert main([*cli, "compare", "--dataset", "det", "--base", "v1", "--new", "v2b"]) == 0
    assert "false positives (detections matching no object): v1 2, v2b 1" in capsys.readouterr().out
    # a model file or a manifest cannot be a detector's version
    with pytest.raises(NotSupported, match="detection dataset"):
        ingest_predictions(store, "det", "v3", model_file="/nowhere.pt")
    with pytest.raises(ValidationFailed, match="COCO results"):
        ingest_predictions(store, "det", "v3", source=open_source(gt, image_root=images))
