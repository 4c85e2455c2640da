"""Damage a dataset's files on disk the way a bad disk, a partial copy or a crash does: overwrite the
stored bytes of chosen vectors in place (Lance files carry no checksums, so they read back changed),
or truncate a data file. Used by the integrity tests (Store.check, `edgeminer check`, /health)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgeminer.indexer.store import Store, embeddings_to_numpy

NAN_BYTES = b"\xff"  # 0xFFFFFFFF is a float32 NaN
HUGE_BYTES = b"\x7f"  # 0x7F7F7F7F = 3.39e38: finite, but no distance can be computed with it


def data_files(data_dir: str | os.PathLike[str], dataset: str, table: str = "samples") -> list[Path]:
    """The table's data files, oldest first."""
    folder = Path(data_dir) / f"{dataset}__{table}.lance" / "data"
    return sorted(folder.glob("*.lance"), key=lambda p: p.stat().st_mtime_ns)


def corrupt_vectors(data_dir: str | os.PathLike[str], dataset: str, ids: list[str], fill: bytes = NAN_BYTES) -> None:
    """Overwrite the stored float32 values of these rows' vectors with ``fill`` repeated. Each vector is
    found by its exact bytes (the fixed-size-list values are stored raw), so nothing around it (page
    headers, other columns) is touched and the file still decodes."""
    store = Store(data_dir)
    dim = store.get_dataset(dataset).dim
    table = store.get_samples(dataset, ids, columns=["id", "embedding"])
    assert table.num_rows == len(ids), "every id must exist"
    vectors = embeddings_to_numpy(table.column("embedding"), dim)
    files = data_files(data_dir, dataset)
    for vec in vectors:
        needle = np.asarray(vec, "<f4").tobytes()
        hits = [(f, f.read_bytes().find(needle)) for f in files]
        hits = [(f, off) for f, off in hits if off >= 0]
        assert len(hits) == 1, f"vector bytes found {len(hits)} times"
        path, offset = hits[0]
        with open(path, "r+b") as fh:
            fh.seek(offset)
            fh.write(fill * len(needle))


def truncate(path: Path, keep: float = 0.5) -> int:
    """Cut ``path`` to ``keep`` of its size; returns the new size."""
    size = int(path.stat().st_size * keep)
    os.truncate(path, size)
    return size
