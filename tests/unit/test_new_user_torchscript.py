"""Bringing your own TorchScript model, as a new user does (issue 13): class names, the preprocessing
defaults made visible, and a model with the wrong output shape.

Real models (scripted here with torch), real PNGs in class folders, the real CLI and store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from edgeminer.indexer.embedders import EmbedderError, TorchScriptEmbedder
from edgeminer.indexer.pipeline import ingest
from edgeminer.indexer.sources import open_source
from edgeminer.indexer.store import Store
from edgeminer.service.cli import main

CLASSES = ["cat", "dog", "fox"]


class Classifier(nn.Module):
    def __init__(self, n_classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.head = nn.Linear(8, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1).flatten(1)
        return e, self.head(e)


class FeatureMap(nn.Module):
    """Returns a 4-D feature map instead of an (N, D) embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _save(model: nn.Module, path: Path, meta: dict[str, Any] | None = None) -> Path:
    torch.manual_seed(0)
    scripted = torch.jit.script(model.eval())
    extra = {"edgeminer.json": json.dumps(meta)} if meta else {}
    torch.jit.save(scripted, str(path), _extra_files=extra)
    return path


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(4):
            pixels = (rng.random((20, 20, 3)) * 80 + 80 * k).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}{i}.png")
    return root


def _cli(store: Store, *args: str) -> list[str]:
    return ["--data-dir", store.uri, *args]


def _ingest(store: Store, folders: Path, model: Path, *extra: str) -> int:
    return main(
        _cli(store, "ingest", str(folders), "--dataset", "own", "--embedder", "torchscript", "--model-file", str(model),
             "--quiet", *extra)
    )


def test_plain_model_with_named_labels_is_refused_with_what_to_do(
    store: Store, folders: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = _save(Classifier(), tmp_path / "plain.pt")
    assert _ingest(store, folders, plain) == 1
    err = capsys.readouterr().err
    assert "none of the labels (cat, dog, fox)" in err and "(0, 1, 2;" in err and "no edgeminer.json" in err
    assert "--classes a,b,c" in err and "edgeminer.json" in err
    assert not store.has_dataset("own")  # refused before anything was made


def test_classes_option_names_a_plain_models_outputs(
    store: Store, folders: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = _save(Classifier(), tmp_path / "plain.pt")
    assert _ingest(store, folders, plain, "--classes", "cat,dog,fox") == 0
    info = store.get_dataset("own")
    assert list(info.classes) == CLASSES and info.embedder["classes"] == CLASSES
    preds = set(store.query("own", columns=["pred_label"])["pred_label"].to_pylist())
    assert preds <= set(CLASSES) and preds
    # the order given is the logits' order: the probs' argmax names the pred_label
    table = store.query("own", columns=["probs", "pred_label"]).to_pylist()
    assert all(CLASSES[int(np.argmax(r["probs"]))] == r["pred_label"] for r in table)


def test_classes_count_must_match_the_logits(store: Store, folders: Path, tmp_path: Path, capsys: Any) -> None:
    plain = _save(Classifier(), tmp_path / "plain.pt")
    assert _ingest(store, folders, plain, "--classes", "cat,dog,fox,owl") == 1
    err = capsys.readouterr().err
    assert "returns 3 logits but 4 class names" in err
    with pytest.raises(EmbedderError, match="3 logits but 2 class names"):
        TorchScriptEmbedder(plain, classes=["cat", "dog"], device="cpu")


def test_some_labels_unknown_to_the_model_warn(store: Store, folders: Path, tmp_path: Path, capsys: Any) -> None:
    model = _save(Classifier(), tmp_path / "m.pt", {"classes": ["cat", "dog", "wolf"], "image_size": 16})
    assert _ingest(store, folders, model) == 0
    err = capsys.readouterr().err
    assert "warning: labels fox are not among the model's classes (cat, dog, wolf)" in err


def test_edgeminer_json_classes_and_preprocessing_are_used_silently(
    store: Store, folders: Path, tmp_path: Path, capsys: Any
) -> None:
    meta = {"classes": CLASSES, "image_size": 16, "mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2]}
    model = _save(Classifier(), tmp_path / "meta.pt", meta)
    assert _ingest(store, folders, model) == 0
    err = capsys.readouterr().err
    assert "note:" not in err and "warning" not in err
    cfg = store.get_dataset("own").embedder
    assert cfg["image_size"] == 16 and cfg["mean"] == [0.4] * 3 and cfg["classes"] == CLASSES


def test_default_preprocessing_is_announced_and_options_override_it(
    store: Store, folders: Path, tmp_path: Path, capsys: Any
) -> None:
    plain = _save(Classifier(), tmp_path / "plain.pt")
    assert _ingest(store, folders, plain, "--classes", "cat,dog,fox") == 0
    err = capsys.readouterr().err
    assert "note: plain.pt is fed 224x224 RGB images normalised with mean [0.5, 0.5, 0.5]" in err
    assert "--image-size / --mean / --std" in err
    args = ["--classes", "cat,dog,fox", "--image-size", "32"]
    args += ["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]
    assert main(
        _cli(store, "ingest", str(folders), "--dataset", "own2", "--embedder", "torchscript", "--model-file",
             str(plain), "--quiet", *args)
    ) == 0
    assert "note:" not in capsys.readouterr().err
    cfg = store.get_dataset("own2").embedder
    assert cfg["image_size"] == 32 and cfg["mean"] == [0.485, 0.456, 0.406] and cfg["std"] == [0.229, 0.224, 0.225]
    assert main(
        _cli(store, "ingest", str(folders), "--dataset", "own3", "--embedder", "torchscript", "--model-file",
             str(plain), "--quiet", "--classes", "cat,dog,fox", "--mean", "0.5,0.5")
    ) == 1
    assert "mean and std need 3 values each" in capsys.readouterr().err


def test_ingest_help_documents_the_torchscript_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["ingest", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for needle in ("--mean", "--std", "else 224", "else 0.5", "edgeminer.json", "logits; without them"):
        assert needle in text, needle


def test_a_4d_output_gets_a_short_error_and_leaves_no_dataset(
    store: Store, folders: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _save(FeatureMap(), tmp_path / "fmap.pt")
    assert _ingest(store, folders, model) == 1
    err = capsys.readouterr().err
    assert len(err) < 600, len(err)
    assert "fmap.pt: for a batch of 2 images the model's embedding is a Tensor of shape (2, 64, 222, 222)" in err
    assert "expected an embedding of shape (N, D), a tuple (embedding (N, D), logits (N, C))" in err
    assert not store.has_dataset("own")
    assert main(_cli(store, "stats", "--dataset", "own")) == 1  # nothing empty left behind


class _Failing:
    """A source whose reading fails after the dataset was made (a file that breaks half-way)."""

    def __init__(self, inner: Any, after: int) -> None:
        self.inner, self.after = inner, after

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Any:
        for n, rec in enumerate(self.inner):
            if n == self.after:
                raise OSError("the disk went away")
            yield rec


def test_a_failed_first_ingest_drops_the_dataset_it_made(store: Store, folders: Path, tmp_path: Path) -> None:
    model = _save(Classifier(), tmp_path / "meta.pt", {"classes": CLASSES, "image_size": 16})
    emb = TorchScriptEmbedder(model, device="cpu")
    with pytest.raises(OSError, match="disk went away"):
        ingest(store, "first", _Failing(open_source(str(folders)), after=0), emb, progress=False)
    assert not store.has_dataset("first")
    # a dataset that already holds rows is kept (with its failed run recorded)
    ingest(store, "kept", open_source(str(folders)), emb, progress=False, batch_size=4)
    with pytest.raises(OSError):
        ingest(store, "kept", _Failing(open_source(str(folders)), after=1), emb, progress=False)
    assert store.has_dataset("kept") and store.count("kept") == 12


class _HugeError:
    """An embedder whose model fails with a message built from its whole output (as Arrow's do)."""

    def __init__(self, inner: TorchScriptEmbedder) -> None:
        self.inner = inner
        self.kind, self.dim, self.classes, self.has_logits = inner.kind, inner.dim, inner.classes, True

    def config(self) -> dict[str, Any]:
        return self.inner.config()

    def preprocess(self, image: Any) -> np.ndarray:
        return self.inner.preprocess(image)

    def embed_batch(self, batch: np.ndarray) -> Any:
        raise ValueError("could not convert " + repr(np.arange(200_000).tolist()))


def test_embedding_errors_stored_on_rows_are_capped(store: Store, folders: Path, tmp_path: Path) -> None:
    model = _save(Classifier(), tmp_path / "meta.pt", {"classes": CLASSES, "image_size": 16})
    report = ingest(store, "capped", open_source(str(folders)), _HugeError(TorchScriptEmbedder(model)), progress=False)
    assert report.error_rows == 12
    errors = store.query("capped", columns=["error"])["error"].to_pylist()
    assert all(e.startswith("embedding failed: could not convert") and len(e) < 600 for e in errors)
