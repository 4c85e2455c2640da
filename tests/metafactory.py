"""A dataset with a planted metadata slice (for the metadata-slice, label-issue and --slice tests):
camera=C images that are dark (img_brightness in the lowest fifth) are 70% wrong, everything else 8%."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from edgeminer.indexer.scores import score_all, top2
from edgeminer.indexer.store import Store

CLASSES = ["cat", "dog", "bird"]


@dataclass
class Planted:
    name: str
    ids: list[str]
    in_slice: dict[str, bool]
    split: dict[str, str]


def make_planted_meta(store: Store, name: str = "planted", *, n: int = 4000, dim: int = 8, seed: int = 0) -> Planted:
    rng = np.random.default_rng(seed)
    camera = rng.choice(["A", "B", "C", "D"], size=n)
    weather = rng.choice(["sun", "rain", "fog"], size=n)
    brightness = rng.random(n)
    dark = brightness < 0.2
    planted = (camera == "C") & dark
    split = rng.choice(["train", "val", "unlabeled"], size=n, p=[0.15, 0.6, 0.25])
    true = rng.integers(0, 3, size=n)
    wrong = np.where(planted, rng.random(n) < 0.7, rng.random(n) < 0.08)
    pred = np.where(wrong, (true + 1) % 3, true)
    probs = np.full((n, 3), 0.1, dtype=np.float32)
    probs[np.arange(n), pred] = 0.8
    centers = rng.normal(size=(2, dim))
    vecs = centers[planted.astype(int)] + 0.3 * rng.normal(size=(n, dim))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    store.create_dataset(
        name,
        dim=dim,
        embedder={"kind": "precomputed"},
        classes=CLASSES,
        metadata_fields={"camera": "string", "weather": "string", "img_brightness": "float"},
    )
    scores = score_all(probs.astype(np.float64))
    p1, p2 = top2(probs, CLASSES)
    ids = [f"r{i:05d}" for i in range(n)]
    labeled = split != "unlabeled"
    cols = {
        "id": ids,
        "uri": [f"/planted/{i}.png" for i in ids],
        "split": split.tolist(),
        "labeled": labeled.tolist(),
        "label": [CLASSES[t] if lab else None for t, lab in zip(true, labeled, strict=True)],
        "probs": probs.tolist(),
        "pred_label": p1,
        "pred_label2": p2,
        "correct": [bool(not w) if lab else None for w, lab in zip(wrong, labeled, strict=True)],
        "status": ["ok"] * n,
        "fingerprint": [f"fp-{i}" for i in ids],
        "meta_camera": camera.tolist(),
        "meta_weather": weather.tolist(),
        "meta_img_brightness": brightness.tolist(),
        **{k: v.tolist() for k, v in scores.items()},
    }
    table = pa.table(cols).append_column(
        "embedding", pa.array(vecs.astype(np.float32).tolist(), pa.list_(pa.float32(), dim))
    )
    store.upsert_samples(name, table)
    return Planted(
        name, ids, dict(zip(ids, planted.tolist(), strict=True)), dict(zip(ids, split.tolist(), strict=True))
    )


@dataclass
class Noisy:
    name: str
    flipped: dict[str, bool]  # id -> label was flipped
    split: dict[str, str]
    labels: np.ndarray  # noisy label index per row (row order = ids)
    probs: np.ndarray  # stored model probabilities
    ids: list[str]
    classes: list[str]


def make_noisy_labels(store: Store, name: str = "noisy", *, noise: float = 0.1, seed: int = 0) -> Noisy:
    """scikit-learn's digits with ``noise`` of the labels flipped to another class (train and val alike);
    the "model" is a random forest fitted to the noisy train labels, so its train probabilities are
    in-sample (a forest all but memorises its training labels, noisy ones included)."""
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(seed)
    x, y = load_digits(return_X_y=True)
    n = len(y)
    emb = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    split = np.where(rng.random(n) < 0.6, "train", "val")
    flipped = rng.random(n) < noise
    noisy = np.where(flipped, (y + rng.integers(1, 10, size=n)) % 10, y)
    model = RandomForestClassifier(n_estimators=100, min_samples_leaf=2, random_state=seed, n_jobs=1)
    model.fit(emb[split == "train"], noisy[split == "train"])
    probs = model.predict_proba(emb)
    classes = [str(c) for c in range(10)]
    pred = probs.argmax(axis=1)
    ids = [f"d{i:04d}" for i in range(n)]
    store.create_dataset(name, dim=emb.shape[1], embedder={"kind": "precomputed"}, classes=classes)
    scores = score_all(probs)
    cols = {
        "id": ids,
        "uri": [f"/digits/{i}.png" for i in ids],
        "split": split.tolist(),
        "labeled": [True] * n,
        "label": [classes[v] for v in noisy],
        "probs": probs.astype(np.float32).tolist(),
        "pred_label": [classes[v] for v in pred],
        "correct": (pred == noisy).tolist(),
        "status": ["ok"] * n,
        "fingerprint": [f"fp-{i}" for i in ids],
        **{k: v.tolist() for k, v in scores.items()},
    }
    vectors = pa.array(emb.astype(np.float32).tolist(), pa.list_(pa.float32(), emb.shape[1]))
    store.upsert_samples(name, pa.table(cols).append_column("embedding", vectors))
    return Noisy(
        name,
        dict(zip(ids, flipped.tolist(), strict=True)),
        dict(zip(ids, split.tolist(), strict=True)),
        noisy,
        probs,
        ids,
        classes,
    )
