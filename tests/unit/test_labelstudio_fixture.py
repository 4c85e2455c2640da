"""The Label Studio test server (tests/labelstudio_server.py): a server that cannot start skips the live
tests outside CI and fails them in CI (CI must run them)."""

from __future__ import annotations

from pathlib import Path

import labelstudio_server
import pytest


@pytest.fixture
def broken_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A venv whose label-studio command exits at once with an error."""
    exe = tmp_path / "venv" / "bin" / "label-studio"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\necho 'no migrations today' >&2\nexit 3\n")
    exe.chmod(0o755)
    monkeypatch.setattr(labelstudio_server, "VENV", tmp_path / "venv")
    return tmp_path


def test_a_server_that_cannot_start_skips_outside_ci(broken_venv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="label-studio exited with 3: .*no migrations today"):
        labelstudio_server.start(broken_venv / "run")


def test_a_server_that_cannot_start_fails_in_ci(broken_venv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="Label Studio is needed in CI: label-studio exited with 3"):
        labelstudio_server.start(broken_venv / "run")
