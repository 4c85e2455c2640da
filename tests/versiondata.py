"""A small dataset with two model versions for the model-version and compare tests (issue 14): ten PNG
rows with vectors, labels, a ``slice`` and version 1's probabilities, and a manifest of version 2's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CLASSES = ["a", "b"]
#: labels of rows r0..r7 (r8, r9 unlabeled); v1 predicts a for r0-r3, b for r4-r7
LABELS = ["a", "a", "a", "a", "a", "a", "b", "b", None, None]
V1_PRED = ["a", "a", "a", "a", "b", "b", "b", "b", "a", "b"]
#: v2: r1 and r7 broken, r4 and r5 fixed
V2_PRED = ["a", "b", "a", "a", "a", "a", "b", "a", "b", "a"]


def _probs(pred: str, top: float) -> list[float]:
    return [top, 1 - top] if pred == "a" else [1 - top, top]


def write_dataset(tmp_path: Path) -> Path:
    """10 PNGs and a manifest with vectors, labels, v1's probs and a `slice` (x: r0-r3, y: r4-r9)."""
    img = tmp_path / "img"
    img.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(10):
        Image.fromarray(np.full((8, 8), i * 20, np.uint8)).save(img / f"{i}.png")
        row: dict[str, Any] = {
            "id": f"r{i}",
            "uri": str(img / f"{i}.png"),
            "split": "val" if LABELS[i] else "unlabeled",
            "probs": _probs(V1_PRED[i], 0.9 - 0.03 * i),
            "classes": CLASSES,
            "embedding": [1.0, float(i), 0.5, float(i % 3)],
            "slice": "x" if i < 4 else "y",
        }
        if LABELS[i]:
            row["label"] = LABELS[i]
        rows.append(row)
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_v2(tmp_path: Path, *, with_probs: bool = True, extra: list[dict[str, Any]] | None = None) -> Path:
    rows = []
    for i in range(10):
        row: dict[str, Any] = {"id": f"r{i}", "uri": str(tmp_path / "img" / f"{i}.png")}
        if with_probs:
            row.update(probs=_probs(V2_PRED[i], 0.6 + 0.03 * i), classes=CLASSES)
        else:
            row.update(pred_label=V2_PRED[i], score=0.8)
        rows.append(row)
    rows += extra or []
    path = tmp_path / "v2.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
