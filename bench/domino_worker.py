"""Run ``domino.DominoSlicer`` (domino 0.1.5) on arrays: the Domino peer of bench/slices.py.

Runs inside its own venv (``.venv-domino``: numpy < 2, scikit-learn 1.1.3, ``domino==0.1.5`` installed
with ``--no-deps``), started by bench/slices.py as a subprocess; it imports nothing from edgeminer.

    .venv-domino/bin/python bench/domino_worker.py IN.npz OUT.npy CONFIG_JSON

IN.npz holds ``emb`` (n, d), ``targets`` (n,) class indices, ``probs`` (n, C) predicted
probabilities, ``fit`` (n,) bool: the rows the mixture is fitted on (Domino fits on a labeled
validation set); OUT.npy gets ``predict_proba`` of every row, (n, n_slices).

What it takes to run the released slicer code on this Python (3.11):

* ``domino/__init__.py`` imports the embedding and GUI modules (clip, fvcore, ipywidgets, ...). The
  package is registered as an empty namespace first, so only ``domino._slice.domino`` and
  ``domino.utils`` load.
* Those two modules import ``meerkat`` and ``torch.nn`` only for type annotations and the
  ``DataPanel`` lookup of column names; arrays are passed directly, so tiny stand-in modules
  (``DataPanel``, ``nn.Module``) satisfy the imports without installing meerkat or torch.
* scikit-learn 0.24.2 (the pinned version) has no wheel for Python 3.11; 1.1.3 has one, but lacks
  ``sklearn.mixture._base._check_X``, which is restored with its 0.24 definition.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from typing import Any

import numpy as np


def _stub_modules() -> None:
    meerkat = types.ModuleType("meerkat")

    class DataPanel(dict):  # type: ignore[type-arg]
        pass

    meerkat.DataPanel = DataPanel  # type: ignore[attr-defined]
    sys.modules.setdefault("meerkat", meerkat)
    if importlib.util.find_spec("torch") is None:
        torch = types.ModuleType("torch")
        nn = types.ModuleType("torch.nn")

        class Module:
            pass

        nn.Module = Module  # type: ignore[attr-defined]
        torch.nn = nn  # type: ignore[attr-defined]
        sys.modules["torch"] = torch
        sys.modules["torch.nn"] = nn
    spec = importlib.util.find_spec("domino")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("domino is not installed in this interpreter: pip install --no-deps domino==0.1.5")
    pkg = types.ModuleType("domino")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["domino"] = pkg


def _restore_check_x() -> None:
    import sklearn.mixture._base as base
    from sklearn.utils import check_array

    if hasattr(base, "_check_X"):
        return

    def _check_X(X: Any, n_components: Any = None, n_features: Any = None, ensure_min_samples: int = 1) -> Any:  # noqa: N802,N803
        X = check_array(X, dtype=[np.float64, np.float32], ensure_min_samples=ensure_min_samples)  # noqa: N806
        if n_components is not None and X.shape[0] < n_components:
            raise ValueError(
                f"Expected n_samples >= n_components but got n_components = {n_components}, n_samples = {X.shape[0]}"
            )
        if n_features is not None and X.shape[1] != n_features:
            raise ValueError(f"Expected the input data X have {n_features} features, but got {X.shape[1]} features")
        return X

    base._check_X = _check_X  # type: ignore[attr-defined]


def main(argv: list[str]) -> int:
    src, out, config = argv[1], argv[2], json.loads(argv[3])
    _stub_modules()
    _restore_check_x()
    from domino._slice.domino import DominoSlicer

    data = np.load(src)
    emb, targets, probs, fit = data["emb"], data["targets"], data["probs"], data["fit"].astype(bool)
    slicer = DominoSlicer(**config)
    slicer.fit(embeddings=emb[fit], targets=targets[fit], pred_probs=probs[fit])
    scores = slicer.predict_proba(embeddings=emb, targets=targets, pred_probs=probs)
    np.save(out, np.asarray(scores, dtype=np.float64))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
