"""The API's ingest of a TorchScript model without edgeminer.json (issue 13): ``classes`` names the model's
outputs (as the CLI's --classes does), ``mean`` / ``std`` set its preprocessing, and labels that match
none of the model's classes are refused with what to do."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from servers import wait_job
from torch import nn

from edgeminer.service.settings import Settings

INGEST = "/api/v1/datasets/own/ingest"
CLASSES = ["cat", "dog"]


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1).flatten(1)
        return e, self.head(e)


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    root = tmp_path / "roots"
    rng = np.random.default_rng(0)
    for name in CLASSES:
        (root / "imgs" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(root / "imgs" / name / f"{i}.png")
    torch.jit.script(Classifier().eval()).save(str(root / "plain.pt"))
    return root


@pytest.fixture
def client(make_client: Callable[..., TestClient], api_settings: Settings, roots: Path) -> TestClient:
    return make_client(api_settings, ingest_roots=[str(roots)])


def test_classes_name_a_plain_models_outputs(client: TestClient, roots: Path) -> None:
    embedder = {"kind": "torchscript", "model_file": str(roots / "plain.pt"), "image_size": 16}
    refused = client.post(INGEST, json={"source": str(roots / "imgs"), "embedder": embedder})
    assert refused.status_code in (400, 422), refused.text
    detail = refused.json()["detail"]
    assert "none of the labels (cat, dog)" in detail and 'API "classes"' in detail
    assert client.get("/api/v1/datasets/own").status_code == 404

    embedder |= {"mean": [0.4, 0.4, 0.4], "std": [0.3, 0.3, 0.3]}
    resp = client.post(INGEST, json={"source": str(roots / "imgs"), "embedder": embedder, "classes": CLASSES})
    assert resp.status_code == 202, resp.text
    assert wait_job(client, resp.json()["id"])["status"] == "succeeded"
    detail = client.get("/api/v1/datasets/own").json()
    assert detail["classes"] == CLASSES
    assert detail["embedder"]["mean"] == [0.4] * 3 and detail["embedder"]["std"] == [0.3] * 3
