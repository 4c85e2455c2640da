"""Labelbox: ``data_rows.json`` (``row_data`` + ``global_key`` per image, for
``dataset.create_data_rows``), ``prelabels.ndjson`` (model-assisted labeling import: one line per
prediction, boxes in pixels as top / left / height / width, rows referenced by global key) and
``ontology.json`` (one rectangle tool per class, or a radio classification named ``label``). The
lines are what the Labelbox SDK's ``NDJsonConverter.serialize`` writes for the same annotations
(the tests compare them).

Global keys are ``<dataset>/<image key>`` so they stay unique across datasets in one organisation.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from edgeminer.service.export.common import (
    Record,
    RenderContext,
    class_index,
    group_images,
    record_box,
    write_json,
    write_text,
)

MEDIA_DIR = "images"
CLASSIFICATION_NAME = "label"
_NS = uuid.UUID("6f1c3c1e-8a43-4f3c-9a55-3c1f0c2b7e10")


def global_key(dataset: str, key: str) -> str:
    return f"{dataset}/{key}"


def ontology(classes: list[str], task: str) -> dict[str, Any]:
    if task == "detection":
        return {"tools": [{"tool": "rectangle", "name": c} for c in classes], "classifications": []}
    return {
        "tools": [],
        "classifications": [
            {
                "type": "radio",
                "name": CLASSIFICATION_NAME,
                "instructions": CLASSIFICATION_NAME,
                "options": [{"value": c, "label": c} for c in classes],
            }
        ],
    }


def prelabel(rec: Record, gkey: str, ctx: RenderContext) -> dict[str, Any] | None:
    name = rec.prelabel
    if name is None:
        return None
    line: dict[str, Any] = {
        "uuid": str(uuid.uuid5(_NS, f"{ctx.export_id}/{rec.id}")),
        "dataRow": {"globalKey": gkey},
    }
    if ctx.task == "detection":
        x, y, w, h = record_box(rec)
        line.update({"name": name, "classifications": [], "bbox": {"top": y, "left": x, "height": h, "width": w}})
        if rec.confidence is not None:
            line["confidence"] = rec.confidence
    else:
        answer: dict[str, Any] = {"name": name}
        if rec.confidence is not None:
            answer["confidence"] = rec.confidence  # a radio answer carries its own confidence
        line.update({"name": CLASSIFICATION_NAME, "answer": answer})
    return line


def render(records: list[Record], ctx: RenderContext) -> list[str]:
    import json

    classes = class_index(ctx.classes, records)
    rows, lines = [], []
    for img in group_images(records):
        gkey = global_key(ctx.dataset, img.key)
        row: dict[str, Any] = {"row_data": img.media, "global_key": gkey, "media_type": "IMAGE"}
        meta = dict(img.first.metadata)
        if meta:
            row["attachments"] = [{"type": "RAW_TEXT", "value": json.dumps(meta, default=str)}]
        rows.append(row)
        for rec in img.records:
            line = prelabel(rec, gkey, ctx)
            if line is not None:
                lines.append(json.dumps(line))
    out = Path(ctx.out_dir)
    write_json(out / "data_rows.json", rows)
    write_text(out / "prelabels.ndjson", "".join(line + "\n" for line in lines))
    write_json(out / "ontology.json", ontology(classes, ctx.task))
    return ["data_rows.json", "prelabels.ndjson", "ontology.json"]
