"""`edgeminer mine` and `edgeminer select`: thin commands over service/mining/ and service/selection.py.

Filters use the API's structured form, as JSON (``--filters '[{"field": "area", "op": "gt", "value": 100}]'``)
or the shorthand ``--where-eq field=value`` (repeatable). Output: a table, ``--json`` for the full
result, or ``--ids-out FILE`` for one id per line (the input of an export). The result is saved as a
``selection`` document (``--no-record`` to skip), the same document the API's routes leave
(service/selection.py's ``record_selection``); ``edgeminer export --selection <id>`` takes it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgeminer.service.cli_common import CliError, open_store, print_json
from edgeminer.service.settings import Settings


def _filters(args: argparse.Namespace) -> list[Any]:
    """The structured filters of ``--filters`` and ``--where-eq``."""
    from edgeminer.service.filters import parse_filters

    filters: list[Any] = list(parse_filters(args.filters)) if args.filters else []
    for item in args.where_eq or []:
        if "=" not in item:
            raise CliError(f"--where-eq takes field=value, not {item!r}")
        name, value = item.split("=", 1)
        filters.append({"field": name.strip(), "op": "eq", "value": value})
    return filters


def _where(store: Any, dataset: str, filters: list[Any]) -> str | None:
    from edgeminer.service.filters import build_where

    ds = store.dataset(dataset)
    return build_where(ds.info, ds.schema, filters, store=store)


def _mine_where(store: Any, dataset: str, filters: list[Any], seeds: Any) -> str | None:
    """The filters' clause, narrowed to a metadata slice's rows for ``--slice N``."""
    from edgeminer.indexer.where import and_
    from edgeminer.service.mining.seeds import seed_candidate_where

    return and_(_where(store, dataset, filters), seed_candidate_where(store.dataset(dataset), seeds)) or None


def _record(store: Any, dataset: str, result: Any, filters: list[Any], args: argparse.Namespace) -> str | None:
    """Save the result as a selection document (the same one the API leaves), unless --no-record."""
    from edgeminer.service.selection import record_selection

    return None if args.no_record else record_selection(store, dataset, result, filters=filters)


def _print_rows(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        print("(no rows)")
        return
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        # small non-zero values (distances of near-duplicates) keep 3 significant digits, not 0.0000
        return f"{value:.3g}" if 0 < abs(value) < 1e-3 else f"{value:.4f}"
    if isinstance(value, list):
        text = ",".join(str(v) for v in value[:3])
        return text + (f",+{len(value) - 3}" if len(value) > 3 else "")
    return "" if value is None else str(value)


def _write_ids(path: str | None, rows: list[dict[str, Any]]) -> None:
    if path:
        Path(path).write_text("".join(f"{r['id']}\n" for r in rows), encoding="utf-8")
        print(f"wrote {len(rows)} ids to {path}")


def _check_budget(budget: int, settings: Settings) -> None:
    if budget > settings.max_budget:
        raise CliError(f"budget {budget} is above the limit of {settings.max_budget} (EDGEMINER_MAX_BUDGET)")


def _seeds(args: argparse.Namespace) -> Any:
    from edgeminer.service.mining import Seeds

    ids = list(args.ids or [])
    if args.ids_file:
        ids += [line.strip() for line in Path(args.ids_file).read_text(encoding="utf-8").splitlines() if line.strip()]
    confusion = None
    if args.confusion:
        if ":" not in args.confusion:
            raise CliError("--confusion takes LABEL:PREDICTED (ground truth, then the predicted class)")
        a, b = args.confusion.split(":", 1)
        confusion = (a, b)
    pair = None
    if args.pair:
        if ":" not in args.pair:
            raise CliError("--pair takes A:B (a top-2 confusion pair)")
        a, b = args.pair.split(":", 1)
        pair = (a, b)
    return Seeds(
        ids=ids,
        issue=args.issue,
        cluster=args.cluster,
        confusion=confusion,
        pair=pair,
        failures=args.failures,
        split=args.seed_split,
        text=args.text,
        image=Path(args.image).read_bytes() if args.image else None,
        slice=args.slice,
        label_issues=args.label_issues,
    )


def cmd_mine(args: argparse.Namespace, settings: Settings) -> int:
    from edgeminer.service.mining import mine

    store = open_store(settings)
    _check_budget(args.budget, settings)
    if not 0.0 <= args.uncertain_share <= 1.0:
        raise CliError(f"--uncertain-share is a share of the budget between 0 and 1, not {args.uncertain_share:g}")
    seeds = _seeds(args)
    filters = _filters(args)
    result = mine(
        store,
        args.dataset,
        seeds,
        budget=args.budget,
        k=args.k,
        aggregation=args.aggregation,
        where=_mine_where(store, args.dataset, filters, seeds),
        include_labeled=args.include_labeled,
        include_exported=args.include_exported,
        dedup_distance=args.dedup,
        diversity=None if args.diversity == "off" else args.diversity,
        pool_factor=args.pool_factor,
        uncertain_share=args.uncertain_share,
        uncertainty=args.uncertainty,
        mode_weighting=args.mode_weighting,
        columns=["uri", "pred_label", "confidence"],
        device="cpu" if (args.device or settings.device) == "auto" else (args.device or settings.device),
    )
    selection_id = _record(store, args.dataset, result, filters, args)
    _write_ids(args.ids_out, result.rows)
    if args.json:
        print_json(
            {**result.summary(), "seed_ids": result.seeds.ids, "selection_id": selection_id, "items": result.rows}
        )
        return 0
    s = result.summary()
    print(
        f"{s['returned']} of {s['candidates']} candidate rows ({s['seeds']} seeds, {s['aggregation']}, "
        f"{s['engine']} search, {s['took_ms']:.0f} ms)"
    )
    for m in s["modes"]:
        where = f"cluster {m['cluster']}" if m["cluster"] is not None else "seed vectors"
        print(f"  mode {m['mode']}: {m['size']} seeds ({where}), {m['found']} rows")
    if s["uncertain"]:
        print(f"  then {s['uncertain']} rows by {args.uncertainty} (--uncertain-share {args.uncertain_share:g})")
    _print_rows(result.rows, ["rank", "id", "distance", "pred_label", "confidence", "seeds"])
    _print_selection(selection_id)
    return 0


def _print_selection(selection_id: str | None) -> None:
    if selection_id:
        print(f"saved as selection {selection_id} (edgeminer export --selection {selection_id} ...)")


def cmd_select(args: argparse.Namespace, settings: Settings) -> int:
    from edgeminer.service.selection import select

    store = open_store(settings)
    _check_budget(args.budget, settings)
    filters = _filters(args)
    result = select(
        store,
        args.dataset,
        strategy=args.strategy,
        budget=args.budget,
        explore=args.explore,
        per_class_cap=args.per_class_cap,
        where=_where(store, args.dataset, filters),
        include_labeled=args.include_labeled,
        include_exported=args.include_exported,
        seed=args.seed,
        columns=["uri", "pred_label"],
    )
    selection_id = _record(store, args.dataset, result, filters, args)
    _write_ids(args.ids_out, result.rows)
    if args.json:
        print_json({**result.summary(), "selection_id": selection_id, "items": result.rows})
        return 0
    s = result.summary()
    parts = ", ".join(f"{n} {k}" for k, n in s["counts"].items()) or "nothing"
    print(f"{s['returned']} of {s['candidates']} candidate rows: {parts}")
    if s["skipped_no_score"]:
        print(f"  ({s['skipped_no_score']} candidates had no {args.strategy} score and were skipped)")
    _print_rows(result.rows, ["rank", "id", "part", "score", "pred_label"])
    _print_selection(selection_id)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True)
    p.add_argument("--budget", type=int, default=100, help="rows to return (default 100)")
    p.add_argument("--filters", default=None, help='JSON list of filters: [{"field":..,"op":..,"value":..}]')
    p.add_argument("--where-eq", action="append", metavar="FIELD=VALUE", help="shorthand eq filter (repeatable)")
    p.add_argument("--include-labeled", action="store_true", help="labeled rows are candidates too")
    p.add_argument("--include-exported", action="store_true", help="rows already exported are candidates too")
    p.add_argument("--ids-out", default=None, help="write the selected ids to this file, one per line")
    p.add_argument("--json", action="store_true", help="the full result as JSON")
    p.add_argument(
        "--no-record", action="store_true", help="do not save the result as a selection document (for exports)"
    )


def register(sub: Any) -> None:
    from edgeminer.service.mining import (
        AGGREGATIONS,
        DEFAULT_AGGREGATION,
        DEFAULT_MODE_WEIGHTING,
        DIVERSITY_MODES,
        MODE_WEIGHTINGS,
    )
    from edgeminer.service.selection import STRATEGIES

    p = sub.add_parser(
        "mine",
        help="nearest unlabeled neighbours of failure examples",
        description="Seeds (ids, an issue, a cluster, a confusion cell, the failures of a split, a text query "
        "or an image) -> the unlabeled rows most like them, within a budget.",
    )
    _common(p)
    g = p.add_argument_group("seeds (combine freely; selector options pick rows matching all of them)")
    g.add_argument("--ids", nargs="+", default=None, help="seed sample ids")
    g.add_argument("--ids-file", default=None, help="a file of seed ids, one per line")
    g.add_argument("--issue", default=None, help="an issue id: its flagged samples")
    g.add_argument("--cluster", type=int, default=None, help="rows of this analysis cluster")
    g.add_argument("--confusion", default=None, metavar="LABEL:PRED", help="label X predicted as Y")
    g.add_argument("--pair", default=None, metavar="A:B", help="top-2 confusion pair (pred_label/pred_label2)")
    g.add_argument("--failures", action="store_true", help="only rows the model got wrong")
    g.add_argument("--seed-split", default=None, help="only seed rows of this split (e.g. val)")
    g.add_argument("--text", default=None, help="a text query (open_clip datasets)")
    g.add_argument("--image", default=None, help="an image file to search around")
    g.add_argument(
        "--slice",
        type=int,
        default=None,
        metavar="N",
        help="metadata slice N of `edgeminer slices`: its failures are the seeds, its unlabeled rows the candidates",
    )
    g.add_argument(
        "--label-issues", action="store_true", help="the likely label mistakes of `edgeminer label-issues` are seeds"
    )
    p.add_argument("--aggregation", choices=AGGREGATIONS, default=DEFAULT_AGGREGATION)
    p.add_argument("--k", type=int, default=None, help="neighbours per seed that count as found by it")
    p.add_argument("--dedup", type=float, default=None, metavar="DIST", help="near-duplicate cosine distance")
    p.add_argument(
        "--diversity",
        choices=("off", *DIVERSITY_MODES),
        default="off",
        help="spread each failure mode's share over its --pool-factor x share nearest rows with at most "
        "share / (predicted classes there) rows per predicted class, instead of the nearest rows only: kcenter "
        "(k-center greedy from the seeds), typical (k-means, the most typical row per cluster), uncertain "
        "(least certain by margin), badge (BADGE in the pool); cover: k-center greedy over the mode's whole "
        "failure cluster, away from the cluster's training rows (the analysis' clusters; a mode without one: "
        "its nearest rows); off: the nearest rows (default)",
    )
    p.add_argument("--pool-factor", type=int, default=4, help="with --diversity: pool size as a multiple of the share")
    p.add_argument(
        "--uncertain-share", type=float, default=0.0, metavar="S",
        help="take this share of the budget (0-1) after the mined rows by --uncertainty instead: the most uncertain "
        "candidates not mined, ranked last (default 0: mining only). For a labeling batch, --diversity cover "
        "--uncertain-share 0.5 is what the active-learning benchmark found best (README)",
    )
    p.add_argument(
        "--uncertainty", choices=("margin", "least_confidence", "ratio", "entropy"), default="margin",
        help="the score --uncertain-share ranks by (default margin)",
    )
    p.add_argument(
        "--mode-weighting", choices=MODE_WEIGHTINGS, default=DEFAULT_MODE_WEIGHTING,
        help="how the failure modes (--aggregation modes) share the budget: learnable_error_rate (default: the "
        "error rate among held-out rows near the seeds times the share of nearby training rows the model gets "
        "right, so modes the model cannot learn from labels get less), local_error_rate (error rate among the "
        "nearest labeled rows), cluster_error_rate (the mode's analysis cluster) or size (seeds per mode)",
    )
    p.add_argument("--device", default=None, help="embedder device for text/image seeds")
    p.set_defaults(handler=cmd_mine)

    p = sub.add_parser(
        "select",
        help="rows to label next by uncertainty, with random exploration",
        description="Rank unlabeled rows by an uncertainty score (higher = less certain), take an explore "
        "share at random, cap rows per predicted class.",
    )
    _common(p)
    p.add_argument("--strategy", choices=STRATEGIES, default="least_confidence")
    p.add_argument("--explore", type=float, default=0.0, help="share of the budget picked at random (0-1)")
    p.add_argument("--per-class-cap", type=int, default=None, help="most rows per predicted class")
    p.add_argument("--seed", type=int, default=0, help="random seed (reproducible picks)")
    p.set_defaults(handler=cmd_select)
