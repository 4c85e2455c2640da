"""How the server runs its process: BLAS threads capped while it serves, restored after."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from threadpoolctl import threadpool_info

from edgeminer.service.settings import Settings


def _blas_threads() -> list[int]:
    """Threads of each BLAS whose limit is process-wide. An OpenMP-threaded OpenBLAS (faiss-cpu brings one,
    loaded once an analysis has run in this process) keeps its limit per thread (OpenMP's nthreads is a
    per-thread setting), so the limit the lifespan set is not what this thread sees: it is left out."""
    return [
        pool["num_threads"]
        for pool in threadpool_info()
        if pool["user_api"] == "blas" and pool.get("threading_layer") != "openmp"
    ]


def test_blas_threads_are_capped_while_serving(make_client: Callable[..., TestClient], api_settings: Settings) -> None:
    before = _blas_threads()
    assert before, "numpy's BLAS should be visible to threadpoolctl"
    client = make_client(api_settings, blas_threads=1)
    assert client.get("/api/v1/health").status_code == 200
    assert _blas_threads() == [1] * len(before)
    client.__exit__(None, None, None)  # lifespan shutdown restores the process's own limits
    assert _blas_threads() == before


def test_blas_threads_zero_leaves_blas_alone(make_client: Callable[..., TestClient], api_settings: Settings) -> None:
    before = _blas_threads()
    client = make_client(api_settings, blas_threads=0)
    assert client.get("/api/v1/health").status_code == 200
    assert _blas_threads() == before
