"""Label Studio, live: push a selection into a project of a running Label Studio server, and pull the
finished annotations back through the same path as a file import.

**Push** (:func:`push`): the selection is exported as a ``label_studio`` export first (the runner's
selection, media references and ``tasks.json`` with the model's predictions as pre-labels; the export
document records it), then a project titled ``project`` is reused (or created) with the dataset's
labeling config, and the tasks are imported in batches (``POST /api/projects/{id}/import``). Every task
keeps ``data.edgeminer_id``; ids already in the project (its tasks are paged through first) are skipped,
so pushing the same rows again adds nothing. A batch the server refuses is reported; the others land.

Images reach the labelers in one of two ways (the export's media mode):

* ``url``: the task's image is a URL, e.g. edgeminer's own media route
  (``http://host:8000/api/v1/datasets/{dataset}/media/{id}?size=full``). The labelers' browsers load it
  directly, so that route must be readable without an API key (``api_key_for_reads`` off, the default).
* ``relative`` (local files): the image is ``/data/local-files/?d=<path relative to the media root>``.
  Label Studio serves it when started with ``LOCAL_FILES_SERVING_ENABLED=true`` and
  ``LOCAL_FILES_DOCUMENT_ROOT=<the media root>``, and only from a local-files storage whose path holds
  the image and is a subfolder of that root (never the root itself): :func:`push` adds one storage per
  top-level subfolder the images are in (never synced, so it imports no tasks); an image directly in
  the root, or outside it, is reported and not sent.

**Pull** (:func:`pull`): the project's JSON export (``GET /api/projects/{id}/export?exportType=JSON``,
the annotated tasks) is handed to :func:`edgeminer.service.export.labels.import_labels` as a parsed Label
Studio export: matching, class checks and the report are the file import's.

The server URL must be http(s), without user name, password, query or fragment; redirects are not
followed (the token goes to that server only). The token is sent as ``Authorization: Token <token>``
(Label Studio 1.23 accepts such legacy tokens with ``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true``) and is
never part of an error message, a log line or a document.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from edgeminer.indexer.store import Store
from edgeminer.service.export.common import ExportError, ExportRequest
from edgeminer.service.export.labels import LabelImportReport, import_labels
from edgeminer.service.export.labelstudio import LOCAL_FILES_PREFIX

#: tasks sent per import request, projects / tasks read per page.
DEFAULT_BATCH = 200
PAGE_SIZE = 100
TIMEOUT_S = 60.0
MAX_BODY_SHOWN = 300
STORAGE_TITLE = "edgeminer media"

Progress = Callable[[int, int | None, str | None], None]


class LabelStudioError(ExportError):
    """The Label Studio server cannot be reached, refuses the token, or refuses a request."""


def check_server_url(url: str) -> str:
    """``url`` without a trailing slash if it can name a Label Studio server: http or https, a host, no
    user name or password (credentials go in the token), no query or fragment. LabelStudioError otherwise."""
    text = (url or "").strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LabelStudioError(
            f"the Label Studio URL {text[:100]!r} is not an http(s) URL with a host, e.g. http://127.0.0.1:8080"
        )
    if parts.username or parts.password:
        raise LabelStudioError("the Label Studio URL must not hold a user name or password: pass the token instead")
    if parts.query or parts.fragment:
        raise LabelStudioError("the Label Studio URL must be the server's base URL, without ?query or #fragment")
    return text.rstrip("/")


class Server:
    """A Label Studio server: its base URL and API token (the token never shows in ``repr``)."""

    def __init__(self, url: str, token: str):
        if not token or not token.strip():
            raise LabelStudioError(
                "no Label Studio token: set EDGEMINER_LABEL_STUDIO_TOKEN (or the variable --token-env names)"
            )
        self.url = check_server_url(url)
        self._token = token.strip()

    def __repr__(self) -> str:
        return f"Server({self.url!r}, token=***)"

    def client(self, transport: httpx.BaseTransport | None = None) -> LabelStudioClient:
        return LabelStudioClient(self.url, self._token, transport=transport)


class LabelStudioClient:
    """The few REST calls edgeminer makes (plain httpx). Every failure is a :class:`LabelStudioError`
    naming the call and the server's answer, never the token."""

    def __init__(self, url: str, token: str, *, transport: httpx.BaseTransport | None = None):
        self.url = url
        self._http = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Token {token}", "Accept": "application/json"},
            follow_redirects=False,
            timeout=TIMEOUT_S,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LabelStudioClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer of one call (None for an empty body)."""
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise LabelStudioError(
                f"Label Studio at {self.url} is not reachable ({type(exc).__name__}: {str(exc)[:200]}); is it "
                "running, and is the URL right?"
            ) from None
        if resp.status_code in (401, 403):
            raise LabelStudioError(
                f"Label Studio at {self.url} refused the token ({resp.status_code} on {method} {path}): check "
                "EDGEMINER_LABEL_STUDIO_TOKEN; Label Studio 1.23 accepts legacy tokens only when started with "
                "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true"
            )
        if 300 <= resp.status_code < 400:
            raise LabelStudioError(
                f"Label Studio at {self.url} answered {method} {path} with a redirect ({resp.status_code}); give "
                "the server's base URL exactly (redirects are not followed)"
            )
        if resp.status_code >= 400:
            body = " ".join(resp.text.split())[:MAX_BODY_SHOWN]
            raise LabelStudioError(f"Label Studio answered {resp.status_code} to {method} {path}: {body}")
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise LabelStudioError(
                f"Label Studio at {self.url} answered {method} {path} with something that is not JSON: is the "
                "URL a Label Studio server?"
            ) from None

    # -- projects ------------------------------------------------------------------------------

    def projects(self) -> Iterator[dict[str, Any]]:
        page = 1
        while True:
            body = self.request("GET", "/api/projects/", params={"page": page, "page_size": PAGE_SIZE})
            items = body.get("results", []) if isinstance(body, Mapping) else body or []
            yield from items
            if not isinstance(body, Mapping) or not body.get("next") or not items:
                return
            page += 1

    def find_project(self, title: str) -> dict[str, Any] | None:
        return next((p for p in self.projects() if p.get("title") == title), None)

    def create_project(self, title: str, label_config: str) -> dict[str, Any]:
        body = {"title": title, "label_config": label_config, "description": "tasks sent by edgeminer"}
        return dict(self.request("POST", "/api/projects/", json=body))

    def update_config(self, project_id: int, label_config: str) -> None:
        self.request("PATCH", f"/api/projects/{project_id}/", json={"label_config": label_config})

    # -- tasks ---------------------------------------------------------------------------------

    def tasks(self, project_id: int) -> Iterator[dict[str, Any]]:
        """Every task of the project (id and data), page by page."""
        page, seen = 1, 0
        while True:
            body = self.request(
                "GET",
                "/api/tasks/",
                params={"project": project_id, "page": page, "page_size": PAGE_SIZE, "fields": "task_only"},
            )
            items = body.get("tasks", []) if isinstance(body, Mapping) else []
            yield from items
            seen += len(items)
            total = body.get("total") if isinstance(body, Mapping) else None
            if not items or (isinstance(total, int) and seen >= total):
                return
            page += 1

    def import_tasks(self, project_id: int, tasks: Sequence[Mapping[str, Any]]) -> int:
        body = self.request("POST", f"/api/projects/{project_id}/import", json=list(tasks))
        return int(body.get("task_count", len(tasks))) if isinstance(body, Mapping) else len(tasks)

    def export(self, project_id: int) -> list[dict[str, Any]]:
        """The project's annotated tasks, as its JSON export."""
        body = self.request("GET", f"/api/projects/{project_id}/export", params={"exportType": "JSON"})
        if not isinstance(body, list):
            raise LabelStudioError(f"Label Studio's export of project {project_id} is not a list of tasks")
        return body

    def create_annotation(self, task_id: int, result: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(self.request("POST", f"/api/tasks/{task_id}/annotations/", json={"result": result}))

    # -- local files ---------------------------------------------------------------------------

    def ensure_local_storage(self, project_id: int, path: str) -> None:
        """A local-files storage of the project at ``path`` (created once, never synced)."""
        found = self.request("GET", "/api/storages/localfiles/", params={"project": project_id}) or []
        if any(isinstance(s, Mapping) and s.get("path") == path for s in found):
            return
        body = {"project": project_id, "path": path, "title": STORAGE_TITLE, "use_blob_urls": True}
        self.request("POST", "/api/storages/localfiles/", json=body)


# ----------------------------------------------------------------------------------------------
# Push
# ----------------------------------------------------------------------------------------------


@dataclass
class PushReport:
    dataset: str
    project: str
    project_id: int
    project_url: str
    export_id: str
    created_project: bool
    tasks: int = 0  # tasks the export holds
    pushed: int = 0
    skipped_existing: int = 0
    failed: int = 0
    batches: int = 0
    failed_batches: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)  # rows left out (media, local files)
    local_files_root: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        text = (
            f"{self.pushed} tasks sent to Label Studio project {self.project!r} (id {self.project_id}"
            f"{', new' if self.created_project else ''}), {self.skipped_existing} already there, "
            f"{self.failed} failed in {len(self.failed_batches)} of {self.batches} batches; export {self.export_id}"
            f"\n  project: {self.project_url}"
        )
        if self.local_files_root:
            text += (
                "\n  images: Label Studio's local files; start it with LOCAL_FILES_SERVING_ENABLED=true "
                f"LOCAL_FILES_DOCUMENT_ROOT={self.local_files_root}"
            )
        return text


def push(
    store: Store,
    dataset: str,
    req: ExportRequest,
    server: Server,
    project: str,
    *,
    data_dir: str,
    media_roots: Sequence[str] = (),
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    transport: httpx.BaseTransport | None = None,
) -> PushReport:
    """Export ``req``'s selection and send it to the Label Studio project titled ``project``.

    Parameters
    ----------
    store, dataset, req
        The store, the dataset and the export request (its target must be ``label_studio``).
    server, project
        The Label Studio server and the title of the project (reused if it exists, else created).
    data_dir, media_roots
        The exports folder's data dir and the server's readable media roots (as for an export).
    batch_size
        Tasks per import request.
    progress, transport
        Progress callback (tasks sent); an httpx transport (tests).

    Returns
    -------
    PushReport
        What was sent, skipped and refused.

    Raises
    ------
    LabelStudioError
        The server cannot be reached, refuses the token, or refuses the project.
    ExportError
        The export request cannot be served.
    """
    if req.target != "label_studio":
        raise ExportError(f"pushing to Label Studio needs target label_studio, not {req.target!r}")
    if not 1 <= batch_size <= 10_000:
        raise ExportError(f"batch_size must be between 1 and 10000, not {batch_size}")
    project = _check_title(project)
    tasks, config, export_id, root = _export_tasks(store, dataset, req, data_dir, media_roots)
    with server.client(transport) as client:
        proj, created = _project(client, project, config)
        pid = int(proj["id"])
        report = PushReport(dataset, project, pid, f"{server.url}/projects/{pid}/", export_id, created, len(tasks))
        report.errors.extend(_export_errors(store, dataset, export_id))
        tasks = _local_files(client, pid, tasks, root, report)
        existing = {str(t.get("data", {}).get("edgeminer_id")) for t in client.tasks(pid)}
        todo = [t for t in tasks if str(t["data"].get("edgeminer_id")) not in existing]
        report.skipped_existing = len(tasks) - len(todo)
        _send_batches(client, pid, todo, batch_size, report, progress)
    return report


def _check_title(project: str) -> str:
    title = (project or "").strip()
    if not title or len(title) > 50 or any(ord(ch) < 32 for ch in title):
        raise LabelStudioError(
            f"project {project[:60]!r}: a Label Studio project title is 1 to 50 printable characters"
        )
    return title


def _export_tasks(
    store: Store, dataset: str, req: ExportRequest, data_dir: str, media_roots: Sequence[str]
) -> tuple[list[dict[str, Any]], str, str, str | None]:
    """Run (or reuse) the label_studio export: its tasks, labeling config, id and the local-files root."""
    from edgeminer.service.export.runner import export_path, plan_export, run_export

    doc, _ = plan_export(store, dataset, req, data_dir=data_dir)
    run_export(store, dataset, doc["id"], media_roots=media_roots, data_dir=data_dir)
    folder = export_path(doc, "path", data_dir=data_dir, dataset=dataset)
    tasks = json.loads((folder / "tasks.json").read_text(encoding="utf-8"))
    info = store.get_dataset(dataset)
    config = (folder / "labeling_config.xml").read_text(encoding="utf-8")
    root = None
    if req.media == "relative":
        roots = [req.media_root] if req.media_root else list(info.media_roots)
        root = str(Path(roots[0]).resolve()) if roots else None
    return tasks, config, str(doc["id"]), root


def _export_errors(store: Store, dataset: str, export_id: str) -> list[dict[str, Any]]:
    """The rows the export left out (their image could not be referenced), as the push reports them."""
    from edgeminer.service.export.runner import get_export

    return [{"id": e.get("id"), "message": e.get("message")} for e in get_export(store, dataset, export_id)["errors"]]


def _project(client: LabelStudioClient, title: str, config: str) -> tuple[dict[str, Any], bool]:
    """The project titled ``title`` (its labeling config brought up to date), or a new one."""
    proj = client.find_project(title)
    if proj is None:
        return client.create_project(title, config), True
    if (proj.get("label_config") or "").strip() != config.strip():
        client.update_config(int(proj["id"]), config)
    return proj, False


def _local_files(
    client: LabelStudioClient, pid: int, tasks: list[dict[str, Any]], root: str | None, report: PushReport
) -> list[dict[str, Any]]:
    """Local-files tasks: keep those Label Studio can serve (an image in a subfolder of ``root``, its
    LOCAL_FILES_DOCUMENT_ROOT), and give the project a storage for each such top-level subfolder (Label
    Studio serves a local file only from a storage holding it, and refuses a storage at the root itself)."""
    local = [t for t in tasks if str(t["data"].get("image") or "").startswith(LOCAL_FILES_PREFIX)]
    if not local:
        return tasks
    if root is None:
        raise ExportError(
            "the images are local files but the dataset has no media root: pass media_root (the folder Label "
            "Studio's LOCAL_FILES_DOCUMENT_ROOT points to), or use media 'url'"
        )
    keep, folders = [], []
    for task in tasks:
        image = str(task["data"].get("image") or "")
        rel = unquote(image[len(LOCAL_FILES_PREFIX) :]) if image.startswith(LOCAL_FILES_PREFIX) else None
        parts = PurePosixPath(rel).parts if rel else ()
        if rel is not None and (rel.startswith("/") or ".." in parts or len(parts) < 2):
            where = "in no subfolder of" if len(parts) < 2 and not rel.startswith("/") else "not under"
            report.errors.append(
                {"id": task["data"].get("edgeminer_id"), "message": f"the image is {where} {root}: not sent"}
            )
            continue
        if parts and parts[0] not in folders:
            folders.append(parts[0])
        keep.append(task)
    report.local_files_root = root
    for folder in folders:
        client.ensure_local_storage(pid, str(Path(root) / folder))
    return keep


def _send_batches(
    client: LabelStudioClient,
    pid: int,
    todo: list[dict[str, Any]],
    batch_size: int,
    report: PushReport,
    progress: Progress | None,
) -> None:
    """Import ``todo`` in batches; a refused batch is recorded (its first and last ids) and the rest go on."""
    done = 0
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        report.batches += 1
        try:
            client.import_tasks(pid, batch)
            report.pushed += len(batch)
        except LabelStudioError as exc:
            report.failed += len(batch)
            report.failed_batches.append(
                {
                    "batch": report.batches,
                    "first_id": batch[0]["data"].get("edgeminer_id"),
                    "last_id": batch[-1]["data"].get("edgeminer_id"),
                    "rows": len(batch),
                    "message": str(exc),
                }
            )
        done += len(batch)
        if progress is not None:
            progress(done, len(todo), f"batch {report.batches}")


# ----------------------------------------------------------------------------------------------
# Pull
# ----------------------------------------------------------------------------------------------


@dataclass
class PullResult:
    project: str
    project_id: int
    annotated_tasks: int  # annotated tasks in the project's export
    new_tasks: int  # of those, the ones imported this time (all, unless ``seen`` was given)
    report: LabelImportReport | None  # None: nothing (new) to import
    seen: dict[str, str] = field(default_factory=dict)  # task id -> its annotations' signature

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("seen")
        return out

    def summary(self) -> str:
        head = f"Label Studio project {self.project!r}: {self.annotated_tasks} annotated tasks, {self.new_tasks} new"
        return head + ("; " + self.report.summary() if self.report else "; nothing to import")


def _signature(task: Mapping[str, Any]) -> str:
    anns = task.get("annotations") or []
    return json.dumps(
        [(a.get("id"), a.get("updated_at"), a.get("was_cancelled")) for a in anns if isinstance(a, Mapping)],
        default=str,
    )


def pull(
    store: Store,
    dataset: str,
    server: Server,
    project: str,
    *,
    split: str = "train",
    iou: float = 0.5,
    add_classes: bool = False,
    seen: Mapping[str, str] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> PullResult:
    """Import the annotations of the Label Studio project titled ``project`` into ``dataset``, through
    :func:`~edgeminer.service.export.labels.import_labels` (the file import's path). With ``seen`` (the
    ``seen`` of an earlier result) only tasks whose annotations changed since are imported.

    Raises
    ------
    LabelStudioError
        The server cannot be reached, refuses the token, or has no such project.
    LabelImportError
        The annotations are refused as a file import would refuse them (unknown labels...).
    """
    project = _check_title(project)
    with server.client(transport) as client:
        proj = client.find_project(project)
        if proj is None:
            raise LabelStudioError(
                f"Label Studio at {server.url} has no project titled {project!r}: push to it first "
                "(edgeminer export --target label_studio --to-server ... --project ...)"
            )
        tasks = [t for t in client.export(int(proj["id"])) if isinstance(t, Mapping)]
    annotated = [t for t in tasks if t.get("annotations")]
    signatures = {str(t.get("id")): _signature(t) for t in annotated}
    new = [t for t in annotated if seen is None or seen.get(str(t.get("id"))) != signatures[str(t.get("id"))]]
    result = PullResult(project, int(proj["id"]), len(annotated), len(new), None, signatures)
    if new:
        result.report = import_labels(
            store,
            dataset,
            new,
            format="label_studio",
            name=f"Label Studio project {project!r}",
            split=split,
            iou=iou,
            add_classes=add_classes,
        )
    return result


def watch(
    poll: Callable[[Mapping[str, str] | None], PullResult],
    interval: float,
    *,
    polls: int | None = None,
    on_result: Callable[[PullResult], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Pull every ``interval`` seconds (``polls`` times, or until interrupted), each time importing only
    the tasks whose annotations changed. Returns the number of polls made."""
    if interval <= 0:
        raise ExportError(f"the watch interval must be a positive number of seconds, not {interval}")
    seen: Mapping[str, str] | None = None
    n = 0
    while polls is None or n < polls:
        if n:
            sleep(interval)
        result = poll(seen)
        seen = result.seen
        n += 1
        if on_result is not None:
            on_result(result)
    return n


def server_from(settings: Any, url: str | None = None, token_env: str | None = None) -> Server:
    """The server to talk to: ``url`` (the CLI's) or ``settings.label_studio_url``; the token from the
    environment variable ``token_env`` (the CLI's) or ``settings.label_studio_token``
    (EDGEMINER_LABEL_STUDIO_TOKEN)."""
    import os

    url = url or settings.label_studio_url
    if not url:
        raise LabelStudioError(
            "no Label Studio server: give its URL (CLI --to-server / --from-server) or set EDGEMINER_LABEL_STUDIO_URL"
        )
    if token_env:
        token = os.environ.get(token_env)
        if not token:
            raise LabelStudioError(f"the environment variable {token_env[:80]!r} (--token-env) is not set or empty")
    else:
        secret = settings.label_studio_token  # a SecretStr (a plain str from a model_copy)
        token = getattr(secret, "get_secret_value", lambda: secret or "")()
    return Server(url, token)
