"""`edgeminer slices` and `edgeminer label-issues`: thin commands over indexer/analysis/metaslices.py and
indexer/analysis/label_issues.py.

Both compute on demand and cache the result per samples-table version (the dataset's docs table), so a
second call on unchanged data answers at once; ``--refresh`` recomputes. ``edgeminer mine --slice N``
and ``--label-issues`` mine from what these print.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgeminer.service.cli_common import CliError, open_store, print_json
from edgeminer.service.settings import Settings


def cmd_slices(args: argparse.Namespace, settings: Settings) -> int:
    from edgeminer.indexer.analysis.metaslices import SliceParams, slices_overview

    store = open_store(settings)
    params = SliceParams(
        max_l=args.max_l,
        top_k=args.top,
        min_sup=args.min_sup,
        include_train=args.include_train,
        refinements=args.refinements,
    )
    doc = slices_overview(store, args.dataset, params, refresh=args.refresh)
    if args.json:
        print_json(doc)
        return 0
    print(
        f"metadata slices of {args.dataset!r} at table version {doc['version']}: errors judged on "
        f"{doc['judged_on']} ({doc['judged']} rows, base error rate {doc['base_error_rate']:.1%}), "
        f"{doc['unlabeled']} unlabeled rows"
    )
    if not doc["slices"]:
        print("no metadata slice stands out (none scores above 0); fields: " + _fields(doc))
    else:
        print(f"{'slice':>5} {'err%':>5} {'lift':>5} {'judged':>7} {'unlab':>6}  conditions")
        for s in doc["slices"]:
            conds = " and ".join(c["label"] for c in s["conditions"])
            figures = f"{s['error_rate']:>5.0%} {s['lift']:>5.1f} {s['judged']:>7} {s['unlabeled']:>6}"
            print(f"{s['id']:>5} {figures}  {conds}")
        hint = f"mine a slice's unlabeled rows nearest its failures: edgeminer mine --dataset {args.dataset} --slice N"
        if params != SliceParams(top_k=params.top_k):
            hint += " (N numbers the default listing, without --max-l, --min-sup, --include-train or --refinements)"
        print(hint)
    _print_clusters(doc["clusters"], args.dataset)
    return 0


def _fields(doc: dict[str, Any]) -> str:
    return ", ".join(f["field"] for f in doc["features"]) or "(no metadata fields)"


def _print_clusters(clusters: dict[str, Any], dataset: str) -> None:
    if not clusters["analyzed"]:
        print(f"failure clusters: none yet (edgeminer analyze --dataset {dataset})")
        return
    items = clusters["items"]
    stale = " (the data changed since the analysis: run edgeminer analyze again)" if clusters["stale"] else ""
    shown = ", ".join(
        f"#{c['failure_rank']} cluster {c['id']} ({c['error_rate'] or 0:.0%} wrong, {c['size']} rows)"
        for c in items[:5]
    )
    print(f"failure clusters{stale}: {shown or 'none'}")


def cmd_label_issues(args: argparse.Namespace, settings: Settings) -> int:
    from edgeminer.indexer.analysis.label_issues import LabelIssueParams, load_label_issues

    if args.limit < 1:
        raise CliError(f"--limit must be at least 1, not {args.limit}")
    store = open_store(settings)
    doc = load_label_issues(
        store,
        args.dataset,
        LabelIssueParams(train_rows=args.train_rows, other_rows=args.other_rows),
        refresh=args.refresh,
    )
    issues = doc["issues"]
    if args.ids_out:
        Path(args.ids_out).write_text("".join(f"{i['id']}\n" for i in issues), encoding="utf-8")
    if args.json:
        print_json({**doc, "issues": issues[: args.limit]})
        return 0
    c = doc["counts"]
    print(
        f"{doc['count']} likely label mistakes in {args.dataset!r} at table version {doc['version']} "
        f"({c['labeled']} labeled rows: {c['probe']} judged by a cross-validated probe on the embeddings, "
        f"{c['model']} by the model's probabilities, {c['not_judged']} not judged)"
    )
    if issues:
        print(f"{'rank':>5}  {'id':<24} {'split':<10} {'label':<14} {'suggested':<14} p(label)")
        for i in issues[: args.limit]:
            print(
                f"{i['rank']:>5}  {i['id']:<24} {i['split']:<10} {i['label']:<14} {i['suggested']:<14} "
                f"{i['self_confidence']:.3f}"
            )
        if len(issues) > args.limit:
            print(f"... {len(issues) - args.limit} more (--limit, --json, --ids-out)")
    if args.ids_out:
        print(f"wrote {len(issues)} ids to {args.ids_out}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "slices",
        help="metadata slices with high error rates (and the failure clusters beside them)",
        description="Find conjunctions of metadata values (image properties included) where the model is "
        "wrong far more often than usual (SliceLine's score). Cached per table version.",
    )
    p.add_argument("--dataset", required=True)
    p.add_argument("--max-l", type=int, choices=(1, 2, 3), default=2, help="most conditions per slice (default 2)")
    p.add_argument("--top", type=int, default=10, help="slices to show (1-100, default 10)")
    p.add_argument("--min-sup", type=int, default=None, help="fewest judged rows per slice (default 1%%, >= 10)")
    p.add_argument("--include-train", action="store_true", help="judge errors on train rows too")
    p.add_argument(
        "--refinements",
        action="store_true",
        help="also list a slice that only narrows another by a condition without a significantly higher error "
        "rate (SliceLine lists them; by default they are left out and the next slices move up)",
    )
    p.add_argument("--refresh", action="store_true", help="recompute even when cached at this table version")
    p.add_argument("--json", action="store_true", help="the full result as JSON")
    p.set_defaults(handler=cmd_slices)

    q = sub.add_parser(
        "label-issues",
        help="labeled rows whose label is likely wrong (confident learning)",
        description="List labeled rows whose label is likely wrong, most likely first. Train rows are judged "
        "by a cross-validated probe on the embeddings (--train-rows), never by the model that learnt them; "
        "the other rows by the probe too unless --other-rows model.",
    )
    q.add_argument("--dataset", required=True)
    q.add_argument(
        "--train-rows",
        choices=("probe", "skip", "model"),
        default="probe",
        help="train rows: out-of-fold probe probabilities (default), leave them out, or the model's own",
    )
    q.add_argument(
        "--other-rows",
        choices=("probe", "model"),
        default="probe",
        help="the other labeled rows: the probe (default) or the model's stored probabilities",
    )
    q.add_argument("--limit", type=int, default=20, help="rows to print (default 20)")
    q.add_argument("--ids-out", default=None, help="write every issue's id to this file, one per line")
    q.add_argument("--refresh", action="store_true", help="recompute even when cached at this table version")
    q.add_argument("--json", action="store_true", help="the full result as JSON")
    q.set_defaults(handler=cmd_label_issues)
