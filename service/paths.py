"""Server paths named in API requests: only under ``settings.ingest_roots``.

An API request that names a file or folder on the server (an ingest source, an image root, a vectors
file, a model file...) may only name one under a configured ingest root. The check comes before the
path is opened: the path is made absolute (``~`` expanded, relative paths against the server's working
directory) and resolved, symlinks followed, and the result must lie inside one of the resolved roots
(the rule of indexer/roots.py, shared with the media roots).
Otherwise the request is refused with a 403 whose text is the same whether the path exists or not (it
echoes the caller's own string, never the resolved one, which could name a symlink's target). With no
ingest roots configured every such request is refused, and the 403 says which setting to change.

The CLI, run by the machine's own user, does not go through here. Uploads name no server path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from edgeminer.indexer.errors import PathOutsideRoots
from edgeminer.indexer.roots import is_under, real_path, real_roots

#: the setting that lists the roots, as an environment variable (what an operator changes).
INGEST_ROOTS_ENV = "EDGEMINER_INGEST_ROOTS"

#: an open_clip ``pretrained`` value that is a tag name (``laion2b_s34b_b79k``), not a file.
_TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def require_under_roots(value: str | os.PathLike[str], roots: Sequence[str], *, field: str) -> Path:
    """The resolved path of ``value`` if it lies under one of ``roots`` (``settings.ingest_roots``);
    else :class:`PathOutsideRoots` (403), with a message that does not depend on whether it exists."""
    allowed = real_roots(roots)
    if not allowed:
        raise PathOutsideRoots(
            f"{field}: this server reads no paths named in API requests: set {INGEST_ROOTS_ENV} to the "
            "folders ingest may read (settings.ingest_roots), or upload the data, or ingest with the CLI "
            "on the server",
            field=field,
            setting=INGEST_ROOTS_ENV,
        )
    try:
        real: str | None = real_path(value)
    except (OSError, ValueError, RuntimeError):  # e.g. an embedded NUL byte
        real = None
    if real is None or not any(is_under(real, r) for r in allowed):
        raise PathOutsideRoots(
            f"{field}: paths named in API requests must be under {INGEST_ROOTS_ENV} "
            f"(settings.ingest_roots); {os.fspath(value)!r} is not",
            field=field,
            setting=INGEST_ROOTS_ENV,
        )
    return Path(real)


def names_a_file(pretrained: str) -> bool:
    """Whether an open_clip ``pretrained`` value names a checkpoint file rather than a tag."""
    text = pretrained.strip()
    if not text:
        return False  # "" = random weights
    return (
        "/" in text
        or os.sep in text
        or text.startswith(("~", "."))
        or text.lower().endswith(_CHECKPOINT_SUFFIXES)
        or not _TAG_RE.match(text)
    )
