"""GET /api/v1/health: liveness plus what a client needs to know first (auth mode, dataset count)."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import SettingsDep, StoreDep
from service.api.models import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health(store: StoreDep, settings: SettingsDep) -> Health:
    from service.api.app import _version

    auth = "none"
    if settings.api_key:
        auth = "reads_and_writes" if settings.api_key_for_reads else "writes"
    return Health(
        version=_version(), datasets=len(store.list_datasets()), data_dir=_shown(settings.data_dir), auth=auth
    )


def _shown(uri: str) -> str:
    # object-store URIs may carry credentials in a query string; never echo those
    return uri.split("?", 1)[0]
