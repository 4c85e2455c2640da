"""Where a sample's image may be read from: the media-roots rule and the URL guard, for every reader
of media (the media route, the stream's server-side uris, an export copying files). No HTTP here.

Local files: only files under an allowed root are ever read: ``settings.media_roots`` plus the dataset's
own ``media_roots`` (the folders its sources live in). A uri is refused (:class:`MediaOutsideRoots`,
403) when it contains a ``..`` component, when it is outside every root before resolving, or when it
resolves (symlinks followed) outside every resolved root; a file that is inside but missing is
:class:`MediaNotFound` (404). ``file://`` uris are taken literally (never percent-decoded, like the
ingest pipeline does), so an encoded slash is just a character of a file name. "Under a root" is the
rule of indexer/roots.py, the one the ingest roots use too.

URLs: http(s) uris are fetched only when ``settings.allow_url_fetch``, and never from a host that
resolves to a loopback, private, link-local, reserved or multicast address (each redirect is checked
again, and the connection goes to the checked address, so DNS rebinding cannot swap it); other schemes
(s3://...) are not served.

Object rows (detection data) have no uri of their own: :func:`media_ref` uses the parent's, with the
row's checked ``bbox``.
"""

from __future__ import annotations

import ipaddress
import math
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urljoin, urlsplit

from edgeminer.indexer.roots import is_under, root_pairs
from edgeminer.indexer.store import DatasetInfo, Store
from edgeminer.service.errors import MediaNotFound, MediaOutsideRoots, SampleNotFound, Unsupported, ValidationFailed
from edgeminer.service.settings import Settings

MAX_REMOTE_BYTES = 32 * 1024 * 1024
MAX_REDIRECTS = 3


# ---------------------------------------------------------------------------------------------
# where a uri may be read from
# ---------------------------------------------------------------------------------------------


def allowed_roots(extra_roots: Sequence[str], info: DatasetInfo | None) -> list[tuple[str, str]]:
    """(absolute, resolved) pairs of every root the media of ``info`` may come from: ``extra_roots``
    (``settings.media_roots``) and the dataset's own ``media_roots``."""
    return root_pairs([*extra_roots, *((info.media_roots if info else []) or [])])


def safe_local_path(uri: str, roots: Sequence[tuple[str, str]]) -> Path:
    """The real path of a local uri if (and only if) it lies under an allowed root (pairs from
    :func:`allowed_roots` or :func:`edgeminer.indexer.roots.root_pairs`). A relative uri is looked up under
    each root in turn; an absolute one must be under a root before and after resolving."""
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
        if not any(is_under(lexical, a) or is_under(lexical, r) for a, r in roots):
            continue
        inside = True
        real = os.path.realpath(lexical)
        if not any(is_under(real, r) for _, r in roots):
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
    return MediaRef(uri, bbox, safe_local_path(uri, allowed_roots(settings.media_roots, info)))


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
