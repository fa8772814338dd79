"""Zero-copy WADO-RS bodies (:mod:`aifi.hub.direct_send`) on a real uvicorn server with its
httptools protocol: the path is taken, the bytes on the wire are exactly the stored
files in the multipart framing, ``Content-Length`` holds, the connection stays usable
(keep-alive) and a client that goes away mid-body harms nobody else. These tests also
pin the uvicorn internals the module relies on: if an upgrade renames them, they fail."""

from __future__ import annotations

import http.client
import io
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import uvicorn
from pydicom import Dataset, dcmread

import aifi.hub.direct_send as direct_send
from aifi.conformance.synthetic import ct_study
from aifi.dicomweb.multipart_reader import read_parts
from aifi.hub.app import create_app
from aifi.hub.serve import free_port
from aifi.hub.settings import Settings
from tests.conftest import LiveServer, running_hub
from tests.support.dicom import ingest, make_study, to_bytes
from tests.support.wait import wait_until

ACCEPT = 'multipart/related; type="application/dicom"'


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[LiveServer, list[Dataset]]]:
    with running_hub(Settings(data_dir=tmp_path / "data")) as server:
        study = make_study(n_series=2, per_series=3)
        ingest(server.app.state.dicom_store, study)
        yield server, study


@pytest.fixture
def pumped(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many pieces each zero-copy send wrote (one entry per response)."""
    calls: list[int] = []
    real = direct_send._pump

    def counting(sock: socket.socket, pieces: Any) -> None:
        calls.append(len(pieces))
        real(sock, pieces)

    monkeypatch.setattr(direct_send, "_pump", counting)
    return calls


def _get(
    conn: http.client.HTTPConnection, path: str, accept: str = ACCEPT
) -> tuple[int, dict[str, str], bytes]:
    conn.request("GET", path, headers={"Accept": accept})
    response = conn.getresponse()
    body = response.read()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def _get_once(
    server: LiveServer, path: str, accept: str = ACCEPT
) -> tuple[int, dict[str, str], bytes]:
    """One GET on a connection of its own."""
    conn = _connect(server)
    try:
        return _get(conn, path, accept)
    finally:
        conn.close()


def _bodies(headers: dict[str, str], body: bytes) -> list[bytes]:
    boundary = headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    return sorted(part for _, part in read_parts(body, boundary))


def _connect(server: LiveServer) -> http.client.HTTPConnection:
    host, port = server.url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=30)


def test_study_goes_zero_copy_byte_for_byte_with_keep_alive(
    hub: tuple[LiveServer, list[Dataset]], pumped: list[int]
) -> None:
    server, study = hub
    uid = study[0].StudyInstanceUID
    conn = _connect(server)
    try:
        for _ in range(2):  # the second answer on the same connection: keep-alive holds
            status, headers, body = _get(conn, f"/dicomweb/studies/{uid}")
            assert status == 200
            assert int(headers["content-length"]) == len(body)
            assert "transfer-encoding" not in headers
            assert _bodies(headers, body) == sorted(to_bytes(ds) for ds in study)
    finally:
        conn.close()
    # Two responses, each: six files plus the framing between and around them.
    assert pumped == [13, 13]


class _RecordingSocket:
    """A socket that notes the flags of every ``send`` (the rest goes to the real one)."""

    def __init__(self, sock: socket.socket, flags: list[int]) -> None:
        self.sock = sock
        self.flags = flags

    def send(self, data: Any, flags: int = 0) -> int:
        self.flags.append(flags)
        return self.sock.send(data, flags)

    def fileno(self) -> int:
        return self.sock.fileno()


def test_only_pieces_followed_by_more_are_corked(
    hub: tuple[LiveServer, list[Dataset]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """MSG_MORE on the closing delimiter would leave it in the kernel until the 200 ms cork
    timer fires whenever nothing else was in flight: the body's end must be pushed."""
    flags: list[int] = []
    real = direct_send._pump
    monkeypatch.setattr(
        direct_send,
        "_pump",
        lambda sock, pieces: real(cast(socket.socket, _RecordingSocket(sock, flags)), pieces),
    )
    server, study = hub
    status, _, _ = _get_once(server, f"/dicomweb/studies/{study[0].StudyInstanceUID}")
    assert status == 200
    assert len(flags) == 7  # the framing before, between and after six files
    assert all(f & socket.MSG_MORE for f in flags[:-1])
    assert not flags[-1] & socket.MSG_MORE


def test_single_instance_as_application_dicom(
    hub: tuple[LiveServer, list[Dataset]], pumped: list[int]
) -> None:
    server, study = hub
    ds = study[0]
    path = (
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    status, headers, body = _get_once(server, path, "application/dicom")
    assert status == 200
    assert headers["content-type"].startswith("application/dicom")
    assert body == to_bytes(ds)
    assert pumped == [1]


def test_other_protocols_get_the_same_bytes_streamed(tmp_path: Path, pumped: list[int]) -> None:
    """uvicorn's h11 protocol offers no zero-copy: the response streams the same body."""
    application = create_app(Settings(data_dir=tmp_path / "data"))
    study = make_study(n_series=1, per_series=4)
    ingest(application.state.dicom_store, study)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(application, host="127.0.0.1", port=port, http="h11", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 20, "uvicorn to start")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            status, headers, body = _get(conn, f"/dicomweb/studies/{study[0].StudyInstanceUID}")
        finally:
            conn.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        application.state.hub.close()
    assert status == 200
    assert int(headers["content-length"]) == len(body)
    assert _bodies(headers, body) == sorted(to_bytes(ds) for ds in study)
    assert pumped == []


def test_client_gone_mid_body_harms_nobody(
    hub: tuple[LiveServer, list[Dataset]], pumped: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = hub
    ended: list[int] = []  # the sends that are over, however they ended
    counting = direct_send._pump

    def noting_the_end(sock: socket.socket, pieces: Any) -> None:
        try:
            counting(sock, pieces)
        finally:
            ended.append(len(pieces))

    monkeypatch.setattr(direct_send, "_pump", noting_the_end)
    big = list(ct_study(10))  # ~5 MB: far more than the sockets' buffers hold
    ingest(server.app.state.dicom_store, big)
    uid = dcmread(io.BytesIO(big[0]), stop_before_pixels=True).StudyInstanceUID
    host, port = server.url.removeprefix("http://").split(":")
    for _ in range(3):
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            request = f"GET /dicomweb/studies/{uid} HTTP/1.1\r\nHost: x\r\nAccept: {ACCEPT}\r\n\r\n"
            raw.sendall(request.encode())
            assert raw.recv(1024).startswith(b"HTTP/1.1 200")
            # Closed with a reset (linger 0), mid-body.
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # the server has seen each client go and ended its send
    wait_until(lambda: len(ended) == 3, 10, "the three cut-off sends to end")
    status, headers, body = _get_once(server, f"/dicomweb/studies/{uid}")
    assert status == 200
    assert _bodies(headers, body) == sorted(big)
    assert len(pumped) == 4
