"""Mining: seeds (failure examples) -> their nearest unlabeled neighbours, ranked and within a budget.

The package, by responsibility:

- :mod:`.seeds`: what to mine around (:class:`Seeds`: ids, an issue, a seed selector, a text query, an
  image) resolved into normalised vectors (:func:`resolve_seeds`);
- :mod:`.search`: the candidates (unlabeled, the caller's filter, not exported, not a seed:
  :func:`candidate_where`) and each seed's nearest ones (:class:`NeighbourSearch`; the exact-vs-index
  decision is ``Store.prefer_exact``'s, asked once per search);
- :mod:`.aggregation`: many seeds' rankings -> one order (``modes``, ``round_robin``, ``min_distance``,
  ``mean``, ``reciprocal_rank``), de-duplicated, filled to the budget by searching deeper;
- :mod:`.mine`: :func:`mine` (the steps above, in order) and its :class:`MineResult`;
- :mod:`.errors`: :class:`MiningError` and its subclasses.

``modes`` (the default aggregation) groups seeds into failure modes (their analysis cluster, else a
clustering of the seed vectors); the budget is shared across modes (largest remainder) by their size
times how much labeling there can buy (``mode_weighting``, by default ``learnable_error_rate``: the
error rate among the held-out judged rows nearest the seeds, so a stray one-off error among rows the
model gets right gets little, times the share of the nearest training rows the model fits, so a mode
it cannot learn even from labeled rows gets little), and each mode's share is filled by
``min_distance`` within the mode. On the demo with all val failures as seeds (bench/mine_demo.py,
budgets 25-150) 98.7% of what it returns lies in a planted slice; weighting by the local error rate
alone, by the cluster's error rate, or min_distance without modes reach 99.7-99.8%, size alone 88.4%,
round_robin 86.9%. The learnable weighting gives up that point of looking like the failures for what the
labels buy after retraining (service/simulate.py; README "Choosing what to label, and what the labels buy").

Guarantees: the result has ``min(budget, matching rows)`` rows; each row carries the seeds that found
it and its distance to the nearest seed (``1 - cos``). Recording a result as a ``selection`` document
(what ``edgeminer mine`` and ``POST /mine`` leave behind) is ``service/selection.py``'s
``record_selection``.
"""

from __future__ import annotations

from edgeminer.service.mining.aggregation import (
    AGGREGATIONS,
    DEFAULT_AGGREGATION,
    DEFAULT_MODE_WEIGHTING,
    DIVERSITY_MODES,
    LOCAL_ERROR_K,
    MODE_WEIGHTINGS,
    RRF_K,
    Aggregation,
    Diversity,
    ModePlan,
    ModeWeighting,
    aggregate,
    fits_training_split,
    learnable_rates,
    mode_weights,
    plan_modes,
    seed_modes,
    share_budget,
)
from edgeminer.service.mining.errors import EmbeddingUnavailable, MiningError, SeedsNotFound
from edgeminer.service.mining.mine import DEFAULT_K, MineOptions, MineResult, mine, mine_in, mine_record, mine_with
from edgeminer.service.mining.search import (
    FEW_QUERIES,
    MAX_EXCLUDED_IDS,
    NeighbourSearch,
    Ranked,
    as_dataset,
    cached_count,
    candidate_where,
    exported_ids,
    normalize,
)
from edgeminer.service.mining.seeds import (
    MAX_SEEDS,
    ResolvedSeeds,
    Seeds,
    dataset_embedder,
    embed_image,
    embed_text,
    issue_sample_ids,
    resolve_seeds,
    resolve_seeds_in,
    seed_selector_where,
)

__all__ = [
    "AGGREGATIONS",
    "DEFAULT_AGGREGATION",
    "DEFAULT_K",
    "DEFAULT_MODE_WEIGHTING",
    "DIVERSITY_MODES",
    "FEW_QUERIES",
    "LOCAL_ERROR_K",
    "MAX_EXCLUDED_IDS",
    "MAX_SEEDS",
    "MODE_WEIGHTINGS",
    "RRF_K",
    "Aggregation",
    "EmbeddingUnavailable",
    "MineOptions",
    "MineResult",
    "MiningError",
    "ModePlan",
    "ModeWeighting",
    "Diversity",
    "NeighbourSearch",
    "Ranked",
    "ResolvedSeeds",
    "Seeds",
    "SeedsNotFound",
    "aggregate",
    "as_dataset",
    "cached_count",
    "candidate_where",
    "dataset_embedder",
    "embed_image",
    "embed_text",
    "exported_ids",
    "fits_training_split",
    "issue_sample_ids",
    "learnable_rates",
    "mine",
    "mine_in",
    "mine_record",
    "mine_with",
    "mode_weights",
    "normalize",
    "plan_modes",
    "resolve_seeds",
    "resolve_seeds_in",
    "seed_modes",
    "seed_selector_where",
    "share_budget",
]
