"""COCO: ``annotations/instances_default.json`` (images of every exported row, ground truth where
the row is labeled) and ``predictions.json``, a COCO *results* file (image_id, category_id, bbox,
score) with the model's predictions, loadable with ``COCO.loadRes``.

Classification rows become whole-image boxes ``[0, 0, width, height]``, so both files work with the
COCO tools; every image and annotation carries ``edgeminer_id`` so labels come back by id. The layout
(``annotations/instances_default.json`` + ``images/default/``) is the one CVAT's and datumaro's COCO
importers read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeminer.service.export.common import (
    Record,
    RenderContext,
    class_index,
    group_images,
    is_remote,
    record_box,
    write_json,
)

MEDIA_DIR = "images/default"
GT_FILE = "annotations/instances_default.json"
PRED_FILE = "predictions.json"


def coco_document(records: list[Record], ctx: RenderContext, *, use: str = "labels") -> dict[str, Any]:
    """A COCO dataset dict. ``use="labels"``: annotations are the ground truth of labeled rows;
    ``use="prelabels"``: the model's prediction (else the label) of every row, for tools that import
    COCO as pre-annotations (CVAT)."""
    classes = class_index(ctx.classes, records)
    cat_id = {c: n + 1 for n, c in enumerate(classes)}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for n, img in enumerate(group_images(records), start=1):
        entry: dict[str, Any] = {
            "id": n,
            "file_name": img.file_name,
            "width": img.width or 0,
            "height": img.height or 0,
            "edgeminer_id": img.key,
        }
        if img.media and is_remote(img.media):
            entry["coco_url"] = img.media
        images.append(entry)
        for rec in img.records:
            name = rec.label if use == "labels" else rec.prelabel
            if name is None or (use == "labels" and not rec.labeled):
                continue
            x, y, w, h = record_box(rec)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": n,
                    "category_id": cat_id[name],
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "segmentation": [],
                    "edgeminer_id": rec.id,
                }
            )
    return {
        "info": {
            "description": f"edgeminer export {ctx.export_id} of dataset {ctx.dataset}",
            "version": "1.0",
            "date_created": ctx.created_at,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": c, "supercategory": ""} for c, i in cat_id.items()],
    }


def coco_results(records: list[Record], ctx: RenderContext, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The predictions as a COCO results list, using the image ids of ``doc``."""
    image_id = {img["edgeminer_id"]: img["id"] for img in doc["images"]}
    cat_id = {c["name"]: c["id"] for c in doc["categories"]}
    out = []
    for img in group_images(records):
        for rec in img.records:
            if rec.pred_label is None:
                continue
            x, y, w, h = record_box(rec)
            out.append(
                {
                    "image_id": image_id[img.key],
                    "category_id": cat_id[rec.pred_label],
                    "bbox": [x, y, w, h],
                    "score": rec.confidence if rec.confidence is not None else 1.0,
                    "edgeminer_id": rec.id,
                }
            )
    return out


def render(records: list[Record], ctx: RenderContext) -> list[str]:
    doc = coco_document(records, ctx, use="labels")
    write_json(Path(ctx.out_dir) / GT_FILE, doc)
    write_json(Path(ctx.out_dir) / PRED_FILE, coco_results(records, ctx, doc))
    return [GT_FILE, PRED_FILE]
