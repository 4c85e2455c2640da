"""Media: ``GET /datasets/{ds}/media/{id}?size=thumb|full`` serves a row's image.

Which file or URL a row's image may be read from (the media roots, ``..`` and symlink rules, the
``allow_url_fetch`` guard against private addresses, pinned to the checked address) is decided in
service/media.py: a refusal is a 403, a missing file a 404. This module is the HTTP side: the response,
thumbnails and crops, and their cache. The request's id is only ever a database key, never part of a
path: the cache file name is a hash.

Object rows (detection data) are cropped from their image by ``bbox`` [x, y, w, h]; a row without a
uri uses its parent's. Thumbnails (at most ``THUMB_SIZE`` px a side) and crops are made once and cached
under ``settings.thumbnail_cache`` keyed by the uri, the file's size and mtime, the box and the size.
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, Response

from edgeminer.service.api.deps import SettingsDep, StoreDep
from edgeminer.service.api.models import problems
from edgeminer.service.errors import Unsupported
from edgeminer.service.media import MediaRef, fetch_url, media_ref
from edgeminer.service.settings import Settings

router = APIRouter(tags=["media"])

THUMB_SIZE = 256
CACHE_VERSION = "1"
CACHE_CONTROL = "private, max-age=86400"
IMAGE_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp", "BMP": "image/bmp"}


def _open_image(data: bytes | Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
        img.load()
        return img
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise Unsupported(f"the file is not an image this server can read ({type(exc).__name__})") from None


def _crop(img: Any, bbox: list[float]) -> Any:
    x, y, w, h = (float(v) for v in bbox)

    def clamp(v: float, hi: int) -> float:  # in float space first: a huge box must not overflow int()
        return min(max(v, 0.0), float(hi))

    left, top = int(clamp(x, img.width)), int(clamp(y, img.height))
    right, bottom = int(round(clamp(x + w, img.width))), int(round(clamp(y + h, img.height)))
    if right <= left or bottom <= top:
        raise Unsupported(f"the box {bbox} lies outside its {img.width}x{img.height} image")
    return img.crop((left, top, right, bottom))


def _encode(img: Any) -> tuple[bytes, str, str]:
    has_alpha = img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info)
    out = io.BytesIO()
    if has_alpha or img.mode in ("1", "I", "I;16", "F"):
        img.save(out, format="PNG", optimize=True)
        return out.getvalue(), "image/png", ".png"
    if img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    img.save(out, format="JPEG", quality=85)
    return out.getvalue(), "image/jpeg", ".jpg"


def _cache_key(dataset: str, ref: MediaRef, size: str) -> str:
    stat = ""
    if ref.local is not None:
        st = ref.local.stat()
        stat = f"{st.st_size}:{st.st_mtime_ns}"
    text = "\0".join([CACHE_VERSION, dataset, ref.uri, repr(ref.bbox), size, stat, str(THUMB_SIZE)])
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _cached(settings: Settings, dataset: str, key: str) -> Path | None:
    folder = settings.thumbnail_cache / dataset / key[:2]
    for ext in (".jpg", ".png"):
        path = folder / f"{key}{ext}"
        if path.is_file():
            return path
    return None


def _store_cache(settings: Settings, dataset: str, key: str, data: bytes, ext: str) -> Path | None:
    folder = settings.thumbnail_cache / dataset / key[:2]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{key}{ext}"
        tmp = folder / f".{key}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, final)
        return final
    except OSError:
        return None  # a read-only cache only costs speed


@router.get(
    "/datasets/{dataset}/media/{sample_id:path}",
    responses={
        200: {"content": {"image/jpeg": {}, "image/png": {}}, "description": "the image"},
        **problems(401, 403, 404, 422),
    },
    response_class=Response,
)
def get_media(
    dataset: str,
    sample_id: str,
    store: StoreDep,
    settings: SettingsDep,
    size: Annotated[Literal["thumb", "full"], Query(description="thumb: at most 256 px a side")] = "thumb",
) -> Response:
    ref = media_ref(store, settings, dataset, sample_id)
    headers = {"Cache-Control": CACHE_CONTROL}
    if size == "full" and ref.bbox is None and ref.local is not None:
        from PIL import Image

        try:
            with Image.open(ref.local) as probe:
                fmt = probe.format or ""
        except Exception:  # noqa: BLE001 - anything Pillow cannot identify is not served
            raise Unsupported("the file is not an image this server can read") from None
        media_type = IMAGE_TYPES.get(fmt) or mimetypes.guess_type(ref.local.name)[0] or "application/octet-stream"
        return FileResponse(ref.local, media_type=media_type, headers=headers)
    key = _cache_key(dataset, ref, size)
    headers["ETag"] = f'"{key[:32]}"'
    hit = _cached(settings, dataset, key)
    if hit is not None:
        media_type = "image/png" if hit.suffix == ".png" else "image/jpeg"
        return FileResponse(hit, media_type=media_type, headers={**headers, "X-Cache": "hit"})
    img = _open_image(ref.local if ref.local is not None else fetch_url(ref.uri))
    if ref.bbox is not None:
        img = _crop(img, ref.bbox)
    if size == "thumb":
        img.thumbnail((THUMB_SIZE, THUMB_SIZE))
    data, media_type, ext = _encode(img)
    _store_cache(settings, dataset, key, data, ext)
    return Response(data, media_type=media_type, headers={**headers, "X-Cache": "miss"})
