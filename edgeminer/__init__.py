"""edgeminer: find where a vision model fails, and which unlabeled images to label next.

The repository keeps its parts at the top level (``indexer/``, ``service/``, ``ui/``); they are installed
as ``edgeminer.indexer``, ``edgeminer.service`` and the dashboard files ``edgeminer/ui``.

Python API (for notebooks and scripts)
--------------------------------------
``edgeminer.open(data_dir)`` returns a :class:`Workspace`, a handle on one data dir (like
``lancedb.connect``). Its methods are the CLI's commands, each a thin call into the same library
function the CLI and the REST API use, returning that function's own result object::

    import edgeminer

    ws = edgeminer.open("./edgeminer-data")        # edgeminer --data-dir ./edgeminer-data ...
    ws.datasets()                                  # DatasetInfo list
    ws.ingest("manifest.csv", dataset="cars")      # edgeminer ingest    -> IngestReport
    ws.analyze("cars")                             # edgeminer analyze   -> AnalysisReport
    ws.clusters("cars")                            # edgeminer clusters  -> list of cluster summaries
    ws.mine("cars", seeds={"cluster": 3}, budget=50)   # edgeminer mine  -> MineResult
    ws.select("cars", strategy="margin", budget=50)    # edgeminer select -> SelectionResult
    ws.export("cars", target="label_studio", ids=picked)   # edgeminer export -> summary dict
    ws.import_labels("cars", "answers.json")       # edgeminer labels import -> LabelImportReport

``ws.store`` is the underlying :class:`edgeminer.indexer.store.Store` for anything else (e.g.
``ws.store.get_samples("cars", ids).to_pandas()``).

Importing ``edgeminer`` is cheap: the library (torch, LanceDB, UMAP...) is imported by the first call
that needs it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # names for the annotations only: nothing heavy is imported with the package
    from edgeminer.indexer.analysis.run import AnalysisReport
    from edgeminer.indexer.embedders import Embedder
    from edgeminer.indexer.pipeline import IngestReport
    from edgeminer.indexer.store import DatasetInfo, Store
    from edgeminer.service.export.labels import LabelImportReport
    from edgeminer.service.mining import MineResult, Seeds
    from edgeminer.service.selection import SelectionResult
    from edgeminer.service.settings import Settings

# `open` is public (edgeminer.open) but not in __all__: `from edgeminer import *` must not shadow the builtin
__all__ = ["Workspace"]

PathLike = str | os.PathLike[str]
#: progress callback of analyze / export: ``(done, total, message)``
Progress = Callable[[int, Any, Any], None]


def open(data_dir: PathLike | None = None, **settings: Any) -> Workspace:
    """Open a data dir (a LanceDB directory or URI) for the Python API.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        The data dir, as ``edgeminer --data-dir``. Default: env ``EDGEMINER_DATA_DIR``, else
        ``./edgeminer-data``. A local directory is created when the store is first used.
    **settings
        Other :class:`edgeminer.service.settings.Settings` fields, e.g. ``device="cpu"``,
        ``media_roots=[...]``, ``media_base_url=...``. Unset ones come from the ``EDGEMINER_*``
        environment variables, as for the CLI.

    Returns
    -------
    Workspace
        A handle whose methods ingest, analyze, mine, select, export and import labels.

    Raises
    ------
    pydantic.ValidationError
        If a setting has the wrong type.
    """
    return Workspace(data_dir, **settings)


class Workspace:
    """One data dir, with the CLI's commands as methods. Build it with :func:`edgeminer.open`.

    Attributes
    ----------
    settings : edgeminer.service.settings.Settings
        The settings the methods use (data dir, device, media roots, media base URL).
    store : edgeminer.indexer.store.Store
        The store of the data dir, opened on first use.
    """

    def __init__(self, data_dir: PathLike | None = None, **settings: Any) -> None:
        from edgeminer.service.settings import Settings

        if data_dir is not None:
            settings["data_dir"] = os.fspath(data_dir)
        self.settings: Settings = Settings(**settings)
        self._store: Store | None = None

    @property
    def data_dir(self) -> str:
        """The data dir (LanceDB directory or URI)."""
        return self.settings.data_dir

    @property
    def store(self) -> Store:
        """The :class:`edgeminer.indexer.store.Store` of the data dir (opened on first use)."""
        if self._store is None:
            from edgeminer.indexer.store import Store

            self._store = Store(self.settings.data_dir)
        return self._store

    def __repr__(self) -> str:
        return f"edgeminer.Workspace({self.data_dir!r})"

    # -- datasets ---------------------------------------------------------------------------------

    def datasets(self) -> list[DatasetInfo]:
        """The datasets of the data dir.

        Returns
        -------
        list of edgeminer.indexer.store.DatasetInfo
            One per dataset: ``name``, ``dim``, ``embedder``, ``classes``, ``task``,
            ``metadata_fields``, ``media_roots``, ``created_at``...
        """
        return self.store.list_datasets()

    def stats(self, dataset: str) -> dict[str, Any]:
        """Rows per split, labeled rows, error rows, embedder and table version (``edgeminer stats``).

        Parameters
        ----------
        dataset : str
            The dataset name.

        Returns
        -------
        dict
            What ``edgeminer stats --json`` prints (``indexer.pipeline.dataset_stats``): ``rows``, ``ok``,
            ``errors``, ``labeled``, ``wrong``, counts per split, scores present, embedder, versions.

        Raises
        ------
        edgeminer.indexer.errors.DatasetNotFound
            If there is no such dataset.
        """
        from edgeminer.indexer.pipeline import dataset_stats

        return dataset_stats(self.store, dataset)

    def ingest(
        self,
        source: PathLike,
        *,
        dataset: str,
        kind: str | None = None,
        split: str | None = None,
        unlabeled: PathLike | None = None,
        coco_results: PathLike | None = None,
        image_root: PathLike | None = None,
        vectors: PathLike | None = None,
        vector_column: str | None = None,
        classes: Sequence[str] | None = None,
        embedder: str | Embedder | None = None,
        model: str | None = None,
        pretrained: str | None = None,
        model_file: PathLike | None = None,
        image_size: int | None = None,
        mc_passes: int | None = None,
        device: str | None = None,
        batch_size: int = 64,
        workers: int = 2,
        progress: bool = True,
    ) -> IngestReport:
        """Embed and score a source's images into a dataset (``edgeminer ingest``).

        Re-running is safe: unchanged rows are skipped and an interrupted ingest resumes.
        Calls ``indexer.sources.open_source``, ``indexer.embedders.embedder_from_options`` and
        ``indexer.pipeline.ingest``.

        Parameters
        ----------
        source : str or os.PathLike
            A manifest (``.csv``, ``.jsonl``, ``.parquet``), a folder of class sub-folders, or a COCO
            annotations JSON.
        dataset : str
            The dataset name (created on the first ingest).
        kind : {"manifest", "folders", "coco"}, optional
            The source kind (CLI ``--format``); default: guessed from ``source``.
        split : str, optional
            Split of the rows that do not name one (folders: default ``train``).
        unlabeled : str or os.PathLike, optional
            Folders source: a folder of unlabeled images for the pool.
        coco_results : str or os.PathLike, optional
            COCO source: the model's detections (COCO results JSON).
        image_root : str or os.PathLike, optional
            Folder relative image paths are resolved against.
        vectors : str or os.PathLike, optional
            Precomputed embedder: a ``.npy`` aligned with the manifest rows.
        vector_column : str, optional
            Precomputed embedder: the manifest column holding each row's vector.
        classes : sequence of str, optional
            Class names, in the order of the probabilities.
        embedder : {"open_clip", "torchscript", "precomputed"} or Embedder, optional
            The embedder of a new dataset (default ``open_clip``), or an object implementing the
            ``indexer.embedders.Embedder`` protocol. An existing dataset keeps its own; options that
            disagree with it raise.
        model, pretrained : str, optional
            open_clip model name and pretrained tag (or a local checkpoint file).
        model_file : str or os.PathLike, optional
            torchscript: your model's ``.pt`` file.
        image_size, mc_passes : int, optional
            torchscript: input size, and MC-dropout passes (0 = off).
        device : str, optional
            ``auto``, ``cpu`` or ``cuda``; default: the workspace's ``device`` setting.
        batch_size, workers : int
            Embedding batch size and image decoding threads.
        progress : bool
            Show a progress bar.

        Returns
        -------
        edgeminer.indexer.pipeline.IngestReport
            Counts (``total``, ``ok_rows``, ``error_rows``, ``skipped``, ``inserted``, ``updated``),
            the first errors, ``version_read`` / ``version_written``; ``summary()`` is the CLI's line.

        Raises
        ------
        edgeminer.indexer.sources.SourceError
            If the source cannot be read (nothing is written then). Row-level problems do not raise:
            they become rows with ``status='error'``.
        edgeminer.indexer.embedders.EmbedderError
            If the embedder cannot be built or disagrees with the dataset's.
        ValueError
            For a bad option (e.g. ``batch_size`` < 1).
        """
        from edgeminer.indexer.embedders import embedder_from_options
        from edgeminer.indexer.pipeline import ingest
        from edgeminer.indexer.sources import open_source

        store = self.store
        src = open_source(
            source,
            kind=kind,
            split=split,
            unlabeled=unlabeled,
            coco_results=coco_results,
            image_root=image_root,
            vectors=vectors,
            vector_column=vector_column,
            classes=list(classes) if classes is not None else None,
        )
        if embedder is None or isinstance(embedder, str):
            existing = store.get_dataset(dataset) if store.has_dataset(dataset) else None
            emb = embedder_from_options(
                existing.embedder if existing else None,
                kind=embedder,
                model=model,
                pretrained=pretrained,
                model_file=os.fspath(model_file) if model_file is not None else None,
                image_size=image_size,
                mc_passes=mc_passes,
                device=device or self.settings.device,
            )
        else:
            emb = embedder
        return ingest(store, dataset, src, emb, batch_size=batch_size, workers=workers, progress=progress)

    # -- analysis ---------------------------------------------------------------------------------

    def analyze(
        self,
        dataset: str,
        *,
        refit: bool = False,
        truth_field: str | None = None,
        progress: bool | Progress = False,
        **params: Any,
    ) -> AnalysisReport:
        """Project the embeddings to 2-D (UMAP), cluster the map (HDBSCAN) and rank the failure
        clusters (``edgeminer analyze``; ``indexer.analysis.run.analyze``).

        Same parameters on unchanged data reuse the previous result; rows ingested since the last
        analysis are placed on the saved map unless ``refit``.

        Parameters
        ----------
        dataset : str
            The dataset name.
        refit : bool
            Fit the map again on every row.
        truth_field : str, optional
            Metadata field with known slices to check the clusters against (default ``slice`` when
            the dataset has it).
        progress : bool or callable
            ``True`` prints one line per stage; a callable gets ``(done, total, message)``.
        **params
            ``indexer.analysis.run.AnalyzeParams`` fields: ``n_neighbors`` (15), ``min_dist`` (0.1),
            ``metric``, ``pca`` ("auto" | "on" | "off"), ``pca_components``, ``n_epochs``,
            ``min_cluster_size`` (auto), ``min_samples``, ``backend`` ("hdbscan" | "sklearn"),
            ``min_errors`` (3), ``seed`` (0).

        Returns
        -------
        edgeminer.indexer.analysis.run.AnalysisReport
            ``mode`` (fit | transform | recluster | reuse), ``rows``, ``n_clusters``,
            ``n_failure_clusters``, ``base_error_rate``, versions, ``slices`` (the per-slice check);
            ``describe()`` is the CLI's line. The cluster summaries: :meth:`clusters`.

        Raises
        ------
        ValueError
            For an unknown or invalid parameter, or a ``truth_field`` the dataset does not have.
        edgeminer.indexer.errors.DatasetNotFound
            If there is no such dataset.
        """
        from edgeminer.indexer.analysis.run import analyze

        return analyze(self.store, dataset, params, refit=refit, truth_field=truth_field, progress=_progress(progress))

    def clusters(self, dataset: str, *, failures_only: bool = True, top: int | None = None) -> list[dict[str, Any]]:
        """The clusters of the last analysis, failure clusters first by rank (``edgeminer clusters``).

        Parameters
        ----------
        dataset : str
            The dataset name.
        failures_only : bool
            Only the failure clusters (``False``: every cluster, the rest by size, noise ``-1`` last).
        top : int, optional
            At most this many.

        Returns
        -------
        list of dict
            The cluster summaries of the ``analysis`` document (``indexer.analysis.run.load_analysis``):
            ``id``, ``size``, ``labeled``, ``errors``, ``error_rate``, ``lift``, ``excess_errors``,
            ``is_failure``, ``failure_rank``, dominant label / prediction, top confusions, typical
            members and worst failures (sample ids), metadata highlights...
            ``pandas.DataFrame(result)`` makes a table of them.

        Raises
        ------
        edgeminer.indexer.errors.NotFound
            If the dataset has not been analyzed yet.
        edgeminer.indexer.errors.DatasetNotFound
            If there is no such dataset.
        """
        from edgeminer.indexer.analysis.run import load_analysis
        from edgeminer.indexer.errors import NotFound

        self.store.get_dataset(dataset)
        doc = load_analysis(self.store, dataset)
        if doc is None:
            raise NotFound(
                f"dataset {dataset!r} has not been analyzed yet: run analyze({dataset!r}) first",
                title="No analysis yet",
            )
        out = [c for c in doc.get("clusters", []) if c.get("is_failure") or not failures_only]
        return out[:top] if top is not None else out

    # -- mining and selection ---------------------------------------------------------------------

    def mine(
        self,
        dataset: str,
        seeds: Seeds | Mapping[str, Any] | Sequence[str],
        *,
        budget: int = 100,
        k: int | None = None,
        aggregation: str | None = None,
        filters: Sequence[Mapping[str, Any]] | Mapping[str, Any] | str | None = None,
        include_labeled: bool = False,
        include_exported: bool = False,
        dedup_distance: float | None = None,
        columns: Sequence[str] | None = ("uri", "pred_label", "confidence"),
        device: str | None = None,
    ) -> MineResult:
        """The unlabeled rows nearest to seed examples, within a budget (``edgeminer mine``;
        ``service.mining.mine``).

        Parameters
        ----------
        dataset : str
            The dataset name.
        seeds : Seeds, dict, list of str, MineResult or SelectionResult
            What to mine around: a ``service.mining.Seeds``, a dict of its fields (``ids``, ``issue``,
            ``cluster``, ``confusion`` (label, predicted), ``pair``, ``failures``, ``split``, ``text``,
            ``image`` (bytes or a file path)), a list of sample ids, or a result's rows. Selector fields combine: rows
            matching all of them are the seeds.
        budget : int
            Rows to return (``min(budget, candidates)`` come back).
        k : int, optional
            Nearest candidates per seed that count as found by it (default 10).
        aggregation : str, optional
            ``modes`` (default), ``round_robin``, ``min_distance``, ``mean`` or ``reciprocal_rank``.
        filters : list of dict, dict or JSON str, optional
            Structured filters on the candidates, as the API takes them:
            ``[{"field": "split", "op": "eq", "value": "pool"}]`` (``service.filters``).
        include_labeled, include_exported : bool
            Let labeled / already exported rows be candidates too.
        dedup_distance : float, optional
            Skip a row closer than this cosine distance to one already kept.
        columns : sequence of str, optional
            Sample columns to add to each returned row.
        device : str, optional
            Embedder device for text / image seeds (default: the ``device`` setting; ``auto`` -> cpu).

        Returns
        -------
        edgeminer.service.mining.MineResult
            ``rows`` (dicts: ``id``, ``rank``, ``distance``, ``seeds``, ``mode`` and ``columns``),
            ``seeds`` (the resolved seed ids), ``modes``, ``candidates``, ``version``; ``summary()``.

        Raises
        ------
        edgeminer.service.mining.SeedsNotFound
            If seed ids, the issue or the selector match no row.
        edgeminer.service.mining.EmbeddingUnavailable
            If a text / image seed needs an embedder the dataset does not have.
        edgeminer.service.mining.MiningError
            For a bad option (budget, aggregation, k...).
        edgeminer.indexer.errors.InvalidFilter, edgeminer.indexer.errors.UnknownField
            For a bad filter.
        """
        from edgeminer.indexer.where import and_
        from edgeminer.service.mining import mine
        from edgeminer.service.mining.seeds import seed_candidate_where

        device = device or self.settings.device
        options: dict[str, Any] = {"k": k, "aggregation": aggregation, "dedup_distance": dedup_distance}
        spec = _seeds(seeds)
        return mine(
            self.store,
            dataset,
            spec,
            budget=budget,
            # a metadata slice (seeds={"slice": N}) also narrows the candidates to its rows
            where=and_(self._where(dataset, filters), seed_candidate_where(self.store.dataset(dataset), spec)) or None,
            include_labeled=include_labeled,
            include_exported=include_exported,
            columns=list(columns) if columns else None,
            device="cpu" if device == "auto" else device,
            **{name: value for name, value in options.items() if value is not None},
        )

    def select(
        self,
        dataset: str,
        *,
        strategy: str = "least_confidence",
        budget: int = 100,
        explore: float = 0.0,
        per_class_cap: int | None = None,
        filters: Sequence[Mapping[str, Any]] | Mapping[str, Any] | str | None = None,
        include_labeled: bool = False,
        include_exported: bool = False,
        seed: int = 0,
        columns: Sequence[str] | None = ("uri", "pred_label"),
    ) -> SelectionResult:
        """Rows to label next by the model's uncertainty, with a random exploration share
        (``edgeminer select``; ``service.selection.select``).

        Parameters
        ----------
        dataset : str
            The dataset name.
        strategy : str
            ``least_confidence``, ``margin``, ``ratio``, ``entropy``, ``mc_variance``, ``bald`` (all:
            higher = less certain, taken first) or ``random``.
        budget : int
            Rows to return.
        explore : float
            Share of the budget drawn at random, in [0, 1].
        per_class_cap : int, optional
            At most this many rows per predicted class.
        filters : list of dict, dict or JSON str, optional
            Structured filters on the candidates (see :meth:`mine`).
        include_labeled, include_exported : bool
            Let labeled / already exported rows be candidates too.
        seed : int
            Random seed of the random parts (same seed, same data -> same rows).
        columns : sequence of str, optional
            Sample columns to add to each returned row.

        Returns
        -------
        edgeminer.service.selection.SelectionResult
            ``rows`` (dicts: ``id``, ``rank``, ``part`` (the strategy, ``explore`` or ``random``),
            ``score`` and ``columns``), ``counts`` per part, ``candidates``, ``skipped_no_score``,
            ``version``; ``summary()``.

        Raises
        ------
        edgeminer.service.selection.SelectionError
            For a bad option, or when no candidate has the strategy's score (the message says how to
            get it).
        edgeminer.indexer.errors.InvalidFilter, edgeminer.indexer.errors.UnknownField
            For a bad filter.
        """
        from edgeminer.service.selection import select

        return select(
            self.store,
            dataset,
            strategy=strategy,
            budget=budget,
            explore=explore,
            per_class_cap=per_class_cap,
            where=self._where(dataset, filters),
            include_labeled=include_labeled,
            include_exported=include_exported,
            seed=seed,
            columns=list(columns) if columns else None,
        )

    # -- export and labels back -------------------------------------------------------------------

    def export(
        self,
        dataset: str,
        *,
        target: str,
        ids: Sequence[str] | Any = None,
        issue: str | None = None,
        selection: str | None = None,
        filter: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None,  # the API's name
        media: str = "relative",
        media_base_url: str | None = None,
        media_root: PathLike | None = None,
        chunk_size: int = 500,
        name: str = "",
        force: bool = False,
        out: PathLike | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Write rows in a labeling tool's format, with the model's predictions as pre-labels
        (``edgeminer export``; ``service.export.runner.plan_export`` + ``run_export``).

        The same request twice gives the same export (``force`` makes a new one); the rows are
        tagged ``exported`` so mining and selection skip them afterwards.

        Parameters
        ----------
        dataset : str
            The dataset name.
        target : str
            ``label_studio``, ``cvat``, ``coco``, ``yolo``, ``labelbox``, ``sagemaker`` or ``csv``.
        ids : list of str, MineResult or SelectionResult, optional
            The rows to export: sample ids, or a mine / select result (its rows, in order).
        issue : str, optional
            An issue id: its flagged samples.
        selection : str, optional
            A saved mine / select result id (``selection`` document, e.g. from the API).
        filter : list of dict or dict, optional
            Structured filters selecting the rows. Give exactly one of ``ids``, ``issue``,
            ``selection``, ``filter``.
        media : {"relative", "copy", "url"}
            How the files reference the images: paths relative to ``media_root`` (default: the
            dataset's media roots), copies inside the export, or URLs under ``media_base_url``.
        media_base_url : str, optional
            ``url`` media: a base URL or a template with ``{id}``, ``{dataset}``, ``{path}``,
            ``{name}`` (default: the ``media_base_url`` setting).
        media_root : str or os.PathLike, optional
            ``relative`` media: the folder paths are relative to.
        chunk_size : int
            Rows per chunk file (the unit of resume).
        name : str
            A name for the export (not part of its id).
        force : bool
            A new export even if the same one was made before.
        out : str or os.PathLike, optional
            Also copy the zip to this file or folder.
        progress : callable, optional
            Gets ``(done, total, message)`` while rows are written.

        Returns
        -------
        dict
            ``run_export``'s summary: ``export_id``, ``status``, ``rows_exported``, ``media_errors``,
            ``zip`` (absolute path; the copy when ``out`` is given), ``counts``, ``version_read``;
            plus ``path``, the export folder (``<data_dir>/_exports/<dataset>/<export id>``). The full
            ``export`` document: ``ws.store.get_doc(dataset, "export", summary["export_id"])``.

        Raises
        ------
        edgeminer.service.export.common.ExportError
            For an unknown target or media mode, not exactly one selection, a selection with no rows
            or ids the dataset does not have.
        edgeminer.indexer.errors.DocNotFound
            If ``selection`` names no saved selection.
        edgeminer.indexer.errors.IssueNotFound
            If ``issue`` names no issue.
        """
        from edgeminer.service.export.common import ExportRequest
        from edgeminer.service.export.runner import export_path, plan_export, run_export

        store, data_dir = self.store, self.settings.data_dir
        if ids is not None and hasattr(ids, "rows"):
            ids = [row["id"] for row in ids.rows]
        if media == "url" and media_base_url is None:
            media_base_url = self.settings.media_base_url
        req = ExportRequest(
            target=target,
            ids=list(ids) if ids is not None else None,
            issue=issue,
            selection=selection,
            filter=_filter_body(filter),
            media=media,
            media_base_url=media_base_url,
            media_root=os.fspath(media_root) if media_root is not None else None,
            chunk_size=chunk_size,
            name=name,
        ).validate()
        doc, _created = plan_export(store, dataset, req, data_dir=data_dir, force=force)
        summary = run_export(
            store, dataset, doc["id"], progress=progress, media_roots=self.settings.media_roots, data_dir=data_dir
        )
        done = store.get_doc(dataset, "export", doc["id"])
        summary["path"] = str(export_path(done, "path", data_dir=data_dir, dataset=dataset))
        if out is not None:
            dest = Path(out)
            if dest.is_dir():
                dest = dest / Path(summary["zip"]).name
            shutil.copyfile(summary["zip"], dest)
            summary["zip"] = str(dest)
        return summary

    def import_labels(
        self,
        dataset: str,
        file: PathLike | bytes,
        *,
        format: str | None = None,  # the library's name
        split: str = "train",
        iou: float = 0.5,
        add_classes: bool = False,
    ) -> LabelImportReport:
        """Bring labels back from a labeling tool (``edgeminer labels import``;
        ``service.export.labels.import_labels``).

        Matched rows become labeled (in ``split``); correctness and outcome are recomputed against
        the stored prediction. The previous labels stay readable at ``report.version_before``
        (``ws.store.query(dataset, version=report.version_before)``).

        Parameters
        ----------
        dataset : str
            The dataset name.
        file : str, os.PathLike or bytes
            A Label Studio JSON export, a COCO JSON, or a CSV of ``id`` (or ``uri``) and ``label``;
            or its content.
        format : {"label_studio", "coco", "csv"}, optional
            Default: detected from the content.
        split : str
            Split of the newly labeled rows.
        iou : float
            Detection: overlap a box needs to match an object row.
        add_classes : bool
            Append labels that are not classes of the dataset to its classes (default: refuse them).

        Returns
        -------
        edgeminer.service.export.labels.LabelImportReport
            ``matched``, ``changed``, ``unmatched`` (with reasons), ``labeled_before`` /
            ``labeled_after``, ``version_before`` / ``version_after``; ``summary()``.

        Raises
        ------
        edgeminer.service.export.labels.UnknownLabels
            If a label is not a class of the dataset and ``add_classes`` is false (nothing written).
        edgeminer.service.export.labels.LabelImportError
            If the file has a problem; it is refused whole, nothing is written.
        """
        from edgeminer.service.export.labels import import_labels

        source = file if isinstance(file, bytes) else Path(file)
        return import_labels(self.store, dataset, source, format=format, split=split, iou=iou, add_classes=add_classes)

    # -- model versions and compare (issue 14) -----------------------------------------------------

    def versions(self, dataset: str, *, set_current: str | None = None) -> dict[str, Any]:
        """The dataset's model versions and the current one (``edgeminer versions``;
        ``indexer.versions``); ``set_current`` first makes that version current (its predictions and
        scores are copied into the rows everything reads).

        Returns
        -------
        dict
            ``{current, ingest_version, versions: [{name, model, kind, source, rows, errors, ...}]}``.

        Raises
        ------
        edgeminer.indexer.errors.NotFound
            ``set_current`` names no version (the message lists the known ones).
        """
        from edgeminer.indexer import versions

        if set_current is not None:
            versions.set_current(self.store, dataset, set_current)
        return dict(versions.list_versions(self.store, dataset))

    def add_version(
        self,
        dataset: str,
        name: str,
        *,
        predictions: PathLike | None = None,
        model_file: PathLike | None = None,
        mc_passes: int = 0,
        make_current: bool = False,
    ) -> Any:
        """Store a new model's predictions as version ``name`` (``edgeminer ingest --model-version``):
        from a manifest of predictions (``predictions``) or a TorchScript model run over the images
        (``model_file``). Embeddings and labels are not touched. Returns the ``VersionReport``."""
        from edgeminer.indexer.versions import ingest_predictions

        source = None
        if predictions is not None:
            from edgeminer.indexer.sources import open_source

            source = open_source(predictions, kind="manifest")
        return ingest_predictions(
            self.store,
            dataset,
            name,
            source=source,
            model_file=None if model_file is None else str(model_file),
            mc_passes=mc_passes,
            device=self.settings.device,
            make_current=make_current,
        )

    def compare(
        self, dataset: str, base: str, new: str, *, split: str | None = None, resamples: int = 1000, seed: int = 0
    ) -> dict[str, Any]:
        """What version ``new`` fixed and broke against ``base`` (``edgeminer compare``;
        ``service.compare.compare``): accuracies with bootstrap intervals, fixed / broken counts,
        overall, per cluster, class and metadata value, regressions first."""
        from edgeminer.service.compare import CompareOptions, compare

        return compare(self.store, dataset, base, new, CompareOptions(split=split, resamples=resamples, seed=seed))

    def slices(
        self,
        dataset: str,
        *,
        max_l: int = 2,
        top: int = 10,
        include_train: bool = False,
        refinements: bool = False,
        refresh: bool = False,
    ) -> dict[str, Any]:
        """Metadata slices with high error rates, beside the failure clusters (``edgeminer slices``).

        Parameters
        ----------
        dataset : str
        max_l : int
            Most conditions per slice (1-3).
        top : int
            Slices to return (1-100).
        include_train : bool
            Judge errors on train rows too (default: labeled rows outside the train split, when any).
        refinements : bool
            Also list a slice that only narrows another by a condition without a significantly higher
            error rate (SliceLine lists them; by default they are left out and the next slices move up).
        refresh : bool
            Recompute even when cached at this table version.

        Returns
        -------
        dict
            ``slices`` (each with ``id``, ``summary``, ``conditions``, ``filters``, ``error_rate``, ``lift``,
            ``judged``, ``unlabeled``...), ``base_error_rate``, ``version`` / ``stale``, and ``clusters``
            (the failure clusters of the last analysis). ``mine(dataset, seeds={"slice": id})`` mines one.
        """
        from edgeminer.indexer.analysis.metaslices import SliceParams, slices_overview

        params = SliceParams(max_l=max_l, top_k=top, include_train=include_train, refinements=refinements)
        return slices_overview(self.store, dataset, params, refresh=refresh)

    def label_issues(
        self, dataset: str, *, train_rows: str = "probe", other_rows: str = "probe", refresh: bool = False
    ) -> dict[str, Any]:
        """Labeled rows whose label is likely wrong, most likely first (``edgeminer label-issues``).

        Parameters
        ----------
        dataset : str
        train_rows : str
            ``probe`` (train rows judged by a cross-validated probe on the embeddings), ``skip`` or ``model``.
        other_rows : str
            ``probe`` (the other labeled rows by the probe too) or ``model`` (the stored probabilities).
        refresh : bool
            Recompute even when cached at this table version.

        Returns
        -------
        dict
            ``issues`` (``id``, ``label``, ``suggested``, ``self_confidence``, ``judged_by``, ``rank``),
            ``count``, ``counts``, ``thresholds``, ``version``. Filter with ``{"field": "label_issue",
            "value": True}``; mine around them with ``seeds={"label_issues": True}``.
        """
        from edgeminer.indexer.analysis.label_issues import LabelIssueParams, load_label_issues

        params = LabelIssueParams(train_rows=train_rows, other_rows=other_rows)
        return load_label_issues(self.store, dataset, params, refresh=refresh)

    # -- helpers ----------------------------------------------------------------------------------

    def _where(self, dataset: str, filters: Any) -> str | None:
        """The trusted where-clause of structured filters (``service.filters``), as the CLI builds it."""
        if filters is None or filters == [] or filters == "":
            return None
        from edgeminer.service.filters import build_where, parse_filters

        if isinstance(filters, str):
            items = parse_filters(filters)
        else:
            items = [filters] if isinstance(filters, Mapping) else list(filters)
        store = self.store
        return build_where(store.get_dataset(dataset), store.schema(dataset), items, store=store)


def _seeds(seeds: Any) -> Any:
    """A ``service.mining.Seeds`` from a Seeds, a dict of its fields, a list of ids or a result."""
    from edgeminer.service.mining import Seeds

    if isinstance(seeds, Seeds):
        return seeds
    if hasattr(seeds, "rows"):  # a MineResult / SelectionResult: mine around what it found
        return Seeds(ids=[row["id"] for row in seeds.rows])
    if isinstance(seeds, str):
        raise TypeError("seeds is a list of sample ids, a dict of Seeds fields or a Seeds, not one string")
    if isinstance(seeds, Mapping):
        fields = dict(seeds)
        for pair in ("confusion", "pair"):
            if fields.get(pair) is not None:
                fields[pair] = tuple(fields[pair])
        image = fields.get("image")
        if image is not None and not isinstance(image, bytes):
            fields["image"] = Path(image).read_bytes()
        if fields.get("ids") is not None:
            fields["ids"] = list(fields["ids"])
        return Seeds(**fields)
    return Seeds(ids=[str(i) for i in seeds])


def _filter_body(filters: Any) -> list[dict[str, Any]] | dict[str, Any] | None:
    if filters is None or isinstance(filters, Mapping):
        return None if filters is None else dict(filters)
    return [dict(f) for f in filters]


def _progress(progress: bool | Progress) -> Progress | None:
    if callable(progress):
        return progress
    if not progress:
        return None
    import sys

    def show(done: int, total: Any, message: Any) -> None:
        print(f"  [{done}/{total}] {message}", file=sys.stderr, flush=True)

    return show
