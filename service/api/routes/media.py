"""Media: ``GET /datasets/{ds}/media/{id}?size=thumb|full`` serves a row's image.

Only files under an allowed root are ever read: ``settings.media_roots`` plus the dataset's own
``media_roots`` (the folders its sources live in). A stored uri is refused (403) when it contains a
``..`` component, when it is outside every root before resolving, or when it resolves (symlinks
followed) outside every resolved root; a file that is inside but missing is a 404. ``file://`` uris are
taken literally (never percent-decoded, like the ingest pipeline does), so an encoded slash is just a
character of a file name. The request's id is only ever a database key, never part of a path: the
cache file name is a hash.

http(s) uris are fetched only when ``settings.allow_url_fetch``, and never from a host that resolves
to a loopback, private, link-local, reserved or multicast address (each redirect is checked again, and
the connection goes to the checked address, so DNS rebinding cannot swap it);
other schemes (s3://...) are not served.

Object rows (detection data) are cropped from their image by ``bbox`` [x, y, w, h]; a row without a
uri uses its parent's. Thumbnails (at most ``THUMB_SIZE`` px a side) and crops are made once and cached
under ``settings.thumbnail_cache`` keyed by the uri, the file's size and mtime, the box and the size.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import math
import mimetypes
import os
import socket
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urljoin, urlsplit

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, Response

from edgeminer.indexer.store import DatasetInfo, Store
from edgeminer.service.api.deps import SettingsDep, StoreDep
from edgeminer.service.api.models import problems
from edgeminer.service.errors import MediaNotFound, MediaOutsideRoots, SampleNotFound, Unsupported, ValidationFailed
from edgeminer.service.settings import Settings

router = APIRouter(tags=["media"])

THUMB_SIZE = 256
CACHE_VERSION = "1"
MAX_REMOTE_BYTES = 32 * 1024 * 1024
MAX_REDIRECTS = 3
CACHE_CONTROL = "private, max-age=86400"
IMAGE_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp", "BMP": "image/bmp"}


# ---------------------------------------------------------------------------------------------
# where a uri may be read from
# ---------------------------------------------------------------------------------------------


def allowed_roots(settings: Settings, info: DatasetInfo | None) -> list[tuple[str, str]]:
    """(absolute, resolved) pairs of every root the media of ``info`` may come from."""
    roots = [*settings.media_roots, *((info.media_roots if info else []) or [])]
    out = []
    for root in roots:
        if not root or "://" in root:
            continue
        absolute = os.path.abspath(os.path.expanduser(root))
        out.append((absolute, os.path.realpath(absolute)))
    return list(dict.fromkeys(out))


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def safe_local_path(uri: str, roots: list[tuple[str, str]]) -> Path:
    """The real path of a local uri if (and only if) it lies under an allowed root."""
    raw = uri[len("file://") :] if uri.startswith("file://") else uri
    if not raw or "\x00" in raw:
        raise MediaOutsideRoots("the stored uri is empty or not a valid path")
    if ".." in PurePosixPath(raw).parts:
        raise MediaOutsideRoots("the stored uri contains '..'; media paths must point inside the media roots")
    if not roots:
        raise MediaOutsideRoots(
            "no media roots are configured for this dataset: start the server with --media-root FOLDER "
            "(or EDGEMINER_MEDIA_ROOTS) to serve its images"
        )
    candidates = [raw] if os.path.isabs(raw) else [os.path.join(absolute, raw) for absolute, _ in roots]
    inside = False
    for cand in candidates:
        lexical = os.path.abspath(cand)
        if not any(_under(lexical, a) or _under(lexical, r) for a, r in roots):
            continue
        inside = True
        real = os.path.realpath(lexical)
        if not any(_under(real, r) for _, r in roots):
            raise MediaOutsideRoots("the file resolves (through a symlink) to a place outside the media roots")
        if os.path.isfile(real):
            return Path(real)
    if not inside:
        raise MediaOutsideRoots("the file is outside the media roots this server may read")
    raise MediaNotFound("the image file of this row no longer exists under the media roots")


def check_public_url(url: str) -> list[str]:
    """Refuse URLs whose host resolves to a non-public address (SSRF guard); returns the addresses."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MediaOutsideRoots(f"only http(s) URLs with a host are fetched, not {parts.scheme or 'this'!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise MediaNotFound(f"the image host cannot be resolved ({exc})") from None
    addresses = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        mapped = getattr(address, "ipv4_mapped", None)
        for a in (address, mapped) if mapped else (address,):
            if not a.is_global or a.is_multicast or a.is_loopback or a.is_link_local or a.is_private:
                raise MediaOutsideRoots("the image URL points at a private, loopback or link-local address")
        addresses.append(str(address))
    if not addresses:
        raise MediaNotFound("the image host has no address")
    return list(dict.fromkeys(addresses))


def pinned_request(url: str, address: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """The URL rewritten to the checked address (so a second DNS answer cannot point elsewhere: DNS
    rebinding), with the Host header and the TLS server name of the original host."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = f"[{address}]" if ":" in address else address
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    pinned = parts._replace(netloc=netloc).geturl()
    host_header = host if parts.port is None else f"{host}:{parts.port}"
    if ":" in host:
        host_header = f"[{host}]" if parts.port is None else f"[{host}]:{parts.port}"
    return pinned, {"Host": host_header}, {"sni_hostname": host}


def fetch_url(url: str) -> bytes:
    import httpx

    for _ in range(MAX_REDIRECTS + 1):
        address = check_public_url(url)[0]
        pinned, headers, extensions = pinned_request(url, address)
        with httpx.Client(timeout=10.0, follow_redirects=False, trust_env=False) as client:
            with client.stream("GET", pinned, headers=headers, extensions=extensions) as resp:
                if resp.is_redirect and resp.headers.get("location"):
                    url = urljoin(url, resp.headers["location"])
                    continue
                if resp.status_code != 200:
                    raise MediaNotFound(f"the image URL answered HTTP {resp.status_code}")
                data = bytearray()
                for chunk in resp.iter_bytes():
                    data.extend(chunk)
                    if len(data) > MAX_REMOTE_BYTES:
                        raise Unsupported(f"the remote image is larger than {MAX_REMOTE_BYTES >> 20} MB")
                return bytes(data)
    raise MediaNotFound(f"the image URL redirects more than {MAX_REDIRECTS} times")


# ---------------------------------------------------------------------------------------------
# the row's image
# ---------------------------------------------------------------------------------------------


@dataclass
class MediaRef:
    uri: str
    bbox: list[float] | None
    local: Path | None  # resolved, checked local file; None for a remote uri


def media_ref(store: Store, settings: Settings, dataset: str, sample_id: str) -> MediaRef:
    info = store.get_dataset(dataset)
    table = store.get_samples(dataset, [sample_id], columns=["id", "uri", "parent_id", "bbox"])
    if table.num_rows == 0:
        raise SampleNotFound(dataset, sample_id)
    row = table.to_pylist()[0]
    uri = row.get("uri")
    if not uri and row.get("parent_id"):
        parent = store.get_samples(dataset, [row["parent_id"]], columns=["id", "uri"]).to_pylist()
        uri = parent[0]["uri"] if parent else None
    if not uri:
        raise MediaNotFound(f"sample {sample_id!r} has no image uri (nor a parent with one)")
    bbox = row.get("bbox")
    if bbox is not None:
        bbox = check_bbox(bbox, sample_id)
    if uri.startswith(("http://", "https://")):
        if not settings.allow_url_fetch:
            raise MediaOutsideRoots(
                "this image is a remote URL and the server does not fetch URLs "
                "(start it with --allow-url-fetch to allow public hosts)"
            )
        return MediaRef(uri, bbox, None)
    if "://" in uri and not uri.startswith("file://"):
        raise Unsupported(f"images at {uri.split('://', 1)[0]}:// URIs are not served; use local files or http(s)")
    return MediaRef(uri, bbox, safe_local_path(uri, allowed_roots(settings, info)))


def check_bbox(bbox: Any, sample_id: str) -> list[float]:
    """An object row's stored box as four finite numbers with a positive width and height; anything
    else (NaN, Infinity, a negative size, written by a tool that bypassed ingest's checks) is a 422
    naming the field, never a crash in the crop."""
    try:
        box = [float(v) for v in bbox]
    except (TypeError, ValueError):
        box = []
    if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
        raise ValidationFailed(
            f"sample {sample_id!r} has an unusable bbox {list(bbox) if isinstance(bbox, list) else bbox!r}: "
            "a box is [x, y, w, h] in pixels, finite, with w and h > 0; fix the row (re-ingest it) to see its crop",
            title="Invalid box",
            field="bbox",
            sample_id=sample_id,
        )
    return box


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
