"""Jobs: ``GET /jobs`` (newest first, filterable), ``GET /jobs/{id}``, ``POST /jobs/{id}/cancel``.

Jobs are started by the area that owns them (``POST /datasets/{ds}/ingest``, analyze, exports) and run
in the background (service/jobs.py); clients poll ``GET /jobs/{id}`` for status and progress.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Query

from edgeminer.service.api.deps import JobsDep
from edgeminer.service.api.models import JobPublic, problems
from edgeminer.service.errors import scrub

router = APIRouter(tags=["jobs"])

#: bookkeeping fields of a job doc (which process runs it) that clients have no use for.
PRIVATE_FIELDS = ("pid", "host", "runner")


def public_job(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A job doc as every route answers it: no process bookkeeping (``PRIVATE_FIELDS``, ``_``-keys), and
    error texts that came from the storage engine replaced by the generic one (no server paths)."""
    out = {k: v for k, v in doc.items() if k not in PRIVATE_FIELDS and not str(k).startswith("_")}
    dataset = out.get("dataset") if isinstance(out.get("dataset"), str) else None
    if isinstance(out.get("error"), str):
        out["error"] = scrub(out["error"], dataset)
    if isinstance(out.get("errors"), list):
        out["errors"] = [
            {**e, "message": scrub(e["message"], dataset)}
            if isinstance(e, dict) and isinstance(e.get("message"), str)
            else e
            for e in out["errors"]
        ]
    return out


@router.get("/jobs", response_model=list[JobPublic], responses=problems(401, 404))
def list_jobs(
    jobs: JobsDep,
    dataset: Annotated[str | None, Query(max_length=63)] = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    return [public_job(d) for d in jobs.list(dataset=dataset, kind=kind, status=status, limit=limit)]


@router.get("/jobs/{job_id}", response_model=JobPublic, responses=problems(401, 404))
def get_job(job_id: str, jobs: JobsDep) -> dict[str, Any]:
    return public_job(jobs.get(job_id))


@router.post("/jobs/{job_id}/cancel", response_model=JobPublic, responses=problems(401, 404))
def cancel_job(job_id: str, jobs: JobsDep) -> dict[str, Any]:
    """Cancel a queued job; a running one is asked to stop at its next check (it may finish first)."""
    return public_job(jobs.cancel(job_id))
