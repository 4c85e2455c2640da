"""Stream decisions: embed, score, store, decide within a per-period label budget."""

from __future__ import annotations

import datetime as dt
import io
import threading
from pathlib import Path

import numpy as np
import pytest
from factories import make_synthetic
from PIL import Image

from edgeminer.indexer.store import Store
from edgeminer.service.stream import StreamBudget, StreamError, StreamPolicy, StreamSample, decide, list_decisions

NOW = dt.datetime(2026, 11, 21, 10, 30, tzinfo=dt.UTC)
SURE = [0.96, 0.02, 0.02]
UNSURE = [0.40, 0.35, 0.25]


@pytest.fixture
def syn(store: Store):
    return make_synthetic(store, "syn", n_clusters=4, per_cluster=20, dim=16, seed=5)


def _far_vector(syn) -> list[float]:
    # orthogonal-ish to every cluster centre: far from all flagged examples
    rng = np.random.default_rng(9)
    v = rng.normal(size=16)
    v -= (
        syn.vectors.mean(axis=0)
        * (v @ syn.vectors.mean(axis=0))
        / (syn.vectors.mean(axis=0) @ syn.vectors.mean(axis=0))
    )
    return (v / np.linalg.norm(v)).tolist()


def test_confident_sample_is_stored_and_not_sent(store: Store, syn) -> None:
    budget = StreamBudget()
    doc = decide(
        store,
        "syn",
        StreamSample(embedding=_far_vector(syn), probs=SURE, id="s1"),
        StreamPolicy(),
        budget,
        now=NOW,
    )
    assert doc["send"] is False and doc["reasons"] == [] and "not sent" in doc["why"]
    row = store.get_samples("syn", ["s1"]).to_pylist()[0]
    assert row["split"] == "unlabeled" and row["labeled"] is False and row["pred_label"] == "cat"
    assert row["confidence"] == pytest.approx(0.96) and row["entropy"] > 0
    assert row["tags"] == ["stream"]


def test_low_confidence_and_uncertainty_reasons(store: Store, syn) -> None:
    budget = StreamBudget()
    policy = StreamPolicy(confidence_below=0.5, uncertainty="margin", uncertainty_above=0.9)
    doc = decide(
        store, "syn", StreamSample(embedding=_far_vector(syn), probs=UNSURE), policy, budget, now=NOW
    )
    assert doc["send"] is True
    assert [r["reason"] for r in doc["reasons"]] == ["low_confidence", "high_uncertainty"]
    assert doc["budget_used"] == 1 and doc["budget_left"] == 99
    assert "confidence 0.400 below 0.5" in doc["why"]


def test_near_a_flagged_issue_example(store: Store, syn) -> None:
    store.put_doc("syn", "issue", "iss-a", {"name": "cluster 2 looks", "sample_ids": ["c2-000", "c2-001"]})
    near = (syn.vectors[syn.ids.index("c2-005")] + 0.001).tolist()
    doc = decide(
        store,
        "syn",
        StreamSample(embedding=near, probs=SURE),
        StreamPolicy(issue_distance=0.1),
        StreamBudget(),
        now=NOW,
    )
    assert doc["send"] is True and doc["reasons"][0]["reason"] == "near_issue"
    assert doc["reasons"][0]["issue"] == "iss-a" and doc["reasons"][0]["example"] in ("c2-000", "c2-001")
    far = decide(
        store,
        "syn",
        StreamSample(embedding=_far_vector(syn), probs=SURE),
        StreamPolicy(),
        StreamBudget(),
        now=NOW,
    )
    assert far["send"] is False and far["nearest_issue"]["distance"] > 0.1
    with pytest.raises(Exception, match="no issue 'nope'"):
        decide(
            store,
            "syn",
            StreamSample(embedding=near, probs=SURE),
            StreamPolicy(issues=["nope"]),
            StreamBudget(),
        )


def test_budget_is_never_overspent_under_concurrency(store: Store, syn) -> None:
    budget = StreamBudget()
    policy = StreamPolicy(budget=5, period="hour")
    results: list[dict] = []
    errors: list[BaseException] = []
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(16, 16))

    def worker(n: int) -> None:
        try:
            s = StreamSample(embedding=vecs[n].tolist(), probs=UNSURE, id=f"new-{n}")
            results.append(decide(store, "syn", s, policy, budget, now=NOW))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(d["send"] for d in results) == 5
    assert all(d["candidate"] for d in results)
    spent = [d for d in results if not d["send"]]
    assert all("budget of 5 is spent" in d["why"] for d in spent)
    # a fresh process (new StreamBudget) picks the count up from the recorded decisions
    again = decide(
        store, "syn", StreamSample(embedding=vecs[0].tolist(), probs=UNSURE), policy, StreamBudget(), now=NOW
    )
    assert again["send"] is False and again["budget_used"] == 5
    # the next period has a fresh budget
    later = decide(
        store,
        "syn",
        StreamSample(embedding=vecs[1].tolist(), probs=UNSURE),
        policy,
        budget,
        now=NOW + dt.timedelta(hours=1),
    )
    assert later["send"] is True and later["budget_used"] == 1
    page, total = list_decisions(store, "syn", send=True)
    assert total == 6 and page[0]["id"] == later["id"]
    assert (
        list_decisions(store, "syn", limit=3)[1] == 18 and len(list_decisions(store, "syn", limit=3)[0]) == 3
    )


def test_image_upload_is_embedded_and_saved(store: Store, syn, tmp_path: Path) -> None:
    class Fake:
        kind = "fake"
        classes = ["dog", "cat", "bird"]  # the model's order differs from the dataset's

        def embed_images(self, images):
            from edgeminer.indexer.embedders import EmbedOutput

            assert images[0].mode == "RGB"
            return EmbedOutput(
                np.asarray([syn.vectors[0]], np.float32), np.asarray([[0.1, 0.8, 0.1]], np.float32)
            )

    buf = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buf, format="PNG")
    doc = decide(
        store,
        "syn",
        StreamSample(image=buf.getvalue()),
        StreamPolicy(),
        StreamBudget(),
        embedder=Fake(),
        upload_dir=tmp_path / "uploads",
        now=NOW,
    )
    row = store.get_samples("syn", [doc["sample_id"]]).to_pylist()[0]
    assert row["pred_label"] == "cat" and row["probs"][0] == pytest.approx(0.8)
    assert Path(row["uri"]).is_file() and row["uri"].endswith(".png")
    assert str((tmp_path / "uploads" / "syn").resolve()) in store.get_dataset("syn").media_roots
    with pytest.raises(StreamError, match="not readable"):
        decide(
            store,
            "syn",
            StreamSample(image=b"junk", probs=SURE),
            StreamPolicy(),
            StreamBudget(),
            embedder=Fake(),
        )


def test_uri_outside_media_roots_is_refused(store: Store, syn, tmp_path: Path) -> None:
    img = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(img)
    with pytest.raises(Exception, match="outside the dataset's media roots"):
        decide(
            store,
            "syn",
            StreamSample(uri=str(img), probs=SURE),
            StreamPolicy(),
            StreamBudget(),
            embedder=object(),
        )
    # a missing file outside the roots gets the same answer as an existing one: no probing the disk
    with pytest.raises(Exception, match="outside the dataset's media roots") as missing:
        decide(
            store,
            "syn",
            StreamSample(uri=str(tmp_path / "nope.png"), probs=SURE),
            StreamPolicy(),
            StreamBudget(),
        )
    with pytest.raises(Exception, match="outside the dataset's media roots") as existing:
        decide(store, "syn", StreamSample(uri=str(tmp_path / "nope.png").replace("nope", "secret"), probs=SURE),
               StreamPolicy(), StreamBudget(), embedder=object())
    assert str(missing.value).replace("nope", "secret") == str(existing.value)
    # inside the roots, a missing file says so
    root = tmp_path / "media"
    root.mkdir()
    store.update_dataset("syn", media_roots=[str(root)])
    with pytest.raises(StreamError, match="not an image file under the media roots"):
        decide(store, "syn", StreamSample(uri=str(root / "nope.png"), probs=SURE), StreamPolicy(),
               StreamBudget(), embedder=object())


def test_bad_input_names_the_field(store: Store, syn) -> None:
    vec = _far_vector(syn)
    b = StreamBudget()
    with pytest.raises(StreamError, match="probs has 2 values.*3 classes"):
        decide(store, "syn", StreamSample(embedding=vec, probs=[0.5, 0.5]), StreamPolicy(), b)
    with pytest.raises(StreamError, match="probs missing"):
        decide(store, "syn", StreamSample(embedding=vec), StreamPolicy(), b)
    with pytest.raises(StreamError, match="16"):
        decide(store, "syn", StreamSample(embedding=[1.0, 0.0], probs=SURE), StreamPolicy(), b)
    with pytest.raises(StreamError, match="exactly one"):
        decide(store, "syn", StreamSample(probs=SURE), StreamPolicy(), b)
    with pytest.raises(StreamError, match="uncertainty must be one of"):
        decide(
            store, "syn", StreamSample(embedding=vec, probs=SURE), StreamPolicy(uncertainty="confidence"), b
        )
    with pytest.raises(StreamError, match="period"):
        decide(store, "syn", StreamSample(embedding=vec, probs=SURE), StreamPolicy(period="fortnight"), b)
    with pytest.raises(StreamError, match="probs"):
        decide(store, "syn", StreamSample(embedding=vec, probs=[-1.0, 0.5, 0.5]), StreamPolicy(), b)
    assert store.count("syn", "split = 'unlabeled' AND array_has(tags, 'stream')") == 0
