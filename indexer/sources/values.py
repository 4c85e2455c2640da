"""Cell values of a source: metadata types inferred from values (:func:`value_kind`), conversion to
a column's type, and the lenient parsers for labels and number lists (CSV cells are all text; JSON and
Parquet bring typed values).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Any

import numpy as np

_INT_RE = re.compile(r"^[+-]?\d+$")
_TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?(?:Z|[+-]\d{2}:?\d{2})?$")


def value_kind(value: Any, *, from_text: bool) -> str | None:
    """The metadata type one value suggests, or None for a missing value."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return None if math.isnan(value) else "float"
    if isinstance(value, dt.datetime | dt.date):
        return "timestamp"
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            return None
        if from_text:  # CSV cells are all text: read numbers and booleans out of them
            if _INT_RE.match(text):
                return "int"
            try:
                if math.isfinite(float(text)):
                    return "float"
            except ValueError:
                pass
            if text.lower() in ("true", "false"):
                return "bool"
        if _TS_RE.match(text) and parse_ts(text) is not None:
            return "timestamp"
        return "string"
    return "string"


def merge_kinds(kinds: set[str]) -> str:
    """A column's type from the types its values suggest (ints and floats make float; a mix, string)."""
    if not kinds:
        return "string"
    if kinds <= {"int"}:
        return "int"
    if kinds <= {"int", "float"}:
        return "float"
    if len(kinds) == 1:
        return next(iter(kinds))
    return "string"


def parse_ts(text: str) -> dt.datetime | None:
    """An ISO-8601 timestamp (UTC when it has no zone), or None."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def convert_value(value: Any, type_name: str) -> Any:
    """A metadata value as the column's type (None for missing values)."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if type_name == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, list | dict):
            return json.dumps(value, default=str)
        if isinstance(value, dt.datetime | dt.date):
            return value.isoformat()
        return str(value)
    if type_name == "int":
        return int(value) if not isinstance(value, str) else int(value.strip())
    if type_name == "float":
        return float(value)
    if type_name == "bool":
        return value if isinstance(value, bool) else str(value).strip().lower() == "true"
    if type_name == "timestamp":
        if isinstance(value, dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        if isinstance(value, dt.date):
            return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
        return parse_ts(str(value))
    raise ValueError(f"unknown metadata type {type_name!r}")


def is_missing(value: Any) -> bool:
    """None, a blank string or NaN."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    return isinstance(value, float) and math.isnan(value)


def text_value(value: Any) -> str | None:
    """A label-like value as text (JSON ints become "3"; floats like 3.0 become "3")."""
    if is_missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def list_value(value: Any) -> Any:
    """A list column: a list (JSON, Parquet) or a JSON string (CSV)."""
    if isinstance(value, str):
        return json.loads(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def number_list(value: Any, what: str) -> list[float]:
    """Parse a list of finite numbers or raise ValueError with a sentence about ``what``."""
    try:
        items = list_value(value)
    except json.JSONDecodeError:
        raise ValueError(f"{what} is not a JSON list of numbers: {str(value)[:60]!r}") from None
    if not isinstance(items, list | tuple):
        raise ValueError(f"{what} must be a list of numbers, got {type(items).__name__}")
    out: list[float] = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"{what} holds a non-numeric value {v!r}")
        f = float(v)
        if not math.isfinite(f):
            raise ValueError(f"{what} holds a non-finite value {v!r}")
        out.append(f)
    return out
