"""Two pure ASGI middlewares create_app puts in front of everything (the API, the docs, the dashboard):

``HostGuard``  refuses a request whose ``Host`` header is not a name this server answers to (400
               problem+json). A browser sends the name it resolved, so a web page that re-binds its own
               DNS name to 127.0.0.1 (DNS rebinding) still sends ``Host: evil.example`` and is refused;
               without this, its writes would even pass the cross-site check (``Origin`` equals ``Host``).
               Accepted: the loopback names (127.0.0.1, localhost, ::1, any 127.x address), the ``host``
               setting when it is a name or an address rather than a wildcard, and
               ``settings.allowed_hosts`` (``*.example.com`` matches sub-domains; ``*`` any name, unsafe).
               Ports are ignored.
``BodyLimit``  refuses a request body over ``settings.max_body_bytes`` with 413 problem+json: at once when
               ``Content-Length`` announces it (before anything reads it), otherwise (chunked) as soon as
               the bytes read pass the cap, so at most the cap is ever buffered.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from starlette.exceptions import HTTPException

from edgeminer.service.errors import BadRequest, PayloadTooLarge, problem_response
from edgeminer.service.settings import Settings

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "*"})

Scope = dict[str, Any]


def normalize_host(value: str) -> str:
    """``Host`` header or setting -> bare lower-case name: no port, no IPv6 brackets, no trailing dot."""
    host = value.strip().lower()
    if host.startswith("["):  # [::1]:8000
        end = host.find("]")
        host = host[1:end] if end > 0 else host[1:]
    elif host.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def is_loopback(host: str) -> bool:
    name = normalize_host(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def allowed_host_names(settings: Settings) -> frozenset[str]:
    """The names ``HostGuard`` accepts for these settings (patterns ``*.x`` and ``*`` kept as written)."""
    names = set(LOOPBACK_NAMES)
    host = normalize_host(settings.host)
    if host not in WILDCARD_BINDS:
        names.add(host)
    for entry in settings.allowed_hosts:
        entry = entry.strip().lower()
        if entry:
            names.add(entry if entry.startswith("*") else normalize_host(entry))
    return frozenset(names)


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    name = normalize_host(host)
    if not name:
        return False
    if is_loopback(name):
        return True
    for entry in allowed:
        if entry == "*" or entry == name:
            return True
        if entry.startswith("*.") and name.endswith(entry[1:]):
            return True
    return False


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class HostGuard:
    """Refuse requests whose Host header is not in ``allowed`` (see the module docstring)."""

    def __init__(self, app: Any, allowed: Iterable[str]):
        self.app = app
        self.allowed = frozenset(allowed)
        self.any_host = "*" in self.allowed

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if self.any_host or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        # no Host header at all: HTTP/1.0 from a script, never a browser (browsers always send one)
        if host is None or host_allowed(host, self.allowed):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        shown = host[:200]
        err = BadRequest(
            f"Host header {normalize_host(shown)!r} is not one this server answers to; add it to "
            "EDGEMINER_ALLOWED_HOSTS (or --allowed-host) on the server",
            title="Host not allowed",
            host=shown,
        )
        await problem_response(err, headers={"Connection": "close"})(scope, receive, send)


class BodyTooLarge(HTTPException):
    """Raised by BodyLimit's ``receive`` once a streamed body passes the cap; an HTTPException so that
    FastAPI's body reading re-raises it as is and the app's handler answers 413 problem+json."""

    def __init__(self, limit: int):
        super().__init__(413, detail=_too_large(limit), headers={"Connection": "close"})


def _too_large(limit: int) -> str:
    return (
        f"the request body is larger than this server's limit of {limit} bytes ({limit / 2**20:.0f} MiB); "
        "send less, or raise EDGEMINER_MAX_BODY_BYTES on the server"
    )


class BodyLimit:
    """Cap request bodies at ``max_bytes`` (0: no cap); see the module docstring."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.max_bytes:
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        length = _header(scope, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > limit:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Any, send: Any) -> None:
        err = PayloadTooLarge(_too_large(self.max_bytes), max_body_bytes=self.max_bytes)
        await problem_response(err, headers={"Connection": "close"})(scope, receive, send)
