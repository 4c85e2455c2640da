"""Is this path under these roots? The one implementation of the rule, for every caller that confines
file access to configured folders: the ingest roots of API requests (service/paths.py), the media roots
images are served, streamed and copied from (service/media.py).

A root is made absolute (``~`` expanded, relative against the working directory) and resolved, symlinks
followed; empty and URL-like entries (``s3://...``) are skipped. A path is under a root when it is the
root or inside it, compared component-wise (``/data/a`` is not under ``/data/ab``). A path is checked on
its resolved form, the way opening it would go: a ``..`` after a symlink climbs from the link's target,
never collapsed lexically first; the path need not exist.

Standard library only, so the store layer and the service both use it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence


def is_remote_uri(uri: str | os.PathLike[str]) -> bool:
    """Whether ``uri`` names object storage (``s3://``, ``gs://``, ...) rather than a local folder
    (``file://`` is local)."""
    text = str(os.fspath(uri))
    return "://" in text and not text.startswith("file://")


def absolute_path(path: str | os.PathLike[str]) -> str:
    """``path`` made absolute, ``~`` expanded, normalised lexically (symlinks not followed)."""
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def real_path(path: str | os.PathLike[str]) -> str:
    """Absolute, ``~`` expanded, symlinks resolved the way opening it would; the path need not exist."""
    return os.path.realpath(os.path.expanduser(os.fspath(path)))


def is_under(path: str, root: str) -> bool:
    """``path`` is ``root`` or inside it (both absolute, normalised)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def root_pairs(roots: Iterable[str | os.PathLike[str]]) -> list[tuple[str, str]]:
    """(absolute, resolved) of every usable root, in order, without repeats. The absolute form lets a
    caller check a path before resolving it (refusing ``/outside/link -> /root/x`` too)."""
    out: list[tuple[str, str]] = []
    for root in roots:
        text = str(os.fspath(root)).strip() if root else ""
        if not text or "://" in text:
            continue
        try:
            absolute = absolute_path(text)
            out.append((absolute, real_path(absolute)))
        except (OSError, ValueError):
            continue
    return list(dict.fromkeys(out))


def real_roots(roots: Iterable[str | os.PathLike[str]]) -> list[str]:
    """The resolved paths of the usable roots, in order, without repeats."""
    return list(dict.fromkeys(real for _, real in root_pairs(roots)))


def inside_roots(path: str | os.PathLike[str], resolved: Sequence[str]) -> bool:
    """Whether ``path`` resolves (symlinks followed) inside one of ``resolved`` (from :func:`real_roots`)."""
    try:
        real = real_path(path)
    except (OSError, ValueError, RuntimeError):  # e.g. an embedded NUL byte, a symlink loop
        return False
    return any(is_under(real, r) for r in resolved)
