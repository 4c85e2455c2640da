"""Close the demo's loop (issue 14): retrain the demo CNN on the train split plus the labels the round trip
imported (they land in ``train``), run the new model over every row of the dataset and store its
predictions as a second model version, embeddings and labels untouched. ``edgeminer compare --base v1
--new v2 --split val`` then shows what the labels bought, per slice and per failure cluster.

Used by ``edgeminer demo --retrain`` (after the analysis and the round trip), the tests and bench/al.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeminer.indexer.demo import CLASSES, DATASET, export_torchscript, train_model
from edgeminer.indexer.errors import ValidationFailed
from edgeminer.indexer.store import Store
from edgeminer.indexer.versions import VersionReport, check_version_name, ingest_predictions
from edgeminer.indexer.where import ok_and


@dataclass
class RetrainResult:
    """The retrained model and the version its predictions were stored as."""

    dataset: str
    version: str
    model_file: str
    train_rows: int
    train_accuracy: float
    train_seconds: float
    report: VersionReport
    per_slice_train: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        slices = ", ".join(f"{k} {v}" for k, v in sorted(self.per_slice_train.items()))
        return (
            f"retrained the demo model on {self.train_rows} labeled train rows ({slices}): train accuracy "
            f"{self.train_accuracy:.1%}, {self.train_seconds:.1f} s; {self.report.summary()}"
        )


def training_rows(store: Store, dataset: str = DATASET) -> tuple[list[str], list[str], list[str], list[str]]:
    """(ids, uris, labels, slices) of the labeled train rows, sorted by id (the demo's own train split and
    every label imported into it)."""
    cols = ["id", "uri", "label"]
    has_slice = "meta_slice" in store.schema(dataset).names
    table = store.query(
        dataset,
        where=ok_and("labeled = true", "split = 'train'", "label IS NOT NULL"),
        columns=cols + (["meta_slice"] if has_slice else []),
    ).sort_by("id")
    slices = table["meta_slice"].to_pylist() if has_slice else ["none"] * table.num_rows
    return table["id"].to_pylist(), table["uri"].to_pylist(), table["label"].to_pylist(), slices


def load_images(uris: list[str]) -> np.ndarray:
    """The demo images as model inputs: (n, 1, 32, 32) float32 in [-1, 1], as the demo trained on them."""
    from PIL import Image

    out = np.zeros((len(uris), 1, 32, 32), dtype=np.float32)
    for i, uri in enumerate(uris):
        with Image.open(uri) as img:
            out[i, 0] = np.asarray(img.convert("L").resize((32, 32)), dtype=np.float32) / 255.0 * 2 - 1
    return out


def retrain_demo(
    store: Store,
    demo_dir: str | Path,
    *,
    version: str = "v2",
    dataset: str = DATASET,
    seed: int = 0,
    epochs: int = 12,
    mc_passes: int = 10,
    make_current: bool = False,
    progress: bool = False,
) -> RetrainResult:
    """Train the demo CNN (same architecture, seed and epochs as ``build_demo``) on the labeled train rows
    and ingest its predictions over the whole dataset as model version ``version``.

    Raises: ValidationFailed (a bad version name, no labeled train rows, labels the model cannot learn).
    """
    import torch

    check_version_name(version)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    ids, uris, labels, slices = training_rows(store, dataset)
    if not ids:
        raise ValidationFailed(f"dataset {dataset!r} has no labeled train rows to retrain on", field="dataset")
    unknown = sorted({lb for lb in labels if lb not in CLASSES})
    if unknown:
        raise ValidationFailed(f"labels the demo model cannot learn: {', '.join(unknown[:10])}", field="label")
    started = time.perf_counter()
    target = np.array([CLASSES.index(lb) for lb in labels], dtype=np.int64)
    model, acc = train_model(load_images(uris), target, seed=seed, epochs=epochs)
    model_file = Path(demo_dir).resolve() / f"digits_cnn_{version}.pt"
    model_file.parent.mkdir(parents=True, exist_ok=True)
    export_torchscript(model, model_file)
    seconds = time.perf_counter() - started
    report = ingest_predictions(
        store,
        dataset,
        version,
        model_file=str(model_file),
        mc_passes=mc_passes,
        device="cpu",
        batch_size=256,
        make_current=make_current,
        progress=progress,
    )
    per_slice: dict[str, int] = {}
    for s in slices:
        per_slice[str(s)] = per_slice.get(str(s), 0) + 1
    return RetrainResult(dataset, version, str(model_file), len(ids), acc, seconds, report, per_slice)


def summary_dict(result: RetrainResult) -> dict[str, Any]:
    """The result as JSON-able data."""
    return {
        "dataset": result.dataset,
        "version": result.version,
        "model_file": result.model_file,
        "train_rows": result.train_rows,
        "train_accuracy": result.train_accuracy,
        "train_seconds": round(result.train_seconds, 3),
        "per_slice_train": result.per_slice_train,
        "report": result.report.as_dict(),
    }
