"""Internal filter clauses, built in one place.

Every clause here is trusted SQL for ``Store.query`` / ``count`` / ``search`` (values are quoted with
:func:`sql_quote`); user filters go through service/filters.py. ``None`` / empty parts are skipped, so
callers can pass optional clauses straight through::

    ok_and(HAS_EMBEDDING, where)  # "status = 'ok' AND embedding IS NOT NULL AND <where>"
                                  # (<where> in parentheses when it has an OR at any level)
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_OR = re.compile(r"\bOR\b", re.IGNORECASE)

#: rows that were read and embedded (error rows carry no embedding nor prediction).
OK = "status = 'ok'"
HAS_EMBEDDING = "embedding IS NOT NULL"


def sql_quote(value: str) -> str:
    """Quote a string as a SQL literal (single quotes doubled). Only for values, never identifiers."""
    return "'" + str(value).replace("'", "''") + "'"


def ids_in(ids: Iterable[str]) -> str:
    """``id IN ('a', 'b', ...)``."""
    return "id IN (" + ", ".join(sql_quote(i) for i in ids) + ")"


def and_(*clauses: str | None) -> str:
    """The non-empty clauses joined by AND, each compound one in parentheses ("" when none)."""
    parts = [c for c in clauses if c]
    if len(parts) == 1:
        return parts[0]
    return " AND ".join(c if _simple(c) else f"({c})" for c in parts)


def ok_and(*clauses: str | None) -> str:
    """``status = 'ok'`` AND the non-empty clauses."""
    return and_(OK, *clauses)


def labeled() -> str:
    return "labeled = true"


def unlabeled() -> str:
    """Rows without a label, nulls included (as ``indexer.counts`` counts them)."""
    return "(labeled = false OR labeled IS NULL)"


def is_null(column: str) -> str:
    return f"{column} IS NULL"


def not_null(*columns: str) -> str:
    return " AND ".join(f"{c} IS NOT NULL" for c in columns)


def _simple(clause: str) -> bool:
    """A clause that needs no parentheses inside an AND: no top-level OR."""
    return _OR.search(clause) is None


__all__ = [
    "OK",
    "HAS_EMBEDDING",
    "sql_quote",
    "ids_in",
    "and_",
    "ok_and",
    "labeled",
    "unlabeled",
    "is_null",
    "not_null",
]
