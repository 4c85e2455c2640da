"""CLI: ``edgeminer export`` and ``edgeminer labels import``, and the demo's label round trip step.

``register(subparsers)`` adds the subcommands (called by ``service/cli.py``'s ``build_parser``);
:func:`demo_round_trip` is the last of ``cli.DEMO_AFTER_INGEST`` (it runs after the analysis step).
"""

from __future__ import annotations

import argparse
import json
import os
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
    """``edgeminer export``: plan and run an export, then print (or copy) where it is; with
    ``--to-server``, send it to a running Label Studio instead (:func:`_push`).

    Parameters
    ----------
    args
        The parsed command line (dataset, target, selection, media options, output options).
    settings
        The server settings (data dir, media roots, media base URL, Label Studio server).

    Returns
    -------
    int
        The exit status (0; 1 when a Label Studio batch was refused).

    Raises
    ------
    CliError
        A bad option (ids file, filter JSON, target, base URL, --out onto an existing file).
    """
    from edgeminer.service.export.runner import export_path, get_export, plan_export, run_export

    if args.to_server is not None:
        return _push(args, settings)
    if args.project:
        raise CliError("--project names a Label Studio project: it needs --to-server [URL]")
    store = open_store(settings)
    req = _export_request(args, settings)
    doc, created = plan_export(store, args.dataset, req, data_dir=settings.data_dir, force=args.force)
    dest = _out_path(args, f"{args.dataset}-{doc['id']}.zip") if args.out else None
    if not created and doc["status"] == "done":
        print(f"export {doc['id']} was made before (same request); use --force for a new one")

    summary = run_export(
        store,
        args.dataset,
        doc["id"],
        progress=_progress(args),
        media_roots=settings.media_roots,
        data_dir=settings.data_dir,
    )
    if not args.quiet:
        print(file=sys.stderr)
    doc = get_export(store, args.dataset, doc["id"])
    folder = export_path(doc, "path", data_dir=settings.data_dir, dataset=args.dataset)
    zip_path = export_path(doc, "zip", data_dir=settings.data_dir, dataset=args.dataset)
    if dest is not None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(zip_path, dest)
        zip_path = dest
    hint = _local_files_hint(req, store.get_dataset(args.dataset).media_roots)
    _print_export(args, doc, summary, folder, zip_path, hint)
    return 0


def _progress(args: argparse.Namespace) -> Any:
    def progress(done: int, total: int | None, message: str | None) -> None:
        if not args.quiet:
            print(f"\r  {done}/{total} rows ({message})", end="", file=sys.stderr, flush=True)

    return progress


def _out_path(args: argparse.Namespace, generated: str) -> Path:
    """Where ``--out`` puts the zip: ``<folder>/<generated>`` for a folder (one that exists, or a path
    ending in '/'), else the file named (``.zip`` added when it has no extension). An existing file is
    refused unless ``--overwrite``."""
    text = str(args.out)
    out = Path(text).expanduser()
    if text.endswith(("/", os.sep)) or out.is_dir():
        dest = out / generated
    else:
        dest = out if out.suffix else out.with_name(out.name + ".zip")
    if dest.exists() and not dest.is_file():
        raise CliError(f"--out {dest}: exists and is not a file; name a file or a folder")
    if dest.exists() and not args.overwrite:
        raise CliError(f"--out {dest}: the file exists; pass --overwrite to replace it, or name another file")
    return dest


def _local_files_hint(req: ExportRequest, media_roots: list[str]) -> str | None:
    """What Label Studio needs to show a Label Studio export's ``/data/local-files/?d=`` images."""
    if req.target != "label_studio" or req.media == "url":
        return None
    if req.media == "copy":
        root = "<the folder you unzip the export into>"
    else:
        roots = [req.media_root] if req.media_root else list(media_roots)
        root = str(Path(roots[0]).resolve()) if roots else "<the folder the image paths are relative to>"
    return (
        "Label Studio loads these images as local files (/data/local-files/?d=...): start it with "
        f"LOCAL_FILES_SERVING_ENABLED=true LOCAL_FILES_DOCUMENT_ROOT={root}, and give the project a Local files "
        "storage (Settings > Cloud Storage; do not sync it) at each subfolder of that root the images are in "
        "(Label Studio refuses the root itself); `export --to-server` adds those storages itself"
    )


def _push(args: argparse.Namespace, settings: Settings) -> int:
    """``export --to-server``: export the selection and send it to a Label Studio project."""
    from edgeminer.service.export.labelstudio_live import push, server_from

    if args.target != "label_studio":
        raise CliError(f"--to-server sends tasks to Label Studio: use --target label_studio, not {args.target!r}")
    if not args.project:
        raise CliError("--to-server needs --project NAME (the Label Studio project to create or reuse)")
    if args.out:
        raise CliError("--out writes a zip; with --to-server the tasks go to the server: drop one of them")
    server = server_from(settings, args.to_server or None, args.token_env)
    store = open_store(settings)
    req = _export_request(args, settings)
    report = push(
        store,
        args.dataset,
        req,
        server,
        args.project,
        data_dir=settings.data_dir,
        media_roots=settings.media_roots,
        batch_size=args.batch_size,
        progress=_progress(args),
    )
    if not args.quiet:
        print(file=sys.stderr)
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.summary())
        for batch in report.failed_batches[:10]:
            print(f"  batch {batch['batch']} ({batch['first_id']} .. {batch['last_id']}): {batch['message']}")
        for err in report.errors[:10]:
            print(f"  row {err['id']}: {err['message']}")
    return 1 if report.failed else 0


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
    args: argparse.Namespace,
    doc: ExportDoc,
    summary: dict[str, Any],
    folder: Path,
    zip_path: Path,
    hint: str | None = None,
) -> None:
    """Print the finished export: its document as JSON (``--json``), or a short summary (and the hint
    on what the labeling tool needs to show the images)."""
    if args.json:
        shown = {k: v for k, v in doc.items() if k != "ids" and not k.startswith("_")}
        print_json({**shown, "path": str(folder), "zip": str(zip_path), **({"hint": hint} if hint else {})})
    else:
        print(
            f"export {doc['id']}: {summary['rows_exported']} of {doc['count']} rows to {args.target} "
            f"(table version {doc['version_read']}), {summary['media_errors']} media errors\n"
            f"  folder: {folder}\n  zip:    {zip_path}"
        )
        for err in doc.get("errors", [])[:10]:
            print(f"  row {err['id']}: {err['message']}")
        if hint:
            print(f"  hint: {hint}")


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


def cmd_labels_pull(args: argparse.Namespace, settings: Settings) -> int:
    """``edgeminer labels pull``: import a Label Studio project's annotations (the file import's path);
    with ``--watch``, keep polling and import what changed."""
    from edgeminer.service.export.labels import LabelImportError
    from edgeminer.service.export.labelstudio_live import PullResult, pull, server_from, watch

    if args.polls is not None and (args.watch is None or args.polls < 1):
        raise CliError("--polls N needs --watch SECONDS and N >= 1")
    server = server_from(settings, args.from_server, args.token_env)
    store = open_store(settings)
    store.get_dataset(args.dataset)  # an unknown dataset fails before the server is asked

    def poll(seen: Any) -> PullResult:
        return pull(
            store,
            args.dataset,
            server,
            args.project,
            split=args.split,
            iou=args.iou,
            add_classes=args.add_classes,
            seen=seen,
        )

    def show(result: PullResult) -> None:
        if args.json:
            print_json(result.to_dict())
            return
        print(result.summary(), flush=True)
        report = result.report
        for item in (report.unmatched if report else [])[:20]:
            print(f"  unmatched {item['source']} ({item['id'] or item['image']}): {item['reason']}")

    try:
        if args.watch is None:
            show(poll(None))
        else:
            if not args.json:
                print(f"watching project {args.project!r} every {args.watch:g} s (Ctrl-C stops)", flush=True)
            watch(poll, args.watch, polls=args.polls, on_result=show)
    except LabelImportError as exc:  # refused as a file import would be (unknown labels...)
        print(f"edgeminer: error: {exc.detail}", file=sys.stderr)
        return 1
    return 0


def _label_studio_options(p: Any) -> None:
    p.add_argument(
        "--token-env",
        default=None,
        metavar="VAR",
        help="the environment variable holding the Label Studio API token (default: EDGEMINER_LABEL_STUDIO_TOKEN); "
        "the token itself is never an option, so it stays out of the shell history and the process list",
    )


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
    p.add_argument(
        "--out",
        default=None,
        help="also copy the zip here: a folder (existing, or a path ending in '/') gets <dataset>-<export id>.zip, "
        "anything else is the zip's file name (.zip added when it has no extension)",
    )
    p.add_argument("--overwrite", action="store_true", help="let --out replace an existing file")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    ls = p.add_argument_group("Label Studio, live (target label_studio)")
    ls.add_argument(
        "--to-server",
        nargs="?",
        const="",
        default=None,
        metavar="URL",
        help="send the tasks to this running Label Studio (http(s) base URL; without URL: EDGEMINER_LABEL_STUDIO_URL) "
        "instead of only writing files; rows already in the project are skipped",
    )
    ls.add_argument(
        "--project", default=None, help="the Label Studio project title (reused if it exists, else created)"
    )
    ls.add_argument("--batch-size", type=int, default=200, help="tasks per import request (default 200)")
    _label_studio_options(ls)
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

    q = labels_sub.add_parser(
        "pull",
        help="import the annotations of a project of a running Label Studio",
        description="Reads the project's annotated tasks (its JSON export) and imports them as `labels import` "
        "imports a Label Studio JSON file: matched rows become labeled, unmatched tasks are listed.",
    )
    q.add_argument("--dataset", required=True)
    q.add_argument("--project", required=True, help="the Label Studio project title")
    q.add_argument(
        "--from-server",
        default=None,
        metavar="URL",
        help="the Label Studio base URL (default: EDGEMINER_LABEL_STUDIO_URL)",
    )
    _label_studio_options(q)
    q.add_argument("--split", default="train", help="split of the newly labeled rows (default train)")
    q.add_argument("--iou", type=float, default=0.5, help="detection: overlap to match a box to an object row")
    q.add_argument("--add-classes", action="store_true", help="append labels that are not classes to the classes")
    q.add_argument(
        "--watch",
        type=float,
        default=None,
        metavar="SECONDS",
        help="keep polling every SECONDS, importing the tasks whose annotations changed (Ctrl-C stops)",
    )
    q.add_argument("--polls", type=int, default=None, help="with --watch: stop after this many polls")
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=cmd_labels_pull)


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
