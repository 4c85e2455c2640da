"""Projector: UMAP map (seeded, small n_epochs so it runs in seconds after numba's warm-up), PCA first,
transform of new rows without refit, save / load, small inputs and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeminer.indexer.analysis.projection import PCA_MIN_ROWS, Projector, normalize_rows


def _clustered(n_per: int = 80, dim: int = 24, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    x = np.concatenate([c + 0.15 * rng.normal(size=(n_per, dim)) for c in centres]).astype(np.float32)
    return x, np.repeat(np.arange(k), n_per)


def _nearest_centre(xy: np.ndarray, fit_xy: np.ndarray, truth: np.ndarray) -> np.ndarray:
    centres = np.stack([fit_xy[truth == k].mean(axis=0) for k in np.unique(truth)])
    return np.argmin(((xy[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)


@pytest.fixture(scope="module")
def fitted() -> tuple[Projector, np.ndarray, np.ndarray]:
    x, truth = _clustered()
    proj = Projector(n_neighbors=10, n_epochs=40, seed=3).fit(x)
    return proj, x, truth


def test_fit_separates_clusters(fitted: tuple[Projector, np.ndarray, np.ndarray]) -> None:
    proj, x, truth = fitted
    xy = proj.embedding_
    assert xy.shape == (240, 2) and xy.dtype == np.float32 and np.isfinite(xy).all()
    assert proj.method_ == "umap" and proj.pca_ is None and proj.n_fit_ == 240
    # every point lies nearest its own cluster's centre on the map
    assert (_nearest_centre(xy, xy, truth) == truth).mean() > 0.98


def test_fit_is_seeded() -> None:
    x, _ = _clustered(n_per=30)
    a = Projector(n_neighbors=10, n_epochs=20, seed=1).fit_transform(x)
    b = Projector(n_neighbors=10, n_epochs=20, seed=1).fit_transform(x)
    assert np.allclose(a, b)


def test_transform_places_new_rows_without_refit(fitted: tuple[Projector, np.ndarray, np.ndarray]) -> None:
    proj, x, truth = fitted
    new, new_truth = _clustered(n_per=10, seed=0)  # same centres (same seed), fresh noise below
    rng = np.random.default_rng(9)
    new = new + 0.05 * rng.normal(size=new.shape).astype(np.float32)
    before = proj.embedding_.copy()
    xy = proj.transform(new)
    assert xy.shape == (30, 2)
    assert np.array_equal(proj.embedding_, before)  # the fit is untouched
    assert (_nearest_centre(xy, before, truth) == new_truth).mean() > 0.9


def test_save_and_load_round_trip(fitted: tuple[Projector, np.ndarray, np.ndarray], tmp_path: Path) -> None:
    proj, x, _ = fitted
    size = proj.save(tmp_path / "state" / "proj.pkl")
    assert size > 0 and (tmp_path / "state" / "proj.pkl").stat().st_size == size
    again = Projector.load(tmp_path / "state" / "proj.pkl")
    assert again.get_params() == proj.get_params()
    assert np.allclose(again.transform(x[:5]), proj.transform(x[:5]), atol=1e-4)
    with pytest.raises(ValueError, match="unknown projection state format"):
        Projector.loads(__import__("pickle").dumps({"format": 99}))


def test_pca_first() -> None:
    proj = Projector(pca="auto", pca_components=50)
    assert not proj.uses_pca(PCA_MIN_ROWS - 1, 512)
    assert proj.uses_pca(PCA_MIN_ROWS, 512)
    assert not proj.uses_pca(10**6, 50)  # nothing to reduce
    assert Projector(pca="on", pca_components=8).uses_pca(100, 24)
    assert not Projector(pca="off").uses_pca(10**6, 512)
    x, truth = _clustered(n_per=40)
    p = Projector(pca="on", pca_components=8, n_neighbors=10, n_epochs=20).fit(x)
    assert p.pca_ is not None and p.pca_.n_components_ == 8
    assert p.transform(x[:3]).shape == (3, 2)


def test_small_inputs_fall_back_to_pca() -> None:
    x, _ = _clustered(n_per=3, k=2)
    p = Projector().fit(x)
    assert p.method_ == "pca" and p.embedding_.shape == (6, 2)
    assert p.transform(x[:2]).shape == (2, 2)
    one = Projector().fit(x[:1])
    assert one.embedding_.tolist() == [[0.0, 0.0]]


def test_bad_input_and_params() -> None:
    x, _ = _clustered(n_per=10)
    bad = x.copy()
    bad[7, 3] = np.nan
    with pytest.raises(ValueError, match="embedding row 7 holds NaN"):
        Projector().fit(bad)
    with pytest.raises(ValueError, match="metric must be one of cosine, euclidean"):
        Projector(metric="manhattan").fit(x)
    with pytest.raises(ValueError, match="pca must be one of auto, on, off"):
        Projector(pca="yes").fit(x)
    with pytest.raises(ValueError, match="no rows with an embedding"):
        Projector().fit(np.zeros((0, 4)))
    with pytest.raises(RuntimeError, match="not fitted"):
        Projector().transform(x)
    p = Projector().fit(x[:5])
    with pytest.raises(ValueError, match="run analyze with --refit"):
        p.transform(np.ones((2, 3)))


def test_normalize_rows_keeps_zero_rows() -> None:
    out = normalize_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert np.allclose(out, [[0.6, 0.8], [0.0, 0.0]])


def test_pca_fitted_on_a_sample_and_applied_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeminer.indexer.analysis import projection

    monkeypatch.setattr(projection, "PCA_FIT_ROWS", 50)
    monkeypatch.setattr(projection, "PCA_CHUNK_ROWS", 32)
    x, truth = _clustered(n_per=40)
    p = Projector(pca="on", pca_components=8, n_neighbors=10, n_epochs=20).fit(x)
    assert p.train_.shape == (120, 8)
    # every row went through the same PCA: the chunks match a one-shot transform
    assert np.allclose(p.train_, p.pca_.transform(normalize_rows(x)), atol=1e-5)
    assert (_nearest_centre(p.embedding_, p.embedding_, truth) == truth).mean() > 0.95
