"""The one "is this path under these roots" rule (indexer/roots.py), shared by the ingest roots and the
media roots."""

from __future__ import annotations

import os
from pathlib import Path

from edgeminer.indexer.roots import inside_roots, is_under, real_roots, root_pairs


def test_under_is_component_wise() -> None:
    assert is_under("/data/a", "/data/a") and is_under("/data/a/x.png", "/data/a")
    assert is_under("/data/a/x", "/data/a/") and not is_under("/data/ab/x", "/data/a")


def test_roots_are_resolved_and_urls_skipped(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    pairs = root_pairs([str(link), "", "  ", "s3://bucket/x", str(link), f" {real} "])
    assert pairs == [(str(link), str(real)), (str(real), str(real))]
    assert real_roots([str(link), str(real)]) == [str(real)]


def test_paths_are_checked_resolved(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    roots = real_roots([str(root)])
    assert inside_roots(root / "a.png", roots)  # need not exist
    assert not inside_roots(root / "escape" / "a.png", roots)  # a symlink out of the root
    assert not inside_roots(os.path.join(str(root), "..", "outside", "a.png"), roots)
    assert not inside_roots(str(root) + "\x00", roots)
