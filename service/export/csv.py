"""CSV: ``samples.csv``, one row per exported sample: id, image key, uri, media reference, split,
labels, prediction, outcome, every score, the box (detection), image size and metadata columns."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from edgeminer.service.export.common import SCORE_FIELDS, Record, RenderContext, write_text

MEDIA_DIR = "images"
BASE_COLUMNS = (
    "id",
    "image_key",
    "uri",
    "media",
    "file_name",
    "split",
    "labeled",
    "label",
    "pred_label",
    "outcome",
    *SCORE_FIELDS,
    "bbox_x",
    "bbox_y",
    "bbox_w",
    "bbox_h",
    "width",
    "height",
    "model_version",
    "media_error",
)


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def render(records: list[Record], ctx: RenderContext) -> list[str]:
    meta_keys = sorted({k for r in records for k in r.metadata})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*BASE_COLUMNS, *(f"meta_{k}" for k in meta_keys)])
    for r in records:
        bbox: list[float | None] = list(r.bbox) if r.bbox else [None, None, None, None]
        row = [
            r.id,
            r.image_key,
            r.uri,
            r.media,
            r.file_name,
            r.split,
            r.labeled,
            r.label,
            r.pred_label,
            r.outcome,
            *(r.scores.get(k) for k in SCORE_FIELDS),
            *bbox,
            r.width,
            r.height,
            r.model_version,
            r.media_error,
            *(r.metadata.get(k) for k in meta_keys),
        ]
        writer.writerow([_cell(v) for v in row])
    write_text(Path(ctx.out_dir) / "samples.csv", buf.getvalue())
    return ["samples.csv"]
