"""GET /api/v1/health: liveness plus what a client needs to know first (auth mode, dataset count, whether
a Label Studio is configured: ``label_studio``, never its URL or token) and whether every dataset can
still be read (``status: degraded`` and ``unreadable`` when not).

The probe is cheap (``Store.unreadable_reason``: tables open, rows counted from the manifests, data
files stat'ed against the sizes the tables recorded, the file list cached per table version); the full
read is ``edgeminer check``. Health is unauthenticated, so it shows no server path, and when reads need
an API key the names of unreadable datasets are shown only to a request that sends the key.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from edgeminer.service.api.deps import API_KEY_HEADER, SettingsDep, StoreDep, key_matches
from edgeminer.service.api.models import Health, UnreadableDataset

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health(request: Request, store: StoreDep, settings: SettingsDep) -> Health:
    from edgeminer.service.api.app import _version

    auth = "none"
    if settings.api_key:
        auth = "reads_and_writes" if settings.api_key_for_reads else "writes"
    unreadable: list[UnreadableDataset] = []
    try:
        names = [d.name for d in store.list_datasets()]
        catalog = store.catalog_unreadable_reason()  # its pages may be cached: stat its files too
    except Exception as exc:  # noqa: BLE001 - an unreadable catalog is what health reports
        names, catalog = [], store.public_reason(exc)
    if catalog is not None:
        unreadable.append(UnreadableDataset(dataset="_catalog", reason=catalog))
    for name in names:
        try:
            reason = store.unreadable_reason(name)
        except Exception as exc:  # noqa: BLE001
            reason = store.public_reason(exc)
        if reason is not None:
            unreadable.append(UnreadableDataset(dataset=name, reason=reason))
    show = True
    if settings.api_key and settings.api_key_for_reads:
        show = key_matches(settings.api_key, request.headers.get(API_KEY_HEADER))
    return Health(
        status="degraded" if unreadable else "ok",
        version=_version(),
        datasets=len(names),
        auth=auth,
        unreadable_count=len(unreadable),
        unreadable=unreadable if show else [],
        label_studio=bool(settings.label_studio_url and settings.label_studio_token),
    )
