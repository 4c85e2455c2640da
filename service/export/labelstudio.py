"""Label Studio: ``tasks.json`` (one task per image, the model's output as ``predictions``) and the
matching ``labeling_config.xml``.

Classification tasks carry a ``choices`` result; detection tasks one ``rectanglelabels`` result per
object, in percent of the image with ``original_width`` / ``original_height``. Every task's ``data``
has ``edgeminer_id`` (the sample id, or the image key for detection) so labels come back by id.
Media that is not a URL is referenced through Label Studio's local files
(``/data/local-files/?d=<path>``): Label Studio serves them when started with
LOCAL_FILES_SERVING_ENABLED=true and LOCAL_FILES_DOCUMENT_ROOT set to the media root (``relative``) or the
unzipped export (``copy``), from a Local files storage of the project at a subfolder of that root
(``edgeminer export`` prints this hint; ``--to-server`` adds the storages itself, see labelstudio_live.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from edgeminer.service.export.common import (
    Image,
    Record,
    RenderContext,
    class_index,
    group_images,
    is_remote,
    record_box,
    write_json,
    write_text,
    xml_safe,
    xywh_to_percent,
)

MEDIA_DIR = "images"
FROM_NAME = "label"
TO_NAME = "image"
LOCAL_FILES_PREFIX = "/data/local-files/?d="


def labeling_config(classes: list[str], task: str) -> str:
    if task == "detection":
        labels = "\n".join(f"    <Label value={quoteattr(c)}/>" for c in classes)
        control = f'  <RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">\n{labels}\n  </RectangleLabels>'
    else:
        choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
        control = (
            f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInLine="true">\n'
            f"{choices}\n  </Choices>"
        )
    return xml_safe(f'<View>\n  <Image name="{TO_NAME}" value="$image"/>\n{control}\n</View>\n')


def media_value(media: str | None) -> str | None:
    if media is None or is_remote(media) or media.startswith("/data/"):
        return media
    return LOCAL_FILES_PREFIX + quote(media, safe="/")


def _result(rec: Record, img: Image, task: str) -> dict[str, Any] | None:
    label = rec.prelabel
    if label is None:
        return None
    if task == "detection":
        if not img.width or not img.height:
            return None
        x, y, w, h = xywh_to_percent(record_box(rec), img.width, img.height)
        value: dict[str, Any] = {
            "x": x,
            "y": y,
            "width": w,
            "height": h,
            "rotation": 0,
            "rectanglelabels": [label],
        }
        out: dict[str, Any] = {
            "id": rec.id,
            "from_name": FROM_NAME,
            "to_name": TO_NAME,
            "type": "rectanglelabels",
            "original_width": img.width,
            "original_height": img.height,
            "image_rotation": 0,
            "value": value,
        }
    else:
        out = {
            "id": rec.id,
            "from_name": FROM_NAME,
            "to_name": TO_NAME,
            "type": "choices",
            "value": {"choices": [label]},
        }
    if rec.confidence is not None:
        out["score"] = rec.confidence
    return out


def task_for(img: Image, ctx: RenderContext) -> dict[str, Any]:
    first = img.first
    data: dict[str, Any] = {"image": media_value(img.media), "edgeminer_id": img.key}
    if ctx.task == "classification":
        data.update({"split": first.split, "label": first.label})
    for key, value in first.metadata.items():
        data[f"meta_{key}"] = value
    results = [r for r in (_result(rec, img, ctx.task) for rec in img.records) if r is not None]
    scores = [rec.confidence for rec in img.records if rec.confidence is not None]
    task: dict[str, Any] = {"data": data}
    if results:
        task["predictions"] = [
            {
                "model_version": first.model_version or "unknown",
                "score": sum(scores) / len(scores) if scores else 0.0,
                "result": results,
            }
        ]
    return task


def render(records: list[Record], ctx: RenderContext) -> list[str]:
    classes = class_index(ctx.classes, records)
    tasks = [task_for(img, ctx) for img in group_images(records)]
    write_json(Path(ctx.out_dir) / "tasks.json", tasks)
    write_text(Path(ctx.out_dir) / "labeling_config.xml", labeling_config(classes, ctx.task))
    return ["tasks.json", "labeling_config.xml"]
