"""`edgeminer analyze` and `edgeminer clusters`, and the demo's analysis step.

``register(subparsers)`` adds the subcommands (called by ``service/cli.py``'s ``build_parser``);
:func:`demo_step` is the first of ``cli.DEMO_AFTER_INGEST`` (it prints the ranked failure clusters and the
per-slice precision / recall table of the demo's planted slices).
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from typing import Any

from edgeminer.indexer.where import not_null, ok_and
from edgeminer.service.cli_common import CliError, open_store, print_json
from edgeminer.service.settings import Settings


def _progress(quiet: bool) -> Any:
    if quiet:
        return None

    def show(done: int, total: int, message: str) -> None:
        print(f"  [{done}/{total}] {message}", file=sys.stderr, flush=True)

    return show


def _params(args: argparse.Namespace) -> dict[str, Any]:
    names = (
        "n_neighbors",
        "min_dist",
        "pca",
        "pca_components",
        "n_epochs",
        "min_cluster_size",
        "min_samples",
        "backend",
        "min_errors",
        "seed",
        "clusters",
        "sample_rows",
    )
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def cmd_analyze(args: argparse.Namespace, settings: Settings) -> int:
    from edgeminer.indexer.analysis.run import analyze, format_slices

    store = open_store(settings)
    params = _params(args)
    params.setdefault("sample_rows", settings.analysis_sample_rows)
    if args.workers is not None and args.workers < 1:
        raise CliError(f"--workers must be at least 1, not {args.workers}")
    if args.ray_address and args.engine != "ray":
        raise CliError("--ray-address needs --engine ray")
    with ExitStack() as stack:
        if args.engine == "ray":  # the ingest engine's session: a reachability check and one-line errors first,
            # a private local Ray (127.0.0.1) without an address, shut down at the end
            from edgeminer.indexer.ray_engine import ray_session

            stack.enter_context(ray_session(args.ray_address))
        report = analyze(
            store,
            args.dataset,
            params,
            refit=args.refit,
            truth_field=args.truth_field,
            progress=_progress(args.quiet or args.json),
            engine=args.engine,
            ray_address=args.ray_address,
            workers=args.workers,
        )
    if args.json:
        print_json(report.to_dict())
        return 0
    print(report.describe())
    if report.slices:
        print(format_slices(report.slices, report.truth_field))
    print(f"next: edgeminer clusters --dataset {args.dataset}")
    return 0


def cmd_clusters(args: argparse.Namespace, settings: Settings) -> int:
    from edgeminer.indexer.analysis.clustering import slice_quality
    from edgeminer.indexer.analysis.run import format_clusters, format_slices, load_analysis

    store = open_store(settings)
    info = store.get_dataset(args.dataset)
    doc = load_analysis(store, args.dataset)
    if doc is None:
        raise CliError(
            f"dataset {args.dataset!r} has not been analyzed yet: run `edgeminer analyze --dataset "
            f"{args.dataset}` first"
        )
    slices, truth = doc.get("slices") or [], doc.get("truth_field")
    if args.truth_field and args.truth_field != truth:
        slices, truth = _slices_for(store, args.dataset, info, args.truth_field, doc, slice_quality)
    if args.json:
        clusters = [c for c in doc.get("clusters", []) if args.all or c.get("is_failure")]
        print_json(
            {
                "run_id": doc.get("run_id"),
                "base_error_rate": doc.get("base_error_rate"),
                "clusters": clusters[: args.top] if args.top else clusters,
                "truth_field": truth,
                "slices": slices,
            }
        )
        return 0
    print(format_clusters(doc, top=args.top or 15, include_all=args.all))
    if slices:
        print()
        print(format_slices(slices, truth))
    return 0


def _slices_for(store: Any, dataset: str, info: Any, field: str, doc: dict, slice_quality: Any) -> tuple[list, str]:
    name = field[5:] if field.startswith("meta_") else field
    if name not in info.metadata_fields:
        known = ", ".join(sorted(info.metadata_fields)) or "none"
        raise CliError(f"--truth-field {field!r} is not a metadata field of {dataset!r} (fields: {known})")
    table = store.query(dataset, where=ok_and(not_null("cluster")), columns=["cluster", "meta_" + name])
    ranks = {c["id"]: c["failure_rank"] for c in doc.get("clusters", [])}
    return (
        slice_quality(
            table["cluster"].to_numpy(zero_copy_only=False), table["meta_" + name].to_pylist(), failure_rank=ranks
        ),
        name,
    )


def _add_scale_options(p: argparse.ArgumentParser) -> None:
    """analyze's options for big tables: the sample size and where rows are placed."""
    p.add_argument(
        "--sample-rows",
        type=int,
        default=None,
        help="fit the map and the clusters on a seeded sample of this many rows, then place every other row from "
        "its nearest sampled rows (default: the analysis_sample_rows setting, 50,000; smaller tables are fitted "
        "whole)",
    )
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="where rows are placed: local worker processes (default) or Ray tasks (needs ray installed); "
        "the result is the same",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="with --engine ray: the cluster to join (auto, or ray://host:10001); default: start a local Ray",
    )
    p.add_argument("--workers", type=int, default=None, help="local worker processes (default: the CPU cores)")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "analyze",
        help="2-D map (UMAP), failure clusters (HDBSCAN) and their summaries",
        description="Project every row's embedding to 2-D, cluster the map, rank the clusters where the model "
        "fails, and store coordinates, clusters and summaries. Same parameters on unchanged data reuse the "
        "previous result; rows ingested since the last analysis are placed on the saved map (no refit) "
        "unless --refit.",
    )
    p.add_argument("--dataset", required=True)
    p.add_argument("--refit", action="store_true", help="fit the map again (on the sample, see --sample-rows)")
    p.add_argument(
        "--truth-field",
        default=None,
        help="metadata field with known slices to check the clusters against (default: 'slice' if present)",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed of UMAP (default 0)")
    p.add_argument("--n-neighbors", type=int, default=None, help="UMAP neighbours (default 15)")
    p.add_argument("--min-dist", type=float, default=None, help="UMAP min_dist (default 0.1)")
    p.add_argument("--n-epochs", type=int, default=None, help="UMAP epochs (default: umap-learn's choice)")
    p.add_argument(
        "--pca",
        choices=["auto", "on", "off"],
        default=None,
        help="PCA before UMAP (auto: from 20,000 rows when the embedding has more than 50 dims)",
    )
    p.add_argument("--pca-components", type=int, default=None, help="PCA dimensions (default 50)")
    p.add_argument("--min-cluster-size", type=int, default=None, help="smallest cluster (default ~sqrt(rows)/2)")
    p.add_argument("--min-samples", type=int, default=None, help="HDBSCAN min_samples (default min(10, size))")
    p.add_argument("--backend", choices=["hdbscan", "sklearn"], default=None, help="HDBSCAN implementation")
    p.add_argument("--min-errors", type=int, default=None, help="errors a failure cluster needs (default 3)")
    p.add_argument(
        "--clusters",
        choices=["failure", "density"],
        default=None,
        help="failure: density clusters refined where the model's errors concentrate (default); density: plain HDBSCAN",
    )
    _add_scale_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(handler=cmd_analyze)

    p = sub.add_parser("clusters", help="the ranked failure clusters of the last analysis")
    p.add_argument("--dataset", required=True)
    p.add_argument("--top", type=int, default=None, help="show this many (default 15)")
    p.add_argument("--all", action="store_true", help="every cluster, not only failure clusters")
    p.add_argument("--truth-field", default=None, help="check the clusters against this metadata field's values")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_clusters)


def demo_step(args: argparse.Namespace, settings: Settings, store: Any) -> None:
    """The demo's analysis: analyze `demo`, print the top failure clusters and the per-slice check."""
    from edgeminer.indexer.analysis.run import analyze, format_clusters, format_slices, load_analysis

    print("analyzing the demo (UMAP + HDBSCAN)...", flush=True)
    report = analyze(store, "demo", {"sample_rows": settings.analysis_sample_rows}, progress=_progress(False))
    print(report.describe())
    doc = load_analysis(store, "demo") or {}
    print(format_clusters(doc, top=10))
    if report.slices:
        print()
        print(format_slices(report.slices, report.truth_field))
