"""The bundled demo: scikit-learn's digits with planted long-tail slices, and a model that fails on them.

Nothing is downloaded. ``build_demo``:

1. writes the 1,797 8x8 digits as 32x32 PNGs, split into train / val / unlabeled pool;
2. plants four hidden slices (``inverted``, ``rotated``, ``thick``, ``small``) that are rare in train
   (about 1% of it) and common in val and the pool, recording the slice in the metadata column ``slice``
   (``none`` for ordinary digits) that the model never sees;
3. trains a small CNN on train on the CPU (seconds), exports it as TorchScript returning
   ``(embedding, logits)`` with its preprocessing and class names inside the file;
4. ingests everything through the ordinary pipeline with the ``torchscript`` embedder and MC dropout,
   so the demo exercises the same path a user's data takes.

It also writes ``pool_truth.csv`` (id, label of every unlabeled row), the "labelers' answer" for the
label round trip.
"""

from __future__ import annotations

import csv
import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeminer.indexer.store import Store

DATASET = "demo"
SLICES = ("inverted", "rotated", "thick", "small")
IMAGE_SIZE = 32
CLASSES = [str(d) for d in range(10)]
# share of each split drawn from the slices (spread evenly over the four)
SLICE_SHARE = {"train": 0.012, "val": 0.30, "unlabeled": 0.40}
SPLIT_SIZES = {"train": 900, "val": 400}  # the rest (497) is the unlabeled pool
#: torch threads while the demo model is trained and the demo ingested, whatever the process had set
DEMO_TORCH_THREADS = 2


@dataclass
class DemoSummary:
    dataset: str
    rows: int
    per_split: dict[str, int]
    per_slice: dict[str, dict[str, int]]
    val_errors: int
    val_errors_in_slices: int
    train_seconds: float
    ingest_seconds: float
    train_accuracy: float
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def slice_error_share(self) -> float:
        return self.val_errors_in_slices / self.val_errors if self.val_errors else 0.0

    def describe(self) -> str:
        lines = [
            f"demo dataset {self.dataset!r}: {self.rows} rows "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.per_split.items())),
            f"model: small CNN, train accuracy {self.train_accuracy:.1%}, trained in {self.train_seconds:.1f} s; "
            f"ingest {self.ingest_seconds:.1f} s",
            f"val errors: {self.val_errors}, of which {self.val_errors_in_slices} in the planted slices "
            f"({self.slice_error_share:.0%})",
            f"{'slice':<10}{'train':>7}{'val':>6}{'pool':>6}{'val err':>9}",
        ]
        for name, c in self.per_slice.items():
            lines.append(
                f"{name:<10}{c.get('train', 0):>7}{c.get('val', 0):>6}{c.get('unlabeled', 0):>6}"
                f"{c.get('val_errors', 0):>9}"
            )
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------


def _render(digit: np.ndarray, slice_name: str, rng: np.random.Generator) -> Any:
    """An 8x8 digit (0..16) as a 32x32 grayscale PIL image, transformed for its slice."""
    from PIL import Image, ImageFilter

    base = Image.fromarray((digit / 16.0 * 255).astype(np.uint8), mode="L").resize(
        (IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR
    )
    if slice_name == "inverted":
        return Image.fromarray(255 - np.asarray(base))
    if slice_name == "rotated":
        return base.rotate(90 if rng.random() < 0.5 else 270)
    if slice_name == "thick":
        return base.filter(ImageFilter.MaxFilter(9))
    if slice_name == "small":
        # a small digit off in a corner: the "tiny object" long tail
        small = base.resize((12, 12), Image.Resampling.BILINEAR)
        canvas = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE))
        corner = int(rng.integers(0, 4))
        x = 2 if corner in (0, 2) else IMAGE_SIZE - 14
        y = 2 if corner in (0, 1) else IMAGE_SIZE - 14
        canvas.paste(small, (x, y))
        return canvas
    return base


def _plan(n: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Split and slice for every digit index."""
    order = rng.permutation(n)
    splits = np.empty(n, dtype=object)
    a, b = SPLIT_SIZES["train"], SPLIT_SIZES["train"] + SPLIT_SIZES["val"]
    splits[order[:a]] = "train"
    splits[order[a:b]] = "val"
    splits[order[b:]] = "unlabeled"
    slices = np.full(n, "none", dtype=object)
    for split, share in SLICE_SHARE.items():
        idx = np.flatnonzero(splits == split)
        k = int(round(share * len(idx)))
        chosen = rng.choice(idx, size=k, replace=False)
        for j, i in enumerate(chosen):
            slices[i] = SLICES[j % len(SLICES)]
    return list(splits), list(slices)


# ---------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------


def _make_model() -> Any:
    import torch
    from torch import nn

    class DigitNet(nn.Module):
        """conv-conv-fc: a 64-d embedding (the penultimate layer), dropout, then 10 logits."""

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )
            self.embed = nn.Sequential(nn.Flatten(), nn.Linear(32 * 8 * 8, 64), nn.ReLU())
            self.dropout = nn.Dropout(0.3)
            self.head = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            e = self.embed(self.features(x))
            return e, self.head(self.dropout(e))

    return DigitNet()


def train_model(images: np.ndarray, labels: np.ndarray, *, seed: int = 0, epochs: int = 12) -> tuple[Any, float]:
    """Train on (n, 1, 32, 32) float images normalised to [-1, 1]; returns the model, train accuracy."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = _make_model()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x = torch.from_numpy(images)
    y = torch.from_numpy(labels.astype(np.int64))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), 64):
            idx = perm[start : start + 64]
            opt.zero_grad()
            _, logits = model(x[idx])
            loss = nn.functional.cross_entropy(logits, y[idx])
            loss.backward()
            opt.step()
    model.eval()
    with torch.inference_mode():
        acc = float((model(x)[1].argmax(1) == y).float().mean())
    return model, acc


def export_torchscript(model: Any, path: Path) -> None:
    import torch

    with warnings.catch_warnings():  # TorchScript is deprecated in torch 2.9+, still the portable format
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(model)
    meta = {"classes": CLASSES, "image_size": IMAGE_SIZE, "channels": 1, "mean": [0.5], "std": [0.5]}
    scripted.save(str(path), _extra_files={"edgeminer.json": json.dumps(meta)})


# ---------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------


def build_demo(
    demo_dir: str | Path,
    store: Store,
    *,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
    mc_passes: int = 10,
    workers: int = 2,
) -> DemoSummary:
    """Render the demo digits, train the demo model and ingest the demo dataset.

    Parameters
    ----------
    demo_dir, store
        Where images, manifests and model are kept between runs; the store to ingest into.
    seed, force, progress, mc_passes, workers
        Seeds everything; redo it all (dropping the dataset); show the ingest's progress bar; the
        embedder's MC-dropout passes; the ingest's decoding threads.

    Returns
    -------
    DemoSummary
        Row counts per split and slice, validation errors, timings and the ingest report.

    Raises
    ------
    Exception
        Whatever training or the ingest raises.
    """
    import torch

    threads = torch.get_num_threads()
    # a fixed thread count: torch's float sums are split by thread, so the trained model (and with it every
    # demo figure) differed between a process at 1 thread and one at 2 (small slice recall 0.49 vs 0.53)
    torch.set_num_threads(DEMO_TORCH_THREADS)
    try:
        return _build_demo(
            demo_dir, store, seed=seed, force=force, progress=progress, mc_passes=mc_passes, workers=workers
        )
    finally:
        torch.set_num_threads(threads)


def _build_demo(
    demo_dir: str | Path, store: Store, *, seed: int, force: bool, progress: bool, mc_passes: int, workers: int
) -> DemoSummary:
    from sklearn.datasets import load_digits

    demo_dir = Path(demo_dir).resolve()
    img_dir = demo_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    if force and store.has_dataset(DATASET):
        store.drop_dataset(DATASET)

    digits = load_digits()
    rng = np.random.default_rng(seed)
    n = len(digits.images)
    splits, slices = _plan(n, rng)
    manifest = demo_dir / "manifest.csv"
    ids = [f"digit-{i:04d}" for i in range(n)]
    arrays = _render_images(digits.images, ids, slices, img_dir, seed=seed, force=force)
    _write_manifests(manifest, demo_dir / "pool_truth.csv", ids, splits, slices, digits.target, arrays)

    model_path = demo_dir / "digits_cnn.pt"
    t0 = time.perf_counter()
    acc = _train_or_load(demo_dir, model_path, arrays, digits.target, splits, seed=seed, force=force)
    train_seconds = time.perf_counter() - t0

    t1 = time.perf_counter()
    report = _ingest_demo(store, manifest, model_path, seed, mc_passes, workers, progress)
    ingest_seconds = time.perf_counter() - t1
    return _demo_summary(store, train_seconds, ingest_seconds, acc, report.as_dict())


def _demo_summary(
    store: Store, train_seconds: float, ingest_seconds: float, acc: float, report: dict[str, Any]
) -> DemoSummary:
    """Count the ingested rows per split and slice, and the validation errors."""
    table = store.query(DATASET, columns=["split", "correct", "meta_slice"]).to_pylist()
    per_split, per_slice, val_errors, val_errors_in_slices = _tally(table)
    return DemoSummary(
        dataset=DATASET,
        rows=len(table),
        per_split=per_split,
        per_slice=per_slice,
        val_errors=val_errors,
        val_errors_in_slices=val_errors_in_slices,
        train_seconds=train_seconds,
        ingest_seconds=ingest_seconds,
        train_accuracy=acc,
        report=report,
    )


def _ingest_demo(
    store: Store, manifest: Path, model_path: Path, seed: int, mc_passes: int, workers: int, progress: bool
) -> Any:
    """Ingest the manifest with the demo model; the ingest report."""
    from edgeminer.indexer.embedders import TorchScriptEmbedder
    from edgeminer.indexer.pipeline import ingest
    from edgeminer.indexer.sources import open_source

    embedder = TorchScriptEmbedder(model_path, mc_passes=mc_passes, device="cpu", seed=seed)
    source = open_source(manifest, kind="manifest")
    return ingest(store, DATASET, source, embedder, batch_size=128, workers=workers, progress=progress)


def _render_images(
    images: np.ndarray, ids: list[str], slices: Sequence[str], img_dir: Path, *, seed: int, force: bool
) -> np.ndarray:
    """Render each digit to ``img_dir`` (kept unless ``force``); the images as model inputs in [-1, 1]."""
    n = len(ids)
    arrays = np.zeros((n, 1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for i in range(n):
        img = _render(images[i], slices[i], np.random.default_rng(seed * 100_003 + i))
        path = img_dir / f"{ids[i]}.png"
        if force or not path.exists():
            img.save(path)
        arrays[i, 0] = np.asarray(img, dtype=np.float32) / 255.0 * 2 - 1
    return arrays


def _write_manifests(
    manifest: Path,
    truth: Path,
    ids: list[str],
    splits: Sequence[str],
    slices: Sequence[str],
    target: np.ndarray,
    arrays: np.ndarray,
) -> None:
    """The ingest manifest (unlabeled rows without label) and the pool's hidden ground truth."""
    n = len(ids)
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "uri", "split", "label", "slice", "ink"])
        for i in range(n):
            label = str(target[i]) if splits[i] != "unlabeled" else ""
            ink = round(float((arrays[i, 0] > 0).mean()), 4)
            w.writerow([ids[i], f"images/{ids[i]}.png", splits[i], label, slices[i], ink])
    with open(truth, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label", "slice"])
        for i in range(n):
            if splits[i] == "unlabeled":
                w.writerow([ids[i], str(target[i]), slices[i]])


def _train_or_load(
    demo_dir: Path,
    model_path: Path,
    arrays: np.ndarray,
    target: np.ndarray,
    splits: Sequence[str],
    *,
    seed: int,
    force: bool,
) -> float:
    """Train and export the model on the train split (unless it exists); its train accuracy."""
    n = len(splits)
    train_idx = np.array([i for i in range(n) if splits[i] == "train"])
    if force or not model_path.exists():
        model, acc = train_model(arrays[train_idx], target[train_idx], seed=seed)
        export_torchscript(model, model_path)
        (demo_dir / "model.json").write_text(json.dumps({"train_accuracy": acc}))
        return acc
    return float(json.loads((demo_dir / "model.json").read_text())["train_accuracy"])


def _tally(table: list[dict[str, Any]]) -> tuple[dict[str, int], dict[str, dict[str, int]], int, int]:
    """Rows per split, rows (and validation errors) per slice and split, validation errors (in slices)."""
    per_split: dict[str, int] = {}
    per_slice: dict[str, dict[str, int]] = {s: {} for s in ("none", *SLICES)}
    val_errors = val_errors_in_slices = 0
    for r in table:
        per_split[r["split"]] = per_split.get(r["split"], 0) + 1
        c = per_slice.setdefault(r["meta_slice"], {})
        c[r["split"]] = c.get(r["split"], 0) + 1
        if r["split"] == "val" and r["correct"] is False:
            val_errors += 1
            c["val_errors"] = c.get("val_errors", 0) + 1
            if r["meta_slice"] != "none":
                val_errors_in_slices += 1
    return per_split, per_slice, val_errors, val_errors_in_slices
