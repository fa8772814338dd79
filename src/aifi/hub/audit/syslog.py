"""The audit trail as DICOM audit messages over syslog, for a hospital's ATNA audit record
repository (IHE ITI-20 Record Audit Event).

- Message: DICOM PS3.15 A.5.1 ``AuditMessage`` (the RFC 3881 schema as DICOM extends it):
  ``EventIdentification`` (EventActionCode, EventDateTime, EventOutcomeIndicator, with
  ``EventID`` and ``EventTypeCode``), one ``ActiveParticipant`` per agent (UserID,
  UserIsRequestor, NetworkAccessPointID/TypeCode, ``RoleIDCode``), ``AuditSourceIdentification``
  and ``ParticipantObjectIdentification`` for the patient (type 1, role 1, ID type code 2
  "Patient Number"), the study (type 2, role 3, ID type code DCM 110180 "Study Instance
  UID"), the query of a search (type 2, role 24, ``ParticipantObjectQuery`` base64, ID type
  DCM 110181 "SOP Class UID" for QIDO-RS per A.5.3.12) and the other objects. Built with
  :mod:`xml.etree.ElementTree`.
- Framing: RFC 5424 (``<85>1 TIMESTAMP HOSTNAME aifi-hub PROCID IHE+RFC-3881 - BOM XML``:
  facility 10 security/authorization, severity 5 notice, as ITI-20 asks).
- Transports: UDP (RFC 5426, one message per datagram), TCP with octet-counting framing
  (RFC 6587 §3.4.1) and TLS (RFC 5425, the same framing): ``udp://host:514``,
  ``tcp://host:601``, ``tls://host:6514``.

:class:`SyslogExporter` sends the rows after its cursor (``audit_cursor``, one per
destination) and moves the cursor after each batch was sent: at-least-once (a crash between
the send and the cursor's commit sends that batch again).
"""

from __future__ import annotations

import base64
import os
import socket
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from sqlmodel import col, select

from aifi.clock import Clock, utc_now
from aifi.hub.audit.events import (
    DCM_EVENTS,
    DESTINATION_ROLE,
    REST,
    SOURCE_ROLE,
    STUDY_ROOT_FIND,
    UNKNOWN,
    AuditEntry,
)
from aifi.hub.audit.rows import entry_of_row
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import AuditCursor, AuditRecord

FACILITY = 10
"""security/authorization messages (RFC 5424 §6.2.1); ITI-20."""
SEVERITY = 5
"""notice."""
MSGID = "IHE+RFC-3881"
APP_NAME = "aifi-hub"
BOM = b"\xef\xbb\xbf"
"""RFC 5424 §6.4: an UTF-8 MSG starts with the byte order mark."""
UDP_MAX = 65507
DEFAULT_PORTS = {"udp": 514, "tcp": 601, "tls": 6514}


def _code(parent: ET.Element, tag: str, code: str, system: str, text: str) -> ET.Element:
    """A coded element of PS3.15 A.5.1 (``csd-code``, ``codeSystemName``, ``originalText``)."""
    return ET.SubElement(
        parent,
        tag,
        {"csd-code": code, "codeSystemName": system, "originalText": text},
    )


def _participant(
    root: ET.Element,
    object_id: str,
    type_code: str,
    role: str,
    id_type: tuple[str, str, str],
    *,
    query: str | None = None,
    name: str | None = None,
) -> ET.Element:
    element = ET.SubElement(
        root,
        "ParticipantObjectIdentification",
        {
            "ParticipantObjectID": object_id,
            "ParticipantObjectTypeCode": type_code,
            "ParticipantObjectTypeCodeRole": role,
        },
    )
    _code(element, "ParticipantObjectIDTypeCode", *id_type)
    if name:
        ET.SubElement(element, "ParticipantObjectName").text = name
    if query is not None:
        ET.SubElement(element, "ParticipantObjectQuery").text = base64.b64encode(
            query.encode()
        ).decode()
    return element


def _address_type(address: str) -> str:
    """NetworkAccessPointTypeCode: 1 machine name, 2 IP address, 5 URI."""
    if "://" in address:
        return "5"
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)
        return "2"
    except OSError:
        return "1"


def audit_message(entry: AuditEntry, *, source_id: str = APP_NAME) -> bytes:
    """The DICOM PS3.15 A.5.1 AuditMessage of one record, UTF-8 XML."""
    root = ET.Element("AuditMessage")
    event = ET.SubElement(
        root,
        "EventIdentification",
        {
            "EventActionCode": entry.action,
            "EventDateTime": entry.recorded_at.astimezone(UTC).isoformat(timespec="milliseconds"),
            "EventOutcomeIndicator": str(entry.outcome),
        },
    )
    if entry.event_code == REST:  # a FHIR access: BALP's type, with a DICOM Event ID
        event_id = {"R": "110103", "E": "110112", "C": "110103"}.get(entry.action, "110103")
        _code(event, "EventID", event_id, "DCM", DCM_EVENTS[event_id])
        _code(event, "EventTypeCode", REST, "audit-event-type", "RESTful Operation")
        _code(event, "EventTypeCode", entry.subtype, "restful-interaction", entry.subtype)
    else:
        _code(event, "EventID", entry.event_code, "DCM", DCM_EVENTS.get(entry.event_code, ""))
        _code(event, "EventTypeCode", entry.subtype, "aifi-audit-subtype", entry.subtype)
    hub = {"UserID": source_id, "UserIsRequestor": "false"}
    if entry.is_export:
        target = entry.destination or {}
        hub["UserIsRequestor"] = "true"
        requestor = ET.SubElement(root, "ActiveParticipant", hub)
        _code(requestor, "RoleIDCode", *SOURCE_ROLE[:1], "DCM", SOURCE_ROLE[1])
        other = {"UserID": target.get("id") or UNKNOWN, "UserIsRequestor": "false"}
        if target.get("address"):
            other["NetworkAccessPointID"] = target["address"]
            other["NetworkAccessPointTypeCode"] = _address_type(target["address"])
        receiver = ET.SubElement(root, "ActiveParticipant", other)
        _code(receiver, "RoleIDCode", *DESTINATION_ROLE[:1], "DCM", DESTINATION_ROLE[1])
    else:
        client = {"UserID": entry.client_id, "UserIsRequestor": "true"}
        if entry.role:
            client["AlternativeUserID"] = entry.role
        if entry.address:
            client["NetworkAccessPointID"] = entry.address
            client["NetworkAccessPointTypeCode"] = _address_type(entry.address)
        requestor = ET.SubElement(root, "ActiveParticipant", client)
        _code(requestor, "RoleIDCode", *SOURCE_ROLE[:1], "DCM", SOURCE_ROLE[1])
        server = ET.SubElement(root, "ActiveParticipant", hub)
        _code(server, "RoleIDCode", *DESTINATION_ROLE[:1], "DCM", DESTINATION_ROLE[1])
    source = ET.SubElement(
        root,
        "AuditSourceIdentification",
        {"AuditSourceID": source_id, "AuditEnterpriseSiteID": entry.tenant or UNKNOWN},
    )
    _code(source, "AuditSourceTypeCode", "4", "DCM", "Application Server")
    if entry.patient_id:
        patient_id = (
            f"{entry.patient_id}^^^{entry.patient_issuer}"
            if entry.patient_issuer
            else entry.patient_id
        )
        _participant(root, patient_id, "1", "1", ("2", "RFC-3881", "Patient Number"))
    studies = [entry.study_uid] if entry.study_uid else []
    studies += [e["id"] for e in entry.entities if e.get("kind") == "study"]
    for uid in dict.fromkeys(studies):
        _participant(root, uid, "2", "3", ("110180", "DCM", "Study Instance UID"))
    for item in entry.entities:
        kind, value = item.get("kind"), item.get("id", "")
        if kind == "fhir":
            _participant(
                root,
                f"{item.get('type')}/{value}",
                "2",
                "4",
                ("rest", "audit-event-type", "RESTful Operation"),
                name=item.get("type"),
            )
        elif kind in ("workitem", "series", "instance"):
            names = {"workitem": "UPS workitem", "series": "Series", "instance": "SOP Instance"}
            _participant(root, value, "2", "4", ("uid", "urn:dicom:uid", names[str(kind)]))
    if entry.interaction == "search":
        if entry.event_code == REST:
            object_id, id_type = entry.path, ("rest", "audit-event-type", "RESTful Operation")
        else:
            object_id, id_type = STUDY_ROOT_FIND, ("110181", "DCM", "SOP Class UID")
        _participant(root, object_id, "2", "24", id_type, query=entry.query or "")
    message: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return message


def syslog_frame(
    payload: bytes,
    *,
    timestamp: datetime,
    hostname: str | None = None,
    app_name: str = APP_NAME,
    procid: str | None = None,
    msgid: str = MSGID,
) -> bytes:
    """One RFC 5424 §6 message: ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG``
    with no structured data and an UTF-8 (BOM) MSG."""
    pri = FACILITY * 8 + SEVERITY
    host = (hostname or socket.gethostname() or "-")[:255].replace(" ", "-")
    header = (
        f"<{pri}>1 {timestamp.astimezone(UTC).isoformat(timespec='milliseconds')} {host} "
        f"{app_name[:48]} {procid or os.getpid()} {msgid[:32]} -"
    )
    return header.encode("ascii", "replace") + b" " + BOM + payload


@dataclass(frozen=True, slots=True)
class SyslogTarget:
    """Where to send: ``udp://host:514``, ``tcp://host:601`` or ``tls://host:6514``."""

    transport: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> SyslogTarget:
        parts = urlsplit(url)
        transport = parts.scheme.lower()
        if transport not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(
                f"audit syslog URL {url!r}: expected udp://host:port, tcp://host:port or "
                "tls://host:port"
            )
        return cls(transport, parts.hostname, parts.port or DEFAULT_PORTS[transport])

    def __str__(self) -> str:
        return f"{self.transport}://{self.host}:{self.port}"


class SyslogSender:
    """Sends framed messages to one target; a stream connection is opened on first use and
    kept (closed with :meth:`close`)."""

    def __init__(
        self, target: SyslogTarget, *, timeout: float = 10.0, ca_file: Path | None = None
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.ca_file = ca_file
        self._socket: socket.socket | None = None

    def _connect(self) -> socket.socket:
        if self._socket is not None:
            return self._socket
        if self.target.transport == "udp":
            sock = socket.socket(
                socket.AF_INET6 if ":" in self.target.host else socket.AF_INET,
                socket.SOCK_DGRAM,
            )
            sock.settimeout(self.timeout)
            sock.connect((self.target.host, self.target.port))
        else:
            sock = socket.create_connection(
                (self.target.host, self.target.port), timeout=self.timeout
            )
            if self.target.transport == "tls":  # RFC 5425 §5: server authenticated by X.509
                context = ssl.create_default_context(
                    cafile=str(self.ca_file) if self.ca_file else None
                )
                sock = context.wrap_socket(sock, server_hostname=self.target.host)
        self._socket = sock
        return sock

    def send(self, message: bytes) -> None:
        """Send one RFC 5424 message (octet-counted on TCP/TLS, RFC 6587 §3.4.1)."""
        sock = self._connect()
        try:
            if self.target.transport == "udp":
                if len(message) > UDP_MAX:
                    raise ValueError(f"audit message of {len(message)} bytes exceeds a datagram")
                sock.send(message)
            else:
                sock.sendall(str(len(message)).encode("ascii") + b" " + message)
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            finally:
                self._socket = None


class SyslogExporter:
    """Sends the audit rows after its cursor to one syslog target (module docstring).

    ``tenant`` limits the export to one hospital's rows; ``since`` to rows recorded from
    then on. ``cursor_name`` (default ``syslog <url>[ <tenant>]``) names the position kept
    in ``audit_cursor``; ``use_cursor=False`` exports once without keeping one. ``ca_file``
    holds the CA certificates of a TLS target; ``clock`` dates the cursor's moves."""

    def __init__(
        self,
        db: Database,
        url: str,
        *,
        tenant: str | None = None,
        since: datetime | None = None,
        use_cursor: bool = True,
        source_id: str = APP_NAME,
        batch_size: int = 200,
        ca_file: Path | None = None,
        hostname: str | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.db = db
        self.target = SyslogTarget.parse(url)
        self.tenant = tenant
        self.since = since
        self.use_cursor = use_cursor
        self.cursor_name = f"syslog {self.target}" + (f" {tenant}" if tenant else "")
        self.source_id = source_id
        self.batch_size = batch_size
        self.hostname = hostname
        self.clock = clock
        self.sender = SyslogSender(self.target, ca_file=ca_file)
        self._position = 0

    def _cursor(self) -> int:
        if not self.use_cursor:
            return self._position
        with self.db.read() as session:
            found = session.exec(
                select(AuditCursor.last_pk).where(col(AuditCursor.name) == self.cursor_name)
            ).first()
        return int(found or 0)

    def _advance(self, last_pk: int) -> None:
        self._position = last_pk
        if not self.use_cursor:
            return
        with self.db.write() as session:
            cursor = session.exec(
                select(AuditCursor).where(col(AuditCursor.name) == self.cursor_name)
            ).first()
            if cursor is None:
                cursor = AuditCursor(name=self.cursor_name, last_pk=last_pk)
            elif cursor.last_pk >= last_pk:
                return
            cursor.last_pk = last_pk
            cursor.updated_at = self.clock()
            session.add(cursor)

    def _batch(self, after: int) -> list[AuditRecord]:
        with self.db.read() as session:
            stmt = (
                select(AuditRecord)
                .where(col(AuditRecord.pk) > after)
                .order_by(col(AuditRecord.pk))
                .limit(self.batch_size)
            )
            if self.tenant is not None:
                stmt = stmt.where(col(AuditRecord.tenant) == self.tenant)
            if self.since is not None:
                stmt = stmt.where(col(AuditRecord.recorded_at) >= self.since)
            return list(session.exec(stmt).all())

    def messages(self, rows: list[AuditRecord]) -> Iterator[bytes]:
        for row in rows:
            entry = entry_of_row(row)
            yield syslog_frame(
                audit_message(entry, source_id=self.source_id),
                timestamp=entry.recorded_at,
                hostname=self.hostname,
            )

    def export_pending(self) -> int:
        """Send every row after the cursor, batch by batch; returns how many were sent.
        A send error propagates (the cursor stays at the last batch fully sent)."""
        sent = 0
        after = self._cursor()
        try:
            while True:
                rows = self._batch(after)
                if not rows:
                    return sent
                for message in self.messages(rows):
                    self.sender.send(message)
                after = int(rows[-1].pk or after)
                self._advance(after)
                sent += len(rows)
        finally:
            if self.target.transport != "udp":
                self.sender.close()

    def close(self) -> None:
        self.sender.close()


@contextmanager
def exporter(db: Database, url: str, **kwargs: object) -> Iterator[SyslogExporter]:
    """A :class:`SyslogExporter`, closed afterwards."""
    instance = SyslogExporter(db, url, **kwargs)  # type: ignore[arg-type]
    try:
        yield instance
    finally:
        instance.close()


__all__ = [
    "FACILITY",
    "MSGID",
    "SEVERITY",
    "SyslogExporter",
    "SyslogSender",
    "SyslogTarget",
    "audit_message",
    "exporter",
    "syslog_frame",
]
