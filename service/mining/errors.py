"""Errors of mining and selection requests (the API maps them into service/errors.py's tree)."""

from __future__ import annotations

from collections.abc import Sequence

from edgeminer.indexer.errors import InputError, NotFound, NotSupported

__all__ = ["EmbeddingUnavailable", "MiningError", "SeedsNotFound"]


class MiningError(InputError):
    """A mining or selection request that cannot be served as asked (HTTP 422)."""


class SeedsNotFound(NotFound):
    """Seed ids that do not exist in the dataset (HTTP 404)."""

    def __init__(self, dataset: str, missing: Sequence[str]):
        self.dataset = dataset
        self.missing = list(missing)
        shown = ", ".join(repr(m) for m in self.missing[:10])
        more = f" and {len(self.missing) - 10} more" if len(self.missing) > 10 else ""
        super().__init__(
            f"{len(self.missing)} seed id(s) not found in dataset {dataset!r}: {shown}{more}; "
            "check the ids (GET /datasets/{ds}/samples lists them)",
            dataset=dataset,
            missing_ids=self.missing[:100],
        )


class EmbeddingUnavailable(NotSupported):
    """The dataset's embedder cannot embed this kind of seed (text on a non-CLIP embedder...)."""
