"""API test fixtures: settings on a tmp data dir, TestClient apps (lifespan run), and a live uvicorn
server on 127.0.0.1 (a free port bound before the server starts, served from a thread).

    def test_x(api_client):                       # TestClient on a fresh, empty data dir
    def test_y(make_client, api_settings):        # make_client(settings, key=...) for variants
    def test_z(live_server, api_settings):        # base_url = live_server(api_settings)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from servers import LiveServer

from edgeminer.service.api.app import create_app
from edgeminer.service.settings import Settings


@pytest.fixture
def api_settings(tmp_path: Path) -> Settings:
    """Settings on tmp_path: data in db/, thumbnails in cache/, media root media/ (created); Host
    ``testserver`` (TestClient's) allowed."""
    media = tmp_path / "media"
    media.mkdir(exist_ok=True)
    return Settings(
        data_dir=str(tmp_path / "db"),
        cache_dir=str(tmp_path / "cache"),
        media_roots=[str(media)],
        ui_dir=str(tmp_path / "no-ui"),
        allowed_hosts=["testserver"],  # TestClient's Host; live servers are reached as 127.0.0.1 (always allowed)
    )


@pytest.fixture
def make_client() -> Iterator[Callable[..., TestClient]]:
    """``make_client(settings, **setting_overrides)`` -> a started TestClient (lifespan run)."""
    with ExitStack() as stack:

        def make(settings: Settings, **overrides: Any) -> TestClient:
            if overrides:
                settings = settings.model_copy(update=overrides)
            client = TestClient(create_app(settings), raise_server_exceptions=False)
            return stack.enter_context(client)

        yield make


@pytest.fixture
def api_client(make_client: Callable[..., TestClient], api_settings: Settings) -> TestClient:
    return make_client(api_settings)


@pytest.fixture
def live_server() -> Iterator[Callable[..., str]]:
    """``live_server(settings, **overrides)`` (or ``live_server(app)``) -> base URL of a real server;
    stopped at the end of the test."""
    servers: list[LiveServer] = []

    def start(settings: Any, **overrides: Any) -> str:
        if isinstance(settings, Settings):
            if overrides:
                settings = settings.model_copy(update=overrides)
            app = create_app(settings)
        else:
            app = settings
        server = LiveServer(app)
        server.start()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def make_png() -> Callable[..., Path]:
    """``make_png(path, size=(w, h), color=(r, g, b))`` writes a real PNG (with a gradient, so crops differ)."""
    from PIL import Image

    def make(path: Path, size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 30)) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        img = Image.new("RGB", size, color)
        for x in range(size[0]):
            img.putpixel((x, 0), (x % 256, 255 - x % 256, 0))
        img.save(path, format="PNG")
        return path

    return make
