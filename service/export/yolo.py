"""YOLO in the Ultralytics layouts.

Detection: ``data.yaml`` (class names), ``labels/train/<stem>.txt`` with one ``class cx cy w h`` line per
object (normalised to [0, 1]), images in ``images/train/`` when copied. With url / relative media the
images stay where they are and ``train.txt`` lists them (Ultralytics reads such lists; it finds the
label files of images under an ``images`` folder by swapping in ``labels``); a uri with a line break
cannot be listed there and becomes an error row (:func:`check_media`).

Classification (https://docs.ultralytics.com/datasets/classify/): the folder is the dataset,
``train/<class>/<image>``, ``val/<class>/...`` and ``test/<class>/...`` by the row's split (``val``,
``valid``, ``validation`` -> val; ``test`` -> test; anything else, unlabeled included -> train), one
folder per class of the dataset in every split used (Ultralytics numbers the classes by the sorted
folder names of ``train/``); no boxes, no data.yaml. The images must be in the export: media ``copy``.
Rows with neither a prediction nor a label go to ``unsorted/`` (outside the splits Ultralytics reads).

The labels are the pre-labels (the model's prediction, else the existing label).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from edgeminer.service.export.common import (
    ExportError,
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
#: a classification row's split -> the Ultralytics split folder (any other split -> train)
CLS_SPLITS = {"val": "val", "valid": "val", "validation": "val", "test": "test"}
UNSORTED = "unsorted"
_UNSAFE_DIR = re.compile(r"[^A-Za-z0-9._ -]+")


def check_media(media: str) -> None:
    """A media reference that ``train.txt`` (one path per line) cannot hold: ExportError (an error row)."""
    if "\n" in media or "\r" in media:
        raise ExportError(
            f"the image path {media[:120]!r} contains a line break: YOLO's train.txt lists one image per line "
            "(rename the file, or export with media 'copy')"
        )


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


def class_dirs(classes: list[str]) -> dict[str, str]:
    """A folder name per class: the name itself when it is a safe file name, else its safe characters
    plus a short hash (so ``a/b`` and ``a_b`` stay apart); never ``.``, ``..`` or hidden."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for name in classes:
        safe = _UNSAFE_DIR.sub("_", name).strip(". ")[:100] or "class"
        if safe != name or safe.lower() in taken:
            safe = f"{safe}-{hashlib.sha1(name.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
        taken.add(safe.lower())
        out[name] = safe
    return out


def render_classification(records: list[Record], ctx: RenderContext) -> list[str]:
    """The Ultralytics classification folders (module docstring); the copied images are moved into them."""
    if ctx.request.media != "copy":
        raise ExportError(
            "a YOLO classification dataset holds its images in train/<class>/ and val/<class>/ folders (Ultralytics "
            "reads no image lists for classification): export with media 'copy' (CLI --media copy)"
        )
    out = Path(ctx.out_dir)
    folders = class_dirs(class_index(ctx.classes, records))
    written = []
    used = set()
    for rec in records:
        if not rec.media:
            continue
        split = CLS_SPLITS.get(str(rec.split or "").lower(), "train")
        name = rec.prelabel
        rel = f"{split}/{folders[name]}/{rec.file_name}" if name is not None else f"{UNSORTED}/{rec.file_name}"
        if name is not None:
            used.add(split)
        src, dst = out / rec.media, out / rel
        if src.is_file():  # a re-run after a kill finds it moved already
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        written.append(rel)
    for split in used:  # every class in every split used: the same class numbers in each
        for folder in folders.values():
            (out / split / folder).mkdir(parents=True, exist_ok=True)
    for empty in (out / MEDIA_DIR, out / "images"):
        if empty.is_dir() and not any(empty.iterdir()):
            empty.rmdir()
    return written


def render(records: list[Record], ctx: RenderContext) -> list[str]:
    if ctx.task != "detection":
        return render_classification(records, ctx)
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
