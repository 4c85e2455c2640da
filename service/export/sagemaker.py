"""SageMaker Ground Truth: ``manifest.jsonl``, the input manifest of a labeling job (one JSON line
per image with ``source-ref``), with the model's output as a pre-label attribute in Ground Truth's
own output format (``prelabel`` + ``prelabel-metadata``: image-classification or object-detection,
``human-annotated: "no"``), for adjustment / verification jobs. ``edgeminer-id`` carries the image key.

Ground Truth wants ``s3://`` references: use media ``url`` with ``media_base_url`` ``s3://bucket/prefix``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeminer.service.export.common import (
    Image,
    RenderContext,
    class_index,
    group_images,
    record_box,
    write_json,
    write_text,
)

MEDIA_DIR = "images"
ATTRIBUTE = "prelabel"


def manifest_line(img: Image, ctx: RenderContext, class_id: dict[str, int]) -> dict[str, Any]:
    line: dict[str, Any] = {"source-ref": img.media, "edgeminer-id": img.key}
    meta_common = {
        "job-name": f"labeling-job/edgeminer-{ctx.export_id}",
        "human-annotated": "no",
        "creation-date": ctx.created_at,
    }
    labeled = [r for r in img.records if r.prelabel is not None]
    if not labeled:
        return line
    if ctx.task == "detection":
        annotations, objects = [], []
        for rec in labeled:
            x, y, w, h = record_box(rec)
            annotations.append({"class_id": class_id[rec.prelabel or ""], "left": x, "top": y, "width": w, "height": h})
            objects.append({"confidence": rec.confidence if rec.confidence is not None else 1.0})
        line[ATTRIBUTE] = {
            "image_size": [{"width": img.width or 0, "height": img.height or 0, "depth": 3}],
            "annotations": annotations,
        }
        line[f"{ATTRIBUTE}-metadata"] = {
            "objects": objects,
            "class-map": {str(i): c for c, i in class_id.items()},
            "type": "groundtruth/object-detection",
            **meta_common,
        }
    else:
        rec = labeled[0]
        name = rec.prelabel or ""
        line[ATTRIBUTE] = class_id[name]
        line[f"{ATTRIBUTE}-metadata"] = {
            "class-name": name,
            "confidence": rec.confidence if rec.confidence is not None else 1.0,
            "type": "groundtruth/image-classification",
            **meta_common,
        }
    return line


def render(records: list[Any], ctx: RenderContext) -> list[str]:
    classes = class_index(ctx.classes, records)
    class_id = {c: i for i, c in enumerate(classes)}
    lines = [json.dumps(manifest_line(img, ctx, class_id)) for img in group_images(records)]
    out = Path(ctx.out_dir)
    write_text(out / "manifest.jsonl", "".join(line + "\n" for line in lines))
    write_json(out / "class_map.json", {str(i): c for c, i in class_id.items()})
    return ["manifest.jsonl", "class_map.json"]
