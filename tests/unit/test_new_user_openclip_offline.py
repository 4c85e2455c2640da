"""The default (open_clip) embedder on a machine without network (issue 13): weights that are not in the
local cache fail at once with the hint naming --pretrained, instead of a minute of Hugging Face retries;
weights that are in the cache load without asking the network.

open_clip's own loading code runs on a tiny registered config with a registered pretrained tag whose
weights "live" on the Hugging Face hub; the hub endpoint is a closed port on 127.0.0.1 (nothing leaves
the machine) and the cache is a fresh folder, filled in the real hub-cache layout for the cached case."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from edgeminer.indexer.embedders import EmbedderError, OpenClipEmbedder

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
MODEL, TAG, REPO = "edgeminer-tiny-offline", "hubtest", "edgeminer-test/tiny-clip"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: connections are refused


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A registered tiny model + hub tag, an empty hub cache, and an endpoint nobody answers on."""
    import open_clip
    from huggingface_hub import constants

    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, MODEL, TINY)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, MODEL, {TAG: open_clip.pretrained._pcfg(hf_hub=REPO + "/")})
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return cache


def _load(name: str = MODEL, tag: str = TAG) -> tuple[Any, float]:
    t = time.perf_counter()
    try:
        return OpenClipEmbedder(name, pretrained=tag, device="cpu"), time.perf_counter() - t
    except EmbedderError as exc:
        return exc, time.perf_counter() - t


def test_weights_not_cached_and_host_unreachable_fail_at_once(hub: Path) -> None:
    err, seconds = _load()
    assert isinstance(err, EmbedderError)
    text = str(err)
    assert "not in the local cache" in text and "does not answer" in text
    assert "--pretrained /path/to/checkpoint" in text and "HF_HOME" in text
    assert seconds < 15, f"took {seconds:.1f} s (under load, indicative only)"  # retries took ~53 s


def test_hf_hub_offline_fails_without_touching_the_network(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    # any connection attempt would be a bug: make one fail loudly
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("network probed while offline"))
    err, _ = _load()
    assert isinstance(err, EmbedderError) and "HF_HUB_OFFLINE is set" in str(err)
    assert "--pretrained /path/to/checkpoint" in str(err)


def _put_in_hub_cache(cache: Path, state: dict[str, Any]) -> None:
    """The tiny model's weights where huggingface_hub's cache keeps a downloaded file."""
    from open_clip.constants import HF_WEIGHTS_NAME

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = cache / ("models--" + REPO.replace("/", "--"))
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True)
    torch.save(state, snap / HF_WEIGHTS_NAME)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)


def test_cached_weights_load_without_the_network(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    ref = OpenClipEmbedder(MODEL, pretrained=None, device="cpu")
    with torch.no_grad():  # weights that differ from the seeded random init
        for p in ref._model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    _put_in_hub_cache(hub, ref._model.state_dict())
    img = Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8))
    calls: list[Any] = []
    real = socket.create_connection
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: calls.append(a) or real(*a, **k))
    loaded, seconds = _load()
    assert isinstance(loaded, OpenClipEmbedder), loaded
    np.testing.assert_allclose(
        loaded.embed_images([img]).embeddings, ref.embed_images([img]).embeddings, atol=1e-5
    )
    assert calls == []  # found in the cache: no probe, no download, no etag check
    assert constants.HF_HUB_OFFLINE is False  # the offline switch is put back after the load
    assert loaded.config()["pretrained"] == TAG  # the dataset records the tag, as before


def test_unknown_tag_still_gets_open_clips_message(hub: Path) -> None:
    err, _ = _load(tag="no-such-tag")
    assert isinstance(err, EmbedderError) and "no-such-tag" in str(err)
