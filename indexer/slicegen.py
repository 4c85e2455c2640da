"""Planted-slice datasets beside the demo: known failure modes for benchmarks and tests.

Each generator builds a dataset the way the demo does (indexer/demo.py): scikit-learn's 1,797 digits
rendered as 32x32 PNGs, split into train / val / an unlabeled pool, with planted slices that are rare
in train and common in val and the pool; a small CNN trained on train on the CPU, exported as
TorchScript and used to ingest everything through the ordinary pipeline. The slice of every row is the
metadata column ``slice`` (``none`` for ordinary rows), which the model never sees.

Generators (``GENERATORS``):

``subpop``
    Sub-populations inside one class: ``mirrored_7`` (7s drawn mirror-image) and ``outline_2`` (2s drawn
    as hollow outlines). Only that class has the style, and only in val and pool (70% of the class):
    the unseen style of a long tail. (With even 2-3 styled examples in train the CNN learned the
    outline style: 0% val errors on it.)
``image``
    Image-property slices over every class: ``dark`` (intensities scaled to 30%) and ``blurred``
    (Gaussian blur, radius 4.5); 15% of val and pool each, none in train.
``spurious``
    A spurious correlation: in train nearly every 3 has a grey background and almost nothing else
    does, so the background predicts the class. In val and pool the background no longer follows the
    class: ``grey_bg`` (other digits on the grey background, 20% of them) and ``plain_3`` (3s on the
    ordinary black background, 80% of the 3s).

A slice's share is of its *eligible* rows (the class for ``subpop``'s and ``plain_3``, the other
classes for ``grey_bg``, every row for ``image``'s), per split; ``GeneratorSummary.rates`` reports
the shares actually planted.

Use::

    from edgeminer.indexer.slicegen import GENERATORS, build_generator
    summary = build_generator("subpop", "./slicegen-data", "./edgeminer-data", seed=0)
    print(summary.describe())   # rows per split and slice, planted shares, val error rate per slice

The dataset is named ``slicegen-<name>`` unless ``dataset=`` says otherwise. Building again with the
same arguments reuses the images, the model and the ingested rows (the ingest is idempotent);
``force=True`` (or another seed) rebuilds everything.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeminer.indexer.demo import IMAGE_SIZE, _render, _write_manifests, export_torchscript, train_model
from edgeminer.indexer.errors import ValidationFailed
from edgeminer.indexer.store import Store

__all__ = ["GENERATORS", "GeneratorSummary", "build_generator", "generator_info"]

SPLIT_SIZES = {"train": 800, "val": 550}  # the rest (447) is the unlabeled pool
SPLITS = ("train", "val", "unlabeled")
GREY = 110  # the spurious generator's background level (0..255)
BLUR_RADIUS = 4.5
DARK = 0.3  # the image generator's intensity scale
BUILD_FORMAT = 1

Image = Any  # a PIL image (PIL is imported inside the functions)


@dataclass(frozen=True)
class _Slice:
    """One planted slice: the classes it may take rows from (None: every class) and its share of those
    eligible rows per split."""

    name: str
    classes: frozenset[int] | None
    share: Mapping[str, float]
    kind: str  # "subpopulation" | "image_property" | "spurious"

    def eligible(self, target: np.ndarray) -> np.ndarray:
        if self.classes is None:
            return np.ones(target.shape[0], dtype=bool)
        return np.isin(target, sorted(self.classes))


@dataclass(frozen=True)
class _Spec:
    name: str
    description: str
    slices: tuple[_Slice, ...]
    render: Callable[[Image, int, str, np.random.Generator], Image]


def _shares(train: float, held_out: float) -> dict[str, float]:
    return {"train": train, "val": held_out, "unlabeled": held_out}


# ---------------------------------------------------------------------------------------------
# styles
# ---------------------------------------------------------------------------------------------


def _outline(img: Image) -> Image:
    """Hollow strokes: the dilated digit minus the eroded one."""
    from PIL import Image as PILImage
    from PIL import ImageFilter

    outer = np.asarray(img.filter(ImageFilter.MaxFilter(3)), dtype=np.int16)
    inner = np.asarray(img.filter(ImageFilter.MinFilter(3)), dtype=np.int16)
    return PILImage.fromarray(np.clip(outer - inner, 0, 255).astype(np.uint8))


def _scaled(img: Image, factor: float) -> Image:
    from PIL import Image as PILImage

    return PILImage.fromarray((np.asarray(img, dtype=np.float32) * factor).astype(np.uint8))


def _on_grey(img: Image) -> Image:
    from PIL import Image as PILImage

    return PILImage.fromarray(np.maximum(np.asarray(img), GREY).astype(np.uint8))


def _render_subpop(img: Image, label: int, slice_name: str, rng: np.random.Generator) -> Image:
    from PIL import ImageOps

    if slice_name == "mirrored_7":
        return ImageOps.mirror(img)
    if slice_name == "outline_2":
        return _outline(img)
    return img


def _render_image(img: Image, label: int, slice_name: str, rng: np.random.Generator) -> Image:
    from PIL import ImageFilter

    if slice_name == "dark":
        return _scaled(img, DARK)
    if slice_name == "blurred":
        return img.filter(ImageFilter.GaussianBlur(BLUR_RADIUS))
    return img


def _render_spurious(img: Image, label: int, slice_name: str, rng: np.random.Generator) -> Image:
    grey = slice_name == "grey_bg" or (label == 3 and slice_name != "plain_3")
    return _on_grey(img) if grey else img


_SPECS: dict[str, _Spec] = {
    "subpop": _Spec(
        "subpop",
        "sub-populations inside one class: mirror-image 7s, hollow-outline 2s",
        (
            _Slice("mirrored_7", frozenset({7}), _shares(0.0, 0.7), "subpopulation"),
            _Slice("outline_2", frozenset({2}), _shares(0.0, 0.7), "subpopulation"),
        ),
        _render_subpop,
    ),
    "image": _Spec(
        "image",
        "image-property slices over every class: dark images, blurred images",
        (
            _Slice("dark", None, _shares(0.0, 0.15), "image_property"),
            _Slice("blurred", None, _shares(0.0, 0.15), "image_property"),
        ),
        _render_image,
    ),
    "spurious": _Spec(
        "spurious",
        "a spurious background: grey background on 3s in train, on any digit in val and pool",
        (
            _Slice("grey_bg", frozenset(set(range(10)) - {3}), _shares(0.01, 0.2), "spurious"),
            _Slice("plain_3", frozenset({3}), _shares(0.03, 0.8), "spurious"),
        ),
        _render_spurious,
    ),
}

#: the generators' names, for ``build_generator``.
GENERATORS: tuple[str, ...] = tuple(_SPECS)


def generator_info(name: str) -> dict[str, Any]:
    """A generator's description and its slices (name, kind, eligible classes, requested shares).

    Raises ValidationFailed for an unknown name."""
    spec = _spec(name)
    return {
        "name": spec.name,
        "description": spec.description,
        "slices": [
            {
                "slice": s.name,
                "kind": s.kind,
                "classes": None if s.classes is None else sorted(s.classes),
                "share": dict(s.share),
            }
            for s in spec.slices
        ],
    }


def _spec(name: str) -> _Spec:
    if name not in _SPECS:
        raise ValidationFailed(f"unknown slice generator {name!r}; known: {', '.join(GENERATORS)}")
    return _SPECS[name]


# ---------------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------------


@dataclass
class GeneratorSummary:
    """What :func:`build_generator` built.

    ``per_slice``: slice -> split -> rows, plus ``val_errors``; ``rates``: slice -> split -> share of the
    eligible rows planted (compare ``requested``); ``val_error_rate``: slice (and ``none``) -> error rate
    on val; ``kinds``: slice -> kind."""

    name: str
    dataset: str
    description: str
    rows: int
    per_split: dict[str, int]
    per_slice: dict[str, dict[str, int]]
    rates: dict[str, dict[str, float]]
    requested: dict[str, dict[str, float]]
    kinds: dict[str, str]
    val_error_rate: dict[str, float | None]
    train_accuracy: float
    seconds: float
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def slices(self) -> list[str]:
        return list(self.kinds)

    def describe(self) -> str:
        lines = [
            f"slice generator {self.name!r} -> dataset {self.dataset!r}: {self.description}",
            f"{self.rows} rows "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.per_split.items()))
            + f"; model train accuracy {self.train_accuracy:.1%}",
            f"{'slice':<12}{'kind':<16}{'train':>7}{'val':>6}{'pool':>6}{'val share':>11}{'val err%':>10}",
        ]
        for name in ("none", *self.kinds):
            c = self.per_slice.get(name, {})
            share = self.rates.get(name, {}).get("val")
            rate = self.val_error_rate.get(name)
            lines.append(
                f"{name:<12}{self.kinds.get(name, '-'):<16}{c.get('train', 0):>7}{c.get('val', 0):>6}"
                f"{c.get('unlabeled', 0):>6}{'-' if share is None else f'{share:.0%}':>11}"
                f"{'-' if rate is None else f'{rate:.0%}':>10}"
            )
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------


def _plan(spec: _Spec, target: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split and slice of every digit: each slice takes its share of its eligible, still unsliced rows."""
    n = target.shape[0]
    order = rng.permutation(n)
    splits = np.empty(n, dtype=object)
    a, b = SPLIT_SIZES["train"], SPLIT_SIZES["train"] + SPLIT_SIZES["val"]
    splits[order[:a]] = "train"
    splits[order[a:b]] = "val"
    splits[order[b:]] = "unlabeled"
    slices = np.full(n, "none", dtype=object)
    for s in spec.slices:
        ok = s.eligible(target)
        for split in SPLITS:
            pool = np.flatnonzero(ok & (splits == split))
            k = int(round(s.share[split] * pool.size))
            free = pool[slices[pool] == "none"]
            if k:
                slices[rng.choice(free, size=min(k, free.size), replace=False)] = s.name
    return splits, slices


def _render_all(
    spec: _Spec, digits: np.ndarray, target: np.ndarray, ids: list[str], slices: np.ndarray, img_dir: Path, seed: int
) -> np.ndarray:
    """Write every image as a PNG; the images as model inputs in [-1, 1], shape (n, 1, 32, 32)."""
    n = len(ids)
    arrays = np.zeros((n, 1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    img_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = np.random.default_rng(seed * 100_003 + i)
        img = spec.render(_render(digits[i], "none", rng), int(target[i]), str(slices[i]), rng)
        img.save(img_dir / f"{ids[i]}.png")
        arrays[i, 0] = np.asarray(img, dtype=np.float32) / 255.0 * 2 - 1
    return arrays


def _open_store(data_dir: str | Path | Store) -> Store:
    return data_dir if isinstance(data_dir, Store) else Store(data_dir)


def build_generator(
    name: str,
    out_dir: str | Path,
    data_dir: str | Path | Store,
    seed: int = 0,
    *,
    dataset: str | None = None,
    force: bool = False,
    progress: bool = False,
    mc_passes: int = 0,
    workers: int = 2,
) -> GeneratorSummary:
    """Build (or reuse) one planted-slice dataset.

    Parameters
    ----------
    name
        One of ``GENERATORS``.
    out_dir
        Where images, manifest and model go (in ``<out_dir>/<name>/``).
    data_dir
        The data directory (or an open ``Store``) to ingest into.
    seed, dataset, force, progress, mc_passes, workers
        Seeds the split, the slices and the training; the dataset name (default ``slicegen-<name>``);
        rebuild from scratch; the ingest's progress bar; MC-dropout passes; decoding threads.

    Returns
    -------
    GeneratorSummary
        Rows per split and slice, planted shares, the val error rate per slice, the ingest report.

    Raises
    ------
    ValidationFailed
        An unknown generator name.
    """
    import torch
    from sklearn.datasets import load_digits

    spec = _spec(name)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    started = time.perf_counter()
    store = _open_store(data_dir)
    dataset = dataset or f"slicegen-{name}"
    work = Path(out_dir).resolve() / name
    work.mkdir(parents=True, exist_ok=True)
    marker = {"format": BUILD_FORMAT, "name": name, "seed": int(seed), "dataset": dataset, "spec": _spec_key(spec)}
    fresh = force or _read_marker(work) != marker
    if fresh and store.has_dataset(dataset):
        store.drop_dataset(dataset)

    digits = load_digits()
    target = np.asarray(digits.target)
    splits, slices = _plan(spec, target, np.random.default_rng(seed))
    ids = [f"{name}-{i:04d}" for i in range(len(target))]
    model_path = work / "model.pt"
    if fresh or not model_path.exists():
        arrays = _render_all(spec, digits.images, target, ids, slices, work / "images", seed)
        _write_manifests(
            work / "manifest.csv", work / "pool_truth.csv", ids, list(splits), list(slices), target, arrays
        )
        train = splits == "train"
        model, acc = train_model(arrays[train], target[train], seed=seed)
        export_torchscript(model, model_path)
        (work / "model.json").write_text(json.dumps({"train_accuracy": acc}))
        (work / "build.json").write_text(json.dumps(marker))
    acc = float(json.loads((work / "model.json").read_text())["train_accuracy"])
    report = _ingest(store, dataset, work / "manifest.csv", model_path, seed, mc_passes, workers, progress)
    rates = _planted(spec, target, splits, slices)
    return _summary(spec, store, dataset, acc, time.perf_counter() - started, report, rates)


def _spec_key(spec: _Spec) -> str:
    """What the images and model depend on besides the seed (a change rebuilds them)."""
    slices = [(s.name, sorted(s.classes or []), sorted(s.share.items())) for s in spec.slices]
    return json.dumps([slices, SPLIT_SIZES, GREY, BLUR_RADIUS, DARK])


def _read_marker(work: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((work / "build.json").read_text()))
    except (OSError, ValueError):
        return None


def _ingest(
    store: Store,
    dataset: str,
    manifest: Path,
    model_path: Path,
    seed: int,
    mc_passes: int,
    workers: int,
    progress: bool,
) -> dict[str, Any]:
    from edgeminer.indexer.embedders import TorchScriptEmbedder
    from edgeminer.indexer.pipeline import ingest
    from edgeminer.indexer.sources import open_source

    embedder = TorchScriptEmbedder(model_path, mc_passes=mc_passes, device="cpu", seed=seed)
    source = open_source(manifest, kind="manifest")
    report = ingest(store, dataset, source, embedder, batch_size=128, workers=workers, progress=progress)
    return dict(report.as_dict())


def _summary(
    spec: _Spec,
    store: Store,
    dataset: str,
    acc: float,
    seconds: float,
    report: dict[str, Any],
    rates: dict[str, dict[str, float]],
) -> GeneratorSummary:
    """Count the ingested rows per split and slice, the planted shares and the val error rates."""
    rows = store.query(dataset, columns=["split", "correct", "label", "meta_slice"]).to_pylist()
    per_split: dict[str, int] = {}
    per_slice: dict[str, dict[str, int]] = {s: {} for s in ("none", *(x.name for x in spec.slices))}
    for r in rows:
        per_split[r["split"]] = per_split.get(r["split"], 0) + 1
        c = per_slice.setdefault(r["meta_slice"], {})
        c[r["split"]] = c.get(r["split"], 0) + 1
        if r["split"] == "val" and r["correct"] is False:
            c["val_errors"] = c.get("val_errors", 0) + 1
    return GeneratorSummary(
        name=spec.name,
        dataset=dataset,
        description=spec.description,
        rows=len(rows),
        per_split=per_split,
        per_slice=per_slice,
        rates=rates,
        requested={s.name: dict(s.share) for s in spec.slices},
        kinds={s.name: s.kind for s in spec.slices},
        val_error_rate={s: (c.get("val_errors", 0) / c["val"]) if c.get("val") else None for s, c in per_slice.items()},
        train_accuracy=acc,
        seconds=seconds,
        report=report,
    )


def _planted(spec: _Spec, target: np.ndarray, splits: np.ndarray, slices: np.ndarray) -> dict[str, dict[str, float]]:
    """Share of each slice's eligible rows it was planted in, per split."""
    out: dict[str, dict[str, float]] = {}
    for s in spec.slices:
        ok = s.eligible(target)
        out[s.name] = {
            split: float(((slices == s.name) & ok & (splits == split)).sum() / max(1, (ok & (splits == split)).sum()))
            for split in SPLITS
        }
    return out
