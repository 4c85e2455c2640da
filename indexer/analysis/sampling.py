"""The two streaming passes of a sampled analysis (run.py): read the sample's vectors, then every row's.

Pass 1 (:func:`read_sample`) reads the vectors chunk by chunk and keeps the seeded sample's rows
(:func:`sample_positions`). Pass 2 (:func:`stream_neighbours`) reads them again, in chunks of whole
``placement.BLOCK`` s, and hands each to the workers of ``placement.place_chunks``: the driver keeps only
the reduced features (``n x pca_components`` float32: 200 MB at 1M rows) and each row's neighbours among
the fitted rows (``n x k`` int32 + float32). Memory: the sample, the features and a few chunks in flight,
never every vector at once. Both passes read the same table version, so positions line up (checked by id).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from edgeminer.indexer.analysis.placement import BLOCK, Chunk, PlacementState, place_chunks
from edgeminer.indexer.errors import ValidationFailed
from edgeminer.indexer.store import Store, embeddings_to_numpy

__all__ = ["Neighbours", "chunk_rows_for", "read_sample", "sample_positions", "stream_neighbours"]


def sample_positions(n: int, sample_rows: int, seed: int) -> np.ndarray:
    """Sorted positions of the seeded sample of ``sample_rows`` among ``n`` rows (all of them when ``n`` is
    not larger)."""
    if n <= sample_rows:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=int(sample_rows), replace=False)).astype(np.int64)


def chunk_rows_for(chunk_rows: int) -> int:
    """``chunk_rows`` rounded up to whole blocks (placement results never depend on the chunking)."""
    return max(BLOCK, -(-int(chunk_rows) // BLOCK) * BLOCK)


@dataclass
class Source:
    """Where the rows come from: the dataset, its version and filter, and the ids in scan order."""

    store: Store
    dataset: str
    where: str
    version: int
    dim: int
    ids: np.ndarray  # object array of every row's id, in scan order
    chunk_rows: int

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first position, vectors) of each chunk; refuses a table that changed under the analysis."""
        pos = 0
        for table in self.store.scan_chunks(
            self.dataset,
            columns=["id", "embedding"],
            where=self.where,
            chunk_rows=self.chunk_rows,
            version=self.version,
        ):
            m = table.num_rows
            ids = np.asarray(table.column("id").to_pylist(), dtype=object)
            if pos + m > self.ids.size or not np.array_equal(ids, self.ids[pos : pos + m]):
                raise ValidationFailed(
                    f"dataset {self.dataset!r} changed while it was analyzed (rows differ at position {pos}): "
                    "run analyze again"
                )
            yield pos, _vectors(table.column("embedding"), self.dim)
            pos += m


def _vectors(column: pa.ChunkedArray, dim: int) -> np.ndarray:
    return embeddings_to_numpy(column.combine_chunks() if column.num_chunks > 1 else column.chunk(0), dim)


def read_sample(source: Source, positions: np.ndarray) -> np.ndarray:
    """Pass 1: the vectors of the rows at ``positions`` (sorted), ``(len(positions), dim)`` float32."""
    out = np.empty((positions.size, source.dim), dtype=np.float32)
    got = 0
    for start, vecs in source.chunks():
        lo, hi = np.searchsorted(positions, [start, start + vecs.shape[0]])
        if hi > lo:
            out[got : got + hi - lo] = vecs[positions[lo:hi] - start]
            got += int(hi - lo)
    if got != positions.size:
        raise ValidationFailed(f"dataset {source.dataset!r} changed while it was analyzed: run analyze again")
    return out


@dataclass
class Neighbours:
    """Pass 2's result: every row's features, and the nearest fitted rows of the rows that needed placing."""

    features: np.ndarray  # (n, c) float32
    idx: np.ndarray  # (n, k) int32, -1 where not searched
    dist: np.ndarray  # (n, k) float32


def stream_neighbours(
    source: Source,
    state: PlacementState,
    need: np.ndarray,
    *,
    dims: int,
    workers: int,
    engine: str = "local",
    ray_address: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> Neighbours:
    """Pass 2: features of every row, and the neighbours of the rows in ``need`` (placement.place_chunks)."""
    n = source.ids.size
    k = max(1, min(state.k, state.index.n))
    out = Neighbours(
        features=np.empty((n, dims), dtype=np.float32),
        idx=np.full((n, k), -1, dtype=np.int32),
        dist=np.zeros((n, k), dtype=np.float32),
    )

    def chunks() -> Iterator[Chunk]:
        for start, vecs in source.chunks():
            yield start, vecs, need[start : start + vecs.shape[0]]

    done = 0
    for res in place_chunks(state, chunks(), workers=workers, engine=engine, ray_address=ray_address):
        m = res.features.shape[0]
        sl = slice(res.start, res.start + m)
        out.features[sl] = res.features
        out.idx[sl] = res.idx
        out.dist[sl] = res.dist
        done += m
        if progress:
            progress(done)
    if done != n:
        raise ValidationFailed(f"dataset {source.dataset!r} changed while it was analyzed: run analyze again")
    return out
