"""CLI: ``edgeminer export`` and ``edgeminer labels import``, and the demo's label round trip step.

``register(subparsers)`` adds the subcommands (called by ``service/cli.py``'s ``build_parser``);
:func:`demo_round_trip` is the last of ``cli.DEMO_AFTER_INGEST`` (it runs after the analysis step).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeminer.service.cli_common import CliError, open_store, print_json
from edgeminer.service.settings import Settings

if TYPE_CHECKING:
    from edgeminer.indexer.documents import ExportDoc
    from edgeminer.service.export.common import ExportRequest

DEMO_DATASET = "demo"
DEMO_BUDGET = 200


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    """``edgeminer export``: plan and run an export, then print (or copy) where it is.

    Parameters
    ----------
    args
        The parsed command line (dataset, target, selection, media options, output options).
    settings
        The server settings (data dir, media roots, media base URL).

    Returns
    -------
    int
        The exit status (0).

    Raises
    ------
    CliError
        A bad option (ids file, filter JSON, target, base URL).
    """
    from edgeminer.service.export.runner import export_path, get_export, plan_export, run_export

    store = open_store(settings)
    req = _export_request(args, settings)
    doc, created = plan_export(store, args.dataset, req, data_dir=settings.data_dir, force=args.force)
    if not created and doc["status"] == "done":
        print(f"export {doc['id']} was made before (same request); use --force for a new one")

    def progress(done: int, total: int | None, message: str | None) -> None:
        if not args.quiet:
            print(f"\r  {done}/{total} rows ({message})", end="", file=sys.stderr, flush=True)

    summary = run_export(
        store, args.dataset, doc["id"], progress=progress, media_roots=settings.media_roots, data_dir=settings.data_dir
    )
    if not args.quiet:
        print(file=sys.stderr)
    doc = get_export(store, args.dataset, doc["id"])
    folder = export_path(doc, "path", data_dir=settings.data_dir, dataset=args.dataset)
    zip_path = export_path(doc, "zip", data_dir=settings.data_dir, dataset=args.dataset)
    if args.out:
        dest = Path(args.out)
        if dest.is_dir():
            dest = dest / zip_path.name
        shutil.copyfile(zip_path, dest)
        zip_path = dest
    _print_export(args, doc, summary, folder, zip_path)
    return 0


def _export_request(args: argparse.Namespace, settings: Settings) -> ExportRequest:
    """The :class:`ExportRequest` the options describe, checked."""
    from edgeminer.service.export.common import TARGETS, ExportRequest, check_media_base_url

    ids = _cli_ids(args)
    filters = None
    if args.filter:
        try:
            filters = json.loads(args.filter)
        except json.JSONDecodeError as exc:
            raise CliError(
                f'--filter is not valid JSON ({exc}); e.g. \'[{{"field": "slice", "value": "x"}}]\''
            ) from None
    if args.target not in TARGETS:
        raise CliError(f"unknown target {args.target!r}: choose one of {', '.join(TARGETS)}")
    if args.base_url:
        try:
            check_media_base_url(args.base_url)
        except ValueError as exc:
            raise CliError(f"--base-url: {exc}") from None
    if args.media == "url" and not args.base_url and settings.media_base_url:
        try:
            check_media_base_url(settings.media_base_url)
        except ValueError as exc:
            raise CliError(f"EDGEMINER_MEDIA_BASE_URL is not usable: {exc}; or pass --base-url") from None
    return ExportRequest(
        target=args.target,
        ids=ids,
        issue=args.issue,
        selection=args.selection,
        filter=filters,
        media=args.media,
        media_base_url=args.base_url or (settings.media_base_url if args.media == "url" else None),
        media_root=args.media_root,
        chunk_size=args.chunk_size,
        name=args.name or "",
    ).validate()


def _cli_ids(args: argparse.Namespace) -> list[str] | None:
    """The ids given with ``--ids`` (comma separated) and ``--ids-file`` (one a line), or None."""
    ids = None
    if args.ids:
        ids = [i.strip() for i in args.ids.split(",") if i.strip()]
    if args.ids_file:
        path = Path(args.ids_file)
        if not path.is_file():
            raise CliError(f"--ids-file {str(path)!r} does not exist")
        ids = (ids or []) + [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return ids


def _print_export(
    args: argparse.Namespace, doc: ExportDoc, summary: dict[str, Any], folder: Path, zip_path: Path
) -> None:
    """Print the finished export: its document as JSON (``--json``), or a short summary."""
    if args.json:
        shown = {k: v for k, v in doc.items() if k != "ids" and not k.startswith("_")}
        print_json({**shown, "path": str(folder), "zip": str(zip_path)})
    else:
        print(
            f"export {doc['id']}: {summary['rows_exported']} of {doc['count']} rows to {args.target} "
            f"(table version {doc['version_read']}), {summary['media_errors']} media errors\n"
            f"  folder: {folder}\n  zip:    {zip_path}"
        )
        for err in doc.get("errors", [])[:10]:
            print(f"  row {err['id']}: {err['message']}")


def cmd_labels_import(args: argparse.Namespace, settings: Settings) -> int:
    from edgeminer.service.export.labels import LabelImportError, import_labels

    store = open_store(settings)
    try:
        report = import_labels(
            store,
            args.dataset,
            Path(args.file),
            format=args.format,
            split=args.split,
            iou=args.iou,
            add_classes=args.add_classes,
        )
    except LabelImportError as exc:  # refused whole: nothing was written
        if args.json:  # the problem document the API answers for the same refusal
            from edgeminer.service.errors import to_problem

            print_json(to_problem(exc).to_dict())
            return 1
        print(f"edgeminer: error: {exc.detail}", file=sys.stderr)
        for problem in exc.extras.get("errors", [])[5:20]:
            field = f", {problem['field']}" if problem.get("field") else ""
            print(f"  {problem['source']}{field}: {problem['message']}", file=sys.stderr)
        return 1
    if args.json:
        print_json(report.to_dict())
        return 0
    print(report.summary())
    for item in report.unmatched[:20]:
        print(f"  unmatched {item['source']} ({item['id'] or item['image']}): {item['reason']}")
    if report.unmatched_count > 20:
        print(f"  ... {report.unmatched_count - 20} more (use --json for the list)")
    return 0 if report.matched or not report.entries else 1


def register(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="export a selection to a labeling tool's format (with the model's predictions as pre-labels)",
        description="Write the selected rows in a labeling tool's format, as a folder and a zip under the data "
        "dir. The same request twice gives the same export; an interrupted export resumes.",
    )
    p.add_argument("--dataset", required=True)
    p.add_argument(
        "--target",
        required=True,
        help="label_studio, cvat, coco, yolo, labelbox, sagemaker or csv",
    )
    sel = p.add_argument_group("selection (exactly one)")
    sel.add_argument("--ids", default=None, help="comma-separated sample ids")
    sel.add_argument("--ids-file", default=None, help="a file with one sample id per line")
    sel.add_argument("--issue", default=None, help="an issue id")
    sel.add_argument("--selection", default=None, help="a saved mine / select result id")
    sel.add_argument(
        "--filter", default=None, help='structured filters as JSON: [{"field": ..., "op": ..., "value": ...}]'
    )
    p.add_argument("--media", choices=["relative", "copy", "url"], default="relative")
    p.add_argument(
        "--base-url",
        default=None,
        help="url media: base URL, or a template with the placeholders {id}, {dataset}, {path}, {name} "
        "(nothing else in braces)",
    )
    p.add_argument("--media-root", default=None, help="relative media: the folder paths are relative to")
    p.add_argument("--chunk-size", type=int, default=500)
    p.add_argument("--name", default=None)
    p.add_argument("--force", action="store_true", help="a new export even if the same one was made")
    p.add_argument("--out", default=None, help="also copy the zip to this file or folder")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("labels", help="bring labels back from a labeling tool")
    labels_sub = p.add_subparsers(dest="labels_command", metavar="ACTION", required=True)
    q = labels_sub.add_parser(
        "import",
        help="import a Label Studio JSON export, a COCO JSON or a CSV (id or uri, label)",
        description="Matched rows become labeled (in --split), correctness and outcome are recomputed, "
        "unmatched entries are listed. The previous labels stay readable at the table version printed.",
    )
    q.add_argument("file")
    q.add_argument("--dataset", required=True)
    q.add_argument("--format", choices=["label_studio", "coco", "csv"], default=None, help="default: detected")
    q.add_argument("--split", default="train", help="split of the newly labeled rows (default train)")
    q.add_argument("--iou", type=float, default=0.5, help="detection: overlap to match a box to an object row")
    q.add_argument(
        "--add-classes",
        action="store_true",
        help="append labels that are not classes of the dataset to its classes (default: such labels refuse "
        "the import, listing them and the known classes)",
    )
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=cmd_labels_import)


def demo_round_trip(args: argparse.Namespace, settings: Settings, store: Any) -> None:
    """`edgeminer demo`'s last step: the label round trip with the demo's true pool labels."""
    from edgeminer.service.export.roundtrip import read_truth, run_round_trip

    truth_path = Path(getattr(args, "demo_dir", "./demo-data")) / "pool_truth.csv"
    if not truth_path.is_file():
        print(f"label round trip skipped: {truth_path} is missing (rebuild the demo with --force)")
        return
    from edgeminer.indexer.store import DocNotFound

    try:  # once per demo dataset: re-running `edgeminer demo` must not label another batch each time
        done = store.get_doc(DEMO_DATASET, "roundtrip", "demo")
        print(done["describe"])
        print("(label round trip already ran on this dataset; `edgeminer demo --force` rebuilds it from scratch)")
        return
    except DocNotFound:
        pass
    rt = run_round_trip(
        store, DEMO_DATASET, data_dir=settings.data_dir, truth=read_truth(truth_path), budget=DEMO_BUDGET
    )
    text = rt.describe()
    store.put_doc(DEMO_DATASET, "roundtrip", "demo", {"describe": text})
    print(text)
