"""`edgeminer versions`, `edgeminer compare`, `edgeminer ingest --model-version` and the demo's retrain step
(issue 14: model versions and what the new model fixed and broke).

``register(subparsers)`` adds ``versions`` and ``compare`` (called by ``service/cli.py``'s ``build_parser``);
:func:`ingest_model_version` is what ``edgeminer ingest --model-version NAME`` runs on an existing dataset;
:func:`demo_retrain_step` is the last of ``cli.DEMO_AFTER_INGEST`` (only with ``demo --retrain``).
"""

from __future__ import annotations

import argparse
from typing import Any

from edgeminer.service.cli_common import CliError, open_store, print_json
from edgeminer.service.settings import Settings

# ---------------------------------------------------------------------------------------------
# ingest --model-version
# ---------------------------------------------------------------------------------------------


def ingest_model_version(args: argparse.Namespace, settings: Settings) -> int | None:
    """``edgeminer ingest [MANIFEST] --dataset X --model-version NAME [--model-file new.pt]`` (detection:
    ``ingest instances.json --coco-results new.json``) on an existing dataset: store the predictions as
    version NAME (embeddings and labels untouched). None when the dataset
    does not exist yet (the ordinary ingest then creates it and names its predictions NAME)."""
    from edgeminer.indexer.versions import check_version_name, ingest_predictions

    store = open_store(settings)
    check_version_name(args.model_version)
    if not store.has_dataset(args.dataset):
        return None
    source = None
    if args.source and not args.model_file:
        from edgeminer.indexer.sources import open_source

        source = open_source(
            args.source,
            kind=args.format,
            coco_results=args.coco_results,
            image_root=args.image_root,
            classes=args.classes.split(",") if args.classes else None,
        )
    elif args.source and args.model_file:
        raise CliError("give a predictions manifest or --model-file with --model-version, not both")
    elif not args.model_file:
        raise CliError("--model-version needs a predictions manifest (SOURCE) or --model-file MODEL.pt")
    report = ingest_predictions(
        store,
        args.dataset,
        args.model_version,
        source=source,
        model_file=args.model_file,
        mc_passes=args.mc_passes or 0,
        device=args.device or settings.device,
        batch_size=args.batch_size,
        make_current=args.make_current,
        progress=not args.quiet,
    )
    print(report.summary())
    return 0


# ---------------------------------------------------------------------------------------------
# versions
# ---------------------------------------------------------------------------------------------


def cmd_versions(args: argparse.Namespace, settings: Settings) -> int:
    from edgeminer.indexer.versions import list_versions, set_current

    store = open_store(settings)
    switched = None
    if args.set_current:
        switched = set_current(store, args.dataset, args.set_current)
    reg = list_versions(store, args.dataset)
    if args.json:
        print_json({**reg, "switched": switched})
        return 0
    if switched:
        print(
            f"current model version of {args.dataset!r}: {switched['previous'] or '-'} -> {switched['current']} "
            f"({switched['rows']} rows); run `edgeminer analyze --dataset {args.dataset}` to re-rank the failure "
            "clusters under it"
        )
    if not reg["versions"]:
        print(f"dataset {args.dataset!r} has no model versions yet (datasets ingested before versions get v1 "
              "when a second version is added)")  # fmt: skip
        return 0
    print(f"{'':2}{'version':<16}{'kind':<12}{'rows':>8}{'errors':>8}  model")
    for v in reg["versions"]:
        mark = "* " if v["name"] == reg["current"] else "  "
        print(f"{mark}{v['name']:<16}{v['kind']:<12}{v['rows']:>8}{v['errors']:>8}  {v['model']}")
    print("(* = current: the version the map, clusters, scores, mining and selection use)")
    return 0


# ---------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------


def cmd_compare(args: argparse.Namespace, settings: Settings) -> int:
    from edgeminer.service.compare import CompareOptions, compare

    store = open_store(settings)
    opts = CompareOptions(split=args.split, resamples=args.resamples, seed=args.seed, confidence=args.confidence)
    report = compare(store, args.dataset, args.base, args.new, opts)
    if args.json:
        print_json(report)
        return 0
    print(format_compare(report, top=args.top))
    return 0


def _pct(iv: dict[str, Any], signed: bool = False) -> str:
    if iv["value"] is None:
        return "-"
    fmt = "{:+.1%}" if signed else "{:.1%}"
    return f"{fmt.format(iv['value'])} [{fmt.format(iv['low'])}, {fmt.format(iv['high'])}]"


def _row(label: str, g: dict[str, Any]) -> str:
    return (
        f"{label:<22}{g['n']:>6}  {_pct(g['accuracy_base']):<24}{_pct(g['accuracy_new']):<24}"
        f"{_pct(g['delta'], signed=True):<27}{g['fixed']:>6}{g['broken']:>7}  {g['verdict']}"
    )


def format_compare(report: dict[str, Any], *, top: int = 15) -> str:
    """The comparison as tables: overall, regressions, clusters, slices, classes, other metadata."""
    conf = f"{report['confidence']:.0%}"
    split = f"split {report['split']}" if report["split"] else "all labeled rows"
    head = (
        f"{'':<22}{'n':>6}  {'acc ' + report['base']:<24}{'acc ' + report['new']:<24}{'difference':<27}"
        f"{'fixed':>6}{'broken':>7}  verdict"
    )
    rows = report["rows"]
    lines = [
        f"compare {report['base']} -> {report['new']} on {report['dataset']!r} ({split}): "
        f"{report['overall']['n']} judged rows, {rows['no_prediction']} without a prediction in one version; "
        f"{conf} bootstrap intervals ({report['resamples']} resamples, seed {report['seed']})",
        "",
        head,
        _row("overall", report["overall"]),
    ]
    regs = report["regressions"]
    lines += ["", f"regressions (the new model significantly worse): {len(regs) or 'none'}"]
    lines += [f"  {g['key']}={g['value']}: {g['delta']['value']:+.1%} ({g['broken']} broken)" for g in regs]
    if report["clusters"]:
        stale = " (rows changed since; `edgeminer analyze` refreshes them)" if report["analysis"]["stale"] else ""
        lines += ["", f"clusters of analysis {report['analysis']['run_id']}{stale}", head]
        for g in report["clusters"][:top]:
            rank = f" (#{g['failure_rank']})" if g.get("failure_rank") else ""
            lines.append(_row("noise" if g["value"] == -1 else f"cluster {g['value']}{rank}", g))  # -1: HDBSCAN noise
        lines += _more(report["clusters"], top, "clusters")
    det = report.get("detection")
    if det:
        fps = ", ".join(f"{k} {v}" for k, v in det["false_positives"].items())
        lines += [
            "",
            f"detection: false positives (detections matching no object): {fps}",
            "objects: base -> new outcome",
        ]
        for b, row in sorted(det["transitions"].items()):
            lines.append(f"  {b:<16}" + ", ".join(f"{n} {c}" for n, c in sorted(row.items())))
    sections = [("slice", report["slices"]), ("class", report["classes"])]
    sections += [(k, v) for k, v in report["metadata"].items() if k != "slice"]
    for name, groups in sections:
        if groups:
            lines += ["", f"per {name}", head] + [_row(f"{name}={g['value']}", g) for g in groups[:top]]
            lines += _more(groups, top, f"{name} values")
    return "\n".join(lines)


def _more(groups: list[dict[str, Any]], top: int, what: str) -> list[str]:
    """The line saying a table was cut at ``top`` rows, and how to see the rest (none when it was not)."""
    rest = len(groups) - top
    return [f"... {rest} more {what} (--top {len(groups)} shows them all, --json every figure)"] if rest > 0 else []


# ---------------------------------------------------------------------------------------------
# the demo's retrain step
# ---------------------------------------------------------------------------------------------


def demo_retrain_step(args: argparse.Namespace, settings: Settings, store: Any) -> None:
    """With ``demo --retrain``: retrain the demo CNN on train + the round trip's labels, store its
    predictions as version v2 and print the comparison with v1 on the validation split."""
    if not getattr(args, "retrain", False):
        return
    from edgeminer.indexer.demo_retrain import retrain_demo
    from edgeminer.service.compare import CompareOptions, compare

    print("retraining the demo model on train + the imported labels...", flush=True)
    result = retrain_demo(store, args.demo_dir, version="v2", seed=args.seed, progress=True)
    print(result.describe())
    report = compare(store, "demo", "v1", "v2", CompareOptions(split="val", seed=args.seed))
    print(format_compare(report, top=8))


# ---------------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``versions`` and ``compare`` to the ``edgeminer`` parser."""
    p = sub.add_parser(
        "versions",
        help="a dataset's model versions; --set-current switches the one everything reads",
        description="List the model versions of a dataset (predictions of several models on the same rows), "
        "or make one current: its predictions and scores are copied into the rows the map, clusters, mining, "
        "selection and exports read. Add versions with `edgeminer ingest ... --model-version NAME`.",
    )
    p.add_argument("--dataset", required=True)
    p.add_argument("--set-current", default=None, metavar="NAME", help="make this version the current one")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_versions)

    p = sub.add_parser(
        "compare",
        help="what a new model version fixed and broke: per cluster, slice, class, metadata value",
        description="Compare two model versions on the labeled rows: accuracy of each with a paired bootstrap "
        "confidence interval, rows fixed (wrong -> right) and broken (right -> wrong), overall, per failure "
        "cluster of the current analysis, per class and per value of each categorical metadata field; groups "
        "where the new version is significantly worse (regressions) come first.",
    )
    p.add_argument("--dataset", required=True)
    p.add_argument("--base", required=True, help="the version to compare against (e.g. v1)")
    p.add_argument("--new", required=True, help="the new version (e.g. v2)")
    p.add_argument("--split", default=None, help="compare on this split only (e.g. val); default: all labeled rows")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (100-20000, default 1000)")
    p.add_argument("--confidence", type=float, default=0.95, help="interval confidence (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--top", type=int, default=15, help="rows per table")
    p.add_argument("--json", action="store_true", help="machine-readable output (the API's shape)")
    p.set_defaults(handler=cmd_compare)
