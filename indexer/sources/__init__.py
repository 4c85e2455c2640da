"""Sources: what a user points edgeminer at, read as a stream of :class:`SourceRecord`.

One module per responsibility: :mod:`.base` (the :class:`Source` base class, records, errors, ids and
the allowed-roots checks), :mod:`.values` (cell values and metadata types), one module per kind
(:mod:`.manifest`, :mod:`.folders`, :mod:`.coco`) and :mod:`.open` (:func:`open_source`).

Three kinds, picked by :func:`open_source` (``kind=None`` guesses from the path):

``manifest``  a CSV, JSONL/NDJSON or Parquet table, one row per image (see :class:`ManifestSource`);
``folders``   a folder of class sub-folders ``root/<label>/*.jpg`` plus an optional unlabeled folder
              (see :class:`FolderSource`);
``coco``      COCO ground truth JSON plus an optional COCO results JSON: one record per object patch,
              matched into outcomes (see :class:`CocoSource`).

Every source has ``classes``, ``task`` ("classification" | "detection"), ``metadata_fields``
(``{name: "string"|"int"|"float"|"bool"|"timestamp"}``), ``roots`` (the folders its images live in,
used as media roots), ``has_probs``, ``dim`` (length of precomputed vectors, 0 when none), ``__len__``,
and iterates records. Iterating twice reads the input twice; nothing holds all records in memory
except the COCO source (whose JSON is in memory anyway).

Problems are reported at two levels:

* schema-level (missing ``uri`` column, a metadata column whose name is not an identifier, a vectors
  file whose row count differs, an unreadable file...): :class:`SourceError` is raised by
  :func:`open_source`, before anything is yielded, naming the file and the column or row;
* row-level (probs of the wrong length, a label outside the classes, a duplicate id, ...): the record
  is still yielded, with ``error`` set to a sentence naming the row, so the pipeline stores it as an
  error row and the rest of the batch lands.

Rows are numbered from 1 in data order (a CSV header is not a row; blank JSONL lines are skipped).

``allowed_roots`` (the service passes ``settings.ingest_roots`` for API requests; the CLI passes none)
limits a source to images that resolve, symlinks followed, inside those folders: the paths given to
:func:`open_source` must lie inside them, a manifest or COCO row whose image resolves outside becomes an
error row that is never read, folder walks skip entries that resolve outside, and ``roots`` (the
dataset's media roots) never reach outside them. Whether such an outside path exists is never looked at.
"""

from __future__ import annotations

from edgeminer.indexer.sources.base import (
    IMAGE_EXTENSIONS,
    KINDS,
    MAX_ROOTS,
    URL_SCHEMES,
    Source,
    SourceError,
    SourceRecord,
    make_id,
)
from edgeminer.indexer.sources.coco import CocoSource, iou_xywh
from edgeminer.indexer.sources.folders import FolderSource
from edgeminer.indexer.sources.manifest import KNOWN_COLUMNS, MANIFEST_EXTENSIONS, META_NAME_RE, ManifestSource
from edgeminer.indexer.sources.open import open_source

__all__ = [
    "IMAGE_EXTENSIONS",
    "KINDS",
    "KNOWN_COLUMNS",
    "MANIFEST_EXTENSIONS",
    "MAX_ROOTS",
    "META_NAME_RE",
    "URL_SCHEMES",
    "CocoSource",
    "FolderSource",
    "ManifestSource",
    "Source",
    "SourceError",
    "SourceRecord",
    "iou_xywh",
    "make_id",
    "open_source",
]
