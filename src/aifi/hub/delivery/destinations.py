"""Per-tenant PACS destinations: where released AI results are sent, and how.

A hospital (tenant) lists the archives that must receive the results of its AI products
(IHE AIR: the AI Results are stored to the Image Manager/Archive, PS3.4 Annex B Storage
Service Class or its web equivalent, STOW-RS PS3.18 §10.5). Each destination is one of
two kinds, chosen by ``kind`` (a pydantic discriminated union):

``dicomweb``
    STOW-RS to ``{url}/studies`` (``url`` is the PACS's DICOMweb service root), with an
    HTTP timeout and optional extra request headers (e.g. ``Authorization``).
``dimse``
    C-STORE over a DICOM association to ``host:port``, called AE title ``called_ae``,
    calling AE title ``calling_ae`` (default ``AIFI-HUB``), with a timeout for connecting,
    association negotiation and each C-STORE response.

Example (``AIFI_DESTINATIONS_FILE`` or wherever the settings point)::

    tenants:
      st-elsewhere:
        - kind: dicomweb
          name: main-pacs
          url: https://pacs.st-elsewhere.example/dicom-web
          timeout_seconds: 60
          headers:
            Authorization: Bearer 0123456789abcdef
        - kind: dimse
          name: reading-room
          host: 10.1.2.3
          port: 104
          called_ae: RR_ARCHIVE
          calling_ae: AIFI-HUB
      general-hospital: []

Names are unique within a tenant (the delivery outbox keys on them); AE titles follow
PS3.5 §6.2 (AE VR: 1-16 characters of the default repertoire, no backslash, no control
characters, leading and trailing spaces not significant).

The clients that do the sending live in :mod:`aifi.hub.delivery.dicomweb_client` and are re-exported
here: :func:`client_for` turns a destination into a :class:`PacsClient`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aifi.hub.delivery.dicomweb_client import (
    DicomwebPacs,
    OutgoingInstance,
    PacsClient,
    SendOutcome,
    StoreResponse,
    parse_store_response,
    status_meaning,
    stow_outcomes,
)
from aifi.hub.delivery.dimse_client import DimsePacs

__all__ = [
    "Destination",
    "DestinationsConfig",
    "DicomwebDestination",
    "DicomwebPacs",
    "DimseDestination",
    "DimsePacs",
    "OutgoingInstance",
    "PacsClient",
    "SendOutcome",
    "StoreResponse",
    "client_for",
    "load_destinations",
    "parse_store_response",
    "status_meaning",
    "stow_outcomes",
    "validate_ae_title",
]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_AE_CHARS = re.compile(r"^[\x20-\x5b\x5d-\x7e]+$")  # printable ASCII except backslash
_MANAGED_HEADERS = frozenset({"content-type", "content-length", "transfer-encoding", "accept"})


def validate_ae_title(value: str) -> str:
    """An AE title (PS3.5 §6.2, VR AE): 1-16 characters after removing the non-significant
    leading/trailing spaces, printable characters of the default repertoire, no backslash."""
    title = value.strip(" ")
    if not 1 <= len(title) <= 16:
        raise ValueError(f"AE title {value!r} must have 1-16 characters (PS3.5 §6.2)")
    if not _AE_CHARS.fullmatch(title):
        raise ValueError(
            f"AE title {value!r} may only hold printable ASCII characters and no backslash"
            " (PS3.5 §6.2)"
        )
    return title


class _Destination(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME)
    """Unique within the tenant; names the destination in the outbox, logs and reasons."""
    timeout_seconds: float = Field(default=30.0, gt=0, le=3600)


class DicomwebDestination(_Destination):
    """A PACS that accepts STOW-RS (PS3.18 §10.5) at ``{url}/studies``."""

    kind: Literal["dicomweb"] = "dicomweb"
    url: str
    """The DICOMweb service root, e.g. ``https://pacs.example/dicom-web`` (no ``/studies``)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra headers sent with every request (e.g. ``Authorization``)."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL as exc:
            raise ValueError(f"invalid URL {value!r}: {exc}") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"url {value!r} must be an absolute http:// or https:// URL")
        if url.query or url.fragment:
            raise ValueError(f"url {value!r} must not have a query or fragment")
        return value.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for header in value:
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", header):
                raise ValueError(f"invalid HTTP header name {header!r}")
            if header.lower() in _MANAGED_HEADERS:
                raise ValueError(f"header {header!r} is set by the STOW-RS client itself")
        return value

    @property
    def stow_url(self) -> str:
        return f"{self.url}/studies"


class DimseDestination(_Destination):
    """A PACS that accepts C-STORE (PS3.4 Annex B, PS3.7 §9.1.1) as an SCP."""

    kind: Literal["dimse"] = "dimse"
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    called_ae: str
    calling_ae: str = "AIFI-HUB"

    @field_validator("called_ae", "calling_ae")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        return validate_ae_title(value)


Destination = Annotated[DicomwebDestination | DimseDestination, Field(discriminator="kind")]
"""One PACS destination; the ``kind`` key selects the model."""


class DestinationsConfig(BaseModel):
    """The PACS destinations of every tenant (a tenant not listed has none)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenants: dict[str, list[Destination]] = Field(default_factory=dict)

    @field_validator("tenants")
    @classmethod
    def _tenant_ids(cls, value: dict[str, list[Destination]]) -> dict[str, list[Destination]]:
        for tenant in value:
            from aifi.hub.auth.tenants import validate_tenant_id  # brings FastAPI: only here

            validate_tenant_id(tenant)
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> DestinationsConfig:
        for tenant, destinations in self.tenants.items():
            seen: set[str] = set()
            for destination in destinations:
                if destination.name in seen:
                    raise ValueError(
                        f"tenant {tenant!r}: destination name {destination.name!r} is used twice"
                    )
                seen.add(destination.name)
        return self

    def for_tenant(self, tenant: str) -> list[Destination]:
        """The tenant's destinations, in file order; empty when it has none."""
        return list(self.tenants.get(tenant, ()))

    def destination(self, tenant: str, name: str) -> Destination | None:
        """One destination of a tenant by name (for an outbox entry), or ``None``."""
        for destination in self.tenants.get(tenant, ()):
            if destination.name == name:
                return destination
        return None


def load_destinations(path: Path | None) -> DestinationsConfig:
    """Read PACS destinations from YAML (see the module docstring); ``None`` -> none at all.

    Raises ValueError naming the file when it cannot be read, is not valid YAML, or does
    not describe valid destinations.
    """
    if path is None:
        return DestinationsConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read PACS destinations: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return DestinationsConfig()
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with 'tenants'")
    try:
        return DestinationsConfig.model_validate(data)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise ValueError(f"{path}: invalid PACS destinations: {exc}") from exc


def client_for(destination: Destination) -> PacsClient:
    """A client that sends to ``destination``; close it (or use ``with``) when done."""
    if isinstance(destination, DicomwebDestination):
        return DicomwebPacs(
            destination.url,
            name=destination.name,
            timeout_seconds=destination.timeout_seconds,
            headers=destination.headers,
        )
    return DimsePacs(
        destination.host,
        destination.port,
        called_ae=destination.called_ae,
        calling_ae=destination.calling_ae,
        timeout_seconds=destination.timeout_seconds,
        name=destination.name,
    )
