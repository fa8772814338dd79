"""DICOM audit messages (PS3.15 A.5.1) in RFC 5424 syslog frames, sent to real UDP (RFC 5426)
and TCP (RFC 6587 octet counting) listeners opened by the test, resuming from the cursor."""

from __future__ import annotations

import base64
import re
import socket
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aifi.hub.audit.events import AuditEntry
from aifi.hub.audit.syslog import SyslogExporter, SyslogTarget, audit_message, syslog_frame
from aifi.hub.audit.trail import AuditTrail
from aifi.hub.persistence.database import Database
from tests.support.wait import wait_until

RFC5424 = re.compile(
    rb"^<85>1 (?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00) (?P<host>\S+) aifi-hub "
    rb"(?P<proc>\d+) IHE\+RFC-3881 - \xef\xbb\xbf(?P<msg><AuditMessage>.*</AuditMessage>)$",
    re.S,
)
STUDY = "1.2.826.0.1.3680043.8.498.777"


def query_entry(**kwargs: object) -> AuditEntry:
    values: dict[str, object] = {
        "action": "E",
        "interaction": "search",
        "event_code": "110112",
        "subtype": "QIDO-RS",
        "outcome": 0,
        "client_id": "ris-gateway",
        "tenant": "north",
        "role": "hospital",
        "address": "192.0.2.7",
        "method": "GET",
        "path": "/dicomweb/studies",
        "patient_id": "PID-9",
        "patient_issuer": "NORTH",
        "study_uid": STUDY,
        "query": "PatientID=PID-9",
        "recorded_at": datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
    }
    return AuditEntry(**(values | kwargs))  # type: ignore[arg-type]


def participants(root: ET.Element) -> dict[str, ET.Element]:
    return {
        p.attrib["ParticipantObjectTypeCodeRole"]: p
        for p in root.findall("ParticipantObjectIdentification")
    }


def check_message(xml: bytes) -> ET.Element:
    """The elements PS3.15 A.5.1 requires of every audit message."""
    root = ET.fromstring(xml)
    assert root.tag == "AuditMessage"
    event = root.find("EventIdentification")
    assert event is not None
    assert set(event.attrib) >= {"EventActionCode", "EventDateTime", "EventOutcomeIndicator"}
    assert event.find("EventID") is not None
    assert event.find("EventTypeCode") is not None
    actives = root.findall("ActiveParticipant")
    assert len(actives) == 2
    assert [a.attrib["UserIsRequestor"] for a in actives] == ["true", "false"]
    assert all(a.find("RoleIDCode") is not None for a in actives)
    assert root.find("AuditSourceIdentification") is not None
    return root


def test_a_query_becomes_a_dicom_audit_message():
    root = check_message(audit_message(query_entry()))
    event = root.find("EventIdentification")
    assert event is not None
    assert event.attrib == {
        "EventActionCode": "E",
        "EventDateTime": "2026-03-01T12:00:00.000+00:00",
        "EventOutcomeIndicator": "0",
    }
    event_id = event.find("EventID")
    assert event_id is not None
    assert (event_id.attrib["csd-code"], event_id.attrib["codeSystemName"]) == ("110112", "DCM")
    client = root.findall("ActiveParticipant")[0]
    assert client.attrib["UserID"] == "ris-gateway"
    assert client.attrib["NetworkAccessPointID"] == "192.0.2.7"
    assert client.attrib["NetworkAccessPointTypeCode"] == "2"
    objects = participants(root)
    patient = objects["1"]
    assert patient.attrib["ParticipantObjectTypeCode"] == "1"
    assert patient.attrib["ParticipantObjectID"] == "PID-9^^^NORTH"
    id_type = patient.find("ParticipantObjectIDTypeCode")
    assert id_type is not None and id_type.attrib["csd-code"] == "2"
    study = objects["3"]
    assert study.attrib["ParticipantObjectTypeCode"] == "2"
    assert study.attrib["ParticipantObjectID"] == STUDY
    id_type = study.find("ParticipantObjectIDTypeCode")
    assert id_type is not None and id_type.attrib["csd-code"] == "110180"
    query = objects["24"].find("ParticipantObjectQuery")
    assert query is not None and base64.b64decode(query.text or "") == b"PatientID=PID-9"
    source = root.find("AuditSourceIdentification")
    assert source is not None and source.attrib["AuditEnterpriseSiteID"] == "north"


def test_an_export_names_the_hub_as_requestor_and_the_destination():
    entry = query_entry(
        action="R",
        interaction="export",
        event_code="110104",
        subtype="PACS delivery",
        client_id="aifi-hub",
        address=None,
        query=None,
        entities=({"kind": "destination", "id": "pacs-a", "address": "http://pacs.invalid"},),
    )
    root = check_message(audit_message(entry))
    hub, pacs = root.findall("ActiveParticipant")
    assert hub.attrib["UserID"] == "aifi-hub"
    assert pacs.attrib["UserID"] == "pacs-a"
    assert pacs.attrib["NetworkAccessPointTypeCode"] == "5"
    assert "24" not in participants(root)


def test_syslog_frame_is_rfc_5424():
    frame = syslog_frame(b"<AuditMessage/>", timestamp=datetime(2026, 3, 1, tzinfo=UTC))
    assert frame.startswith(b"<85>1 2026-03-01T00:00:00.000+00:00 ")
    assert b" aifi-hub " in frame and b" IHE+RFC-3881 - \xef\xbb\xbf<AuditMessage/>" in frame


@pytest.mark.parametrize("url", ["http://x:1", "udp://", "ftp://host"])
def test_bad_syslog_urls_are_refused(url: str):
    with pytest.raises(ValueError, match="udp://host:port"):
        SyslogTarget.parse(url)


# -- real sockets -------------------------------------------------------------------------


class Listener:
    """A syslog receiver on a free loopback port: UDP datagrams, or TCP octet-counted."""

    def __init__(self, transport: str) -> None:
        self.transport = transport
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        if transport == "tcp":
            self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.messages: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.transport}://127.0.0.1:{self.port}"

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                if self.transport == "udp":
                    self.messages.append(self.sock.recv(65535))
                    continue
                connection, _ = self.sock.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(5)
                buffer = b""
                while chunk := connection.recv(65536):
                    buffer += chunk
                while buffer:  # RFC 6587 §3.4.1: MSG-LEN SP SYSLOG-MSG
                    length, _, rest = buffer.partition(b" ")
                    size = int(length)
                    self.messages.append(rest[:size])
                    buffer = rest[size:]

    def wait(self, count: int) -> list[bytes]:
        """Every message received, once there are at least ``count``."""
        wait_until(lambda: len(self.messages) >= count, 5, f"{count} syslog messages")
        return list(self.messages)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'audit.db'}")
    database.migrate()
    with database.write() as session:
        from aifi.hub.persistence.tables import Tenant

        session.add(Tenant(id="north"))
    yield database
    database.dispose()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_export_over_a_real_socket_resumes_from_the_cursor(db: Database, transport: str):
    trail = AuditTrail(db)
    for n in range(3):
        assert trail.record(query_entry(client_id=f"client-{n}")) is not None
    trail.record(query_entry(tenant="south", client_id="other-hospital"))
    listener = Listener(transport)
    try:
        exporter = SyslogExporter(db, listener.url, tenant="north", hostname="hub-1")
        assert exporter.export_pending() == 3
        received = listener.wait(3)
        assert len(received) == 3
        users = []
        for frame in received:
            match = RFC5424.match(frame)
            assert match is not None, frame[:200]
            assert match["host"] == b"hub-1"
            root = check_message(match["msg"])
            users.append(root.findall("ActiveParticipant")[0].attrib["UserID"])
            assert set(participants(root)) == {"1", "3", "24"}
        assert users == ["client-0", "client-1", "client-2"]

        # a new exporter (a restart) resumes from the cursor: only the new record is sent
        trail.record(query_entry(client_id="client-3"))
        again = SyslogExporter(db, listener.url, tenant="north", hostname="hub-1")
        assert again.export_pending() == 1
        received = listener.wait(4)
        assert len(received) == 4
        assert b'UserID="client-3"' in received[3]
        assert again.export_pending() == 0
        again.close()
        exporter.close()
    finally:
        listener.close()


def test_a_one_off_export_since_a_moment_leaves_the_cursor(db: Database):
    trail = AuditTrail(db)
    trail.record(query_entry(recorded_at=datetime(2026, 1, 1, tzinfo=UTC), client_id="old"))
    trail.record(query_entry(recorded_at=datetime(2026, 6, 1, tzinfo=UTC), client_id="new"))
    listener = Listener("udp")
    try:
        once = SyslogExporter(
            db, listener.url, since=datetime(2026, 3, 1, tzinfo=UTC), use_cursor=False
        )
        assert once.export_pending() == 1
        assert b'UserID="new"' in listener.wait(1)[0]
        once.close()
        # the cursor was not moved: the continuous export still sends both
        continuous = SyslogExporter(db, listener.url)
        assert continuous.export_pending() == 2
        continuous.close()
    finally:
        listener.close()
