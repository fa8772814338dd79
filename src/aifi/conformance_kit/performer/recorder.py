"""What the product did, seen at the kit's hub: an ASGI middleware in front of the hub's app
that records every request the product makes (:class:`Exchange`: method, path, query,
status, the hub's Warning, times, and the bodies the kit needs — claims, updates, stored
results, refusals) and can *hold* a request until the kit lets it go.

Holding makes the timing cases deterministic: the kit holds the product's retrieval of one
workitem's inputs while it requests the cancellation (so the product is certainly busy with
that workitem when the Cancel Request arrives, PS3.4 CC.2.4.2) or raises another item's
priority (so a HIGH item certainly arrives while the product is busy).

The kit's own requests carry :data:`KIT_AGENT` as User-Agent and are not recorded. The
middleware adds no work to a request it does not record beyond one header look-up; a request
body is kept only for the methods that change something (PUT, POST), up to
:data:`BODY_LIMIT` bytes in memory, and STOW-RS bodies in a file (results can be large).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

KIT_AGENT = "aifi-conformance-kit"
_STOW = re.compile(r"/studies(/[0-9.]+)?/?$")
"""STOW-RS: ``POST …/studies`` or ``POST …/studies/{StudyInstanceUID}`` (PS3.18 §10.5)."""
BODY_LIMIT = 256 * 1024
"""Request and response bodies kept in memory (JSON: claims, updates, STOW responses)."""


@dataclass
class Exchange:
    """One request of the product and the hub's answer."""

    seq: int
    method: str
    path: str
    query: str
    started: float
    """``time.monotonic()`` when the request arrived."""
    finished: float = 0.0
    status: int = 0
    warning: str = ""
    body: bytes = b""
    """The request body (PUT/POST, up to :data:`BODY_LIMIT`; STOW-RS: see :attr:`body_file`)."""
    body_file: Path | None = None
    content_type: str = ""
    response: bytes = b""
    """The answer's body when it is small and not DICOM (JSON, an error text)."""
    held: float = 0.0
    """Seconds the kit held this request (not the product's time)."""

    def evidence(self) -> dict[str, Any]:
        """A short form for the report."""
        item: dict[str, Any] = {"request": f"{self.method} {self.path}", "status": self.status}
        if self.query:
            item["query"] = self.query
        if self.warning:
            item["warning"] = self.warning
        if self.status >= 400 and self.response:
            item["answer"] = self.response[:500].decode(errors="replace")
        return item


@dataclass
class Hold:
    """Requests matching ``matches`` wait until :meth:`release` (or ``limit`` seconds)."""

    matches: Callable[[str, str], bool]
    """(method, path) → hold this one."""
    limit: float = 60.0
    released: threading.Event = field(default_factory=threading.Event)
    caught: threading.Event = field(default_factory=threading.Event)
    """Set when a request was caught: the product is busy with it."""

    def release(self) -> None:
        self.released.set()


class Recorder:
    """The middleware (``Recorder(app, folder)``) and the record the kit reads."""

    def __init__(self, app: ASGIApp, folder: Path) -> None:
        self.app = app
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.exchanges: list[Exchange] = []
        self.holds: list[Hold] = []
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)

    # -- reading the record (kit thread) ------------------------------------------------------

    def snapshot(self) -> list[Exchange]:
        with self._lock:
            return [exchange for exchange in self.exchanges if exchange.finished]

    def wait_for(self, predicate: Callable[[list[Exchange]], Any], timeout: float) -> Any:
        """Until ``predicate`` (over the finished exchanges) is truthy; returns its value,
        or None at the deadline."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                value = predicate([e for e in self.exchanges if e.finished])
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.changed.wait(min(left, 0.5))

    def hold(self, matches: Callable[[str, str], bool], limit: float = 60.0) -> Hold:
        made = Hold(matches, limit)
        with self._lock:
            self.holds.append(made)
        return made

    # -- the middleware (server thread) -------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _header(scope, b"user-agent").startswith(KIT_AGENT):
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        exchange = Exchange(
            seq=next(self._seq),
            method=method,
            path=path,
            query=scope.get("query_string", b"").decode(errors="replace"),
            started=time.monotonic(),
            content_type=_header(scope, b"content-type"),
        )
        with self._lock:
            self.exchanges.append(exchange)
        await self._held(exchange)
        sink = None
        if method == "POST" and _STOW.search(path):
            exchange.body_file = self.folder / f"stow-{exchange.seq}.bin"
            sink = exchange.body_file.open("wb")

        async def receiving() -> Message:
            message = await receive()
            if message["type"] == "http.request" and method in ("PUT", "POST"):
                chunk = message.get("body", b"")
                if sink is not None:
                    sink.write(chunk)
                elif len(exchange.body) < BODY_LIMIT:
                    exchange.body += chunk[: BODY_LIMIT - len(exchange.body)]
            return message

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = int(message["status"])
                for name, value in message.get("headers", []):
                    if name.lower() == b"warning":
                        exchange.warning = value.decode(errors="replace")
                    elif name.lower() == b"content-type" and b'dicom"' in value:
                        exchange.response = b"-"  # a DICOM answer: not kept
            elif (
                message["type"] == "http.response.body"
                and exchange.response != b"-"
                and len(exchange.response) < BODY_LIMIT
            ):
                exchange.response += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, receiving, sending)
        finally:
            if sink is not None:
                sink.close()
            if exchange.response == b"-":
                exchange.response = b""
            exchange.finished = time.monotonic()
            with self.changed:
                self.changed.notify_all()

    async def _held(self, exchange: Exchange) -> None:
        with self._lock:
            holds = [h for h in self.holds if not h.released.is_set()]
        for hold in holds:
            if hold.matches(exchange.method, exchange.path):
                hold.caught.set()
                started = time.monotonic()
                while not hold.released.is_set() and time.monotonic() - started < hold.limit:
                    await asyncio.sleep(0.02)
                exchange.held += time.monotonic() - started


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode(errors="replace"))
    return ""
