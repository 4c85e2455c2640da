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
#: TorchScript preprocessing when neither the options nor the file's edgeminer.json say otherwise
DEFAULT_IMAGE_SIZE = 224
DEFAULT_MEAN_STD = 0.5
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
        offline = _weights_offline(model, pretrained_arg)  # raises at once when they must be downloaded offline
        try:
            with _hub_offline(offline):
                clip, _, preprocess = open_clip.create_model_and_transforms(
                    model, pretrained=pretrained_arg, device=self.device, precision=precision
                )
        except Exception as exc:  # noqa: BLE001 - network, missing tag, bad checkpoint
            raise EmbedderError(
                f"could not load open_clip {model} with pretrained={pretrained!r}: {str(exc)[:500]}. "
                f"{OFFLINE_HINT}"
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


OFFLINE_HINT = (
    "Offline? On a connected machine fetch the weights once (python -c \"import open_clip; "
    "open_clip.create_model_and_transforms('ViT-B-32', pretrained='laion2b_s34b_b79k')\" fills the Hugging Face "
    "cache, ~/.cache/huggingface or $HF_HOME: copy it over), or download the checkpoint file and pass "
    "--pretrained /path/to/checkpoint"
)
#: seconds to wait for a TCP connection to the weights' host before calling the machine offline
NETWORK_PROBE_TIMEOUT = 3.0


def _weights_cached(cfg: Mapping[str, Any]) -> bool:
    """Whether the weights of an open_clip pretrained config are already in the local cache."""
    hub = str(cfg.get("hf_hub") or "")
    if hub:
        from huggingface_hub import try_to_load_from_cache
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        repo, filename = os.path.split(hub)
        names = [filename or HF_WEIGHTS_NAME]
        if names[0] == HF_WEIGHTS_NAME:  # open_clip loads a .safetensors twin when there is one
            names.append(HF_SAFE_WEIGHTS_NAME)
        elif names[0].endswith((".bin", ".pth")):
            names.append(names[0][:-4] + ".safetensors")
        return any(isinstance(try_to_load_from_cache(repo, n), str) for n in names)
    url = str(cfg.get("url") or "")
    return bool(url) and os.path.isfile(os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url)))


def _reachable(cfg: Mapping[str, Any]) -> bool:
    """A quick TCP connection to the host the weights come from (the Hugging Face endpoint or the url's)."""
    import socket
    from urllib.parse import urlsplit

    if cfg.get("hf_hub"):
        from huggingface_hub import constants

        url = str(constants.ENDPOINT)
    else:
        url = str(cfg.get("url") or "")
    parts = urlsplit(url)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=NETWORK_PROBE_TIMEOUT):
            return True
    except OSError:
        return False


def _weights_offline(model: str, pretrained: str | None) -> bool:
    """For an open_clip pretrained *tag*: True when its weights are in the local cache (load them without
    asking the network: no retries on an offline machine); False when they must be downloaded and the
    network answers. Raises EmbedderError at once when they must be downloaded and cannot be
    (HF_HUB_OFFLINE set, or the host does not answer within NETWORK_PROBE_TIMEOUT seconds)."""
    if not pretrained or os.path.exists(pretrained):
        return False
    import open_clip

    cfg = open_clip.pretrained.get_pretrained_cfg(model, pretrained)
    if not cfg or cfg.get("file"):
        return False  # an unknown tag: open_clip's own error lists the valid ones
    if _weights_cached(cfg):
        return True
    from huggingface_hub import constants

    if cfg.get("hf_hub") and constants.HF_HUB_OFFLINE:
        why = "HF_HUB_OFFLINE is set"
    elif _reachable(cfg):
        return False
    else:
        why = f"their host does not answer (checked in {NETWORK_PROBE_TIMEOUT:.0f} s)"
    raise EmbedderError(
        f"the open_clip weights {model} / {pretrained} are not in the local cache and cannot be downloaded: "
        f"{why}. {OFFLINE_HINT}"
    )


class _hub_offline:
    """While loading weights found in the local cache, keep huggingface_hub from asking the network (its
    offline switch is a module constant read at each request): no etag check, no retries."""

    def __init__(self, on: bool):
        self.on = on
        self.saved: bool | None = None

    def __enter__(self) -> None:
        if self.on:
            from huggingface_hub import constants

            self.saved = constants.HF_HUB_OFFLINE
            constants.HF_HUB_OFFLINE = True

    def __exit__(self, *exc: object) -> None:
        if self.on and self.saved is not None:
            from huggingface_hub import constants

            constants.HF_HUB_OFFLINE = self.saved


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
        self._model, meta = _load_scripted(torch, path, self.device)
        self.model_file = str(path.resolve())
        self.image_size = int(image_size or meta.get("image_size") or DEFAULT_IMAGE_SIZE)
        self.channels = int(channels or meta.get("channels") or 3)
        if self.channels not in (1, 3):
            raise EmbedderError(f"channels must be 1 or 3, not {self.channels}")
        self.mean = [float(v) for v in (mean or meta.get("mean") or ([DEFAULT_MEAN_STD] * self.channels))]
        self.std = [float(v) for v in (std or meta.get("std") or ([DEFAULT_MEAN_STD] * self.channels))]
        _check_mean_std(self.mean, self.std, self.channels, path)
        #: preprocessing settings neither given nor in the file's edgeminer.json (the defaults were used)
        given = {"image_size": image_size, "mean": mean, "std": std}
        self.defaults_used = [name for name, value in given.items() if not (value or meta.get(name))]
        self.classes = [str(c) for c in (classes or meta.get("classes") or [])] or None
        #: where the class names come from: "given" (options / the dataset), "edgeminer.json", or "indices"
        #: (neither: the logits' positions 0..C-1, which match no label names)
        self.classes_from = "given" if classes else "edgeminer.json" if self.classes else "indices"
        self.mc_passes = int(mc_passes if mc_passes is not None else meta.get("mc_passes", 0))
        if self.mc_passes < 0:
            raise EmbedderError("mc_passes must be >= 0")
        self.seed = seed
        self._model.eval()
        self._digest = file_digest(self.model_file)
        # two images, so a model that squeezes the batch dimension shows up here and not on a last batch of 1
        probe_emb, probe_logits = self._forward(
            np.zeros((2, self.channels, self.image_size, self.image_size), np.float32)
        )
        self.dim = int(probe_emb.shape[1])
        self.has_logits = probe_logits is not None
        if probe_logits is not None:
            self._set_classes(int(probe_logits.shape[1]), path)

    def _set_classes(self, n_logits: int, path: Path) -> None:
        if self.classes and len(self.classes) != n_logits:
            raise EmbedderError(
                f"{path}: the model returns {n_logits} logits but {len(self.classes)} class names were given "
                f"({', '.join(self.classes[:10])}{' ...' if len(self.classes) > 10 else ''}): pass exactly "
                f"{n_logits} names, in the order of the model's outputs"
            )
        if not self.classes:
            self.classes = [str(i) for i in range(n_logits)]

    def preprocessing_note(self) -> str | None:
        """One line saying which preprocessing defaults are in use (None when all were set)."""
        if not self.defaults_used:
            return None
        return (
            f"note: {os.path.basename(self.model_file)} is fed {self.image_size}x{self.image_size} "
            f"{'grayscale' if self.channels == 1 else 'RGB'} images normalised with mean {self.mean} and std "
            f"{self.std} ({', '.join(self.defaults_used)}: default); if your model was trained otherwise pass "
            "--image-size / --mean / --std, or put them in the .pt's edgeminer.json"
        )

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
        _check_output_shapes(emb, logits, len(batch), self.model_file)
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


def _load_scripted(torch: Any, path: Path, device: str) -> tuple[Any, dict[str, Any]]:
    """A TorchScript file and the edgeminer.json riding inside it ({} when there is none)."""
    extra = {"edgeminer.json": ""}
    try:
        with warnings.catch_warnings():  # torch 2.9+ calls TorchScript deprecated; it still loads
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as exc:  # noqa: BLE001
        raise EmbedderError(
            f"{path} is not a TorchScript model ({exc}); export yours with torch.jit.script(model).save(path)"
        ) from exc
    if not extra["edgeminer.json"]:
        return model, {}
    try:
        meta = json.loads(extra["edgeminer.json"])
    except json.JSONDecodeError as exc:
        raise EmbedderError(f"{path}: the embedded edgeminer.json is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise EmbedderError(f"{path}: the embedded edgeminer.json must be a JSON object, not {type(meta).__name__}")
    return model, meta


def _split_output(out: Any) -> tuple[Any, Any]:
    if isinstance(out, Mapping):
        if "embedding" not in out:
            keys = ", ".join(repr(str(k))[:40] for k in list(out)[:10])
            raise EmbedderError(f"the model returned a dict without an 'embedding' key (keys: {keys})")
        return out["embedding"], out.get("logits")
    if isinstance(out, (tuple, list)):
        if not out:
            raise EmbedderError(f"the model returned an empty {type(out).__name__}; {EXPECTED_OUTPUT}")
        if len(out) == 1:
            return out[0], None
        return out[0], out[1]
    return out, None


EXPECTED_OUTPUT = (
    "expected an embedding of shape (N, D), a tuple (embedding (N, D), logits (N, C)) or a dict with keys "
    "'embedding' and 'logits' (pool and flatten feature maps inside the model)"
)


def _describe(x: Any) -> str:
    """A model output's type and shape, never its values (a 4-D feature map printed is megabytes)."""
    shape = getattr(x, "shape", None)
    if shape is None:
        return type(x).__name__[:40]
    return f"{type(x).__name__} of shape {tuple(int(d) for d in shape)}"


def _check_output_shapes(emb: Any, logits: Any, n: int, model_file: str) -> None:
    """EmbedderError, short, unless the embedding is (n, D) and the logits (if any) (n, C)."""
    name = os.path.basename(model_file)
    for what, x in (("embedding", emb), ("logits", logits)):
        if what == "logits" and x is None:
            continue
        shape = getattr(x, "shape", None)
        if shape is None or len(shape) != 2 or int(shape[0]) != n or int(shape[1]) < 1:
            raise EmbedderError(
                f"{name}: for a batch of {n} images the model's {what} is a {_describe(x)}; {EXPECTED_OUTPUT}"
            )


def _check_mean_std(mean: list[float], std: list[float], channels: int, path: Path) -> None:
    if len(mean) != channels or len(std) != channels:
        raise EmbedderError(
            f"{path}: mean and std need {channels} values each (one per channel), got {len(mean)} and {len(std)}"
        )
    if any(v <= 0 for v in std):
        raise EmbedderError(f"{path}: std values must be > 0, got {std}")


def check_model_classes(embedder: Any, labels: Sequence[str] | None) -> str | None:
    """Compare a model's class names (its logits' order) with the labels of a new dataset's source.

    Raises EmbedderError when no label is a model class (every row would count as wrong, e.g. labels
    ``cat, dog`` against a plainly scripted model's ``0, 1``); returns a warning line when only some
    labels are unknown to the model, else None."""
    model = [str(c) for c in (getattr(embedder, "classes", None) or [])]
    labels = [str(c) for c in (labels or [])]
    if not model or not labels:
        return None
    unknown = [c for c in labels if c not in set(model)]
    if not unknown:
        return None
    shown_model = ", ".join(model[:10]) + (" ..." if len(model) > 10 else "")
    shown_unknown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
    if len(unknown) < len(labels):
        return (
            f"warning: labels {shown_unknown} are not among the model's classes ({shown_model}): "
            "their rows will always count as wrong"
        )
    origin = {
        "indices": "the model file has no edgeminer.json, so its outputs are numbered",
        "edgeminer.json": "from the model file's edgeminer.json",
        "given": "as given",
    }.get(str(getattr(embedder, "classes_from", "")), "")
    raise EmbedderError(
        f"none of the labels ({', '.join(labels[:10])}{' ...' if len(labels) > 10 else ''}) is one of the model's "
        f"{len(model)} classes ({shown_model}; {origin}): every row would count as wrong. Pass the model's "
        f"class names in the order of its outputs (CLI --classes a,b,c; API \"classes\"), or save them in the "
        "model file as edgeminer.json (torch.jit.save(m, path, _extra_files={'edgeminer.json': "
        "json.dumps({'classes': [...]})}))"
    )


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
    classes: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Embedder:
    """The embedder for an ingest: the dataset's own when it exists (options must agree with it),
    else a new one from the options (open_clip by default). ``classes`` (the names of a TorchScript
    model's outputs, in order), ``image_size``, ``mean`` and ``std`` override the file's edgeminer.json."""
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
        return TorchScriptEmbedder(
            model_file, image_size=image_size, mean=mean, std=std, classes=classes, mc_passes=mc_passes, device=device
        )
    if kind == "precomputed":
        return PrecomputedEmbedder()
    raise EmbedderError(f"unknown embedder {kind!r}; valid: {', '.join(EMBEDDER_KINDS)}")
