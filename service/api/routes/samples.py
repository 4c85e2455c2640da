"""Samples: filtered, sorted, paged lists and single rows.

``GET /datasets/{ds}/samples?filters=[...]&sort=-confidence&limit=50&offset=0`` (filters as a JSON list)
and ``POST /datasets/{ds}/samples/query`` (the same as a body, for long filters such as a lasso's ids).
The order is total: the sort keys, then ``id``; nulls sort last. Paging reads only the id and sort
columns of the matching rows, orders them, then fetches the page's rows, so a large offset costs the
same as a small one.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, Query

from edgeminer.indexer.store import Store
from edgeminer.service.api.deps import StoreDep
from edgeminer.service.api.models import Page, SampleQuery, problems
from edgeminer.service.errors import SampleNotFound, UnknownField
from edgeminer.service.filters import build_where, field_types, parse_filters, parse_sort

router = APIRouter(tags=["samples"])

#: columns left out of rows unless asked for (large or internal).
HIDDEN_COLUMNS = ("embedding", "fingerprint")
MAX_LIMIT = 10_000


def jsonable(value: Any) -> Any:
    """Arrow/py values to JSON: NaN/inf floats become null, timestamps ISO strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.hex()
    return value


def _needs_jsonable(t: pa.DataType) -> bool:
    """Whether values of this Arrow type can hold something JSON cannot (NaN/inf, dates, bytes)."""
    if pa.types.is_floating(t) or pa.types.is_temporal(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return True
    if pa.types.is_fixed_size_binary(t):
        return True
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _needs_jsonable(t.value_type)
    if pa.types.is_struct(t):
        return any(_needs_jsonable(t.field(i).type) for i in range(t.num_fields))
    return pa.types.is_map(t) or pa.types.is_dictionary(t)


def _all_finite_floats(column: pa.ChunkedArray) -> bool:
    """A float column (or list of floats) with no NaN / inf: its values are JSON as they are."""
    t = column.type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        if not pa.types.is_floating(t.value_type):
            return False
        column = pa.chunked_array([pc.list_flatten(c) for c in column.chunks], type=t.value_type)
    elif not pa.types.is_floating(t):
        return False
    finite = pc.is_finite(column)
    return bool(pc.all(pc.or_kleene(finite, pc.is_null(column))).as_py() is not False)


def rows_json(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts. Column by column: only columns whose type can hold NaN, dates or
    bytes go through :func:`jsonable` (strings, ints and bools are taken as Arrow gives them)."""
    names = table.column_names
    columns = []
    for column in table.columns:
        values = column.to_pylist()
        fix = _needs_jsonable(column.type) and not _all_finite_floats(column)
        columns.append([jsonable(v) for v in values] if fix else values)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def select_columns(
    store: Store, dataset: str, columns: Sequence[str] | None, *, include_embedding: bool = False
) -> list[str]:
    """The stored columns to return: the asked ones (public names resolved) or all but the hidden."""
    schema = store.schema(dataset)
    names = list(schema.names)
    if columns:
        out = []
        info = store.get_dataset(dataset)
        for name in columns:
            if name in names:
                out.append(name)
            elif "meta_" + name in names:
                out.append("meta_" + name)
            else:
                raise UnknownField(name, field_types(info, schema), what="column")
        if "id" not in out:
            out.insert(0, "id")
    else:
        out = [n for n in names if n not in HIDDEN_COLUMNS]
    if include_embedding and "embedding" not in out:
        out.append("embedding")
    return list(dict.fromkeys(out))


def query_page(
    store: Store,
    dataset: str,
    *,
    filters: Sequence[Any] = (),
    sort: str | None = None,
    limit: int = 50,
    offset: int = 0,
    columns: Sequence[str] | None = None,
    include_embedding: bool = False,
) -> dict[str, Any]:
    """One page of rows matching ``filters`` in a total order; reused by other routes."""
    info = store.get_dataset(dataset)
    schema = store.schema(dataset)
    where = build_where(info, schema, filters, store=store)
    keys = parse_sort(sort, info, schema)
    cols = select_columns(store, dataset, columns, include_embedding=include_embedding)
    index = store.query(dataset, where=where, columns=list(dict.fromkeys(["id", *(k for k, _ in keys)])))
    total = index.num_rows
    items: list[dict[str, Any]] = []
    if limit > 0 and offset < total:
        order = pc.sort_indices(index, sort_keys=[(col, direction, "at_end") for col, direction in keys])
        page_ids = index["id"].take(order[offset : offset + limit]).to_pylist()
        items = rows_json(store.get_samples(dataset, page_ids, columns=cols))
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/datasets/{dataset}/samples", response_model=Page[dict[str, Any]], responses=problems(401, 404, 422))
def list_samples(
    dataset: str,
    store: StoreDep,
    filters: Annotated[
        str | None,
        Query(
            description='JSON list of filters, e.g. [{"field": "split", "op": "eq", "value": "val"}]',
            max_length=64_000,
        ),
    ] = None,
    sort: Annotated[str | None, Query(description="column to sort on; '-col' for descending", max_length=500)] = None,
    limit: Annotated[int, Query(ge=0, le=MAX_LIMIT)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
    columns: Annotated[str | None, Query(description="comma-separated columns to return", max_length=5000)] = None,
    include_embedding: bool = False,
) -> dict[str, Any]:
    parsed = parse_filters(filters)  # raw dicts: build_where checks keys, ops and values itself
    cols = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    return query_page(
        store,
        dataset,
        filters=parsed,
        sort=sort,
        limit=limit,
        offset=offset,
        columns=cols,
        include_embedding=include_embedding,
    )


@router.post(
    "/datasets/{dataset}/samples/query",
    response_model=Page[dict[str, Any]],
    responses=problems(401, 404, 422),
)
def query_samples(dataset: str, body: SampleQuery, store: StoreDep) -> dict[str, Any]:
    return query_page(
        store,
        dataset,
        filters=body.filters,
        sort=body.sort,
        limit=body.limit,
        offset=body.offset,
        columns=body.columns,
    )


@router.get(
    "/datasets/{dataset}/samples/{sample_id:path}",
    response_model=dict[str, Any],
    responses=problems(401, 404),
)
def get_sample(dataset: str, sample_id: str, store: StoreDep, include_embedding: bool = False) -> dict[str, Any]:
    cols = select_columns(store, dataset, None, include_embedding=include_embedding)
    table = store.get_samples(dataset, [sample_id], columns=cols)
    if table.num_rows == 0:
        raise SampleNotFound(dataset, sample_id)
    return rows_json(table)[0]
