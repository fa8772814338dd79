"""A stand-in EPD for tests: a real HTTP server (stdlib ``http.server`` in a thread on a free
loopback port) that records every request and answers like a hospital's FHIR server would.

- ``POST {base}`` with a ``transaction`` Bundle: a minimal FHIR R4 transaction
  (http.html#transaction) that honours conditional creates (``request.ifNoneExist =
  identifier=<system>|<value>``: one match → ``200 OK`` and nothing created, else
  ``201 Created``), resolves ``urn:uuid`` references between the entries to the ids it
  assigns, and answers a ``transaction-response`` Bundle. A DiagnosticReport or Observation
  without ``status`` or ``code`` (both 1..1) fails the whole transaction with 400 and an
  OperationOutcome. With ``duplicates=True`` it ignores ``ifNoneExist`` and always creates (a
  server that duplicates on a second push).
- ``GET {base}/metadata``: a CapabilityStatement (FHIR 4.0.1, ``transaction``, create and
  search of DiagnosticReport and Observation); ``GET {base}/{type}?identifier=…``: a
  ``searchset`` of every resource with that identifier.
- Any other POST (a subscriber's rest-hook endpoint) is recorded and answered 200, or with
  the status given for its path in ``hook_status`` (a hook that answers 500 or refuses).
- :meth:`FakeEpd.down` answers 503 (or, with ``close=True``, drops the connection without an
  answer), :meth:`FakeEpd.slow` delays every answer, :meth:`FakeEpd.up` is back to normal;
  paths in ``failing`` are answered 503 whatever the mode (one subscriber down).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

BASE_PATH = "/fhir"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeEpd:
    url: str
    """``http://127.0.0.1:<port>``."""
    requests: list[Recorded] = field(default_factory=list)
    resources: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """What the transaction endpoint holds: type → id → resource."""
    mode: str = "up"
    delay: float = 0.0
    failing: set[str] = field(default_factory=set)
    """Paths answered 503 whatever the mode (one subscriber down, the others up)."""
    duplicates: bool = False
    """Conditional creates always create (``ifNoneExist`` ignored)."""
    hook_status: dict[str, int] = field(default_factory=dict)
    """Rest-hook path → the status it answers (default 200)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def fhir_base(self) -> str:
        return self.url + BASE_PATH

    def hook(self, name: str) -> str:
        """A rest-hook endpoint URL on this server."""
        return f"{self.url}/hooks/{name}"

    def up(self) -> None:
        self.mode, self.delay = "up", 0.0

    def down(self, *, close: bool = False) -> None:
        self.mode = "close" if close else "down"

    def slow(self, seconds: float) -> None:
        self.mode, self.delay = "up", seconds

    def posts(self, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and r.path == path]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Wait until ``predicate()`` holds (checked after each request), or the timeout."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def _record(self, item: Recorded) -> None:
        with self._lock:
            self.requests.append(item)
        with self._changed:
            self._changed.notify_all()

    # -- the transaction ---------------------------------------------------------------

    def _matches(self, kind: str, criteria: str) -> list[dict[str, Any]]:
        wanted = dict(parse_qsl(criteria))
        token = wanted.get("identifier", "")
        system, sep, value = token.partition("|")
        if not sep:
            system, value = "", token
        value = value.replace("\\|", "|").replace("\\,", ",").replace("\\\\", "\\")
        return [
            resource
            for resource in self.resources.get(kind, {}).values()
            if any(
                identifier.get("value") == value
                and (not sep or (identifier.get("system") or "") == system)
                for identifier in resource.get("identifier") or []
            )
        ]

    def _find(self, kind: str, criteria: str) -> dict[str, Any] | None:
        if self.duplicates:
            return None
        found = self._matches(kind, criteria)
        return found[0] if found else None

    def search(self, kind: str, query: str) -> dict[str, Any]:
        """A ``searchset`` of the resources of ``kind`` with the identifier in ``query``."""
        with self._lock:
            found = self._matches(kind, query)
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "entry": [
                {"fullUrl": f"{self.fhir_base}/{kind}/{r['id']}", "resource": r} for r in found
            ],
        }

    def transaction(self, bundle: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction":
            return 400, _outcome("not a transaction Bundle")
        with self._lock:
            assigned: dict[str, str] = {}
            plan: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
            for entry in bundle.get("entry") or []:
                request = entry.get("request") or {}
                kind = str(request.get("url") or "")
                if request.get("method") != "POST" or "/" in kind:
                    return 400, _outcome(f"only POST [type] is supported, not {request}")
                missing = [
                    name
                    for name in ("status", "code")
                    if kind in ("DiagnosticReport", "Observation")
                    and not (entry.get("resource") or {}).get(name)
                ]
                if missing:
                    return 400, _outcome(f"{kind}.{missing[0]} is required (1..1)")
                found = (
                    self._find(kind, str(request["ifNoneExist"]))
                    if request.get("ifNoneExist")
                    else None
                )
                if found is None:
                    new_id = uuid.uuid4().hex[:12]
                    assigned[str(entry.get("fullUrl"))] = f"{kind}/{new_id}"
                else:
                    assigned[str(entry.get("fullUrl"))] = f"{kind}/{found['id']}"
                plan.append((entry, found))
            responses = []
            for entry, found in plan:
                target = assigned[str(entry.get("fullUrl"))]
                kind, _, new_id = target.partition("/")
                if found is not None:
                    responses.append(
                        {"response": {"status": "200 OK", "location": f"{target}/_history/1"}}
                    )
                    continue
                resource = _resolve(entry["resource"], assigned)
                resource["id"] = new_id
                resource["meta"] = {"versionId": "1"}
                self.resources.setdefault(kind, {})[new_id] = resource
                responses.append(
                    {"response": {"status": "201 Created", "location": f"{target}/_history/1"}}
                )
        return 200, {
            "resourceType": "Bundle",
            "type": "transaction-response",
            "entry": responses,
        }


def _resolve(node: Any, assigned: dict[str, str]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, assigned) for item in node]
    if isinstance(node, dict):
        out = {k: _resolve(v, assigned) for k, v in node.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref in assigned:
            out["reference"] = assigned[ref]
        return out
    return node


def capability_statement() -> dict[str, Any]:
    """What the fake EPD says it does (capabilitystatement.html)."""
    resources = [
        {
            "type": kind,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{kind}",
            "interaction": [{"code": "create"}, {"code": "search-type"}],
            "conditionalCreate": True,
            "searchParam": [{"name": "identifier", "type": "token"}],
        }
        for kind in ("DiagnosticReport", "Observation")
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-01-01",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [
            {"mode": "server", "resource": resources, "interaction": [{"code": "transaction"}]}
        ],
    }


def _outcome(text: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid", "diagnostics": text}],
    }


def _handler(epd: FakeEpd) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def _answer(self, status: int, body: dict[str, Any] | None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            epd._record(Recorded("GET", parts.path, dict(self.headers), None))
            kind = parts.path.rstrip("/").removeprefix(BASE_PATH + "/")
            if kind == "metadata":
                self._answer(200, capability_statement())
            elif kind in ("DiagnosticReport", "Observation"):
                self._answer(200, epd.search(kind, parts.query))
            else:
                self._answer(404, _outcome(f"no such resource type: {kind}"))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("latin-1")
            path = urlsplit(self.path).path
            if epd.mode == "close":
                epd._record(Recorded("POST", path, dict(self.headers), body))
                self.close_connection = True
                self.connection.close()
                return
            if epd.delay:
                epd._stop.wait(epd.delay)
            if epd.mode == "down" or path in epd.failing:
                epd._record(Recorded("POST", path, dict(self.headers), body))
                self._answer(503, _outcome("the EPD is down for maintenance"))
                return
            if path.rstrip("/") == BASE_PATH and isinstance(body, dict):
                status, answer = epd.transaction(body)
                epd._record(Recorded("POST", path, dict(self.headers), body))
                self._answer(status, answer)
                return
            epd._record(Recorded("POST", path, dict(self.headers), body))
            self._answer(epd.hook_status.get(path, 200), None)

    return Handler


@contextmanager
def running_epd(*, duplicates: bool = False) -> Iterator[FakeEpd]:
    """The fake EPD on a free loopback port, for the block's duration (``duplicates``:
    :attr:`FakeEpd.duplicates`)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(FakeEpd(url="")))
    epd = FakeEpd(url=f"http://127.0.0.1:{server.server_address[1]}", duplicates=duplicates)
    server.RequestHandlerClass = _handler(epd)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield epd
    finally:
        epd._stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
