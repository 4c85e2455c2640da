"""edgeminer: find where a vision model fails, and which unlabeled images to label next.

The repository keeps its parts at the top level (``indexer/``, ``service/``, ``ui/``); they are installed
as ``edgeminer.indexer``, ``edgeminer.service`` and the dashboard files ``edgeminer/ui``.
"""

from __future__ import annotations
