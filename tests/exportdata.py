"""Small datasets with real PNG files for the export / label-import tests (written through the real
Store). Classification: ``cls`` (12 images, 3 classes, half labeled). Detection: ``det`` (4 images,
object rows with fractional pixel boxes: true positives, a wrong class, a false positive, a miss)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from edgeminer.indexer.store import Store

CLASSES = ["cat", "dog", "bird"]


@dataclass
class Built:
    name: str
    root: Path
    ids: list[str]
    rows: dict[str, dict[str, Any]]


def _png(path: Path, width: int, height: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _probs(pred: str, conf: float) -> list[float]:
    rest = (1.0 - conf) / (len(CLASSES) - 1)
    return [conf if c == pred else rest for c in CLASSES]


def build_classification(store: Store, root: Path, name: str = "cls", n: int = 12) -> Built:
    rows = []
    for k in range(n):
        sid = f"img-{k:03d}"
        # two folders with clashing file names, so exports must make names unique
        uri = root / ("a" if k % 2 else "b") / f"pic{k // 2:02d}.png"
        _png(uri, 32 + k, 24, seed=k)
        true = CLASSES[k % 3]
        pred = CLASSES[(k + (1 if k % 4 == 0 else 0)) % 3]
        conf = 0.5 + 0.04 * k
        labeled = k < n // 2
        probs = _probs(pred, conf)
        rows.append(
            {
                "id": sid,
                "uri": str(uri),
                "width": 32 + k,
                "height": 24,
                "split": ("train" if k % 2 else "val") if labeled else "unlabeled",
                "labeled": labeled,
                "label": true if labeled else None,
                "pred_label": pred,
                "probs": probs,
                "confidence": conf,
                "least_confidence": 1 - conf,
                "margin": 1 - (conf - sorted(probs)[-2]),
                "correct": (pred == true) if labeled else None,
                "outcome": ("correct" if pred == true else "wrong_class") if labeled else None,
                "model_version": "m-1",
                "meta_slice": "rotated" if k % 3 == 0 else "none",
                "status": "ok",
                "fingerprint": f"fp-{sid}",
                "embedding": [float(k), 1.0, 0.0, 0.5],
            }
        )
    store.create_dataset(
        name,
        dim=4,
        embedder={"kind": "precomputed"},
        classes=CLASSES,
        metadata_fields={"slice": "string"},
        media_roots=[str(root)],
    )
    store.upsert_samples(name, pa.Table.from_pylist(rows))
    return Built(name, root, [r["id"] for r in rows], {r["id"]: r for r in rows})


#: per image: (width, height, objects [(bbox, label, pred, conf)])
DETECTION_IMAGES: list[tuple[int, int, list[tuple[list[float], str | None, str | None, float | None]]]] = [
    (64, 48, [([3.5, 4.25, 20.75, 10.5], "cat", "cat", 0.9), ([30.0, 20.0, 12.3, 25.7], "dog", "cat", 0.55)]),
    (80, 60, [([0.0, 0.0, 80.0, 60.0], "bird", "bird", 0.8)]),
    (50, 70, [([10.2, 11.7, 5.1, 6.9], None, "dog", 0.4), ([20.0, 30.0, 10.0, 10.0], "cat", None, None)]),
    (64, 64, [([1.25, 2.5, 60.5, 40.75], None, "bird", 0.7)]),  # unlabeled image
]


def build_detection(store: Store, root: Path, name: str = "det") -> Built:
    rows = []
    for n, (w, h, objects) in enumerate(DETECTION_IMAGES):
        parent = f"photo-{n}"
        uri = root / f"photo{n}.png"
        _png(uri, w, h, seed=100 + n)
        labeled = n < 3
        for k, (bbox, label, pred, conf) in enumerate(objects):
            if pred is None:
                outcome = "false_negative"
            elif label is None:
                outcome = "false_positive" if labeled else None
            else:
                outcome = "correct" if label == pred else "wrong_class"
            rows.append(
                {
                    "id": f"{parent}#{k}",
                    "uri": str(uri),
                    "parent_id": parent,
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "width": w,
                    "height": h,
                    "split": "train" if labeled else "unlabeled",
                    "labeled": labeled,
                    "label": label,
                    "pred_label": pred,
                    "probs": _probs(pred, conf) if pred and conf else None,
                    "confidence": conf,
                    "correct": (label == pred) if labeled and outcome is not None else None,
                    "outcome": outcome,
                    "model_version": "det-1",
                    "status": "ok",
                    "fingerprint": f"fp-{parent}-{k}",
                    "embedding": [float(n), float(k), 1.0, 0.0],
                }
            )
    store.create_dataset(
        name, dim=4, embedder={"kind": "precomputed"}, classes=CLASSES, task="detection", media_roots=[str(root)]
    )
    store.upsert_samples(name, pa.Table.from_pylist(rows))
    return Built(name, root, [r["id"] for r in rows], {r["id"]: r for r in rows})
