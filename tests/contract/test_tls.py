"""TLS directly from ``aifi serve`` (issue 6, "safe by default"): the hub answers over HTTPS
with the certificate it was given, and a client that checks certificates accepts it."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aifi.hub.serve import serve_subprocess


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "tls.crt", folder / "tls.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_aifi_serve_speaks_tls_with_the_given_certificate(tmp_path: Path) -> None:
    cert_file, key_file = _self_signed(tmp_path)
    trusted = ssl.create_default_context(cafile=str(cert_file))
    with serve_subprocess(
        tmp_path / "data",
        tmp_path / "hub.log",
        tls=(cert_file, key_file),
        env={"AIFI_TASK_MANAGER": "false", "AIFI_FSYNC": "false"},
    ) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        assert url.startswith("https://")
        assert httpx.get(url + "/healthz", verify=trusted).status_code == 200
        discovery = httpx.get(url + "/.well-known/smart-configuration", verify=trusted)
        assert discovery.status_code in (200, 404)  # 404: a development-mode hub has no server
        try:
            httpx.get(url + "/healthz", timeout=2)  # the system's CAs do not know this one
            raise AssertionError("an unknown certificate was accepted")
        except httpx.ConnectError:
            pass
        plain = f"http://127.0.0.1:{port}/healthz"
        try:
            refused = httpx.get(plain, timeout=2)
            assert refused.status_code >= 400
        except httpx.TransportError:
            pass  # no plain HTTP on a TLS port
