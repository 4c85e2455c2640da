"""2-D projection of embeddings: optional PCA, then UMAP (scikit-learn style, seeded).

``Projector(...).fit(X)`` learns the map of every row (labeled and unlabeled together), ``transform``
places rows that arrive later on the same map without refitting, and ``save`` / ``load`` keep the
fitted state across restarts (a pickle of the PCA model, the fitted features and their coordinates).

Metric: ``cosine`` (the default) is computed as L2 normalisation followed by euclidean distance. On unit
vectors ``|a - b|^2 = 2 - 2 cos(a, b)``, so the neighbours are exactly the cosine neighbours, while PCA
(a euclidean method) stays valid and umap-learn uses its fastest nearest-neighbour path.

PCA first (``pca="auto"``): applied when the vectors have more than ``pca_components`` dimensions and
there are at least ``PCA_MIN_ROWS`` (20k) rows. Measured with ``bench/analyze.py --pca-sweep`` on 512-d
clustered vectors (2 shared cores, both code paths compiled before timing): fit time with PCA-50 / without
was 1.06 at 10k rows (no gain) and 0.93 at 30k; the gain grows with the rows, since UMAP's neighbour
search is what PCA shortens. PCA also shrinks the saved state (the fitted rows' features, kept for
``transform``) ten-fold (50 instead of 512 floats per row).

Transform (new rows, no refit): UMAP's own transform initialisation, without its optimisation epochs:
each new row is placed at the membership-weighted mean of the map coordinates of its ``n_neighbors``
nearest fitted rows (exact neighbours, in the space UMAP was fitted in; weights ``exp(-(d - d_1) /
sigma)`` as in UMAP's fuzzy simplicial set). It is deterministic and lands new rows among their
look-alikes. umap-learn's ``transform`` is not used because it needs pynndescent's search index, whose
pickling compiles a numba search function: measured at 10k rows (512-d), saving the fitted UMAP took
~100 s, more than the fit itself. The saved state is the fitted rows' features (PCA-reduced when PCA is
on) plus their coordinates: ``n x (pca_components + 2)`` float32.

Very small inputs (fewer than ``MIN_UMAP_ROWS`` rows) cannot be laid out by UMAP's spectral step; they
get a 2-D PCA instead (same ``fit`` / ``transform`` interface, recorded in ``method_``).
"""

from __future__ import annotations

import io
import pickle
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from edgeminer.indexer.embedders import l2_normalize as normalize_rows  # rows at unit L2 norm, zero rows kept
from edgeminer.indexer.errors import SchemaMismatch, ValidationFailed

__all__ = ["MIN_UMAP_ROWS", "PCA_MIN_ROWS", "PCA_CHOICES", "Projector", "normalize_rows"]

#: below this many rows UMAP is replaced by a 2-D PCA (its spectral initialisation needs more points).
MIN_UMAP_ROWS = 16
#: ``pca="auto"`` applies PCA from this many rows on (see the module docstring for the measurement).
PCA_MIN_ROWS = 20_000
PCA_CHOICES = ("auto", "on", "off")
#: PCA is fitted on at most this many rows (a seeded sample), then applied to all in chunks.
PCA_FIT_ROWS = 100_000
PCA_CHUNK_ROWS = 50_000
#: umap-learn computes exact neighbours itself below this many rows; from it on, placement.knn_graph does
UMAP_SMALL_ROWS = 4096
METRICS = ("cosine", "euclidean")

Progress = Callable[[str], None]


@contextmanager
def install_hint(hint: str) -> Iterator[None]:
    """Around an import of an optional package: an ImportError becomes one that says what to install."""
    try:
        yield
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(hint) from exc


def _import_umap() -> Any:
    with install_hint("the analysis needs umap-learn: pip install 'umap-learn>=0.5.6'"):
        import umap
    return umap


class Projector:
    """Embeddings -> 2-D coordinates.

    Parameters are stored as given (scikit-learn convention); learned state ends in ``_``:
    ``pca_`` (fitted sklearn PCA or None), ``method_`` (``"umap"`` or ``"pca"``), ``embedding_`` (the
    fitted rows' coordinates, float32 ``(n, 2)``), ``train_`` (the fitted rows' features as UMAP saw them),
    ``n_features_in_``, ``n_fit_``, ``fit_seconds_``; the analysis (run.py) adds ``train_ids_``, the ids of the
    fitted rows (a sampled fit's sample).
    """

    train_ids_: list[str]

    def __init__(
        self,
        *,
        n_neighbors: int = 15,
        min_dist: float = 0.1,
        metric: str = "cosine",
        pca: str = "auto",
        pca_components: int = 50,
        n_epochs: int | None = None,
        seed: int = 0,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.metric = metric
        self.pca = pca
        self.pca_components = pca_components
        self.n_epochs = n_epochs
        self.seed = seed

    # -- parameters ---------------------------------------------------------------------------

    def get_params(self) -> dict[str, Any]:
        return {
            "n_neighbors": self.n_neighbors,
            "min_dist": self.min_dist,
            "metric": self.metric,
            "pca": self.pca,
            "pca_components": self.pca_components,
            "n_epochs": self.n_epochs,
            "seed": self.seed,
        }

    def _check_params(self) -> None:
        if self.metric not in METRICS:
            raise ValidationFailed(f"metric must be one of {', '.join(METRICS)}, not {self.metric!r}")
        if self.pca not in PCA_CHOICES:
            raise ValidationFailed(f"pca must be one of {', '.join(PCA_CHOICES)}, not {self.pca!r}")
        if int(self.n_neighbors) < 2:
            raise ValidationFailed(f"n_neighbors must be at least 2, not {self.n_neighbors}")
        if not 0.0 <= float(self.min_dist) <= 1.0:
            raise ValidationFailed(f"min_dist must lie in [0, 1], not {self.min_dist}")
        if int(self.pca_components) < 2:
            raise ValidationFailed(f"pca_components must be at least 2, not {self.pca_components}")
        if self.n_epochs is not None and int(self.n_epochs) < 1:
            raise ValidationFailed(f"n_epochs must be positive, not {self.n_epochs}")

    def uses_pca(self, n_rows: int, n_features: int) -> bool:
        """Whether ``fit`` on data of this shape applies PCA first."""
        if self.pca == "off" or n_features <= int(self.pca_components):
            return False
        return self.pca == "on" or n_rows >= PCA_MIN_ROWS

    # -- fitting ------------------------------------------------------------------------------

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"embeddings must be a 2-D array (rows, dims), got shape {x.shape}")
        if not np.isfinite(x).all():
            bad = int(np.argwhere(~np.isfinite(x))[0][0])
            raise SchemaMismatch(f"embedding row {bad} holds NaN or infinite values: re-ingest that row")
        return normalize_rows(x) if self.metric == "cosine" else x

    def fit(self, x: np.ndarray, *, progress: Progress | None = None, n_total: int | None = None) -> Projector:
        """Fit the map on ``x`` (every row, or a sample of ``n_total`` rows: PCA is then decided by the
        table's size, so a sampled fit reduces rows as a fit on all of them would)."""
        return self.fit_map(self.fit_reduce(x, progress=progress, n_total=n_total), progress=progress)

    def fit_reduce(self, x: np.ndarray, *, progress: Progress | None = None, n_total: int | None = None) -> np.ndarray:
        """First half of :meth:`fit`: prepare the rows and fit the PCA (when it applies). Returns the rows
        as UMAP will see them (``fit_map``'s input)."""
        self._check_params()
        self._fit_started = time.perf_counter()
        x = self._prepare(x)
        n, d = x.shape
        if n == 0:
            raise ValidationFailed("nothing to project: the dataset has no rows with an embedding")
        self.n_features_in_ = d
        self.n_fit_ = n
        self.pca_ = None
        if self.uses_pca(max(n, int(n_total or 0)), d):
            from sklearn.decomposition import PCA

            if progress:
                progress(f"PCA {d} -> {self.pca_components} dims on {n} rows")
            self.pca_ = PCA(n_components=int(self.pca_components), random_state=self.seed, svd_solver="randomized")
            # Fit on a seeded sample (the leading directions of 100k rows are those of all of them), then
            # project in chunks: at 1M x 512 this avoids PCA's full-size centred copies (GiBs).
            rng = np.random.default_rng(self.seed)
            sample = np.sort(rng.choice(n, size=PCA_FIT_ROWS, replace=False)) if n > PCA_FIT_ROWS else slice(None)
            self.pca_.fit(x[sample])
            reduced = np.empty((n, int(self.pca_components)), dtype=np.float32)
            for start in range(0, n, PCA_CHUNK_ROWS):
                reduced[start : start + PCA_CHUNK_ROWS] = self.pca_.transform(x[start : start + PCA_CHUNK_ROWS])
            x = reduced
        return np.ascontiguousarray(x, dtype=np.float32)

    def fit_map(
        self, x: np.ndarray, *, progress: Progress | None = None, knn: tuple[Any, Any] | None = None
    ) -> Projector:
        """Second half of :meth:`fit`: the 2-D map of ``fit_reduce``'s rows. ``knn``: their neighbour graph
        (indices, distances; the row itself first) when the caller has it (else computed here)."""
        if not hasattr(self, "_fit_started"):
            raise RuntimeError("call fit_reduce() before fit_map()")
        n = x.shape[0]
        if n < MIN_UMAP_ROWS:
            self.method_ = "pca"
            self._fit_small(x)
        else:
            self.method_ = "umap"
            umap = _import_umap()
            if progress:
                progress(f"UMAP on {n} rows x {x.shape[1]} dims")
            k = min(int(self.n_neighbors), n - 1)
            graph = (knn[0][:, :k], knn[1][:, :k]) if knn is not None and n >= UMAP_SMALL_ROWS else None
            model = umap.UMAP(
                n_components=2,
                n_neighbors=k,
                precomputed_knn=graph or self._knn_graph(x, k, progress),
                min_dist=float(self.min_dist),
                metric="euclidean",
                n_epochs=None if self.n_epochs is None else int(self.n_epochs),
                random_state=int(self.seed),
                low_memory=True,
                transform_seed=int(self.seed),
            )
            with warnings.catch_warnings():
                # "n_jobs overridden to 1 by setting random_state": seeded runs are single-threaded.
                warnings.filterwarnings("ignore", message=".*n_jobs value.*")
                warnings.filterwarnings("ignore", message=".*random_state.*")
                self.embedding_ = np.asarray(model.fit_transform(x), dtype=np.float32)
        self.train_ = np.ascontiguousarray(x, dtype=np.float32)
        self.fit_seconds_ = time.perf_counter() - self.__dict__.pop("_fit_started")
        return self

    @staticmethod
    def _knn_graph(x: np.ndarray, k: int, progress: Progress | None) -> tuple[Any, ...]:
        """UMAP's neighbour graph from placement.knn_graph (faiss, every core, the same graph whatever the
        thread count) from ``UMAP_SMALL_ROWS`` rows on; below, UMAP computes exact distances itself."""
        if x.shape[0] < UMAP_SMALL_ROWS:
            return (None, None, None)
        from edgeminer.indexer.analysis.placement import knn_graph

        if progress:
            progress(f"neighbour graph of {x.shape[0]} rows (faiss)")
        idx, dist, _ = knn_graph(x, k)
        return (idx, dist)

    def _fit_small(self, x: np.ndarray) -> None:
        # Centre and take the two leading directions (padded with zeros if fewer exist).
        self.small_mean_ = x.mean(axis=0)
        centred = x - self.small_mean_
        if x.shape[0] > 1:
            _, _, vt = np.linalg.svd(centred, full_matrices=False)
        else:
            vt = np.zeros((0, x.shape[1]), dtype=np.float32)
        comps = np.zeros((2, x.shape[1]), dtype=np.float32)
        comps[: min(2, vt.shape[0])] = vt[:2]
        self.small_components_ = comps
        self.embedding_ = (centred @ comps.T).astype(np.float32)

    def fit_transform(self, x: np.ndarray, *, progress: Progress | None = None) -> np.ndarray:
        return self.fit(x, progress=progress).embedding_

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Coordinates of new rows on the fitted map (no refit)."""
        if not hasattr(self, "embedding_"):
            raise RuntimeError("Projector is not fitted: call fit() first")
        x = self._prepare(x)
        if x.shape[0] == 0:
            return np.zeros((0, 2), dtype=np.float32)
        if x.shape[1] != self.n_features_in_:
            raise SchemaMismatch(
                f"embeddings have {x.shape[1]} dims, the map was fitted on {self.n_features_in_}: "
                "the embedder changed, run analyze with --refit"
            )
        if self.pca_ is not None:
            x = self.pca_.transform(x).astype(np.float32)
        if self.method_ == "pca":
            return ((x - self.small_mean_) @ self.small_components_.T).astype(np.float32)
        return self._knn_place(x)

    def _knn_place(self, x: np.ndarray, chunk: int = 2048) -> np.ndarray:
        from sklearn.neighbors import NearestNeighbors

        k = max(1, min(int(self.n_neighbors), self.train_.shape[0]))
        nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="euclidean").fit(self.train_)
        out = np.empty((x.shape[0], 2), dtype=np.float32)
        for start in range(0, x.shape[0], chunk):
            dist, idx = nn.kneighbors(x[start : start + chunk])
            gap = dist - dist[:, :1]
            sigma = gap.mean(axis=1, keepdims=True)
            sigma[sigma <= 1e-12] = 1.0
            w = np.exp(-gap / sigma)
            w /= w.sum(axis=1, keepdims=True)
            out[start : start + chunk] = np.einsum("nk,nkd->nd", w, self.embedding_[idx])
        return out

    # -- persistence --------------------------------------------------------------------------

    def save(self, path: str | Path) -> int:
        """Pickle the fitted state to ``path`` (written atomically). Returns the size in bytes."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        data = self.dumps()
        tmp.write_bytes(data)
        tmp.replace(path)
        return len(data)

    def dumps(self) -> bytes:
        if not hasattr(self, "embedding_"):
            raise RuntimeError("Projector is not fitted: nothing to save")
        state = dict(self.__dict__)
        return pickle.dumps({"format": 2, "state": state}, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def loads(cls, data: bytes) -> Projector:
        payload = load_own_pickle(data)
        if not isinstance(payload, dict) or payload.get("format") != 2:  # 1: kept the UMAP object
            raise ValueError("unknown projection state format: run analyze with --refit")
        obj = cls.__new__(cls)
        obj.__dict__.update(payload["state"])
        return obj

    @classmethod
    def load(cls, path: str | Path) -> Projector:
        return cls.loads(Path(path).read_bytes())


class _OwnStateUnpickler(pickle.Unpickler):
    """Reads our own analysis state (under the data directory), including states written before the code
    was installed as one package: their ``indexer.x`` / ``service.x`` are ``edgeminer.indexer.x`` now."""

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] in ("indexer", "service"):
            module = "edgeminer." + module
        return super().find_class(module, name)


def load_own_pickle(data: bytes) -> Any:
    """Unpickle an analysis state this package wrote (never data from a request)."""
    return _OwnStateUnpickler(io.BytesIO(data)).load()  # noqa: S301 - our own file under the data directory
