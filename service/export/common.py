"""Shared parts of the export targets: the request, selections, row records, media references,
box geometry, and small file helpers.

An export turns a selection of sample rows into the files a labeling tool imports. The work is split
in two so a killed job can resume:

1. **records** (chunked): each selected row becomes a JSON record (its labels, prediction, scores,
   metadata and a media reference; media copied into the export when asked). Records are written one
   chunk file at a time (``parts/00000.jsonl``), atomically, so a restarted job skips finished chunks.
2. **render**: the target module reads all records and writes its own files (tasks JSON, CVAT XML...).

Geometry: a detection row's ``bbox`` is ``[x, y, w, h]`` in pixels of its parent image, whose size is
in ``width`` / ``height``; classification rows cover the whole image.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import quote, urlsplit

from edgeminer.indexer.errors import InputError

#: the labeling tools an export writes for (service/export/runner.py maps each to its module).
Target = Literal["label_studio", "cvat", "coco", "yolo", "labelbox", "sagemaker", "csv"]
TARGETS: tuple[Target, ...] = get_args(Target)
MediaMode = Literal["url", "copy", "relative"]
MEDIA_MODES: tuple[MediaMode, ...] = get_args(MediaMode)
SELECTION_KINDS = ("ids", "issue", "selection", "filter")

#: columns an export reads from the samples table (plus every ``meta_*`` column).
EXPORT_COLUMNS = (
    "id",
    "uri",
    "parent_id",
    "bbox",
    "width",
    "height",
    "split",
    "labeled",
    "label",
    "pred_label",
    "confidence",
    "least_confidence",
    "margin",
    "ratio",
    "entropy",
    "mc_variance",
    "bald",
    "outcome",
    "model_version",
    "status",
    "error",
)
SCORE_FIELDS = ("confidence", "least_confidence", "margin", "ratio", "entropy", "mc_variance", "bald")


class ExportError(InputError):
    """A problem with an export request or its data that the user can fix (bad target, unknown ids, a
    media_base_url that is not usable...)."""


# ----------------------------------------------------------------------------------------------
# Request
# ----------------------------------------------------------------------------------------------


#: the placeholders a ``media_base_url`` template may hold; each is replaced by the row's value,
#: URL-quoted (``path`` keeps its slashes). Nothing else in the template is interpreted.
MEDIA_URL_PLACEHOLDERS = ("id", "dataset", "path", "name")
MAX_MEDIA_BASE_URL = 2000
_PLACEHOLDER = re.compile(r"\{(" + "|".join(MEDIA_URL_PLACEHOLDERS) + r")\}")
_STRAY_BRACE = re.compile(r"\{[^{}]{0,40}\}?|\}")


def _shown(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def check_media_base_url(url: str) -> str:
    """``url`` if it is a usable media_base_url: an absolute URL, at most 2000 characters, whose only
    ``{...}`` parts are the placeholders {id}, {dataset}, {path} and {name}. ExportError (a ValueError) says
    what is wrong (the request models turn it into a 422 naming the field)."""
    if len(url) > MAX_MEDIA_BASE_URL:
        raise ExportError(f"media_base_url is {len(url)} characters long; at most {MAX_MEDIA_BASE_URL} are allowed")
    stray = _STRAY_BRACE.search(_PLACEHOLDER.sub("", url))
    if stray is not None:
        names = ", ".join("{" + p + "}" for p in MEDIA_URL_PLACEHOLDERS)
        raise ExportError(
            f"media_base_url {_shown(url)} contains {_shown(stray.group(0), 42)}: the only placeholders are "
            f"{names}, written exactly so (no format specs or attributes); write a literal brace as %7B / %7D"
        )
    parts = urlsplit(_PLACEHOLDER.sub("x", url))
    if not parts.scheme or not (parts.netloc or parts.scheme == "file"):
        raise ExportError(
            f"media_base_url {_shown(url)} is not an absolute URL "
            "(e.g. https://cdn.example.com/images or s3://bucket/prefix)"
        )
    return url


def has_placeholders(url: str) -> bool:
    return _PLACEHOLDER.search(url) is not None


def fill_media_url(template: str, values: Mapping[str, str]) -> str:
    """``template`` with each placeholder replaced, in one pass, by its value URL-quoted (``path`` keeps
    its ``/``). A plain string replacement: nothing of the values or the template is evaluated."""
    safe = {n: quote(str(values.get(n, "")), safe="/" if n == "path" else "") for n in MEDIA_URL_PLACEHOLDERS}
    return _PLACEHOLDER.sub(lambda m: safe[m.group(1)], template)


@dataclass
class ExportRequest:
    """What to export and how. Exactly one selection: ``ids``, ``issue`` (an issue doc id),
    ``selection`` (a saved mine / select result doc id) or ``filter`` (structured filters)."""

    target: str
    ids: list[str] | None = None
    issue: str | None = None
    selection: str | None = None
    filter: list[dict[str, Any]] | dict[str, Any] | None = None
    media: str = "relative"  # url | copy | relative
    media_base_url: str | None = None  # url mode: base the relative media path is appended to
    media_root: str | None = None  # relative mode: paths are made relative to this folder
    chunk_size: int = 500
    name: str = ""

    def validate(self) -> ExportRequest:
        if self.target not in TARGETS:
            raise ExportError(f"unknown export target {self.target!r}: choose one of {', '.join(TARGETS)}")
        if self.media not in MEDIA_MODES:
            raise ExportError(f"unknown media mode {self.media!r}: choose one of {', '.join(MEDIA_MODES)}")
        given = [k for k in SELECTION_KINDS if getattr(self, k) not in (None, [], {})]
        if len(given) != 1:
            what = f"got {', '.join(given)}" if given else "got none"
            raise ExportError(f"give exactly one selection ({', '.join(SELECTION_KINDS)}); {what}")
        if not 1 <= int(self.chunk_size) <= 100_000:
            raise ExportError(f"chunk_size must be between 1 and 100000, not {self.chunk_size}")
        if self.media_base_url is not None:
            try:
                check_media_base_url(self.media_base_url)
            except ValueError as exc:
                raise ExportError(
                    str(exc), errors=[{"loc": ["body", "media_base_url"], "msg": str(exc)}], field="media_base_url"
                ) from None
        return self

    @property
    def selection_kind(self) -> str:
        return next(k for k in SELECTION_KINDS if getattr(self, k) not in (None, [], {}))

    def key(self, dataset: str) -> str:
        """A stable hash of everything that changes the output (not ``name``): the idempotency key."""
        body = asdict(self)
        body.pop("name", None)
        body["dataset"] = dataset
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def export_id(self, dataset: str, *, nonce: str = "") -> str:
        return "exp-" + hashlib.sha256((self.key(dataset) + nonce).encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExportRequest:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ExportError(f"unknown export option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**dict(data)).validate()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# Selection -> ids
# ----------------------------------------------------------------------------------------------


def ids_from_doc(doc: Mapping[str, Any]) -> list[str]:
    """The sample ids a saved issue / mine / select document holds. Accepts the shapes those
    documents use: ``sample_ids`` / ``ids`` lists, or ``items`` / ``results`` / ``selected`` lists
    of ids or of objects with an ``id``."""
    for key in ("sample_ids", "ids", "items", "results", "selected", "picks"):
        value = doc.get(key)
        if isinstance(value, list):
            out = []
            for item in value:
                if isinstance(item, Mapping):
                    sid = item.get("id", item.get("sample_id"))
                    if sid is not None:
                        out.append(str(sid))
                elif item is not None:
                    out.append(str(item))
            return out
    raise ExportError(
        f"document {doc.get('id', '?')!r} holds no sample ids (expected a 'sample_ids', 'ids' or 'items' list)"
    )


def dedupe(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(str(i) for i in ids))


# ----------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------


@dataclass
class Record:
    """One exported row, as stored in a chunk file and handed to the target renderers."""

    id: str
    uri: str | None
    image_key: str  # rows of one image share it (parent_id for detection objects, else the id)
    media: str | None  # what the tool loads: URL, path inside the export, or a relative path
    file_name: str  # unique file name of the image inside the export (COCO file_name, YOLO stem...)
    width: int | None
    height: int | None
    bbox: list[float] | None
    split: str | None
    labeled: bool
    label: str | None
    pred_label: str | None
    scores: dict[str, float | None] = field(default_factory=dict)
    outcome: str | None = None
    model_version: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    media_error: str | None = None

    @property
    def confidence(self) -> float | None:
        return self.scores.get("confidence")

    @property
    def prelabel(self) -> str | None:
        """The class shown to labelers: the model's prediction, else the existing label."""
        return self.pred_label if self.pred_label is not None else self.label

    def to_json(self) -> str:
        # the fields are flat (scalars, a list, two flat dicts): no need for asdict's deep copy
        return json.dumps(self.__dict__, default=_json_default, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Record:
        return cls(**json.loads(text))


@dataclass
class Image:
    """One image of the export with the records (objects, or the single classification row) on it."""

    key: str
    media: str | None
    file_name: str
    width: int | None
    height: int | None
    records: list[Record]

    @property
    def first(self) -> Record:
        return self.records[0]


def group_images(records: Sequence[Record]) -> list[Image]:
    """Records grouped by image, in first-seen order."""
    images: dict[str, Image] = {}
    for rec in records:
        img = images.get(rec.image_key)
        if img is None:
            images[rec.image_key] = Image(rec.image_key, rec.media, rec.file_name, rec.width, rec.height, [rec])
        else:
            img.records.append(rec)
    return list(images.values())


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def _clean_float(value: Any) -> float | None:
    if value is None:
        return None
    f = float(value)
    return None if f != f else round(f, 6)  # NaN -> None; float32 noise off


def row_to_record(row: Mapping[str, Any], *, task: str, media: str | None, file_name: str) -> Record:
    bbox = row.get("bbox")
    image_key = str(row["id"])
    if task == "detection":
        image_key = str(row.get("parent_id") or row.get("uri") or row["id"])
    meta = {k[len("meta_") :]: v for k, v in row.items() if k.startswith("meta_")}
    return Record(
        id=str(row["id"]),
        uri=row.get("uri"),
        image_key=image_key,
        media=media,
        file_name=file_name,
        width=int(row["width"]) if row.get("width") is not None else None,
        height=int(row["height"]) if row.get("height") is not None else None,
        bbox=[round(float(v), 4) for v in bbox] if bbox is not None else None,
        split=row.get("split"),
        labeled=bool(row.get("labeled")),
        label=row.get("label"),
        pred_label=row.get("pred_label"),
        scores={k: _clean_float(row.get(k)) for k in SCORE_FIELDS},
        outcome=row.get("outcome"),
        model_version=row.get("model_version"),
        metadata={k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in meta.items()},
    )


# ----------------------------------------------------------------------------------------------
# Media references
# ----------------------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_STEM = 100  # characters of an image's file name stem inside an export
MAX_EXT = 12  # characters of its extension, with the dot


def is_remote(uri: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", uri)) and not uri.startswith("file://")


def local_path(uri: str) -> Path:
    return Path(uri[len("file://") :] if uri.startswith("file://") else uri)


def unique_file_name(uri: str | None, key: str, taken: set[str]) -> str:
    """A file name for the image inside the export: its own base name, made unique (case-insensitively,
    by stem, since YOLO label files are named by stem) with a short hash of the key when two images
    share one. Only [A-Za-z0-9._-] characters, never ``.`` / ``..`` or a leading dot, at most
    ``MAX_STEM`` + ``MAX_EXT`` characters (a file system takes 255 bytes a name): an id or uri such as
    ``../../x``, ``/etc/passwd`` or one with NUL bytes is only ever a file name inside the export.
    ``taken`` holds the stems used so far."""
    base = os.path.basename(urlsplit(uri).path if uri and is_remote(uri) else (uri or "")) or key
    stem, ext = os.path.splitext(base)
    stem = _UNSAFE.sub("_", stem).strip("._")[:MAX_STEM].strip("._") or "image"
    ext = _UNSAFE.sub("", ext)[:MAX_EXT].rstrip(".") or ".png"
    digest = hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    candidate, n = stem, 0
    while candidate.lower() in taken:
        n += 1
        candidate = f"{stem}-{digest}" if n == 1 else f"{stem}-{digest}-{n}"
    taken.add(candidate.lower())
    return candidate + ext


def relative_to_roots(uri: str, roots: Sequence[str]) -> str | None:
    """``uri`` relative to the first root containing it (POSIX separators), else None. Paths are
    compared lexically (absolute, normalised), without touching the disk."""
    path = os.path.abspath(str(local_path(uri)))
    for root in roots:
        base = os.path.abspath(root)
        if path == base or not path.startswith(base.rstrip(os.sep) + os.sep):
            continue
        return Path(os.path.relpath(path, base)).as_posix()
    return None


def join_url(base: str, rel: str) -> str:
    return base.rstrip("/") + "/" + quote(rel.lstrip("/"), safe="/")


def copy_media(src: str, dst: Path) -> None:
    """Copy one local image into the export (atomically: a killed copy never leaves half a file)."""
    if is_remote(src):
        raise ExportError(f"cannot copy remote media {src!r}: use media 'url' for remote images")
    path = local_path(src)
    if not path.is_file():
        raise ExportError(f"image file {str(path)!r} does not exist (moved or deleted since ingest?)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".copy-")
    os.close(fd)
    try:
        shutil.copyfile(path, tmp)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------------------------
# Box geometry (pixel xywh <-> the encodings the tools use)
# ----------------------------------------------------------------------------------------------


def xywh_to_percent(bbox: Sequence[float], width: float, height: float) -> tuple[float, float, float, float]:
    """Label Studio: x, y, w, h in percent of the image size."""
    x, y, w, h = bbox
    return (100.0 * x / width, 100.0 * y / height, 100.0 * w / width, 100.0 * h / height)


def percent_to_xywh(box: Sequence[float], width: float, height: float) -> tuple[float, float, float, float]:
    x, y, w, h = box
    return (x * width / 100.0, y * height / 100.0, w * width / 100.0, h * height / 100.0)


def xywh_to_yolo(bbox: Sequence[float], width: float, height: float) -> tuple[float, float, float, float]:
    """YOLO: centre x, centre y, w, h normalised to [0, 1]."""
    x, y, w, h = bbox
    return ((x + w / 2) / width, (y + h / 2) / height, w / width, h / height)


def yolo_to_xywh(box: Sequence[float], width: float, height: float) -> tuple[float, float, float, float]:
    cx, cy, w, h = box
    return ((cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height)


def xywh_to_corners(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    """CVAT: xtl, ytl, xbr, ybr."""
    x, y, w, h = bbox
    return (x, y, x + w, y + h)


def corners_to_xywh(box: Sequence[float]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    return (x1, y1, x2 - x1, y2 - y1)


def record_box(rec: Record) -> tuple[float, float, float, float]:
    """The record's box in pixels; the whole image for classification rows."""
    if rec.bbox is not None:
        x, y, w, h = rec.bbox
        return (float(x), float(y), float(w), float(h))
    return (0.0, 0.0, float(rec.width or 0), float(rec.height or 0))


def iou_xywh(a: Sequence[float], b: Sequence[float]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def write_text(path: Path, text: str) -> None:
    """Write a file atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


_XML_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def xml_safe(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot hold (NUL, most control characters, lone
    surrogates): a class name or id carrying one must not make the whole XML file unreadable."""
    return _XML_ILLEGAL.sub("", text)


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=1, default=_json_default, ensure_ascii=False) + "\n")


def class_index(classes: Sequence[str], records: Iterable[Record]) -> list[str]:
    """The dataset's classes, plus any label / prediction not among them (appended, sorted)."""
    known = list(classes)
    extra = sorted({c for r in records for c in (r.label, r.pred_label) if c is not None and c not in set(known)})
    return known + extra


@dataclass
class RenderContext:
    """What a target renderer gets besides the records."""

    dataset: str
    export_id: str
    out_dir: Path
    classes: list[str]
    task: str
    request: ExportRequest
    created_at: str = ""
