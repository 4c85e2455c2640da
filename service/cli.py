"""The `edgeminer` command line: a thin layer over the library functions.

Every subcommand is a ``cmd_<name>(args, settings) -> int`` function registered in ``build_parser``:
ingest, stats, demo and serve here, the others by an explicit ``register(subparsers)`` call per command
module (``cli_analysis``, ``cli_mining``, ``cli_export``, ``cli_check``). Those modules share
``service/cli_common.py`` (``CliError``, ``open_store``, ``print_json``), never this module's names.
Errors the user can act on are printed as one line (``edgeminer: error: ...``) with exit code 1;
Ctrl-C exits 130 after saying what was kept.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from edgeminer.service import cli_analysis, cli_check, cli_compare, cli_export, cli_mining, cli_simulate, cli_slices
from edgeminer.service.cli_common import CliError, DemoStep, open_store, print_json
from edgeminer.service.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    return Settings(**overrides)


# ---------------------------------------------------------------------------------------------
# ingest / stats / demo
# ---------------------------------------------------------------------------------------------


def _add_embedder_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("embedder (recorded with the dataset on first ingest)")
    g.add_argument(
        "--embedder",
        choices=["open_clip", "torchscript", "precomputed"],
        default=None,
        help="open_clip (default for a new dataset), torchscript (your own model file) or precomputed vectors",
    )
    g.add_argument("--model", default=None, help="open_clip model name (default ViT-B-32)")
    g.add_argument(
        "--pretrained",
        default=None,
        help="open_clip pretrained tag (default laion2b_s34b_b79k) or a local checkpoint file",
    )
    g.add_argument(
        "--model-file",
        default=None,
        help="torchscript: the .pt file of your model; it returns an (N, D) embedding or (embedding, logits). "
        "Class names, image size, mean and std may ride inside it as an extra file edgeminer.json",
    )
    g.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="torchscript: images are resized to this square size (default: edgeminer.json's, else 224)",
    )
    g.add_argument(
        "--mean",
        type=_floats,
        default=None,
        metavar="M[,M,M]",
        help="torchscript: per-channel mean subtracted after scaling pixels to [0, 1] (default: edgeminer.json's, "
        "else 0.5); ImageNet models use 0.485,0.456,0.406",
    )
    g.add_argument(
        "--std",
        type=_floats,
        default=None,
        metavar="S[,S,S]",
        help="torchscript: per-channel std divided by (default: edgeminer.json's, else 0.5); ImageNet models "
        "use 0.229,0.224,0.225",
    )
    g.add_argument("--mc-passes", type=int, default=None, help="torchscript: MC-dropout passes (0 = off)")
    g.add_argument("--vectors", default=None, help="precomputed: a .npy aligned with the manifest rows")
    g.add_argument("--vector-column", default=None, help="precomputed: manifest column holding the vector")
    g.add_argument("--device", default=None, help="auto (default), cpu or cuda")


def _floats(text: str) -> list[float]:
    """``--mean 0.5`` / ``--std 0.229,0.224,0.225``: comma-separated numbers."""
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, not {text!r}") from None


def _brings_predictions(source: Any) -> bool:
    return bool(getattr(source, "has_probs", False) or getattr(source, "has_predictions", False))


def _ingest_notes(embedder: Any, source: Any) -> None:
    """Say on stderr which TorchScript preprocessing defaults a new dataset uses, and which labels the
    model does not know (labels matching none of its classes are refused when the dataset is made)."""
    from edgeminer.indexer.embedders import check_model_classes
    from edgeminer.indexer.pipeline import model_predicts

    note = getattr(embedder, "preprocessing_note", lambda: None)()
    if note:
        print(f"edgeminer: {note}", file=sys.stderr)
    if model_predicts(source, embedder):
        warning = check_model_classes(embedder, list(source.classes or []))
        if warning:
            print(f"edgeminer: {warning}", file=sys.stderr)


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from edgeminer.indexer.embedders import embedder_from_options
    from edgeminer.indexer.pipeline import ingest
    from edgeminer.indexer.sources import open_source

    if args.model_version:  # an existing dataset: a new model version's predictions (cli_compare.py)
        done = cli_compare.ingest_model_version(args, settings)
        if done is not None:
            return done
    if not args.source:
        raise CliError("ingest needs a SOURCE (manifest, class folders or COCO annotations)")
    _check_engine(args)
    if args.write_rows < 1:
        raise CliError(f"--write-rows must be at least 1, not {args.write_rows}")
    store = open_store(settings)
    source = open_source(
        args.source,
        kind=args.format,
        split=args.split,
        unlabeled=args.unlabeled,
        coco_results=args.coco_results,
        image_root=args.image_root,
        vectors=args.vectors,
        vector_column=args.vector_column,
        classes=args.classes.split(",") if args.classes else None,
    )
    existing = store.get_dataset(args.dataset) if store.has_dataset(args.dataset) else None
    embedder = embedder_from_options(
        existing.embedder if existing else None,
        kind=args.embedder,
        model=args.model,
        pretrained=args.pretrained,
        model_file=args.model_file,
        image_size=args.image_size,
        mc_passes=args.mc_passes,
        device=args.device or settings.device,
        # the names of a model's logits, unless the source brings its own predictions (then they name its probs)
        classes=args.classes.split(",") if args.classes and not _brings_predictions(source) else None,
        mean=args.mean,
        std=args.std,
    )
    if existing is None:
        _ingest_notes(embedder, source)
    if args.engine == "ray":
        report = _ingest_on_ray(args, settings, store, source, embedder)
    else:
        report = ingest(
            store,
            args.dataset,
            source,
            embedder,
            batch_size=args.batch_size,
            workers=args.workers,
            progress=not args.quiet,
            model_version=args.model_version,
            write_rows=args.write_rows,
        )
    print(report.summary())
    # exit 1 only when rows were given and none of them is in the store now (all failed)
    return 0 if report.ok_rows or report.skipped or not report.total else 1


def _check_engine(args: argparse.Namespace) -> None:
    """``--ray-address`` / ``--ray-actors`` only with ``--engine ray``; with it, Ray must be installed (one line
    saying how, before anything is read or created)."""
    if args.engine != "ray":
        if args.ray_address or args.ray_actors:
            raise CliError("--ray-address and --ray-actors need --engine ray")
        return
    from edgeminer.indexer.ray_engine import import_ray

    import_ray()


def _ingest_on_ray(args: argparse.Namespace, settings: Settings, store: Any, source: Any, embedder: Any) -> Any:
    """``ingest --engine ray``: the same ingest on a Ray cluster (indexer/ray_engine.py)."""
    from edgeminer.indexer.ray_engine import ingest_ray

    return ingest_ray(
        store,
        args.dataset,
        source,
        embedder,
        address=args.ray_address,
        batch_size=args.batch_size,
        workers=args.workers,
        actors=args.ray_actors,
        device=args.device or settings.device,
        progress=not args.quiet,
        model_version=args.model_version,
        write_rows=args.write_rows,
    )


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    from edgeminer.indexer.pipeline import dataset_stats

    store = open_store(settings)
    stats = dataset_stats(store, args.dataset)
    if args.json:
        if args.by:
            from edgeminer.indexer.pipeline import errors_by_field

            stats["errors_by"] = {args.by: errors_by_field(store, args.dataset, args.by)}
        print_json(stats)
        return 0
    from edgeminer.indexer.pipeline import error_rows, errors_by_field, format_stats

    groups = errors_by_field(store, args.dataset, args.by) if args.by else []
    print(format_stats(stats))
    if args.by:
        print(f"\nerrors by {args.by} (labeled rows):")
        print(f"{args.by:<16}{'labeled':>9}{'errors':>8}{'rate':>8}{'share':>8}")
        for g in groups:
            print(
                f"{str(g['value']):<16}{g['labeled']:>9}{g['errors']:>8}{g['error_rate']:>8.0%}"
                f"{g['share_of_errors']:>8.0%}"
            )
    if args.errors and stats["errors"]:
        print(f"\nrows with status=error (first {args.errors}):")
        for r in error_rows(store, args.dataset, limit=args.errors):
            print(f"  {r['id']}  {r['uri']}: {r['error']}")
    elif args.errors:
        print("\nno rows with status=error: every row was read and embedded")
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from edgeminer.indexer.demo import build_demo

    if not args.no_serve:
        _serve_settings(args, settings)  # refuse an exposed server before the minutes of building
    store = open_store(settings)
    summary = build_demo(args.demo_dir, store, seed=args.seed, force=args.force, progress=True)
    print(summary.describe())
    for step in DEMO_AFTER_INGEST:
        step(args, settings, store)
    if args.no_serve:
        return 0
    return cmd_serve(args, settings)


#: steps `edgeminer demo` runs after the ingest, in order: the analysis, then the label round trip.
DEMO_AFTER_INGEST: tuple[DemoStep, ...] = (
    cli_analysis.demo_step,
    cli_export.demo_round_trip,
    cli_compare.demo_retrain_step,  # only with --retrain: v2 from train + the imported labels, compared with v1
)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from edgeminer.service.api.app import create_app

    settings = _serve_settings(args, settings)  # refuses an exposed server without a key, before binding
    store = open_store(settings)  # an object store that does not answer fails here, as one line
    app = create_app(settings, store=store)
    print(f"edgeminer: dashboard and API on http://{settings.host}:{settings.port}/ (docs at /docs)")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    return 0


def _serve_settings(args: argparse.Namespace, settings: Settings) -> Settings:
    """The settings with the serve options applied. On an address other machines can reach (not
    loopback) without an API key, raise CliError unless --insecure-no-key; print which Host names the
    server answers to when that is not only localhost."""
    from edgeminer.service.api.middleware import allowed_host_names, is_loopback

    updates: dict[str, Any] = {}
    for name in ("host", "port", "api_key"):
        value = getattr(args, name, None)
        if value is not None:
            updates[name] = value
    if getattr(args, "media_root", None):
        updates["media_roots"] = [*settings.media_roots, *args.media_root]
    if getattr(args, "allowed_host", None):
        updates["allowed_hosts"] = [*settings.allowed_hosts, *args.allowed_host]
    if getattr(args, "allow_url_fetch", False):
        updates["allow_url_fetch"] = True
    settings = settings.model_copy(update=updates)
    if is_loopback(settings.host):
        return settings
    if not settings.api_key:
        if not getattr(args, "insecure_no_key", False):
            raise CliError(
                f"refusing to serve on {settings.host} without an API key: every machine that can reach that "
                "address could create, change, delete and export datasets. Set EDGEMINER_API_KEY (or "
                "--api-key), or pass --insecure-no-key if only trusted machines can reach it (e.g. a "
                "container port published on 127.0.0.1)"
            )
        print(
            f"edgeminer: warning: serving on {settings.host} without an API key (--insecure-no-key): "
            "anyone who can reach it can write",
            file=sys.stderr,
        )
    names = allowed_host_names(settings)
    if "*" in names:
        print("edgeminer: warning: EDGEMINER_ALLOWED_HOSTS has '*': any Host name is answered", file=sys.stderr)
    else:
        print(
            f"edgeminer: answering to the Host names {', '.join(sorted(names))}; a client that reaches this "
            "server by another name or address gets 400: add it with --allowed-host NAME or "
            "EDGEMINER_ALLOWED_HOSTS",
            file=sys.stderr,
        )
    return settings


# ---------------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``edgeminer`` command line.

    Returns: the parser; each subcommand sets ``handler`` to the function that runs it.
    """
    parser = argparse.ArgumentParser(
        prog="edgeminer",
        description="Find where a vision model fails, and which unlabeled images to label next.",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="LanceDB directory or URI, e.g. s3://bucket/prefix (env EDGEMINER_DATA_DIR, default ./edgeminer-data); "
        "object storage reads AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION and "
        "EDGEMINER_STORAGE_OPTIONS (JSON)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_ingest_command(sub)
    _add_stats_command(sub)
    _add_demo_command(sub)
    _add_serve_command(sub)
    cli_analysis.register(sub)  # analyze, clusters
    cli_mining.register(sub)  # mine, select
    cli_export.register(sub)  # export, labels import
    cli_check.register(sub)  # check
    cli_compare.register(sub)  # versions, compare
    cli_slices.register(sub)  # slices, label-issues
    cli_simulate.register(sub)  # simulate
    return parser


def _add_ingest_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``ingest``: embed and score a source into a dataset."""
    p = sub.add_parser(
        "ingest",
        help="embed and score images into a dataset",
        description="Read a source (manifest CSV/JSONL/Parquet, class folders, or COCO + results), embed "
        "every image, score the model's predictions and upsert the rows. Re-running is safe: unchanged "
        "rows are skipped and an interrupted ingest resumes.",
    )
    p.add_argument(
        "source",
        nargs="?",
        default=None,
        help="manifest file, folder of class sub-folders, or COCO annotations JSON (with --model-version on an "
        "existing dataset: a manifest of the new model's predictions, or none with --model-file)",
    )
    p.add_argument("--dataset", required=True, help="dataset name (created on first ingest)")
    p.add_argument("--format", choices=["manifest", "folders", "coco"], default=None, help="default: guessed")
    p.add_argument("--split", default=None, help="split for rows that do not say (folders: default train)")
    p.add_argument("--unlabeled", default=None, help="folders: a folder of unlabeled images for the pool")
    p.add_argument("--coco-results", default=None, help="coco: the model's detections (COCO results JSON)")
    p.add_argument("--image-root", default=None, help="folder relative image paths are resolved against")
    p.add_argument(
        "--classes",
        default=None,
        help="comma-separated class names in the order of the probs (manifest) or of a TorchScript model's "
        "logits; without them a model with no edgeminer.json has classes 0..C-1",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="image decoding workers")
    p.add_argument(
        "--write-rows",
        type=int,
        default=4096,
        metavar="N",
        help="rows gathered before one write to the table (default 4096: few, large fragments); a killed ingest "
        "re-embeds at most this many rows when run again",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--model-version",
        default=None,
        metavar="NAME",
        help="name of the model version these predictions are (a new dataset: its first version, default v1; an "
        "existing one: a new version from the manifest's probs / pred_label+score or --model-file's logits, "
        "embeddings and labels untouched)",
    )
    p.add_argument("--make-current", action="store_true", help="with --model-version: make it the current version")
    _add_engine_options(p)
    _add_embedder_options(p)
    p.set_defaults(handler=cmd_ingest)


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    """``ingest --engine local|ray [--ray-address ...] [--ray-actors N]``."""
    g = p.add_argument_group("engine (where the decoding and the model run)")
    g.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local (default): this process, --workers decoding threads; ray: Ray Data tasks decode, an actor "
        "pool holds the model, this process reads the source and writes (needs pip install 'edgeminer[ray]')",
    )
    g.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDRESS",
        help="with --engine ray: auto (the cluster RAY_ADDRESS or `ray start` on this machine names), host:port "
        "(the head's GCS port) or ray://host:10001 (Ray Client); default: start a local Ray for this ingest",
    )
    g.add_argument(
        "--ray-actors",
        type=int,
        default=None,
        metavar="N",
        help="with --engine ray: model actors (default: one per GPU when the model runs on CUDA, else half the "
        "cluster's CPUs); --workers is then the decode tasks at a time, --batch-size the rows per model batch",
    )


def _add_stats_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``stats``: a dataset's rows, errors, embedder and versions."""
    p = sub.add_parser("stats", help="rows per split, labeled, errors, embedder, versions")
    p.add_argument("--dataset", required=True)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--by", default=None, metavar="FIELD", help="errors per value of a metadata field (or split, label)")
    p.add_argument(
        "--errors", type=int, nargs="?", const=50, default=0, metavar="N", help="list the first N error rows"
    )
    p.set_defaults(handler=cmd_stats)


def _add_demo_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``demo``: build the bundled demo, run the pipeline, serve."""
    p = sub.add_parser(
        "demo",
        help="build the bundled demo (digits with hidden failure slices), run the pipeline, serve",
        description="Writes the demo images, trains a small CNN on the CPU, ingests everything with it "
        "as a TorchScript embedder, runs the later pipeline steps, then serves the dashboard.",
    )
    p.add_argument("--demo-dir", default="./demo-data", help="where the demo images and model go")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="rebuild the demo dataset from scratch")
    p.add_argument("--no-serve", action="store_true", help="stop after the pipeline")
    p.add_argument(
        "--retrain",
        action="store_true",
        help="after the label round trip, retrain the model on train + the imported labels, store its "
        "predictions as model version v2 and print `compare --base v1 --new v2 --split val`",
    )
    _add_serve_options(p)
    p.set_defaults(handler=cmd_demo)


def _add_serve_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``serve``: the REST API and the dashboard."""
    p = sub.add_parser("serve", help="serve the REST API and the dashboard")
    _add_serve_options(p)
    p.set_defaults(handler=cmd_serve)


def _add_serve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000)")
    p.add_argument("--api-key", default=None, help="require this key (header X-API-Key) for writes")
    p.add_argument(
        "--insecure-no-key",
        action="store_true",
        help="allow a non-loopback --host without an API key (anyone who can reach it can write)",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=None,
        metavar="NAME",
        help="a Host name clients use to reach the server, besides localhost (env EDGEMINER_ALLOWED_HOSTS)",
    )
    p.add_argument("--media-root", action="append", default=None, help="extra folder media may be served from")
    p.add_argument("--allow-url-fetch", action="store_true", help="allow http(s) image URIs (public hosts only)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
        code = int(args.handler(args, settings) or 0)
        sys.stdout.flush()  # a closed pipe shows up here rather than at exit, where it cannot be caught
        return code
    except BrokenPipeError:
        return _stdout_closed()
    except KeyboardInterrupt:
        print(
            "\nedgeminer: interrupted; every batch written before this is kept, re-run to finish",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for the user, the traceback on request
        if os.environ.get("EDGEMINER_DEBUG"):
            raise
        return _report_error(exc)


def _stdout_closed() -> int:
    """The reader of our output went away (``edgeminer ... --json | head``): stop quietly, as a tool killed
    by SIGPIPE would. Python's recipe: point stdout at /dev/null so the flush at exit raises nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file descriptor (embedded use): nothing left to flush
        pass
    return EXIT_BROKEN_PIPE


#: exit codes besides 0 (done) and 130 (interrupted); `edgeminer check` answers 1 / 2 its own way.
EXIT_ERROR = 1  # the input, a name or a path given is wrong: the message says what to fix
EXIT_INTERNAL = 2  # a bug (any exception outside the error tree): report it with the traceback
EXIT_UNREADABLE = 3  # a dataset's data files are missing or damaged: run `edgeminer check`
EXIT_BROKEN_PIPE = 141  # the output's reader closed the pipe (128 + SIGPIPE, what a shell reports)


def exit_codes() -> dict[type[BaseException], int]:
    """Error class -> exit code: the CLI's one table over the error tree (indexer/errors.py), looked up
    along the error's MRO like the API's status table; an exception with no row is a bug (EXIT_INTERNAL)."""
    from edgeminer.indexer import errors as e

    return {
        e.EdgeminerError: EXIT_INTERNAL,  # ours, without a better class (its message is still shown)
        e.InputError: EXIT_ERROR,
        e.NotSupported: EXIT_ERROR,
        e.NotFound: EXIT_ERROR,
        e.Conflict: EXIT_ERROR,
        e.Unauthorized: EXIT_ERROR,
        e.PermissionDenied: EXIT_ERROR,
        e.Unavailable: EXIT_ERROR,
        e.DatasetUnreadable: EXIT_UNREADABLE,
        CliError: EXIT_ERROR,
        FileNotFoundError: EXIT_ERROR,  # a path named on the command line
        PermissionError: EXIT_ERROR,
    }


def _report_error(exc: Exception) -> int:
    """Print ``exc`` as one line (two for a bug) and return its exit code from :func:`exit_codes`."""
    from edgeminer.indexer.errors import unreadable_error

    unreadable = unreadable_error(exc)  # the storage engine's errors carry no type of their own
    if unreadable is not None:
        reason = f" ({unreadable.reason})" if unreadable.reason else ""
        print(f"edgeminer: error: {unreadable}{reason}", file=sys.stderr)
        return EXIT_UNREADABLE
    table = exit_codes()
    code = next((table[c] for c in type(exc).__mro__ if c in table), None)
    if code is None:
        print(f"edgeminer: internal error: {type(exc).__name__}: {_capped(exc)}", file=sys.stderr)
        print("(set EDGEMINER_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
    print(f"edgeminer: error: {_capped(exc)}", file=sys.stderr)
    return code


MAX_MESSAGE = 2000  # characters of an error printed: a library's message may embed whole arrays


def _capped(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= MAX_MESSAGE else f"{text[:MAX_MESSAGE]} ... ({len(text)} characters in all)"


if __name__ == "__main__":
    raise SystemExit(main())
