"""Class-folder sources: ``root/<label>/*.jpg`` plus an optional unlabeled folder (:class:`FolderSource`)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from edgeminer.indexer.sources.base import (
    IMAGE_EXTENSIONS,
    Source,
    SourceError,
    SourceRecord,
    collapse_roots,
    inside_roots,
    make_id,
)

__all__ = ["FolderSource"]


def _images_under(folder: Path, *, skip: Path | None = None, allowed: Sequence[str] | None = None) -> list[Path]:
    """Image files under ``folder`` (recursive, hidden entries skipped), sorted. With ``allowed``
    (resolved roots), entries that resolve outside them are skipped, folders and files alike."""
    if allowed is not None and not inside_roots(folder, allowed):
        return []
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".")
            and (skip is None or (here / d).resolve() != skip)
            and (allowed is None or inside_roots(here / d, allowed))
        )
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                if allowed is None or inside_roots(here / name, allowed):
                    out.append(here / name)
    return out


class FolderSource(Source):
    """Labeled images in class sub-folders ``root/<label>/...`` (searched recursively), plus an optional
    ``unlabeled`` folder (recursive) whose images get split "unlabeled".

    Classes are the sorted sub-folder names (or ``classes=``, which must include every folder name).
    Labeled images get split ``split`` (default "train"). A root holding images but no sub-folders is
    read as an unlabeled pool. No predictions: the embedder's model provides them, if any.
    """

    kind = "folders"

    def __init__(
        self,
        root: Path,
        *,
        unlabeled: str | os.PathLike[str] | None = None,
        split: str | None = None,
        classes: Sequence[str] | None = None,
        allowed_roots: Sequence[str | os.PathLike[str]] | None = None,
    ) -> None:
        super().__init__(root, allowed_roots=allowed_roots)
        allowed = self.allowed_roots
        root = root.resolve()
        pool = Path(unlabeled).expanduser().resolve() if unlabeled is not None else None
        if pool is not None and not pool.is_dir():
            raise SourceError(f"unlabeled folder {pool} does not exist or is not a folder")
        self.split = split or "train"
        entries: list[tuple[Path, str | None]] = []
        folders = sorted(
            p
            for p in root.iterdir()
            if (allowed is None or inside_roots(p, allowed))  # decided before looking at what p points to
            and p.is_dir()
            and not p.name.startswith(".")
            and p.resolve() != pool
        )
        for folder in folders:
            entries.extend((f, folder.name) for f in _images_under(folder, skip=pool, allowed=allowed))
        names = [f.name for f in folders]
        if not folders:
            loose = _images_under(root, skip=pool, allowed=allowed)
            if not loose and pool is None:
                raise SourceError(f"{root}: no class sub-folders and no images; expected {root}/<label>/<image files>")
            if root != pool:
                entries.extend((f, None) for f in loose)
        if pool is not None:
            entries.extend((f, None) for f in _images_under(pool, allowed=allowed))
        if classes:
            missing = [n for n in names if n not in classes]
            if missing:
                raise SourceError(f"{root}: folders {missing} are not among classes= {list(classes)}")
            self.classes = [str(c) for c in classes]
        else:
            self.classes = names
        self._entries = entries
        self._len = len(entries)
        self.roots = self._limit_roots(collapse_roots([str(root)] + ([str(pool)] if pool is not None else [])))

    def _records(self) -> Iterator[SourceRecord]:
        for path, label in self._entries:
            uri = os.path.normpath(str(path.absolute()))
            yield SourceRecord(
                id=make_id(uri), uri=uri, split="unlabeled" if label is None else self.split, label=label
            )
