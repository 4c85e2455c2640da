"""Seeded synthetic datasets for tests: clustered unit vectors with labels, predictions and scores,
written through the real Store (LanceDB on disk)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from edgeminer.indexer.scores import score_all, top2
from edgeminer.indexer.store import Store


@dataclass
class Synthetic:
    name: str
    classes: list[str]
    ids: list[str]
    cluster_of: dict[str, int]  # true generating cluster per id
    error_clusters: list[int]
    vectors: np.ndarray
    labeled: dict[str, bool] = field(default_factory=dict)


def make_synthetic(
    store: Store,
    name: str = "synth",
    *,
    n_clusters: int = 5,
    per_cluster: int = 40,
    dim: int = 16,
    classes: tuple[str, ...] = ("cat", "dog", "bird"),
    unlabeled_share: float = 0.5,
    error_clusters: tuple[int, ...] = (0,),
    noise: float = 0.08,
    seed: int = 0,
    with_mc: bool = True,
) -> Synthetic:
    """Cluster ``c`` has true class ``classes[c % len(classes)]``; in ``error_clusters`` the model
    predicts the next class with low confidence, elsewhere the right one with high confidence.
    Labeled rows alternate train / val; metadata: ``group`` (string) and ``brightness`` (float)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    n_cls = len(classes)
    rows, ids, cluster_of, vecs, probs_all, mc_all, labeled_map = [], [], {}, [], [], [], {}
    for c in range(n_clusters):
        true = c % n_cls
        wrong = c in error_clusters
        for j in range(per_cluster):
            v = centers[c] + noise * rng.normal(size=dim)
            v = v / np.linalg.norm(v)
            pred = (true + 1) % n_cls if wrong else true
            p = np.full(n_cls, 0.0)
            top = 0.45 + 0.1 * rng.random() if wrong else 0.85 + 0.1 * rng.random()
            p[pred] = top
            rest = [k for k in range(n_cls) if k != pred]
            if rest:
                share = rng.dirichlet(np.ones(len(rest))) * (1 - top)
                p[rest] = share
            else:
                p[pred] = 1.0
            mc = np.clip(p + rng.normal(scale=0.05 if wrong else 0.01, size=(4, n_cls)), 1e-4, None)
            mc /= mc.sum(axis=1, keepdims=True)
            sid = f"c{c}-{j:03d}"
            is_labeled = rng.random() >= unlabeled_share
            split = ("train" if j % 2 else "val") if is_labeled else "unlabeled"
            rows.append(
                {
                    "id": sid,
                    "uri": f"/synthetic/{sid}.png",
                    "split": split,
                    "labeled": is_labeled,
                    "label": classes[true] if is_labeled else None,
                    "width": 32,
                    "height": 32,
                    "meta_group": f"g{c}",
                    "meta_brightness": float(rng.random()),
                    "model_version": "synthetic-1",
                    "status": "ok",
                    "fingerprint": f"fp-{sid}",
                }
            )
            ids.append(sid)
            cluster_of[sid] = c
            labeled_map[sid] = is_labeled
            vecs.append(v.astype(np.float32))
            probs_all.append(p.astype(np.float32))
            mc_all.append(mc.astype(np.float32))
    probs = np.stack(probs_all)
    mc_probs = np.stack(mc_all, axis=1) if with_mc else None  # (T, n, C)
    scores = score_all(probs, mc_probs)
    pred1, pred2 = top2(probs, list(classes))
    for n, row in enumerate(rows):
        row["probs"] = probs[n].tolist()
        row["pred_label"] = pred1[n]
        row["pred_label2"] = pred2[n]
        for key, arr in scores.items():
            row[key] = float(arr[n])
        if row["labeled"]:
            row["correct"] = row["pred_label"] == row["label"]
            row["outcome"] = "correct" if row["correct"] else "wrong_class"
    store.create_dataset(
        name,
        dim=dim,
        embedder={"kind": "precomputed"},
        classes=list(classes),
        metadata_fields={"group": "string", "brightness": "float"},
    )
    keys = list(dict.fromkeys(k for r in rows for k in r))  # unlabeled rows have no `correct`/`outcome`
    table = pa.Table.from_pydict({k: [r.get(k) for r in rows] for k in keys})
    table = table.append_column("embedding", pa.array([v.tolist() for v in vecs], pa.list_(pa.float32(), dim)))
    store.upsert_samples(name, table)
    return Synthetic(name, list(classes), ids, cluster_of, list(error_clusters), np.stack(vecs), labeled_map)
