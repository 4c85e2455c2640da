"""Embedders with real models: open_clip's own loading code on a tiny registered config (random init
and a checkpoint file saved here), a TorchScript model with logits and dropout, precomputed vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from edgeminer.indexer.embedders import (
    EmbedderError,
    NotSupported,
    OpenClipEmbedder,
    PrecomputedEmbedder,
    TorchScriptEmbedder,
    embedder_from_options,
    load_embedder,
)

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip_name() -> str:
    import open_clip

    open_clip.factory._MODEL_CONFIGS["edgeminer-tiny"] = TINY
    return "edgeminer-tiny"


def _image(seed: int = 0, size: tuple[int, int] = (40, 50)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8))


def test_open_clip_random_init_embeds_images_and_text(tiny_clip_name: str) -> None:
    emb = OpenClipEmbedder(tiny_clip_name, pretrained=None, device="cpu")
    assert emb.dim == 32
    out = emb.embed_images([_image(0), _image(1).convert("L")])
    assert out.embeddings.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(out.embeddings, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(out.embeddings[0], out.embeddings[1])
    text = emb.embed_text(["a green traffic cone", "a person"])
    assert text.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(EmbedderError):
        emb.embed_text([""])


def test_open_clip_loads_a_local_checkpoint(tiny_clip_name: str, tmp_path: Path) -> None:
    first = OpenClipEmbedder(tiny_clip_name, pretrained=None, device="cpu")
    # perturb the weights so a silent fall-back to random init would be caught
    with torch.no_grad():
        for p in first._model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ckpt = tmp_path / "tiny.pt"
    torch.save(first._model.state_dict(), ckpt)
    img = _image(3)
    want = first.embed_images([img]).embeddings
    loaded = OpenClipEmbedder(tiny_clip_name, pretrained=str(ckpt), device="cpu")
    np.testing.assert_allclose(loaded.embed_images([img]).embeddings, want, atol=1e-5)
    cfg = loaded.config()
    assert cfg["pretrained"] == str(ckpt.resolve()) and cfg["checkpoint_sha256"]
    rebuilt = load_embedder(cfg, device="cpu")
    np.testing.assert_allclose(rebuilt.embed_images([img]).embeddings, want, atol=1e-5)


def test_open_clip_errors_are_clear(tiny_clip_name: str, tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="unknown open_clip model"):
        OpenClipEmbedder("no-such-model", pretrained=None, device="cpu")
    with pytest.raises(EmbedderError, match="does not exist"):
        OpenClipEmbedder(tiny_clip_name, pretrained=str(tmp_path / "missing.pt"), device="cpu")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(EmbedderError, match="could not load"):
        OpenClipEmbedder(tiny_clip_name, pretrained=str(bad), device="cpu")


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 8), nn.ReLU())
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.body(x)
        return e, self.head(self.drop(e))


def _save_script(tmp_path: Path, meta: dict | None = None) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "net.pt"
    extra = {"edgeminer.json": json.dumps(meta)} if meta else {}
    torch.jit.script(_Net()).save(str(path), _extra_files=extra)
    return path


def test_torchscript_embedding_logits_and_mc_dropout(tmp_path: Path) -> None:
    path = _save_script(tmp_path, {"classes": ["a", "b", "c"], "image_size": 16})
    emb = TorchScriptEmbedder(path, mc_passes=5, device="cpu")
    assert emb.dim == 8 and emb.classes == ["a", "b", "c"] and emb.image_size == 16
    out = emb.embed_images([_image(0), _image(1)])
    assert out.embeddings.shape == (2, 8)
    assert out.probs is not None and out.probs.shape == (2, 3)
    np.testing.assert_allclose(out.probs.sum(axis=1), 1.0, rtol=1e-5)
    assert out.mc_probs is not None and out.mc_probs.shape == (5, 2, 3)
    # dropout really is on during the MC passes, and off again afterwards
    assert np.ptp(out.mc_probs, axis=0).max() > 1e-4
    again = emb.embed_images([_image(0), _image(1)])
    np.testing.assert_allclose(again.probs, out.probs, atol=1e-6)
    np.testing.assert_allclose(again.mc_probs, out.mc_probs, atol=1e-6)  # seeded: reproducible


def test_torchscript_errors(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="does not exist"):
        TorchScriptEmbedder(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(EmbedderError, match="not a TorchScript model"):
        TorchScriptEmbedder(junk)
    path = _save_script(tmp_path)
    with pytest.raises(EmbedderError, match="3 logits but 2 class names"):
        TorchScriptEmbedder(path, image_size=16, classes=["a", "b"], device="cpu")
    emb = TorchScriptEmbedder(path, image_size=16, device="cpu")
    with pytest.raises(NotSupported, match="text"):
        emb.embed_text(["a cat"])


def test_embedder_from_options_keeps_the_dataset_embedder(tmp_path: Path) -> None:
    path = _save_script(tmp_path, {"image_size": 16})
    emb = embedder_from_options(None, kind="torchscript", model_file=str(path), device="cpu")
    cfg = emb.config()
    with pytest.raises(EmbedderError, match="not comparable"):
        embedder_from_options(cfg, kind="open_clip")
    same = embedder_from_options(cfg, device="cpu")
    assert same.config()["model_sha256"] == cfg["model_sha256"]
    # a changed model file is refused: its vectors would not match the stored ones
    torch.manual_seed(1)
    torch.jit.script(_Net()).save(str(path))
    with pytest.raises(EmbedderError, match="changed since"):
        load_embedder(cfg, device="cpu")
    with pytest.raises(EmbedderError, match="needs --model-file"):
        embedder_from_options(None, kind="torchscript")


def test_precomputed_has_no_model() -> None:
    emb = PrecomputedEmbedder(4)
    assert emb.config() == {"kind": "precomputed", "dim": 4}
    with pytest.raises(NotSupported):
        emb.embed_images([_image()])
    with pytest.raises(NotSupported):
        emb.embed_text(["x"])
