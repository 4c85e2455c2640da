"""`edgeminer check`: read a dataset's files to the end and say whether they are intact.

``register(subparsers)`` adds the subcommand (called by ``service/cli.py``'s ``build_parser``). The work is
``Store.check``: every fragment of the samples and docs tables is read, vectors are tested (finite, the
dataset's dimension), row counts are compared with what the tables record, and each index must answer a
query. Lance data files carry no checksums, so a file overwritten in place reads back "fine" to every
other command: this is the command that notices.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from edgeminer.service.cli_common import open_store, print_json
from edgeminer.service.settings import Settings

#: exit codes: healthy, problems found, the check could not run (unknown dataset...).
EXIT_OK, EXIT_PROBLEMS, EXIT_CANNOT_CHECK = 0, 1, 2


class _Bar:
    """A tqdm bar over fragments, created on the first report (the total is known only then)."""

    def __init__(self, dataset: str, enabled: bool):
        self.dataset = dataset
        self.enabled = enabled
        self.bar: Any = None

    def __call__(self, done: int, total: int, message: str) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="fragment", desc=f"check {self.dataset}", dynamic_ncols=True)
        self.bar.set_postfix_str(message, refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from edgeminer.indexer.store import DatasetNotFound, StoreError

    store = open_store(settings)
    bar = _Bar(args.dataset, enabled=not (args.quiet or args.json))
    try:
        report = store.check(args.dataset, progress=bar)
    except DatasetNotFound as exc:
        print(f"edgeminer: error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_CHECK
    except StoreError as exc:  # pylance missing
        print(f"edgeminer: error: cannot check {args.dataset!r}: {exc}", file=sys.stderr)
        return EXIT_CANNOT_CHECK
    finally:
        bar.close()
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.summary())
        if not report.ok:
            kinds = {p.kind for _, p in report.problems()}
            if kinds & {"non_finite_vector", "vector_overflow"}:
                print("rows with damaged vectors are left out of search results until they are repaired")
            print("to repair: restore the data dir from a backup (the files carry no checksums to rebuild from)")
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def register(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="read every file of a dataset and report corruption (exit 1 when something is wrong)",
        description="Read every fragment of the dataset's samples and docs tables to the end and report: data "
        "files missing or not the size the table recorded (truncated), fragments that cannot be read, row "
        "counts that differ from what the tables record, vectors with NaN / infinite values, too large to "
        "compare or of the wrong dimension, ok rows without a vector, null or duplicate ids, documents that "
        "are not JSON, and indexes that do not open. Problems list their fragment and the affected sample "
        "ids. Reads the whole dataset once (100k rows of 512-d vectors: about a second); run it after a crash, "
        "a disk error or a copy of the data dir, or from cron.",
        epilog="exit status: 0 no problem found, 1 problems found (listed), 2 the check could not run "
        "(unknown dataset, pylance missing)",
    )
    p.add_argument("--dataset", required=True, help="the dataset to check")
    p.add_argument("--json", action="store_true", help="machine-readable report (no progress bar)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_check)
