"""A dataset's row counts, computed in one place: the dataset detail of the API (``counts``) and
``edgeminer stats`` both read them from :func:`row_counts`.

One pass over five columns (``split``, ``labeled``, ``status``, ``correct``, ``x``) with pyarrow:

- ``total`` rows; ``ok`` (``where.OK``) and ``errors`` (every other row: ``status = 'error'``, a
  file or vector ingest could not use);
- ``labeled`` (``labeled`` true) and ``unlabeled`` (the rest, nulls included);
- ``wrong``: rows the model got wrong (``correct`` false);
- ``analyzed``: rows with a 2-D position (``x``) from the last analysis;
- the same per split (``splits``, ``None`` = rows without a split), in order of first appearance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edgeminer.indexer.store import Store

#: the columns :func:`row_counts` reads.
COUNT_COLUMNS = ("split", "labeled", "status", "correct", "x")


@dataclass(frozen=True)
class SplitCounts:
    rows: int = 0
    ok: int = 0
    errors: int = 0
    labeled: int = 0
    wrong: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"rows": self.rows, "labeled": self.labeled, "errors": self.errors, "wrong": self.wrong, "ok": self.ok}


@dataclass(frozen=True)
class RowCounts:
    total: int = 0
    ok: int = 0
    errors: int = 0
    labeled: int = 0
    wrong: int = 0
    analyzed: int = 0
    #: per split value (None: rows without one), in order of first appearance
    splits: dict[str | None, SplitCounts] = field(default_factory=dict)

    @property
    def unlabeled(self) -> int:
        return self.total - self.labeled

    def by_split(self, no_split: str) -> dict[str, int]:
        """Rows per split, sorted by name; rows without a split are counted under ``no_split``."""
        out: dict[str, int] = {}
        for split, c in self.splits.items():
            key = no_split if split is None else split
            out[key] = out.get(key, 0) + c.rows
        return dict(sorted(out.items()))


def _flags(column: pa.ChunkedArray, value: object = True) -> np.ndarray:
    """A bool numpy array: where ``column`` equals ``value`` (nulls are False)."""
    hit = column if value is True else pc.equal(column, value)
    return np.asarray(pc.fill_null(hit, False).to_numpy(zero_copy_only=False), dtype=bool)


def count_rows(table: pa.Table) -> RowCounts:
    """The counts of ``table`` (columns :data:`COUNT_COLUMNS`)."""
    total = table.num_rows
    if total == 0:
        return RowCounts()
    ok = _flags(table["status"], "ok")
    labeled = _flags(table["labeled"])
    wrong = _flags(table["correct"], False)
    encoded = pc.dictionary_encode(table["split"], null_encoding="encode").combine_chunks()
    codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False))
    names = encoded.dictionary.to_pylist()
    n = len(names)

    def per(mask: np.ndarray | None = None) -> list[int]:
        return [int(v) for v in np.bincount(codes, weights=None if mask is None else mask, minlength=n)]

    rows, oks, labs, wrongs = per(), per(ok), per(labeled), per(wrong)
    splits = {
        names[i]: SplitCounts(rows=rows[i], ok=oks[i], errors=rows[i] - oks[i], labeled=labs[i], wrong=wrongs[i])
        for i in range(n)
    }
    n_ok = int(ok.sum())
    return RowCounts(
        total=total,
        ok=n_ok,
        errors=total - n_ok,
        labeled=int(labeled.sum()),
        wrong=int(wrong.sum()),
        analyzed=total - table["x"].null_count,
        splits=splits,
    )


def row_counts(store: Store, dataset: str, *, version: int | None = None) -> RowCounts:
    """The row counts of ``dataset`` (at table ``version``, default the latest)."""
    return count_rows(store.query(dataset, columns=list(COUNT_COLUMNS), version=version))
