"""The notebook API (``import edgeminer``): importing it stays cheap, and the whole loop runs through it
on small synthetic data (ingest precomputed vectors -> analyze -> clusters -> mine -> select -> export
-> labels back), each call giving what the library function the CLI uses gives."""

from __future__ import annotations

import csv
import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edgeminer
from edgeminer.indexer.analysis.run import AnalysisReport
from edgeminer.indexer.errors import NotFound
from edgeminer.indexer.pipeline import IngestReport
from edgeminer.service.export.common import ExportError
from edgeminer.service.export.labels import LabelImportReport, UnknownLabels
from edgeminer.service.mining import MineResult, Seeds
from edgeminer.service.selection import SelectionError, SelectionResult, select

CLASSES = ["cat", "dog", "bird"]
N_CLUSTERS, PER_CLUSTER, DIM = 5, 40, 16
BAD_CLUSTER = 0  # the model gets this cluster wrong


def test_import_edgeminer_is_cheap() -> None:
    probe = (
        "import sys, edgeminer; heavy = ('torch', 'lancedb', 'lance', 'umap', 'hdbscan', 'sklearn', 'pandas', "
        "'pyarrow', 'numpy', 'fastapi', 'edgeminer.indexer', 'edgeminer.service'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", f"`import edgeminer` imported {out.stdout.strip()}"


def test_public_api_is_documented() -> None:
    assert edgeminer.__all__ == ["Workspace"]  # edgeminer.open stays out of `import *` (the builtin open)
    assert "Parameters" in (edgeminer.open.__doc__ or "") and "Returns" in (edgeminer.open.__doc__ or "")
    methods = ["datasets", "stats", "ingest", "analyze", "clusters", "mine", "select", "export", "import_labels"]
    for name in methods:
        doc = inspect.getdoc(getattr(edgeminer.Workspace, name)) or ""
        assert "Returns\n-------" in doc, f"Workspace.{name} documents no Returns section"
        if name != "datasets":
            assert "Parameters\n----------" in doc, f"Workspace.{name} documents no Parameters section"
            assert "Raises\n------" in doc, f"Workspace.{name} documents no Raises section"


def _manifest(folder: Path, seed: int = 0) -> tuple[Path, dict[str, str], dict[str, int]]:
    """~200 rows in 5 tight clusters of unit vectors (precomputed, dim 16) with 8x8 PNGs; cluster c has
    class CLASSES[c % 3]; the model predicts the next class, unsurely, in BAD_CLUSTER. Half the rows are
    unlabeled (split "pool"). Metadata ``slice`` names the planted failure slice. Returns the manifest,
    the true label of every row, and every row's generating cluster."""
    rng = np.random.default_rng(seed)
    img = folder / "img"
    img.mkdir(parents=True)
    centers = rng.normal(size=(N_CLUSTERS, DIM))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    rows, truth, cluster_of = [], {}, {}
    for c in range(N_CLUSTERS):
        true = c % len(CLASSES)
        bad = c == BAD_CLUSTER
        for j in range(PER_CLUSTER):
            sid = f"c{c}-{j:03d}"
            v = centers[c] + 0.08 * rng.normal(size=DIM)
            pred = (true + 1) % len(CLASSES) if bad else true
            probs = np.full(len(CLASSES), 0.0)
            probs[pred] = 0.45 + 0.1 * rng.random() if bad else 0.85 + 0.1 * rng.random()
            rest = [k for k in range(len(CLASSES)) if k != pred]
            probs[rest] = rng.dirichlet(np.ones(len(rest))) * (1 - probs[pred])
            path = img / f"{sid}.png"
            Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).save(path)
            labeled = j % 2 == 0
            row = {
                "id": sid,
                "uri": str(path),
                "split": ("val" if j % 4 == 0 else "train") if labeled else "pool",
                "probs": [round(float(p), 6) for p in probs],
                "classes": CLASSES,
                "embedding": [round(float(x), 6) for x in v / np.linalg.norm(v)],
                "slice": "bad" if bad else "none",
            }
            if labeled:
                row["label"] = CLASSES[true]
            rows.append(row)
            truth[sid] = CLASSES[true]
            cluster_of[sid] = c
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path, truth, cluster_of


def test_the_whole_loop_through_the_python_api(tmp_path: Path) -> None:
    manifest, truth, cluster_of = _manifest(tmp_path / "src")
    ws = edgeminer.open(tmp_path / "db", device="cpu")
    assert ws.data_dir == str(tmp_path / "db") and ws.datasets() == []

    # ingest: precomputed vectors, so no model is loaded
    report = ws.ingest(manifest, dataset="pets", embedder="precomputed", progress=False)
    assert isinstance(report, IngestReport)
    assert (report.total, report.ok_rows, report.error_rows) == (200, 200, 0)
    assert [d.name for d in ws.datasets()] == ["pets"]
    info = ws.datasets()[0]
    assert info.embedder == {"kind": "precomputed", "dim": DIM} and list(info.classes) == CLASSES
    assert ws.stats("pets")["rows"] == 200
    again = ws.ingest(manifest, dataset="pets", progress=False)  # the dataset's own embedder; nothing changed
    assert again.skipped == 200 and again.inserted == 0

    # analyze: UMAP + HDBSCAN; `slice` is the truth field by default
    with pytest.raises(NotFound, match="not been analyzed"):
        ws.clusters("pets")
    with pytest.raises(ValueError, match="unknown analysis parameter"):
        ws.analyze("pets", n_neighbours=5)
    stages: list[str] = []
    analysis = ws.analyze("pets", n_neighbors=10, min_cluster_size=10, progress=lambda d, t, m: stages.append(m))
    assert isinstance(analysis, AnalysisReport)
    assert analysis.mode == "fit" and analysis.rows == 200 and analysis.n_failure_clusters >= 1
    assert stages and analysis.truth_field == "slice"
    assert ws.analyze("pets", n_neighbors=10, min_cluster_size=10).mode == "reuse"

    # clusters: the failure cluster is the planted one
    failures = ws.clusters("pets")
    assert failures and all(c["is_failure"] for c in failures)
    every = ws.clusters("pets", failures_only=False)
    assert len(every) >= len(failures) and ws.clusters("pets", failures_only=False, top=1) == every[:1]
    top = failures[0]
    members = ws.store.query("pets", where=f"cluster = {int(top['id'])}", columns=["id"])["id"].to_pylist()
    assert {cluster_of[i] for i in members} == {BAD_CLUSTER}

    # mine: the unlabeled neighbours of the failure cluster's errors
    mined = ws.mine("pets", seeds={"cluster": top["id"], "failures": True}, budget=15)
    assert isinstance(mined, MineResult)
    assert len(mined.rows) == 15 and mined.seeds.ids
    assert all(cluster_of[r["id"]] == BAD_CLUSTER for r in mined.rows)
    assert all(int(r["id"][-3:]) % 2 == 1 for r in mined.rows)  # unlabeled rows only (odd j)
    assert {"uri", "pred_label", "confidence"} <= set(mined.rows[0])
    by_ids = ws.mine("pets", seeds=mined.seeds.ids, budget=15)
    assert by_ids.seeds.ids == mined.seeds.ids
    assert ws.mine("pets", Seeds(cluster=int(top["id"]), failures=True), budget=15).rows == mined.rows

    # select: the same rows as the library function, filters go through service.filters
    picked = ws.select("pets", strategy="margin", budget=20, explore=0.25, seed=3)
    assert isinstance(picked, SelectionResult)
    assert picked.counts == {"margin": 15, "explore": 5}
    direct = select(ws.store, "pets", strategy="margin", budget=20, explore=0.25, seed=3, columns=["uri", "pred_label"])
    assert picked.rows == direct.rows
    only_bad = ws.select("pets", budget=200, filters=[{"field": "slice", "op": "eq", "value": "bad"}])
    assert only_bad.rows and all(cluster_of[r["id"]] == BAD_CLUSTER for r in only_bad.rows)
    assert len(only_bad.rows) == PER_CLUSTER // 2  # the bad cluster's unlabeled half
    with pytest.raises(SelectionError, match="strategy"):
        ws.select("pets", strategy="loudest")

    # export: the mined rows as CSV, tagged `exported` so mining skips them afterwards
    with pytest.raises(ExportError, match="exactly one selection"):
        ws.export("pets", target="csv", ids=mined, issue="x")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    summary = ws.export("pets", target="csv", ids=mined, out=out_dir)
    assert summary["status"] == "done" and summary["rows_exported"] == 15 and summary["media_errors"] == 0
    assert Path(summary["zip"]).parent == out_dir and Path(summary["zip"]).is_file()
    with (Path(summary["path"]) / "samples.csv").open(encoding="utf-8") as f:
        exported = list(csv.DictReader(f))
    assert [r["id"] for r in exported] == [r["id"] for r in mined.rows]
    assert ws.export("pets", target="csv", ids=mined)["export_id"] == summary["export_id"]  # idempotent
    later = ws.mine("pets", seeds={"cluster": top["id"], "failures": True}, budget=5)
    assert not {r["id"] for r in later.rows} & {r["id"] for r in mined.rows}
    coco = ws.export("pets", target="coco", ids=[r["id"] for r in picked.rows[:3]])
    assert coco["rows_exported"] == 3

    # labels back: the labelers' answers for the exported rows, as a CSV of id, label
    answers = tmp_path / "answers.csv"
    answers.write_text("id,label\n" + "".join(f"{r['id']},{truth[r['id']]}\n" for r in exported), encoding="utf-8")
    labeled_before = ws.store.count("pets", "labeled = true")
    imported = ws.import_labels("pets", answers)
    assert isinstance(imported, LabelImportReport)
    assert imported.matched == 15 and imported.unmatched_count == 0
    assert imported.labeled_before == labeled_before and imported.labeled_after == labeled_before + 15
    rows = ws.store.get_samples("pets", [r["id"] for r in exported], columns=["id", "labeled", "correct"]).to_pylist()
    assert all(r["labeled"] and r["correct"] is False for r in rows)  # the model got the bad cluster wrong
    with pytest.raises(UnknownLabels):
        ws.import_labels("pets", b"id,label\nc1-001,platypus\n", format="csv")


def test_errors_come_from_the_library(tmp_path: Path) -> None:
    from edgeminer.indexer.errors import DatasetNotFound
    from edgeminer.indexer.sources import SourceError

    ws = edgeminer.open(tmp_path / "db")
    assert "Workspace" in repr(ws)
    with pytest.raises(SourceError, match="does not exist"):
        ws.ingest(tmp_path / "missing.csv", dataset="x", embedder="precomputed")
    with pytest.raises(DatasetNotFound):
        ws.clusters("nope")
    with pytest.raises(TypeError, match="sample ids"):
        ws.mine("nope", seeds="c0-000")
