"""Fixtures of the integration tests: a real Label Studio server for the session (tests/labelstudio_server.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from labelstudio_server import LabelStudio, start, stop


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudio]:
    """Label Studio 1.23 on 127.0.0.1 (installed into .venv-labelstudio if missing), stopped at the end."""
    server = start(tmp_path_factory.mktemp("label-studio"))
    try:
        yield server
    finally:
        stop(server)
