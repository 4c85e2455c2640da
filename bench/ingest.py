"""Ingest throughput against the raw forward pass of the same model on the same images, same run.

    .venv/bin/python bench/ingest.py [--images 512] [--size 224] [--batch-size 32] [--workers 2]

The model is torchvision's resnet18 (random weights, scripted to return (embedding, logits)), so the
forward pass costs what a real backbone costs. "raw forward" = images already decoded and preprocessed
in memory, only model(x) timed. "pipeline" = edgeminer's whole ingest: read PNG files, decode and
preprocess in worker threads, embed, score, write to LanceDB. The ratio says how much of the model's
speed the pipeline keeps (1.0 = decoding and writing are fully hidden behind the model).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def build_model(path: Path, classes: int) -> None:
    import torch
    import torchvision
    from torch import nn

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            net = torchvision.models.resnet18(weights=None, num_classes=classes)
            self.body = nn.Sequential(*list(net.children())[:-1], nn.Flatten())
            self.fc = net.fc

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            e = self.body(x)
            return e, self.fc(e)

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(Wrapped().eval()).save(
            str(path), _extra_files={"edgeminer.json": json.dumps({"classes": [str(i) for i in range(classes)]})}
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--size", type=int, default=224, help="model input size")
    ap.add_argument("--source-size", type=int, default=480, help="pixel size of the PNG files")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    import torch
    from PIL import Image

    from edgeminer.indexer.embedders import TorchScriptEmbedder
    from edgeminer.indexer.pipeline import ingest, load_image
    from edgeminer.indexer.sources import open_source
    from edgeminer.indexer.store import Store

    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp(prefix="edgeminer-bench-ingest-"))
    rng = np.random.default_rng(0)
    img_dir = tmp / "images"
    img_dir.mkdir()
    rows = []
    for i in range(args.images):
        arr = (rng.random((args.source_size, args.source_size, 3)) * 255).astype(np.uint8)
        arr[:: 7] = 0  # some structure so PNG compression is realistic
        Image.fromarray(arr).save(img_dir / f"{i:05d}.png")
        rows.append({"id": f"img-{i:05d}", "uri": str(img_dir / f"{i:05d}.png"), "split": "unlabeled"})
    manifest = tmp / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "uri", "split"])
        w.writeheader()
        w.writerows(rows)
    model_path = tmp / "resnet18.pt"
    build_model(model_path, 10)
    emb = TorchScriptEmbedder(model_path, image_size=args.size, device="cpu")

    # raw forward: decode + preprocess everything first (not timed), then time model(x) only
    batches = []
    td = time.perf_counter()
    arrays = [emb.preprocess(load_image(r["uri"])) for r in rows]
    decode = time.perf_counter() - td
    for s in range(0, len(arrays), args.batch_size):
        batches.append(np.stack(arrays[s : s + args.batch_size]))
    emb.embed_batch(batches[0])  # warm-up
    t0 = time.perf_counter()
    for b in batches:
        emb._forward(b)
    raw = time.perf_counter() - t0
    raw_ips = args.images / raw

    store = Store(tmp / "db")
    t1 = time.perf_counter()
    report = ingest(
        store, "bench", open_source(manifest), emb, batch_size=args.batch_size, workers=args.workers, progress=False
    )
    pipe = time.perf_counter() - t1
    pipe_ips = args.images / pipe
    assert report.ok_rows == args.images, report.summary()

    # re-ingest: nothing changed, so nothing is decoded or embedded
    t2 = time.perf_counter()
    again = ingest(store, "bench", open_source(manifest), emb, batch_size=args.batch_size, progress=False)
    reingest = time.perf_counter() - t2

    print(f"images: {args.images} PNG {args.source_size}px -> resnet18 @ {args.size}px, batch {args.batch_size}, "
          f"{args.workers} decode workers, torch threads {torch.get_num_threads()}")
    print(f"{'':<28}{'seconds':>9}{'images/s':>10}")
    print(f"{'decode+preprocess (1 thread)':<28}{decode:>9.2f}{args.images / decode:>10.1f}")
    print(f"{'raw forward pass':<28}{raw:>9.2f}{raw_ips:>10.1f}")
    print(f"{'edgeminer ingest (full)':<28}{pipe:>9.2f}{pipe_ips:>10.1f}")
    print(f"{'re-ingest (all unchanged)':<28}{reingest:>9.2f}{args.images / reingest:>10.1f}"
          f"   skipped {again.skipped}")
    print(f"pipeline / raw forward throughput ratio: {pipe_ips / raw_ips:.2f}")
    serial = raw + decode
    print(f"pipeline / (decode + forward run back to back) ratio: {serial / pipe:.2f}  (>1 = overlap pays)")


if __name__ == "__main__":
    main()
