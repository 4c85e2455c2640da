"""The binary format of the 2-D map (``GET /datasets/{ds}/points``; decoded in the dashboard by
ui/points.js): :func:`encode_points` writes it, :func:`decode_points` reads it back (tests, Python
clients), :func:`outcome_codes` is its per-row outcome code.

Layout (``application/octet-stream``, all little-endian)::

    bytes 0-3   magic b"EMPT"
    bytes 4-7   uint32 H: length of the JSON header that follows
    H bytes     UTF-8 JSON header, space-padded so that 8 + H is a multiple of 4
    then        float32 x[n] | float32 y[n] | int32 cluster[n] | uint8 outcome[n]

The header says ``{"format": "edgeminer-points/1", "count": n, "version": v, "run_id", "analyzed",
"bounds": [xmin, ymin, xmax, ymax] | null, "outcomes": [...names by code...], "columns": [{"name",
"dtype", "offset"}]}``; offsets count from the first byte after the header. In JavaScript:
``new Float32Array(buf, 8 + H + offset_x, n)`` and so on. Outcome codes: 0 unlabeled, 1 correct,
2 wrong_class, 3 false_positive, 4 false_negative, 5 labeled without a prediction. Cluster -1 = noise.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MAGIC = b"EMPT"
POINTS_FORMAT = "edgeminer-points/1"
#: outcome names by code (the code is the index).
OUTCOME_CODES = ("unlabeled", "correct", "wrong_class", "false_positive", "false_negative", "no_prediction")
_CODE = {name: code for code, name in enumerate(OUTCOME_CODES)}
#: the columns of a table :func:`encode_points` reads.
POINT_COLUMNS = ("x", "y", "cluster", "labeled", "correct", "outcome")


def outcome_codes(table: pa.Table) -> np.ndarray:
    """uint8 outcome code per row (see the module docstring): a labeled row's stored outcome when it is
    one of the codes, else correct / wrong_class from ``correct``, or no_prediction; unlabeled rows 0."""
    n = table.num_rows
    labeled = pc.fill_null(table.column("labeled"), False).to_numpy(zero_copy_only=False).astype(bool)
    correct = table.column("correct")
    judged = pc.is_valid(correct).to_numpy(zero_copy_only=False).astype(bool)
    right = pc.fill_null(correct, False).to_numpy(zero_copy_only=False).astype(bool)
    codes = np.where(right, _CODE["correct"], _CODE["wrong_class"]).astype(np.uint8)
    codes[~judged] = _CODE["no_prediction"]
    outcome = table.column("outcome")
    for name in OUTCOME_CODES:
        hit = pc.fill_null(pc.equal(outcome, name), False).to_numpy(zero_copy_only=False).astype(bool)
        codes[hit] = _CODE[name]
    codes[~labeled] = _CODE["unlabeled"]
    return codes if n else np.empty(0, dtype=np.uint8)


def encode_points(table: pa.Table, *, version: int, run_id: str | None) -> bytes:
    """The blob of ``table`` (columns :data:`POINT_COLUMNS`, one row per point, in the order served)."""
    n = table.num_rows
    x = np.asarray(table.column("x").to_numpy(zero_copy_only=False), dtype="<f4")
    y = np.asarray(table.column("y").to_numpy(zero_copy_only=False), dtype="<f4")
    cl = np.asarray(table.column("cluster").fill_null(-1).to_numpy(zero_copy_only=False) if n else [], dtype="<i4")
    oc = outcome_codes(table)
    columns = [
        {"name": "x", "dtype": "float32", "offset": 0},
        {"name": "y", "dtype": "float32", "offset": 4 * n},
        {"name": "cluster", "dtype": "int32", "offset": 8 * n},
        {"name": "outcome", "dtype": "uint8", "offset": 12 * n},
    ]
    header = {
        "format": POINTS_FORMAT,
        "count": n,
        "version": version,
        "run_id": run_id,
        "analyzed": run_id is not None,
        "bounds": [float(x.min()), float(y.min()), float(x.max()), float(y.max())] if n else None,
        "outcomes": list(OUTCOME_CODES),
        "columns": columns,
        "byte_order": "little",
    }
    raw = json.dumps(header).encode()
    raw += b" " * ((-(8 + len(raw))) % 4)
    return b"".join([MAGIC, struct.pack("<I", len(raw)), raw, x.tobytes(), y.tobytes(), cl.tobytes(), oc.tobytes()])


def decode_points(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The inverse of :func:`encode_points` (used by tests and Python clients)."""
    if data[:4] != MAGIC:
        raise ValueError("not an edgeminer points blob (bad magic)")
    (h,) = struct.unpack("<I", data[4:8])
    header = json.loads(data[8 : 8 + h])
    body = memoryview(data)[8 + h :]
    n = header["count"]
    cols = {}
    for c in header["columns"]:
        cols[c["name"]] = np.frombuffer(
            body, dtype="<" + {"float32": "f4", "int32": "i4", "uint8": "u1"}[c["dtype"]], count=n, offset=c["offset"]
        )
    return header, cols
