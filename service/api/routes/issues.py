"""Issues: named collections of flagged sample ids ("person seen as chair", "green cones").

Stored as ``issue`` documents (``indexer.documents.IssueDoc``: ``{id, dataset, name, description,
sample_ids, created_at, updated_at}``);
a mine request takes an issue id as its seeds. Ids that are not in the dataset are never added: the
response lists them under ``unknown_ids`` and the known ones land.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import APIRouter, Response, status

from edgeminer.indexer.documents import ISSUE, IssueDoc, now_iso
from edgeminer.indexer.store import DocNotFound, Store
from edgeminer.service.api.deps import StoreDep
from edgeminer.service.api.models import IssueChange, IssueCreate, IssuePublic, IssueUpdate, problems
from edgeminer.service.errors import IssueNotFound

router = APIRouter(tags=["issues"])
ISSUE_KIND = ISSUE


class IssueView(IssueDoc):
    """An issue as the API answers it (``IssuePublic``): the document plus ``count``."""

    count: int  #: len(sample_ids)


class IssueChangeView(IssueView):
    """The answer to a create or an update (``IssueChange``)."""

    added: int  #: ids added
    removed: int  #: ids removed
    unknown_ids: list[str]  #: ids asked to be added that are not in the dataset
    not_in_issue: list[str]  #: ids asked to be removed that were not in the issue


def known_ids(store: Store, dataset: str, ids: Sequence[str]) -> tuple[list[str], list[str]]:
    """(ids in the dataset, ids that are not), both deduplicated in the given order."""
    ids = list(dict.fromkeys(str(i) for i in ids))
    if not ids:
        return [], []
    have = set(store.get_samples(dataset, ids, columns=["id"])["id"].to_pylist())
    return [i for i in ids if i in have], [i for i in ids if i not in have]


def load_issue(store: Store, dataset: str, issue_id: str) -> IssueView:
    """The issue ``issue_id`` of ``dataset``. Raises DatasetNotFound, IssueNotFound."""
    ds = store.dataset(dataset)
    try:
        doc = ds.get_doc(ISSUE_KIND, issue_id)
    except DocNotFound:
        raise IssueNotFound(dataset, issue_id) from None
    return public(doc, dataset)


def public(doc: Mapping[str, Any], dataset: str) -> IssueView:
    """A stored issue document (any age: missing keys get defaults) as the API shows it."""
    ids = list(doc.get("sample_ids") or [])
    return {
        "id": doc["id"],
        "dataset": dataset,
        "name": doc.get("name", ""),
        "description": doc.get("description", ""),
        "sample_ids": ids,
        "count": len(ids),
        "created_at": doc.get("created_at") or doc.get("_created_at", ""),
        "updated_at": doc.get("updated_at") or doc.get("_updated_at", ""),
    }


def _save(store: Store, dataset: str, doc: IssueDoc) -> None:
    stored: IssueDoc = {
        "id": doc["id"],
        "dataset": doc["dataset"],
        "name": doc["name"],
        "description": doc["description"],
        "sample_ids": doc["sample_ids"],
        "created_at": doc["created_at"],
        "updated_at": doc["updated_at"],
    }
    store.put_doc(dataset, ISSUE_KIND, doc["id"], stored, name=doc["name"])


@router.get("/datasets/{dataset}/issues", response_model=list[IssuePublic], responses=problems(401, 404))
def list_issues(dataset: str, store: StoreDep) -> list[IssueView]:
    return [public(d, dataset) for d in store.dataset(dataset).list_docs(ISSUE_KIND)]


@router.post(
    "/datasets/{dataset}/issues",
    response_model=IssueChange,
    status_code=status.HTTP_201_CREATED,
    responses=problems(401, 404, 422),
)
def create_issue(dataset: str, body: IssueCreate, store: StoreDep) -> IssueChangeView:
    store.dataset(dataset)  # DatasetNotFound before anything is read
    found, unknown = known_ids(store, dataset, body.sample_ids)
    now = now_iso()
    doc: IssueDoc = {
        "id": uuid.uuid4().hex[:12],
        "dataset": dataset,
        "name": body.name,
        "description": body.description,
        "sample_ids": found,
        "created_at": now,
        "updated_at": now,
    }
    _save(store, dataset, doc)
    return {**public(doc, dataset), "added": len(found), "removed": 0, "unknown_ids": unknown, "not_in_issue": []}


@router.get("/datasets/{dataset}/issues/{issue_id}", response_model=IssuePublic, responses=problems(401, 404))
def get_issue(dataset: str, issue_id: str, store: StoreDep) -> IssueView:
    return load_issue(store, dataset, issue_id)


@router.patch("/datasets/{dataset}/issues/{issue_id}", response_model=IssueChange, responses=problems(401, 404, 422))
def update_issue(dataset: str, issue_id: str, body: IssueUpdate, store: StoreDep) -> IssueChangeView:
    """Rename, describe, add ids (``add_ids``) and remove ids (``remove_ids``) in one call."""
    with store.lock(dataset):
        doc = load_issue(store, dataset, issue_id)
        ids = list(doc["sample_ids"])
        current = set(ids)
        to_add, unknown = known_ids(store, dataset, [i for i in body.add_ids if i not in current])
        ids.extend(to_add)
        remove = list(dict.fromkeys(body.remove_ids))
        not_in = [i for i in remove if i not in current]
        drop = set(remove) - set(not_in)
        ids = [i for i in ids if i not in drop]
        if body.name is not None:
            doc["name"] = body.name
        if body.description is not None:
            doc["description"] = body.description
        doc["sample_ids"] = ids
        doc["updated_at"] = now_iso()
        _save(store, dataset, doc)
    return {
        **public(doc, dataset),
        "added": len(to_add),
        "removed": len(drop),
        "unknown_ids": unknown,
        "not_in_issue": not_in,
    }


@router.delete(
    "/datasets/{dataset}/issues/{issue_id}", status_code=status.HTTP_204_NO_CONTENT, responses=problems(401, 404)
)
def delete_issue(dataset: str, issue_id: str, store: StoreDep) -> Response:
    load_issue(store, dataset, issue_id)
    store.delete_doc(dataset, ISSUE_KIND, issue_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
