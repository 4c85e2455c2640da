"""The parts every source kind shares: :class:`Source` (the base class), :class:`SourceRecord` (what a
source yields), :class:`SourceError` (a schema-level problem), stable ids (:func:`make_id`), uri
resolution, and the ``allowed_roots`` checks (which folders a source may read; see the package
docstring).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeminer.indexer.errors import InvalidSource
from edgeminer.indexer.roots import inside_roots, is_under, real_path, real_roots

__all__ = [
    "IMAGE_EXTENSIONS",
    "KINDS",
    "MAX_ROOTS",
    "URL_SCHEMES",
    "Source",
    "SourceError",
    "SourceRecord",
    "make_id",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"})
KINDS = ("manifest", "folders", "coco")
URL_SCHEMES = ("http://", "https://", "s3://", "gs://", "az://")


class SourceError(InvalidSource):
    """A schema-level problem with a source, raised before any record is yielded."""


@dataclass
class SourceRecord:
    """One image (classification) or one object patch of an image (detection).

    ``uri`` is the absolute path or URL of the image (for object rows: the parent image); ``probs`` is
    aligned with the source's ``classes``; ``score`` is a confidence given without probs; ``bbox`` is
    ``[x, y, w, h]`` in pixels of the parent image; ``embedding`` is a precomputed vector; ``error`` is
    the row-level problem (the record is then stored as an error row).

    ``labeled`` is True when ``label`` is set, and for COCO false positives (``label`` None): their
    image is annotated, and its ground truth says "nothing here".
    """

    id: str
    uri: str
    split: str
    label: str | None = None
    probs: list[float] | None = None
    pred_label: str | None = None
    score: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    parent_id: str | None = None
    bbox: list[float] | None = None
    outcome: str | None = None
    embedding: list[float] | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None

    @property
    def labeled(self) -> bool:
        return self.label is not None or self.outcome == "false_positive"


def make_id(uri: str, index: int | str | None = None) -> str:
    """A stable id from an image's absolute uri: 16 hex digits of its sha1, plus ``:<index>`` for
    object patches (``make_id(uri, "gt0")``). The same uri always gives the same id."""
    digest = hashlib.sha1(uri.encode("utf-8")).hexdigest()[:16]
    return digest if index is None else f"{digest}:{index}"


def is_url(uri: str) -> bool:
    """Whether ``uri`` is a URL (http, https, s3, gs, az) rather than a local path."""
    return uri.lower().startswith(URL_SCHEMES)


def resolve_uri(uri: str, base: Path) -> str:
    """An absolute local path (relative paths resolved against ``base``), or the URL unchanged."""
    if is_url(uri):
        return uri
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    path = Path(os.path.expanduser(uri))
    if not path.is_absolute():
        path = base / path
    return os.path.normpath(str(path))


def join_errors(first: str | None, second: str) -> str:
    """A record's error text with one more problem appended."""
    return second if not first else f"{first}; {second}"


MAX_ROOTS = 32


# the one "is this path under these roots" rule (symlinks resolved) lives in indexer/roots.py
_real = real_path
_under = is_under
resolve_roots = real_roots


def _outermost(dirs: Iterable[str]) -> list[str]:
    ordered = sorted({os.path.normpath(d) for d in dirs}, key=lambda d: Path(d).parts)
    out: list[str] = []
    for d in ordered:
        # sorting by path components puts every folder's descendants right after it
        if out and Path(d).parts[: len(Path(out[-1]).parts)] == Path(out[-1]).parts:
            continue
        out.append(d)
    return out


def collapse_roots(dirs: Iterable[str], *, limit: int = MAX_ROOTS) -> list[str]:
    """The distinct folders, dropping any folder that lies inside another one in the list.

    More than ``limit`` folders (images spread over many sub-folders) are replaced by their parents,
    level by level, until at most ``limit`` remain, never going above two levels below the file
    system root (``/data/images`` may become a root, ``/data`` or ``/`` never do).
    """
    roots = _outermost(dirs)
    while len(roots) > limit:
        parents = _outermost(os.path.dirname(r) if len(Path(r).parts) > 3 else r for r in roots)
        if parents == roots:
            break
        roots = parents
    return roots


class Source:
    """Base of the three source kinds (see the module docstring for the attributes)."""

    kind: str = ""

    def __init__(self, path: Path, *, allowed_roots: Sequence[str | os.PathLike[str]] | None = None) -> None:
        self.path = path
        #: resolved folders the images must lie in; None = anywhere (see the module docstring)
        self.allowed_roots: list[str] | None = None if allowed_roots is None else resolve_roots(allowed_roots)
        self.classes: list[str] = []
        self.task = "classification"
        self.metadata_fields: dict[str, str] = {}
        self.roots: list[str] = []
        self.has_probs = False
        self.dim = 0
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[SourceRecord]:
        if self.allowed_roots is None:
            yield from self._records()
            return
        for rec in self._records():
            yield self._guard(rec)

    def _records(self) -> Iterator[SourceRecord]:
        raise NotImplementedError

    def outside(self, uri: str) -> bool:
        """True when this source is limited to ``allowed_roots`` and the local image ``uri`` resolves
        outside them (URLs are not local paths: they are never outside)."""
        if self.allowed_roots is None or not uri or is_url(uri):
            return False
        return not inside_roots(uri[len("file://") :] if uri.startswith("file://") else uri, self.allowed_roots)

    def _guard(self, rec: SourceRecord) -> SourceRecord:
        """The record, or (for an image outside the allowed roots) an error record that is never read."""
        if not self.outside(rec.uri):
            return rec
        message = f"image {rec.uri} is outside the folders this ingest may read (ingest_roots); it was not read"
        return dataclasses.replace(rec, error=join_errors(rec.error, message))

    def _limit_roots(self, roots: list[str]) -> list[str]:
        """``roots`` cut down to the allowed roots: a folder inside them stays, a folder above some of
        them (roots collapsed to a parent) becomes those allowed roots, anything else is dropped."""
        if self.allowed_roots is None:
            return roots
        out: list[str] = []
        for root in roots:
            try:
                real = _real(root)
            except (OSError, ValueError, RuntimeError):
                continue
            if any(_under(real, a) for a in self.allowed_roots):
                out.append(root)
            else:
                out.extend(a for a in self.allowed_roots if _under(a, real))
        return _outermost(out) if out else []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, rows={self._len}, classes={len(self.classes)})"
