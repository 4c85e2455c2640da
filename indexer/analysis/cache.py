"""Results computed on demand from a dataset and cached as one document per table version.

Metadata slices and label issues are not steps of ``analyze``: they are computed when first asked for and
kept as a small document that remembers the table version and the parameters it was computed with, so the
next request at the same version with the same parameters reads the document instead of recomputing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from edgeminer.indexer.errors import DocNotFound
from edgeminer.indexer.store import Store


def load_or_compute(
    store: Store,
    dataset: str,
    kind: str,
    doc_id: str,
    params: Mapping[str, Any],
    compute: Callable[[], dict[str, Any]],
    *,
    refresh: bool = False,
) -> dict[str, Any]:
    """The cached ``kind`` document when it was computed at the table's current version with ``params``
    (``refresh`` ignores it), else ``compute()``'s document, cached under ``doc_id`` and returned."""
    version = store.version(dataset)
    if not refresh:
        try:
            doc = store.get_doc(dataset, kind, doc_id)
        except DocNotFound:
            doc = None
        if doc is not None and doc.get("version") == version and doc.get("params") == dict(params):
            return {k: v for k, v in doc.items() if not k.startswith("_") and k != "id"}
    doc = compute()
    store.put_doc(dataset, kind, doc_id, doc, name=kind)
    return doc
