"""COCO sources: detection ground truth plus optional results, one record per object patch
(:class:`CocoSource`)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgeminer.indexer.sources.base import (
    Source,
    SourceError,
    SourceRecord,
    collapse_roots,
    is_url,
    make_id,
    resolve_uri,
)
from edgeminer.indexer.sources.values import value_kind

__all__ = ["CocoSource", "iou_xywh"]

#: (k, annotation, box): the k-th annotation of an image (box empty when the annotation is bad).
_Gt = tuple[int, dict[str, Any], list[float]]
#: (j, result, box, score): the j-th result of an image.
_Det = tuple[int, dict[str, Any], list[float], float]


def iou_xywh(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``[x, y, w, h]`` boxes (0 when either is empty)."""
    ax, ay, aw, ah = (float(v) for v in a)
    bx, by, bw, bh = (float(v) for v in b)
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def _load_json(path: Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except FileNotFoundError:
        raise SourceError(f"{what} {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: not valid JSON: {exc}") from None


def _bbox(value: Any) -> list[float] | None:
    """A valid [x, y, w, h] with w, h > 0, or None."""
    if not isinstance(value, list | tuple) or len(value) != 4:
        return None
    try:
        box = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
        return None
    return box


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _read_ground_truth(path: Path) -> dict[str, Any]:
    gt = _load_json(path, "COCO annotation file")
    if not isinstance(gt, dict):
        raise SourceError(f"{path}: a COCO file is a JSON object with 'images', 'annotations', 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise SourceError(f"{path}: missing or non-list {key!r}; is this a COCO detection file?")
    return gt


def _read_categories(
    path: Path, categories: list[Any], classes: Sequence[str] | None
) -> tuple[dict[Any, str], list[str]]:
    """(category id -> name, the classes): category names in id order, or ``classes`` when given (it
    must hold every category name)."""
    cats: dict[Any, str] = {}
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise SourceError(f"{path}: categories[{i}] needs an 'id' and a 'name'")
        cats[cat["id"]] = str(cat["name"])
    names = [cats[k] for k in sorted(cats, key=lambda k: (str(type(k)), k))]
    if len(set(names)) != len(names):
        raise SourceError(f"{path}: two categories share a name: {names}")
    if classes:
        missing = [n for n in names if n not in classes]
        if missing:
            raise SourceError(f"{path}: categories {missing} are not among classes= {list(classes)}")
        names = [str(c) for c in classes]
    return cats, names


def _read_images(path: Path, entries: list[Any]) -> dict[Any, dict[str, Any]]:
    images: dict[Any, dict[str, Any]] = {}
    for i, img in enumerate(entries):
        if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
            raise SourceError(f"{path}: images[{i}] needs an 'id' and a 'file_name'")
        images[img["id"]] = img
    return images


def _read_results(rpath: Path) -> list[Any]:
    loaded = _load_json(rpath, "COCO results file")
    if isinstance(loaded, dict) and isinstance(loaded.get("annotations"), list):
        loaded = loaded["annotations"]
    if not isinstance(loaded, list):
        raise SourceError(f"{rpath}: COCO results are a JSON list of {{image_id, category_id, bbox, score}}")
    return loaded


def _score(det: dict[str, Any]) -> float:
    """A result's score (1.0 when absent; NaN when not a number)."""
    try:
        return float(det.get("score", 1.0))
    except (TypeError, ValueError):
        return float("nan")


class CocoSource(Source):
    """COCO detection ground truth (+ optional COCO results): one record per object patch.

    Matching, per image: predictions with ``score >= score_threshold`` are taken in descending score
    order (ties: file order) and each is matched to the unmatched ground-truth box of highest IoU,
    if that IoU is ``>= iou`` (class-agnostic). Then:

    ======================  ==========  ==========  ======  ===============
    case                    label       pred_label  bbox    outcome
    ======================  ==========  ==========  ======  ===============
    matched, same class     GT class    pred class  GT box  correct
    matched, other class    GT class    pred class  GT box  wrong_class
    prediction, no GT       None        pred class  pred    false_positive
    GT, no prediction       GT class    None        GT box  false_negative
    no results file         GT class    None        GT box  None
    ======================  ==========  ==========  ======  ===============

    False positives have ``label`` None but count as labeled (their image is annotated and says
    "nothing here"); ``score`` is the prediction's score. ``uri`` is the parent image (``file_name``
    under ``image_root``, default the annotation file's folder), ``parent_id`` its :func:`make_id`,
    ``id`` = ``make_id(image uri, "gt<k>")`` for the k-th annotation of that image (file order) and
    ``"pred<j>"`` for the j-th result of that image, so ids are stable across runs. Metadata:
    ``coco_image_id`` and ``iscrowd`` (None for false positives). Classes are the category names in
    category id order. Annotations or results naming an unknown image or category, or with a bad
    box, become error records.
    """

    kind = "coco"


    def __init__(
        self,
        path: Path,
        *,
        results: str | os.PathLike[str] | None = None,
        image_root: str | os.PathLike[str] | None = None,
        split: str | None = None,
        classes: Sequence[str] | None = None,
        score_threshold: float = 0.05,
        iou: float = 0.5,
        allowed_roots: Sequence[str | os.PathLike[str]] | None = None,
    ) -> None:
        super().__init__(path, allowed_roots=allowed_roots)
        if not 0 < iou <= 1:
            raise SourceError(f"iou must be in (0, 1], got {iou}")
        self.task = "detection"
        self.split = split or "train"
        self.score_threshold = float(score_threshold)
        self.iou = float(iou)
        self.base = Path(image_root).expanduser().resolve() if image_root else path.parent.resolve()
        gt = _read_ground_truth(path)
        self._cats, self.classes = _read_categories(path, gt["categories"], classes)
        self._images = _read_images(path, gt["images"])
        preds = _read_results(Path(results).expanduser()) if results is not None else None
        self.has_predictions = preds is not None
        self._record_list = self._build(gt["annotations"], preds)
        self._len = len(self._record_list)
        id_kinds = {value_kind(k, from_text=False) for k in self._images}
        self.metadata_fields = {"coco_image_id": "int" if id_kinds <= {"int"} else "string", "iscrowd": "bool"}
        local = [self._uri(img) for img in self._images.values() if not is_url(img["file_name"])]
        dirs = {os.path.dirname(uri) for uri in local if not self.outside(uri)}
        self.roots = self._limit_roots(collapse_roots(dirs | {str(self.base)}))
        self._check_images_found(image_root is not None)

    def _uri(self, img: Mapping[str, Any]) -> str:
        return resolve_uri(str(img["file_name"]), self.base)

    def _check_images_found(self, root_given: bool) -> None:
        """Refuse early when none of the first images exists: image_root is most likely wrong."""
        sample = [self._uri(img) for img in list(self._images.values())[:20] if not is_url(img["file_name"])]
        sample = [u for u in sample if not self.outside(u)]  # never look whether an outside file exists
        if sample and not any(os.path.exists(u) for u in sample):
            hint = "check image_root" if root_given else "pass image_root= (CLI: --image-root) with the images' folder"
            raise SourceError(f"{self.path}: none of the first images exists (e.g. {sample[0]}); {hint}")

    def _build(self, anns: list[Any], preds: list[Any] | None) -> list[SourceRecord]:
        """Every record: error records of bad annotations, then of bad results, then each image's
        matched objects (images in file order)."""
        records: list[SourceRecord] = []
        gts = self._ground_truth_boxes(anns, records)
        dts = self._predicted_boxes(preds or [], records)
        for image_id, img in self._images.items():
            records.extend(self._match(img, [g for g in gts.get(image_id, []) if g[2]], dts.get(image_id, [])))
        return records

    def _ground_truth_boxes(self, anns: list[Any], records: list[SourceRecord]) -> dict[Any, list[_Gt]]:
        """Annotations per image id, in file order (a bad one keeps its position k with an empty box and
        adds an error record to ``records``)."""
        gts: dict[Any, list[_Gt]] = {}
        for i, ann in enumerate(anns):
            where = f"{self.path.name}: annotations[{i}]"
            if not isinstance(ann, dict):
                records.append(self._error(f"{self.path}#ann{i}", f"{where} is not an object"))
                continue
            img = self._images.get(ann.get("image_id"))
            if img is None:
                records.append(self._error(f"{self.path}#ann{i}", f"{where}: unknown image_id {ann.get('image_id')!r}"))
                continue
            group = gts.setdefault(img["id"], [])
            k = len(group)
            box = _bbox(ann.get("bbox"))
            problem = None
            if ann.get("category_id") not in self._cats:
                problem = f"{where}: unknown category_id {ann.get('category_id')!r}"
            elif box is None:
                problem = f"{where}: bbox {ann.get('bbox')!r} is not [x, y, w, h] with w, h > 0"
            if problem or box is None:
                group.append((k, ann, []))
                records.append(self._error(self._uri(img), str(problem), index=f"gt{k}", img=img))
                continue
            group.append((k, ann, box))
        return gts

    def _predicted_boxes(self, preds: list[Any], records: list[SourceRecord]) -> dict[Any, list[_Det]]:
        """Results at or above the score threshold per image id (j = the result's position among its
        image's results); bad results add an error record to ``records``."""
        dts: dict[Any, list[_Det]] = {}
        counters: dict[Any, int] = {}
        for i, det in enumerate(preds):
            where = f"results[{i}]"
            if not isinstance(det, dict):
                records.append(self._error(f"{self.path}#det{i}", f"{where} is not an object"))
                continue
            img = self._images.get(det.get("image_id"))
            if img is None:
                message = f"{where}: prediction for unknown image_id {det.get('image_id')!r}"
                records.append(self._error(f"{self.path}#det{i}", message))
                continue
            j = counters.get(img["id"], 0)
            counters[img["id"]] = j + 1
            box = _bbox(det.get("bbox"))
            score = _score(det)
            problem = None
            if det.get("category_id") not in self._cats:
                problem = f"{where}: unknown category_id {det.get('category_id')!r}"
            elif box is None:
                problem = f"{where}: bbox {det.get('bbox')!r} is not [x, y, w, h] with w, h > 0"
            elif not math.isfinite(score):
                problem = f"{where}: score {det.get('score')!r} is not a number"
            if problem or box is None:
                records.append(self._error(self._uri(img), str(problem), index=f"pred{j}", img=img))
                continue
            if score >= self.score_threshold:
                dts.setdefault(img["id"], []).append((j, det, box, score))
        return dts

    def _match(
        self,
        img: dict[str, Any],
        gts: list[tuple[int, dict[str, Any], list[float]]],
        dts: list[tuple[int, dict[str, Any], list[float], float]],
    ) -> list[SourceRecord]:
        uri = self._uri(img)
        parent = make_id(uri)
        matched: dict[int, tuple[int, dict[str, Any], list[float], float]] = {}  # gt position -> det
        unmatched_dts: list[tuple[int, dict[str, Any], list[float], float]] = []
        for det in sorted(dts, key=lambda d: -d[3]):  # sorted() is stable: ties keep file order
            best, best_iou = -1, self.iou
            for pos, (_k, _ann, gbox) in enumerate(gts):
                if pos in matched:
                    continue
                overlap = iou_xywh(det[2], gbox)
                if overlap >= best_iou and (best < 0 or overlap > best_iou):
                    best, best_iou = pos, overlap
            if best >= 0:
                matched[best] = det
            else:
                unmatched_dts.append(det)
        width, height = _int(img.get("width")), _int(img.get("height"))

        def patch(index: str, **kw: Any) -> SourceRecord:
            return SourceRecord(
                id=make_id(uri, index), uri=uri, split=self.split, parent_id=parent, width=width, height=height, **kw
            )

        out: list[SourceRecord] = []
        for pos, (k, ann, gbox) in enumerate(gts):
            label = self._cats[ann["category_id"]]
            meta = {"coco_image_id": img["id"], "iscrowd": bool(ann.get("iscrowd", 0))}
            hit = matched.get(pos)
            if hit is not None:
                pred = self._cats[hit[1]["category_id"]]
                outcome = "correct" if pred == label else "wrong_class"
                out.append(
                    patch(
                        f"gt{k}", label=label, pred_label=pred, score=hit[3], bbox=gbox, outcome=outcome, metadata=meta
                    )
                )
            else:
                missed = "false_negative" if self.has_predictions else None
                out.append(patch(f"gt{k}", label=label, bbox=gbox, outcome=missed, metadata=meta))
        for j, fp, dbox, score in sorted(unmatched_dts, key=lambda d: d[0]):
            out.append(
                patch(
                    f"pred{j}",
                    pred_label=self._cats[fp["category_id"]],
                    score=score,
                    bbox=dbox,
                    outcome="false_positive",
                    metadata={"coco_image_id": img["id"], "iscrowd": None},
                )
            )
        return out

    def _error(
        self, key: str, message: str, *, index: str | None = None, img: dict[str, Any] | None = None
    ) -> SourceRecord:
        """An error record; for an object of a known image it keeps the image's uri and ids."""
        if img is None:
            return SourceRecord(id=make_id(key), uri="", split=self.split, error=message)
        return SourceRecord(
            id=make_id(key, index),
            uri=key,
            split=self.split,
            parent_id=make_id(key),
            width=_int(img.get("width")),
            height=_int(img.get("height")),
            metadata={"coco_image_id": img["id"], "iscrowd": None},
            error=message,
        )

    def _records(self) -> Iterator[SourceRecord]:
        yield from self._record_list
