"""YOLO in the Ultralytics layout: ``data.yaml`` (class names), ``labels/train/<stem>.txt`` with one
``class cx cy w h`` line per object (normalised to [0, 1]), images in ``images/train/`` when copied.

The labels are the pre-labels (the model's prediction, else the existing label); classification rows
are whole-image boxes. With url / relative media the images stay where they are and ``train.txt``
lists them (Ultralytics reads such lists; it finds the label files of images under an ``images``
folder by swapping in ``labels``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgeminer.service.export.common import (
    Record,
    RenderContext,
    class_index,
    group_images,
    record_box,
    write_text,
    xywh_to_yolo,
)

MEDIA_DIR = "images/train"
SUBSET = "train"


def _clip01(v: float) -> float:
    return min(1.0, max(0.0, v))


def label_lines(records: list[Record], width: int, height: int, class_id: dict[str, int]) -> list[str]:
    lines = []
    for rec in records:
        name = rec.prelabel
        if name is None or not width or not height:
            continue
        cx, cy, w, h = (_clip01(v) for v in xywh_to_yolo(record_box(rec), width, height))
        lines.append(f"{class_id[name]} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return lines


def data_yaml(classes: list[str], images: str) -> str:
    # JSON strings are valid YAML double-quoted scalars: no YAML library needed to write safely.
    names = "\n".join(f"  {i}: {json.dumps(c)}" for i, c in enumerate(classes))
    return f"path: .\ntrain: {images}\nval: {images}\nnc: {len(classes)}\nnames:\n{names}\n"


def render(records: list[Record], ctx: RenderContext) -> list[str]:
    out = Path(ctx.out_dir)
    classes = class_index(ctx.classes, records)
    class_id = {c: i for i, c in enumerate(classes)}
    written = []
    listed = []
    for img in group_images(records):
        stem = os.path.splitext(img.file_name)[0]
        rel = f"labels/{SUBSET}/{stem}.txt"
        lines = label_lines(img.records, img.width or 0, img.height or 0, class_id)
        write_text(out / rel, "".join(line + "\n" for line in lines))
        written.append(rel)
        if img.media:
            listed.append(img.media)
    if ctx.request.media == "copy":
        images = f"images/{SUBSET}"
    else:
        images = f"{SUBSET}.txt"
        write_text(out / images, "".join(m + "\n" for m in listed))
        written.append(images)
    write_text(out / "data.yaml", data_yaml(classes, images))
    return ["data.yaml", *written]
