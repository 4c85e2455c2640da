"""CVAT: ``annotations.xml`` in "CVAT for images 1.1" (one ``<image>`` per image; the model's
prediction as ``<box source="auto">`` per object or ``<tag>`` for classification) and the same
pre-labels as "COCO 1.0" (``annotations/instances_default.json``) for CVAT's COCO import.

Image names: the file name inside the export (copy / url media) or the relative path (relative
media: create the CVAT task from a share mounted at that root).
"""

from __future__ import annotations

import colorsys
import hashlib
from pathlib import Path
from xml.etree import ElementTree as ET

from edgeminer.service.export import coco
from edgeminer.service.export.common import (
    Record,
    RenderContext,
    class_index,
    group_images,
    is_remote,
    record_box,
    write_json,
    write_text,
    xml_safe,
    xywh_to_corners,
)

MEDIA_DIR = "images"
XML_FILE = "annotations.xml"
COCO_FILE = "annotations/instances_default.json"  # next to images/, as CVAT exports COCO 1.0


def _color(name: str) -> str:
    hue = int(hashlib.sha1(name.encode()).hexdigest()[:4], 16) / 0xFFFF
    r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.9)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def _fmt(v: float) -> str:
    return f"{v:.2f}"


def image_name(rec_media: str | None, file_name: str, media_mode: str) -> str:
    if media_mode == "relative" and rec_media and not is_remote(rec_media):
        return rec_media
    return file_name


def cvat_xml(records: list[Record], ctx: RenderContext) -> str:
    classes = class_index(ctx.classes, records)
    images = group_images(records)
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    meta = ET.SubElement(root, "meta")
    task = ET.SubElement(meta, "task")
    ET.SubElement(task, "id").text = "0"
    ET.SubElement(task, "name").text = f"{ctx.dataset} {ctx.export_id}"
    ET.SubElement(task, "size").text = str(len(images))
    ET.SubElement(task, "mode").text = "annotation"
    ET.SubElement(task, "overlap").text = "0"
    ET.SubElement(task, "created").text = ctx.created_at
    labels = ET.SubElement(task, "labels")
    for c in classes:
        lab = ET.SubElement(labels, "label")
        ET.SubElement(lab, "name").text = c
        ET.SubElement(lab, "color").text = _color(c)
        ET.SubElement(lab, "type").text = "rectangle" if ctx.task == "detection" else "tag"
        ET.SubElement(lab, "attributes")
    for n, img in enumerate(images):
        el = ET.SubElement(
            root,
            "image",
            {
                "id": str(n),
                "name": image_name(img.media, img.file_name, ctx.request.media),
                "width": str(img.width or 0),
                "height": str(img.height or 0),
            },
        )
        for rec in img.records:
            label = rec.prelabel
            if label is None:
                continue
            source = "auto" if rec.pred_label is not None else "manual"
            if ctx.task == "detection":
                x1, y1, x2, y2 = xywh_to_corners(record_box(rec))
                ET.SubElement(
                    el,
                    "box",
                    {
                        "label": label,
                        "source": source,
                        "occluded": "0",
                        "xtl": _fmt(x1),
                        "ytl": _fmt(y1),
                        "xbr": _fmt(x2),
                        "ybr": _fmt(y2),
                        "z_order": "0",
                    },
                )
            else:
                ET.SubElement(el, "tag", {"label": label, "source": source})
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + xml_safe(ET.tostring(root, encoding="unicode")) + "\n"


def render(records: list[Record], ctx: RenderContext) -> list[str]:
    write_text(Path(ctx.out_dir) / XML_FILE, cvat_xml(records, ctx))
    doc = coco.coco_document(records, ctx, use="prelabels")
    media_of = {img.key: img.media for img in group_images(records)}
    for entry in doc["images"]:  # CVAT matches COCO images to task images by name
        entry["file_name"] = image_name(media_of[entry["edgeminer_id"]], entry["file_name"], ctx.request.media)
    write_json(Path(ctx.out_dir) / COCO_FILE, doc)
    return [XML_FILE, COCO_FILE]
