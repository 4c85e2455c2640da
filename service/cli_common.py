"""What the `edgeminer` command modules share: the user-error exception, opening the store, JSON output.

``service/cli.py`` builds the parser and calls each command module's ``register(subparsers)``
(``cli_analysis``, ``cli_mining``, ``cli_export``, ``cli_check``); those modules import their helpers from
here, never from ``cli`` itself.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgeminer.service.settings import Settings

if TYPE_CHECKING:  # importing the store (LanceDB, pyarrow) costs ~1 s: `edgeminer --help` does without
    from edgeminer.indexer.store import Store

#: a subcommand: ``cmd_<name>(args, settings) -> exit code``, set as the parser's ``handler`` default.
Handler = Callable[[argparse.Namespace, Settings], int]
#: a step `edgeminer demo` runs after its ingest: ``step(args, settings, store)``.
DemoStep = Callable[[argparse.Namespace, Settings, "Store"], None]


class CliError(Exception):
    """A problem with the user's input, printed as one line."""


def open_store(settings: Settings) -> Store:
    """The store at ``settings.data_dir``: a local folder, or object storage (``s3://bucket/prefix``) with the
    storage options of the AWS variables and ``EDGEMINER_STORAGE_OPTIONS`` (see ``Store``). An object store
    that does not answer raises ``Unavailable`` (one line, exit 1)."""
    from edgeminer.indexer.store import Store

    return Store(settings.data_dir)


def print_json(obj: Any) -> None:
    """``obj`` as indented JSON on stdout (anything JSON cannot encode as its ``str``)."""
    print(json.dumps(obj, indent=2, default=str))
