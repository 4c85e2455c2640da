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
times how systematic the failure is there (``mode_weighting``: the local error rate among the judged
rows nearest the seeds by default, so a stray one-off error among rows the model gets right gets
little), and each mode's share is filled by ``min_distance`` within the mode. Measured on the demo with
all val failures as seeds (bench/mine_demo.py) it has the best mean slice precision over budgets 25-200
(0.982, min_distance 0.974, reciprocal_rank 0.952, mean 0.950, round_robin 0.847, modes weighted by
size alone 0.898); see the report.

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
    LOCAL_ERROR_K,
    MODE_WEIGHTINGS,
    RRF_K,
    Aggregation,
    ModePlan,
    aggregate,
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
    "issue_sample_ids",
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
