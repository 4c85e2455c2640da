"""Is an analysis still true of the data? The one answer, for every front end that shows its figures.

An analysis is computed on one table version; labels imported, predictions switched, rows added or
removed since make its error rates and confusions out of date, while a newer version that changed none of
the judged columns (an export tagging rows) does not. :func:`analysis_freshness` counts what changed.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from edgeminer.indexer.store import Dataset
from edgeminer.indexer.where import HAS_EMBEDDING, is_null, not_null, ok_and

#: the columns whose change makes an analysis' error rates and confusions out of date
JUDGED_COLUMNS = ("id", "labeled", "label", "pred_label", "correct")

#: (store uri, dataset, run id, analyzed version, current version) -> freshness; versions never change
_FRESHNESS_CACHE: dict[tuple[str, str, Any, int, int], dict[str, Any]] = {}


def analysis_freshness(ds: Dataset, doc: dict[str, Any]) -> dict[str, Any]:
    """How the analysis compares with the data now, so a client can say its figures are out of date.

    ``analyzed_version`` (the table version the analysis left behind) and ``current_version``;
    ``new_rows``: embedded rows not on the map (ingested since); ``changed_rows``: rows on the map
    whose label, labeled flag, prediction or correctness differ from the analyzed version (a labels
    import, a new prediction); ``removed_rows``: rows on the analyzed map no longer there; ``stale``:
    any of the three; ``checked``: False when the analyzed version could not be read back (only the
    new rows were counted). A newer version that changed none of these (an export tagging rows) is
    not stale."""
    current, analyzed = ds.version, doc.get("version_written")
    out: dict[str, Any] = {
        "analyzed_version": analyzed,
        "current_version": current,
        "analyzed_at": doc.get("analyzed_at"),
        "new_rows": 0,
        "changed_rows": 0,
        "removed_rows": 0,
        "checked": True,
        "stale": False,
    }
    if not isinstance(analyzed, int) or analyzed == current:
        out["checked"] = isinstance(analyzed, int)
        return out
    key = (str(ds.store.uri), ds.name, doc.get("run_id"), analyzed, current)
    if key not in _FRESHNESS_CACHE:
        if len(_FRESHNESS_CACHE) >= 64:
            _FRESHNESS_CACHE.clear()
        _FRESHNESS_CACHE[key] = _compare_versions(ds, analyzed)
    out.update(_FRESHNESS_CACHE[key])
    out["stale"] = bool(out["new_rows"] or out["changed_rows"] or out["removed_rows"])
    return out


def _compare_versions(ds: Dataset, analyzed: int) -> dict[str, Any]:
    """new / changed / removed rows between the analyzed version and the latest (see above)."""
    on_map = ok_and(not_null("x", "y"))
    counts: dict[str, Any] = {"new_rows": ds.count(ok_and(HAS_EMBEDDING, is_null("x")))}
    try:
        before = ds.query(where=on_map, columns=list(JUDGED_COLUMNS), version=analyzed)
    except (ValueError, TypeError, OverflowError, OSError, RuntimeError):
        return {**counts, "checked": False}  # that version was cleaned up
    now = ds.query(where=on_map, columns=list(JUDGED_COLUMNS))
    now = now.append_column("present_now", pa.array([True] * now.num_rows, pa.bool_()))
    joined = before.join(now, keys="id", join_type="left outer", right_suffix="_now")
    present = pc.fill_null(joined["present_now"], False)
    changed = pa.array([False] * joined.num_rows, pa.bool_())
    for col in JUDGED_COLUMNS[1:]:
        a, b = joined[col], joined[f"{col}_now"]
        same = pc.or_(pc.and_(pc.is_null(a), pc.is_null(b)), pc.fill_null(pc.equal(a, b), False))
        changed = pc.or_(changed, pc.invert(same))
    counts["changed_rows"] = int(pc.sum(pc.and_(changed, present)).as_py() or 0)
    counts["removed_rows"] = joined.num_rows - int(pc.sum(present).as_py() or 0)
    return counts
