"""Structured filters -> safe LanceDB where-clauses. User input never becomes raw SQL.

A filter is ``{"field": "area", "op": "between", "value": [100, 10000]}``. Every field is checked against
the dataset's schema (metadata fields by their plain name: ``slice`` -> column ``meta_slice``; a core
column wins a name clash, the metadata one stays reachable as ``meta_<name>``), every value is checked
against the column's type and written as a literal (strings through ``store.sql_quote``, numbers as
finite numbers, timestamps re-formatted from a parsed ISO date). Identifiers in the clause only ever
come from the schema.

Ops, by column type:

=========================  ======================================================================
string                     eq, ne, lt, le, gt, ge, between, in, contains (substring), is_null
int, float, timestamp      eq, ne, lt, le, gt, ge, between, in, is_null
bool                       eq, ne, in, is_null
list<string> (tags...)     contains (membership; a list value means "has any of"), is_null
vectors (embedding, probs) is_null
=========================  ======================================================================

``ne`` keeps rows where the field is null (``label ne 'cat'`` includes unlabeled rows); ``between`` is
inclusive and takes ``[low, high]`` with either side null for an open range; ``is_null`` takes
``true`` (default) or ``false``. Several filters are ANDed.

One field is not a column: ``label_issue`` (eq / ne, true or false) picks the likely label mistakes of
indexer/analysis/label_issues.py (computed on demand, cached per table version). It needs the store:
callers that pass ``store=`` to :func:`build_where` accept it; elsewhere it is refused with a message.

Helpers other modules reuse: :func:`build_where`, :func:`parse_filters` (the JSON query parameter),
:func:`parse_sort`, :func:`field_types`, :func:`resolve_field`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from edgeminer.indexer.errors import InvalidFilter, UnknownField
from edgeminer.indexer.store import META_PREFIX, DatasetInfo, sql_quote

OPS = ("eq", "ne", "lt", "le", "gt", "ge", "between", "in", "contains", "is_null")
COMPARE = {"eq": "=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
SCALAR_TYPES = ("string", "int", "float", "bool", "timestamp")
OPS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "string": ("eq", "ne", "lt", "le", "gt", "ge", "between", "in", "contains", "is_null"),
    "int": ("eq", "ne", "lt", "le", "gt", "ge", "between", "in", "is_null"),
    "float": ("eq", "ne", "lt", "le", "gt", "ge", "between", "in", "is_null"),
    "timestamp": ("eq", "ne", "lt", "le", "gt", "ge", "between", "in", "is_null"),
    "bool": ("eq", "ne", "in", "is_null"),
    "list<string>": ("contains", "is_null"),
    "vector": ("is_null",),
}
MAX_IN_VALUES = 10_000
MAX_STRING = 10_000


def type_name(dtype: pa.DataType) -> str:
    """The filter type of an Arrow column type."""
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "string"
    if pa.types.is_boolean(dtype):
        return "bool"
    if pa.types.is_integer(dtype):
        return "int"
    if pa.types.is_floating(dtype):
        return "float"
    if pa.types.is_timestamp(dtype) or pa.types.is_date(dtype):
        return "timestamp"
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_fixed_size_list(dtype):
        if pa.types.is_string(dtype.value_type):
            return "list<string>"
        return "vector"
    return "other"


def field_types(info: DatasetInfo, schema: pa.Schema) -> dict[str, str]:
    """Public field name -> filter type, for every column (metadata under its plain name when free)."""
    out: dict[str, str] = {}
    for f in schema:
        out[f.name] = type_name(f.type)
    for f in schema:
        if f.name.startswith(META_PREFIX):
            plain = f.name[len(META_PREFIX) :]
            if plain not in out:
                out[plain] = type_name(f.type)
    return out


def resolve_field(name: str, info: DatasetInfo, schema: pa.Schema, *, index: int | None = None) -> str:
    """The column a public field name refers to; UnknownField (listing the valid names) if none."""
    if not isinstance(name, str):
        raise InvalidFilter(f"field must be a string, got {type(name).__name__}", index=index)
    names = set(schema.names)
    if name in names:
        return name
    if META_PREFIX + name in names:
        return META_PREFIX + name
    raise UnknownField(name, _public_names(info, schema), index=index)


def _public_names(info: DatasetInfo, schema: pa.Schema) -> list[str]:
    return [n for n, t in field_types(info, schema).items() if t != "other"]


def _get(f: Any, key: str, default: Any = None) -> Any:
    if isinstance(f, Mapping):
        return f.get(key, default)
    return getattr(f, key, default)


def build_where(
    info: DatasetInfo,
    schema: pa.Schema,
    filters: Iterable[Any] | None,
    *,
    extra: str | None = None,
    store: Any = None,
) -> str | None:
    """AND of the compiled filters (dicts or objects with field/op/value), plus an optional ``extra``
    clause from trusted code. None when there is nothing to filter on. ``store`` (the dataset's Store)
    enables the ``label_issue`` field."""
    parts = []
    for n, f in enumerate(filters or []):
        virtual = _virtual_clause(f, info, schema, store, n)
        parts.append(virtual if virtual is not None else compile_filter(f, info, schema, index=n))
    if extra:
        parts.append(extra)
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return " AND ".join(f"({p})" for p in parts)


#: fields that are not columns (see the module docstring).
VIRTUAL_FIELDS = ("label_issue",)


def _virtual_clause(f: Any, info: DatasetInfo, schema: pa.Schema, store: Any, index: int) -> str | None:
    """The clause of a ``label_issue`` filter (ids of the likely label mistakes), None for other fields
    (and for a real column of that name, which wins)."""
    if _get(f, "field") not in VIRTUAL_FIELDS or _get(f, "field") in schema.names:
        return None
    _check_shape(f, index)
    ctx = _Ctx(name="label_issue", op=_get(f, "op", "eq") or "eq", ftype="bool", index=index)
    if ctx.op not in ("eq", "ne"):
        raise ctx.error("label_issue takes eq or ne, with true or false")
    value = _get(f, "value", True)
    want = _literal(True if value is None else value, "bool", ctx) == "true"
    if ctx.op == "ne":
        want = not want
    if store is None:
        raise ctx.error("label_issue cannot be used here; filter the samples list, mine or export instead")
    from edgeminer.indexer.analysis.label_issues import issue_ids
    from edgeminer.indexer.where import ids_in

    ids = issue_ids(store, info.name)
    if not ids:
        return "id IS NULL" if want else "id IS NOT NULL"
    return ids_in(ids) if want else f"NOT ({ids_in(ids)})"


def compile_filter(f: Any, info: DatasetInfo, schema: pa.Schema, *, index: int | None = None) -> str:
    """Compile one filter to a SQL clause, every value quoted as a literal.

    Parameters
    ----------
    f
        A dict (or an object) with ``field``, ``op`` (default ``eq``) and ``value``.
    info, schema
        The dataset and its table schema the field is resolved against.
    index
        The filter's position in its list (named in errors).

    Returns
    -------
    str
        The WHERE clause.

    Raises
    ------
    InvalidFilter
        The filter is malformed, names an unknown field or op, or has a value that does not fit.
    """
    _check_shape(f, index)
    name = _get(f, "field")
    op = _get(f, "op", "eq") or "eq"
    value = _get(f, "value")
    col = resolve_field(name, info, schema, index=index)
    if op not in OPS:
        raise InvalidFilter(
            f"unknown op {op!r} for field {name!r}; use one of {', '.join(OPS)}", field=name, index=index
        )
    ftype = type_name(schema.field(col).type)
    allowed = OPS_BY_TYPE.get(ftype, ())
    if op not in allowed:
        hint = f"use one of {', '.join(allowed)}" if allowed else "this column cannot be filtered"
        raise InvalidFilter(
            f"op {op!r} does not apply to {name!r} (a {ftype} field); {hint}", field=name, op=op, index=index
        )
    ctx = _Ctx(name=name, op=op, ftype=ftype, index=index)
    ident = _ident(col)
    if op == "is_null":
        return _is_null_clause(ident, value, ctx)
    if ftype == "list<string>":  # op == contains
        return _has_any_clause(ident, value, ctx)
    if op == "contains":  # string substring (contains() treats % and _ literally)
        return f"contains({ident}, {_literal(value, 'string', ctx)})"
    if op == "in":
        return _in_clause(ident, value, ctx)
    if op == "between":
        return _between_clause(ident, value, ctx)
    return _compare_clause(ident, value, ctx)


def _check_shape(f: Any, index: int | None) -> None:
    """Refuse a filter that is not an object with ``field`` (and only field / op / value keys)."""
    if not isinstance(f, Mapping) and not hasattr(f, "field"):
        raise InvalidFilter(
            f'each filter is an object {{"field": ..., "op": ..., "value": ...}}, got {type(f).__name__}',
            index=index,
        )
    if isinstance(f, Mapping):
        unknown = sorted(set(f) - {"field", "op", "value"})
        if unknown:
            raise InvalidFilter(
                f"unknown key(s) {', '.join(map(repr, unknown))} in a filter; use field, op and value",
                index=index,
            )
        if "field" not in f:
            raise InvalidFilter("a filter needs a 'field'", index=index)


def _is_null_clause(ident: str, value: Any, ctx: _Ctx) -> str:
    if value is None or value is True or value == "true":
        return f"{ident} IS NULL"
    if value is False or value == "false":
        return f"{ident} IS NOT NULL"
    raise ctx.error(f"is_null takes true or false, got {value!r}")


def _has_any_clause(ident: str, value: Any, ctx: _Ctx) -> str:
    """A list column holds the value (or any of a list of values)."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ctx.error("contains needs a value (or a non-empty list: has any of them)")
    if len(values) > MAX_IN_VALUES:
        raise ctx.error(f"at most {MAX_IN_VALUES} values")
    lits = [_literal(v, "string", ctx) for v in values]
    return " OR ".join(f"array_has({ident}, {lit})" for lit in lits)


def _in_clause(ident: str, value: Any, ctx: _Ctx) -> str:
    if not isinstance(value, list) or not value:
        raise ctx.error("'in' needs a non-empty list of values")
    if len(value) > MAX_IN_VALUES:
        raise ctx.error(f"'in' takes at most {MAX_IN_VALUES} values (got {len(value)})")
    if any(v is None for v in value):
        raise ctx.error("'in' values cannot be null; add an is_null filter instead")
    lits = list(dict.fromkeys(_literal(v, ctx.ftype, ctx) for v in value))
    return f"{ident} IN ({', '.join(lits)})"


def _between_clause(ident: str, value: Any, ctx: _Ctx) -> str:
    """``[low, high]``, either bound may be null (an open range)."""
    ftype = ctx.ftype
    if not isinstance(value, list) or len(value) != 2:
        raise ctx.error("'between' needs [low, high] (either may be null for an open range)")
    low, high = value
    if low is None and high is None:
        raise ctx.error("'between' needs at least one bound")
    lo = None if low is None else _literal(low, ftype, ctx)
    hi = None if high is None else _literal(high, ftype, ctx)
    if low is not None and high is not None and ftype in ("int", "float") and float(low) > float(high):
        raise ctx.error(f"the low bound {low!r} is above the high bound {high!r}")
    if lo is None:
        return f"{ident} <= {hi}"
    if hi is None:
        return f"{ident} >= {lo}"
    return f"{ident} BETWEEN {lo} AND {hi}"


def _compare_clause(ident: str, value: Any, ctx: _Ctx) -> str:
    """eq / ne / lt / le / gt / ge against one value (``ne`` also matches null)."""
    op = ctx.op
    if isinstance(value, list):
        raise ctx.error(f"'{op}' takes one value, not a list (use 'in' or 'between')")
    if value is None:
        raise ctx.error(f"'{op}' needs a value; to match missing values use is_null")
    lit = _literal(value, ctx.ftype, ctx)
    if op == "ne":
        return f"({ident} IS NULL OR {ident} <> {lit})"
    return f"{ident} {COMPARE[op]} {lit}"


class _Ctx:
    def __init__(self, *, name: str, op: str, ftype: str, index: int | None):
        self.name, self.op, self.ftype, self.index = name, op, ftype, index

    def error(self, message: str) -> InvalidFilter:
        return InvalidFilter(
            f"filter on {self.name!r} ({self.op}): {message}", field=self.name, op=self.op, index=self.index
        )


def _ident(col: str) -> str:
    # ``col`` comes from the schema; backticks keep even a keyword-named column an identifier
    if "`" in col:
        raise InvalidFilter(f"column {col!r} cannot be used in a filter")
    return f"`{col}`"


def _literal(value: Any, ftype: str, ctx: _Ctx) -> str:
    """A typed SQL literal for ``value``, or InvalidFilter saying what was expected."""
    if ftype in ("string", "list<string>"):
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ctx.error(f"expected a string, got {_kind(value)} {value!r}")
        text = str(value)
        if len(text) > MAX_STRING:
            raise ctx.error(f"string values are at most {MAX_STRING} characters")
        if "\x00" in text:
            raise ctx.error("string values cannot contain NUL characters")
        return sql_quote(text)
    if ftype == "bool":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower()
        raise ctx.error(f"expected true or false, got {_kind(value)} {value!r}")
    if ftype == "int":
        number = _number(value, ctx)
        if isinstance(number, float):
            if not number.is_integer():
                raise ctx.error(f"expected a whole number, got {value!r}")
            number = int(number)
        if abs(number) >= 2**63:
            raise ctx.error(f"{value!r} is out of range")
        return str(number)
    if ftype == "float":
        number = _number(value, ctx)
        return repr(float(number))
    if ftype == "timestamp":
        return _timestamp(value, ctx)
    raise ctx.error(f"{ftype} fields cannot be compared to values")


def _number(value: Any, ctx: _Ctx) -> int | float:
    if isinstance(value, bool):
        raise ctx.error(f"expected a number, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ctx.error(f"expected a finite number, got {value!r}")
        return value
    if isinstance(value, str):
        try:
            parsed: int | float = int(value.strip())
        except ValueError:
            try:
                parsed = float(value.strip())
            except ValueError:
                raise ctx.error(f"expected a number, got the string {value!r}") from None
        if isinstance(parsed, float) and not math.isfinite(parsed):
            raise ctx.error(f"expected a finite number, got {value!r}")
        return parsed
    raise ctx.error(f"expected a number, got {_kind(value)} {value!r}")


def _timestamp(value: Any, ctx: _Ctx) -> str:
    if not isinstance(value, str):
        raise ctx.error(f"expected an ISO 8601 date or time such as '2024-05-01T12:00:00Z', got {value!r}")
    text = value.strip()
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise ctx.error(
            f"{value!r} is not an ISO 8601 date or time (e.g. '2024-05-01' or '2024-05-01T12:00:00Z')"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)  # naive times are read as UTC
    utc = parsed.astimezone(dt.UTC)
    return "TIMESTAMP '" + utc.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z'"


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list"}.get(
        type(value), type(value).__name__ if value is not None else "null"
    )


def parse_filters(raw: str | Sequence[Any] | None) -> list[Any]:
    """Filters from the ``filters`` query parameter: a JSON list of filter objects (or one object)."""
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidFilter(
                f"filters is not valid JSON ({exc.msg} at character {exc.pos}); "
                'send e.g. [{"field": "split", "op": "eq", "value": "val"}]'
            ) from None
    else:
        data = list(raw)
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise InvalidFilter('filters must be a JSON list of {"field", "op", "value"} objects')
    return data


def parse_sort(sort: str | None, info: DatasetInfo, schema: pa.Schema) -> list[tuple[str, str]]:
    """``"confidence"`` / ``"-confidence"`` / ``"confidence:desc"`` -> [(column, order)], always ending
    with ``id`` so the order is total (and pages never overlap)."""
    keys: list[tuple[str, str]] = []
    for part in (sort or "").split(","):
        part = part.strip()
        if not part:
            continue
        order = "ascending"
        if part.startswith("-"):
            order, part = "descending", part[1:]
        elif ":" in part:
            part, _, direction = part.partition(":")
            if direction.lower() not in ("asc", "desc"):
                raise InvalidFilter(f"sort direction {direction!r} is not asc or desc", field=part)
            order = "descending" if direction.lower() == "desc" else "ascending"
        try:
            col = resolve_field(part, info, schema)
        except UnknownField:
            sortable = [n for n, t in field_types(info, schema).items() if t in SCALAR_TYPES]
            raise UnknownField(part, sortable, what="sort field") from None
        if type_name(schema.field(col).type) not in SCALAR_TYPES:
            raise InvalidFilter(f"cannot sort on {part!r}: it is not a scalar field", field=part)
        if col not in (k for k, _ in keys):
            keys.append((col, order))
    if "id" not in (k for k, _ in keys):
        keys.append(("id", "ascending"))
    return keys
