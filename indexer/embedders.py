"""Embedders: turn images (and, for CLIP, text) into L2-normalised vectors.

Three kinds, chosen per dataset and recorded with it (``DatasetInfo.embedder``), so the service can
rebuild the same embedder later for text queries, uploaded images and stream samples:

- ``open_clip`` (default): ``open_clip.create_model_and_transforms(name, pretrained=tag_or_file)``;
  ``ViT-B-32`` / ``laion2b_s34b_b79k`` unless told otherwise, or a local checkpoint file. CUDA + fp16
  when a GPU is there. Its text tower embeds text queries.
- ``torchscript``: the user's own model file. ``forward(images)`` returns an embedding, a tuple
  ``(embedding, logits)`` or a dict with those keys. With logits the model's probabilities (softmax)
  become the predictions, and ``mc_passes`` > 0 runs that many extra passes with only the dropout
  layers switched on (MC dropout) for ``mc_variance`` and ``bald``. Preprocessing defaults can ride
  inside the file as the extra file ``edgeminer.json`` ({"classes", "image_size", "channels",
  "mean", "std"}).
- ``precomputed``: vectors the user already has (a manifest column or an aligned ``.npy``).

torch and open_clip are imported where they are used, with an install hint when missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeminer.indexer.errors import InputError, NotSupported

DEFAULT_OPEN_CLIP_MODEL = "ViT-B-32"
DEFAULT_OPEN_CLIP_PRETRAINED = "laion2b_s34b_b79k"
EMBEDDER_KINDS = ("open_clip", "torchscript", "precomputed")


class EmbedderError(InputError):
    """An embedder cannot be built or run as configured (unknown model, missing model file, a package not
    installed, vectors of another model); the message says what to do."""


# NotSupported (the dataset's embedder cannot do this, e.g. a text query without a text tower) is the
# tree's class from indexer/errors.py, importable from here as before.


@dataclass
class EmbedOutput:
    embeddings: np.ndarray  # (n, dim) float32, L2-normalised
    probs: np.ndarray | None = None  # (n, C) softmax of the model's logits
    mc_probs: np.ndarray | None = None  # (T, n, C) MC-dropout passes


class Embedder(Protocol):
    kind: str
    dim: int
    classes: list[str] | None

    def config(self) -> dict[str, Any]: ...

    def preprocess(self, image: Any) -> np.ndarray: ...

    def embed_batch(self, batch: np.ndarray) -> EmbedOutput: ...

    def embed_images(self, images: Sequence[Any]) -> EmbedOutput: ...

    def embed_text(self, texts: Sequence[str]) -> np.ndarray: ...


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a dependency
        raise EmbedderError("PyTorch is not installed: pip install 'torch<=2.14.1' torchvision") from exc
    return torch


def resolve_device(device: str | None) -> str:
    device = (device or "auto").lower()
    if device == "auto":
        torch = _torch()
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise EmbedderError(f"device must be auto, cpu or cuda, not {device!r}")
    return device


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return x / norms


def file_digest(path: str | os.PathLike[str], *, limit: int = 1 << 30) -> str:
    """sha256 of a model file (first GiB), so a dataset records exactly which weights made it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        remaining = limit
        while remaining > 0:
            chunk = f.read(min(1 << 20, remaining))
            if not chunk:
                break
            h.update(chunk)
            remaining -= len(chunk)
    return h.hexdigest()[:16]


class _Base:
    kind = "base"
    dim = 0
    classes: list[str] | None = None

    def preprocess(self, image: Any) -> np.ndarray:
        raise NotImplementedError

    def embed_batch(self, batch: np.ndarray) -> EmbedOutput:
        raise NotImplementedError

    def embed_images(self, images: Sequence[Any]) -> EmbedOutput:
        if not images:
            return EmbedOutput(np.zeros((0, self.dim), np.float32))
        batch = np.stack([self.preprocess(im) for im in images])
        return self.embed_batch(batch)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        raise NotSupported(
            f"the {self.kind} embedder has no text tower: text queries need a dataset embedded with "
            "open_clip (mine from example images or ids instead)"
        )


# ---------------------------------------------------------------------------------------------
# open_clip
# ---------------------------------------------------------------------------------------------


class OpenClipEmbedder(_Base):
    kind = "open_clip"

    def __init__(
        self,
        model: str = DEFAULT_OPEN_CLIP_MODEL,
        pretrained: str | None = DEFAULT_OPEN_CLIP_PRETRAINED,
        *,
        device: str = "auto",
    ):
        try:
            import open_clip
        except ImportError as exc:
            raise EmbedderError("open_clip is not installed: pip install open_clip_torch") from exc
        torch = _torch()
        self.model_name = model
        self.pretrained = pretrained
        self.device = resolve_device(device)
        if model not in open_clip.list_models():
            raise EmbedderError(
                f"unknown open_clip model {model!r}; some valid names: "
                + ", ".join(open_clip.list_models()[:8])
                + " ... (see open_clip.list_models())"
            )
        pretrained_arg = pretrained
        if pretrained and os.path.exists(pretrained):
            pretrained_arg = str(Path(pretrained).resolve())
            self.pretrained = pretrained_arg
        elif pretrained and (os.sep in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors"))):
            raise EmbedderError(f"checkpoint file {pretrained!r} does not exist")
        precision = "fp16" if self.device.startswith("cuda") else "fp32"
        if not pretrained_arg:
            torch.manual_seed(0)  # random init (tests, smoke runs): the same weights every time
        try:
            clip, _, preprocess = open_clip.create_model_and_transforms(
                model, pretrained=pretrained_arg, device=self.device, precision=precision
            )
        except Exception as exc:  # noqa: BLE001 - network, missing tag, bad checkpoint
            raise EmbedderError(
                f"could not load open_clip {model} with pretrained={pretrained!r}: {exc}. "
                "Offline? Download the checkpoint on a connected machine and pass "
                "--pretrained /path/to/checkpoint"
            ) from exc
        clip.eval()
        self._model = clip
        self._preprocess = preprocess
        self._tokenizer = open_clip.get_tokenizer(model)
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        cfg = open_clip.get_model_config(model) or {}
        self.dim = int(cfg.get("embed_dim") or self._probe_dim())
        self._digest = file_digest(pretrained_arg) if pretrained_arg and os.path.exists(pretrained_arg) else None

    def _probe_dim(self) -> int:
        from PIL import Image

        return int(self.embed_images([Image.new("RGB", (32, 32))]).embeddings.shape[1])

    def config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.model_name,
            "pretrained": self.pretrained,
            "checkpoint_sha256": self._digest,
            "dim": self.dim,
        }

    def preprocess(self, image: Any) -> np.ndarray:
        return self._preprocess(image.convert("RGB")).numpy()

    def embed_batch(self, batch: np.ndarray) -> EmbedOutput:
        torch = _torch()
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, dtype=self._dtype)
            emb = self._model.encode_image(x).float().cpu().numpy()
        return EmbedOutput(l2_normalize(emb))

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        torch = _torch()
        if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
            raise EmbedderError("text queries must be non-empty strings")
        with torch.inference_mode():
            tokens = self._tokenizer(list(texts)).to(self.device)
            emb = self._model.encode_text(tokens).float().cpu().numpy()
        return l2_normalize(emb)


# ---------------------------------------------------------------------------------------------
# TorchScript (bring your own model)
# ---------------------------------------------------------------------------------------------


class TorchScriptEmbedder(_Base):
    kind = "torchscript"

    def __init__(
        self,
        model_file: str | os.PathLike[str],
        *,
        image_size: int | None = None,
        channels: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        classes: Sequence[str] | None = None,
        mc_passes: int | None = None,
        device: str = "auto",
        seed: int = 0,
    ):
        torch = _torch()
        path = Path(model_file)
        if not path.is_file():
            raise EmbedderError(f"model file {str(path)!r} does not exist (pass --model-file PATH)")
        self.device = resolve_device(device)
        extra = {"edgeminer.json": ""}
        try:
            with warnings.catch_warnings():  # torch 2.9+ calls TorchScript deprecated; it still loads
                warnings.simplefilter("ignore", FutureWarning)
                self._model = torch.jit.load(str(path), map_location=self.device, _extra_files=extra)
        except Exception as exc:  # noqa: BLE001
            raise EmbedderError(
                f"{path} is not a TorchScript model ({exc}); export yours with torch.jit.script(model).save(path)"
            ) from exc
        meta: dict[str, Any] = {}
        if extra["edgeminer.json"]:
            try:
                meta = json.loads(extra["edgeminer.json"])
            except json.JSONDecodeError as exc:
                raise EmbedderError(f"{path}: the embedded edgeminer.json is not valid JSON: {exc}") from exc
        self.model_file = str(path.resolve())
        self.image_size = int(image_size or meta.get("image_size") or 224)
        self.channels = int(channels or meta.get("channels") or 3)
        if self.channels not in (1, 3):
            raise EmbedderError(f"channels must be 1 or 3, not {self.channels}")
        self.mean = list(mean or meta.get("mean") or ([0.5] * self.channels))
        self.std = list(std or meta.get("std") or ([0.5] * self.channels))
        self.classes = list(classes or meta.get("classes") or []) or None
        self.mc_passes = int(mc_passes if mc_passes is not None else meta.get("mc_passes", 0))
        if self.mc_passes < 0:
            raise EmbedderError("mc_passes must be >= 0")
        self.seed = seed
        self._model.eval()
        self._digest = file_digest(self.model_file)
        probe_emb, probe_logits = self._forward(
            np.zeros((1, self.channels, self.image_size, self.image_size), np.float32)
        )
        self.dim = int(probe_emb.shape[1])
        self.has_logits = probe_logits is not None
        if probe_logits is not None:
            n_logits = int(probe_logits.shape[1])
            if self.classes and len(self.classes) != n_logits:
                raise EmbedderError(
                    f"{path}: the model returns {n_logits} logits but {len(self.classes)} class names were given"
                )
            if not self.classes:
                self.classes = [str(i) for i in range(n_logits)]

    def config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model_file": self.model_file,
            "model_sha256": self._digest,
            "image_size": self.image_size,
            "channels": self.channels,
            "mean": self.mean,
            "std": self.std,
            "classes": self.classes,
            "mc_passes": self.mc_passes,
            "dim": self.dim,
        }

    def preprocess(self, image: Any) -> np.ndarray:
        from PIL import Image

        img = image.convert("L" if self.channels == 1 else "RGB").resize(
            (self.image_size, self.image_size), Image.Resampling.BILINEAR
        )
        arr = np.asarray(img, dtype=np.float32) / 255.0
        if arr.ndim == 2:
            arr = arr[None, :, :]
        else:
            arr = arr.transpose(2, 0, 1)
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        return (arr - mean) / std

    def _forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        torch = _torch()
        with torch.inference_mode():
            out = self._model(torch.from_numpy(np.ascontiguousarray(batch)).to(self.device))
        emb, logits = _split_output(out)
        return emb.float().cpu().numpy(), None if logits is None else logits.float().cpu().numpy()

    def _set_dropout(self, on: bool) -> None:
        for module in self._model.modules():
            name = getattr(module, "original_name", type(module).__name__)
            if "Dropout" in str(name):
                module.train(on)

    def embed_batch(self, batch: np.ndarray) -> EmbedOutput:
        emb, logits = self._forward(batch)
        probs = None if logits is None else _softmax(logits)
        mc = None
        if probs is not None and self.mc_passes > 0:
            torch = _torch()
            # seeded per batch content so a re-run of the same rows gives the same scores
            torch.manual_seed(self.seed + int(np.abs(batch).sum() * 1000) % (2**31))
            self._set_dropout(True)
            try:
                mc = np.stack([_softmax(self._forward(batch)[1]) for _ in range(self.mc_passes)])  # type: ignore[arg-type]
            finally:
                self._set_dropout(False)
        return EmbedOutput(l2_normalize(emb), probs, mc)


def _split_output(out: Any) -> tuple[Any, Any]:
    if isinstance(out, Mapping):
        if "embedding" not in out:
            raise EmbedderError("the model returned a dict without an 'embedding' key")
        return out["embedding"], out.get("logits")
    if isinstance(out, (tuple, list)):
        if len(out) == 1:
            return out[0], None
        return out[0], out[1]
    return out, None


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# precomputed
# ---------------------------------------------------------------------------------------------


class PrecomputedEmbedder(_Base):
    """Vectors come with the records; this object only knows their dimension."""

    kind = "precomputed"

    def __init__(self, dim: int | None = None):
        self.dim = int(dim or 0)

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "dim": self.dim}

    def preprocess(self, image: Any) -> np.ndarray:
        raise NotSupported("precomputed datasets take vectors from the source, not from images")

    def embed_batch(self, batch: np.ndarray) -> EmbedOutput:
        raise NotSupported(
            "this dataset was ingested with precomputed vectors: edgeminer has no model to embed new "
            "images or text for it (send vectors or seed ids instead)"
        )

    def embed_images(self, images: Sequence[Any]) -> EmbedOutput:
        return self.embed_batch(np.zeros((0,)))


# ---------------------------------------------------------------------------------------------
# building from options / from a dataset's record
# ---------------------------------------------------------------------------------------------


def load_embedder(config: Mapping[str, Any], *, device: str = "auto") -> Embedder:
    """Rebuild the embedder a dataset was ingested with, from ``DatasetInfo.embedder``."""
    kind = config.get("kind")
    if kind == "open_clip":
        return OpenClipEmbedder(
            config.get("model") or DEFAULT_OPEN_CLIP_MODEL, config.get("pretrained"), device=device
        )
    if kind == "torchscript":
        emb = TorchScriptEmbedder(
            config["model_file"],
            image_size=config.get("image_size"),
            channels=config.get("channels"),
            mean=config.get("mean"),
            std=config.get("std"),
            classes=config.get("classes"),
            mc_passes=config.get("mc_passes"),
            device=device,
        )
        want = config.get("model_sha256")
        if want and want != emb.config()["model_sha256"]:
            raise EmbedderError(
                f"{config['model_file']} changed since the dataset was ingested (sha256 {want} expected): "
                "its vectors would not be comparable; re-ingest into a new dataset"
            )
        return emb
    if kind == "precomputed":
        return PrecomputedEmbedder(config.get("dim"))
    raise EmbedderError(f"unknown embedder kind {kind!r}; valid kinds: {', '.join(EMBEDDER_KINDS)}")


def embedder_from_options(
    existing: Mapping[str, Any] | None,
    *,
    kind: str | None = None,
    model: str | None = None,
    pretrained: str | None = None,
    model_file: str | None = None,
    image_size: int | None = None,
    mc_passes: int | None = None,
    device: str = "auto",
) -> Embedder:
    """The embedder for an ingest: the dataset's own when it exists (options must agree with it),
    else a new one from the options (open_clip by default)."""
    if existing:
        have = existing.get("kind")
        if kind and kind != have:
            raise EmbedderError(
                f"this dataset was embedded with {have}; its vectors are not comparable with {kind}. "
                "Ingest into a new dataset to use another embedder"
            )
        if model_file and have == "torchscript" and Path(model_file).resolve() != Path(existing["model_file"]):
            raise EmbedderError(
                f"this dataset was embedded with {existing['model_file']}; ingest into a new dataset to use "
                f"{model_file}"
            )
        if model and have == "open_clip" and model != existing.get("model"):
            raise EmbedderError(f"this dataset was embedded with open_clip {existing.get('model')}, not {model}")
        cfg = dict(existing)
        if mc_passes is not None and have == "torchscript":
            cfg["mc_passes"] = mc_passes
        return load_embedder(cfg, device=device)
    kind = kind or "open_clip"
    if kind == "open_clip":
        return OpenClipEmbedder(
            model or DEFAULT_OPEN_CLIP_MODEL,
            DEFAULT_OPEN_CLIP_PRETRAINED if pretrained is None else (pretrained or None),
            device=device,
        )
    if kind == "torchscript":
        if not model_file:
            raise EmbedderError("--embedder torchscript needs --model-file PATH")
        return TorchScriptEmbedder(model_file, image_size=image_size, mc_passes=mc_passes, device=device)
    if kind == "precomputed":
        return PrecomputedEmbedder()
    raise EmbedderError(f"unknown embedder {kind!r}; valid: {', '.join(EMBEDDER_KINDS)}")
