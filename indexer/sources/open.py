"""open_source: the one entry point that picks a source kind, checks the options, and opens it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeminer.indexer.sources.base import KINDS, Source, SourceError, inside_roots, resolve_roots
from edgeminer.indexer.sources.coco import CocoSource
from edgeminer.indexer.sources.folders import FolderSource
from edgeminer.indexer.sources.manifest import MANIFEST_EXTENSIONS, ManifestSource

__all__ = ["open_source"]

#: the options each kind takes; any other one given is refused (the first, in _OPTION_ORDER, is named).
_OPTION_ORDER = ("unlabeled", "coco_results", "vectors", "vector_column", "image_root")
_OPTIONS = {
    "manifest": {"image_root", "vectors", "vector_column"},
    "folders": {"unlabeled"},
    "coco": {"coco_results", "image_root"},
}


def _guess_kind(path: Path) -> str:
    if path.is_dir():
        return "folders"
    suffix = path.suffix.lower()
    if suffix in MANIFEST_EXTENSIONS:
        return "manifest"
    if suffix == ".json":
        with open(path, "rb") as f:
            head = f.read(1 << 16).decode("utf-8", errors="replace")
        if '"images"' in head or '"annotations"' in head:
            return "coco"
        raise SourceError(
            f"{path}: a .json source must be COCO (with 'images' and 'annotations'); "
            "for a manifest use .jsonl (one JSON object per line), .csv or .parquet"
        )
    raise SourceError(
        f"{path}: cannot tell the source kind from {suffix or 'no extension'!r}; use a folder of class "
        f"folders, a manifest ({', '.join(MANIFEST_EXTENSIONS)}) or a COCO .json, or pass kind="
    )


def open_source(
    path: str | os.PathLike[str],
    *,
    kind: str | None = None,
    split: str | None = None,
    unlabeled: str | os.PathLike[str] | None = None,
    coco_results: str | os.PathLike[str] | None = None,
    image_root: str | os.PathLike[str] | None = None,
    vectors: str | os.PathLike[str] | None = None,
    vector_column: str | None = None,
    classes: Sequence[str] | None = None,
    score_threshold: float = 0.05,
    iou: float = 0.5,
    allowed_roots: Sequence[str | os.PathLike[str]] | None = None,
) -> Source:
    """Open a source of images for ingest (see the package docstring).

    Parameters
    ----------
    path : path-like
        A folder of class folders, a manifest file or a COCO annotation file.
    kind : str or None
        "manifest", "folders" or "coco"; None guesses: a directory is folders, a ``.json`` with
        "images"/"annotations" is COCO, ``.csv``/``.jsonl``/``.ndjson``/``.parquet`` is a manifest.
    split, classes
        The rows' split and the class names in order (defaults: see each source class).
    unlabeled, coco_results, image_root, vectors, vector_column
        Options of one kind: folders take ``unlabeled``; coco ``coco_results`` and ``image_root``;
        manifest ``image_root``, ``vectors`` and ``vector_column``. Given to another kind they raise.
    score_threshold, iou : float
        coco: the lowest result score kept, and the IoU a match needs.
    allowed_roots : sequence of path-like or None
        None = anywhere; else the source and every path option must lie inside these folders (refused
        before anything looks at them, with a message that does not say whether the path exists).

    Returns
    -------
    Source
        A :class:`ManifestSource`, :class:`FolderSource` or :class:`CocoSource`.

    Raises
    ------
    SourceError
        A path outside the allowed roots, a missing path, an unknown kind, an option of another kind,
        or a schema-level problem of the source itself.
    """
    options: dict[str, Any] = {"unlabeled": unlabeled, "coco_results": coco_results, "image_root": image_root}
    options.update(vectors=vectors, vector_column=vector_column)
    if allowed_roots is not None:
        paths = {name: value for name, value in options.items() if name != "vector_column"}
        _refuse_outside({"source": path, **paths}, allowed_roots)
    p = Path(path).expanduser()
    if not p.exists():
        raise SourceError(f"source {p} does not exist")
    if kind is None:
        kind = _guess_kind(p)
    _check_kind(kind, p, options)
    return _open(kind, p, options, split, classes, allowed_roots, score_threshold=score_threshold, iou=iou)


def _check_kind(kind: str, p: Path, options: dict[str, Any]) -> None:
    """Refuse an unknown kind, an option of another kind, and a file / folder where the kind wants the other."""
    if kind not in KINDS:
        raise SourceError(f"unknown source kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    extra = [name for name in _OPTION_ORDER if options[name] is not None and name not in _OPTIONS[kind]]
    if extra:
        raise SourceError(f"option {extra[0]} does not apply to a {kind} source ({p})")
    if kind == "folders" and not p.is_dir():
        raise SourceError(f"{p} is not a folder; a folders source is root/<label>/<images>")
    if kind != "folders" and p.is_dir():
        raise SourceError(f"{p} is a folder; a {kind} source is a file")


def _open(
    kind: str,
    p: Path,
    options: dict[str, Any],
    split: str | None,
    classes: Sequence[str] | None,
    allowed_roots: Sequence[str | os.PathLike[str]] | None,
    *,
    score_threshold: float,
    iou: float,
) -> Source:
    """The source of ``kind`` over ``p``, with its own options (a file it may not read: SourceError)."""
    if kind == "folders":
        unlabeled = options["unlabeled"]
        return FolderSource(p, unlabeled=unlabeled, split=split, classes=classes, allowed_roots=allowed_roots)
    try:
        if kind == "coco":
            return CocoSource(
                p, results=options["coco_results"], image_root=options["image_root"], split=split, classes=classes,
                score_threshold=score_threshold, iou=iou, allowed_roots=allowed_roots,
            )
        return ManifestSource(
            p, split=split, image_root=options["image_root"], vectors=options["vectors"],
            vector_column=options["vector_column"], classes=classes, allowed_roots=allowed_roots,
        )
    except PermissionError as exc:
        raise SourceError(f"cannot read {exc.filename or p}: permission denied") from None


def _refuse_outside(
    named: dict[str, str | os.PathLike[str] | None], allowed_roots: Sequence[str | os.PathLike[str]]
) -> None:
    real_roots = resolve_roots(allowed_roots)
    for name, value in named.items():
        if value is not None and not inside_roots(value, real_roots):
            raise SourceError(f"{name} {os.fspath(value)!r} is outside the folders this ingest may read")
