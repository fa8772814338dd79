"""The gateway's configuration file (YAML, ``--config`` / ``AIFI_GATEWAY_CONFIG``) and the
``--pacs`` shorthand.

Everything that is more than one value lives here; the file is optional (no file: any peer
may send, no PACS besides ``--pacs``, the AIFI default profile, retention 0 h)::

    dimse:
      allowed_calling_ae_titles: [CT_ROOM_1, PACS_MAIN]  # empty or absent: any
      allowed_addresses: [10.1.2.0/24, 127.0.0.1]         # IPs or networks; empty: any
      require_called_ae_title: false  # true: only associations addressed to --ae-title
    stow:
      allowed_addresses: [10.1.2.3]                       # STOW-RS clients; empty: any
      quiet_seconds: 60        # a STOW-RS study is complete this long after its last instance
    status:
      allowed_addresses: [127.0.0.1, 10.1.9.8]  # who may read the status page (default: loopback)
    pacs:                      # where re-identified results go (hub.delivery.destinations kinds)
      - kind: dicomweb
        name: main
        url: https://pacs.example/dicom-web
      - kind: dimse
        name: reading-room
        host: 10.1.2.3
        port: 104
        called_ae: RR_ARCHIVE
    priors:                    # prior studies for comparison products (PriorsConfig)
      pacs: main               # the pacs entry queried: QIDO/WADO-RS, or C-FIND + C-MOVE/C-GET
    pseudonymisation:          # PS3.15 Annex E options: aifi.gateway.deid.Profile
      options: [BASIC, RETAIN_LONGITUDINAL_MODIFIED_DATES]
    retention:
      forwarded_hours: 0       # originals kept after the hub acknowledged them (0: purge at once)
      quarantined_days: 30     # quarantined originals kept for inspection
      delivered_results_days: 7  # re-identified results kept once every PACS confirmed them
    fhir:                      # the EPD's side (FhirConfig): push target, relay cadence
      epd_url: https://epd.example/fhir   # final reports pushed here (absent: no push)
      poll_seconds: 2          # how often subscriptions and the push follow the hub

A file that cannot be read, is not YAML or has a bad value gives :class:`ConfigError`
naming the file and the field (``gateway.yaml: dimse.allowed_addresses.0: ...``).

A calling AE title not in ``allowed_calling_ae_titles`` is rejected with A-ASSOCIATE-RJ
result 1 (permanent), source 1 (service user), reason 3 (calling AE title not recognised);
an address outside ``allowed_addresses`` with reason 1 (no reason given); with
``require_called_ae_title``, an association addressed to another AE title with reason 7
(called AE title not recognised) (PS3.8 §9.3.4).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from aifi.errors import ConfigurationError
from aifi.gateway.ingest.allowed import Network, networks_of
from aifi.hub.delivery.destinations import (
    Destination,
    DicomwebDestination,
    DimseDestination,
    validate_ae_title,
)

PACS_NAME = "pacs"
"""The name of the destination given with ``--pacs``."""


class ConfigError(ConfigurationError, ValueError):
    """The configuration file (or ``--pacs``) is unusable; the message names the file and
    the field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DimseConfig(_Section):
    allowed_calling_ae_titles: frozenset[str] = frozenset()
    allowed_addresses: tuple[Network, ...] = ()
    require_called_ae_title: bool = False
    """Reject an association addressed to another AE title than the gateway's (a modality
    configured for another node) with A-ASSOCIATE-RJ reason 7, called AE title not
    recognised (PS3.8 §9.3.4); off: any called AE title, as most SCPs."""

    @field_validator("allowed_calling_ae_titles", mode="before")
    @classmethod
    def _titles(cls, value: Any) -> Any:
        if isinstance(value, list | tuple | set | frozenset):
            return frozenset(validate_ae_title(str(v)) for v in value)
        return value

    @field_validator("allowed_addresses", mode="before")
    @classmethod
    def _addresses(cls, value: Any) -> Any:
        return networks_of(value) if isinstance(value, list | tuple) else value


class StowConfig(_Section):
    allowed_addresses: tuple[Network, ...] = ()
    quiet_seconds: float = Field(default=60.0, ge=0, le=7 * 24 * 3600)
    """A study received over STOW-RS (no association to end) is complete once nothing
    arrived for this long (the forwarder compares ``last_received_at + quiet``)."""

    @field_validator("allowed_addresses", mode="before")
    @classmethod
    def _addresses(cls, value: Any) -> Any:
        return networks_of(value) if isinstance(value, list | tuple) else value


LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)


class StatusConfig(_Section):
    allowed_addresses: tuple[Network, ...] = LOOPBACK
    """Who may read the status page (``/api/v1/gateway/status``): it names original study
    UIDs and errors, which identify patients' studies. Default: this machine only (``aifi
    gateway status`` on it, a local monitoring agent); ``/healthz`` is open to all."""

    @field_validator("allowed_addresses", mode="before")
    @classmethod
    def _addresses(cls, value: Any) -> Any:
        if isinstance(value, list | tuple) and not value:
            raise ValueError("must name at least one address or network (default: loopback)")
        return networks_of(value) if isinstance(value, list | tuple) else value


class RetentionConfig(_Section):
    forwarded_hours: float = Field(default=0.0, ge=0)
    """How long an original is kept after the hub acknowledged it (0: purged at once)."""
    quarantined_days: float = Field(default=30.0, ge=0)
    """How long a quarantined original is kept for inspection."""
    delivered_results_days: float = Field(default=7.0, ge=0)
    """How long a re-identified result is kept under ``results/`` once every PACS it goes
    to has confirmed all of it (the PACS holds it then). Results without a PACS, and those
    a PACS has not confirmed, are kept."""


class FhirConfig(_Section):
    """The ``fhir:`` section: the gateway's FHIR side for the EPD (issue 17)::

    fhir:
      epd_url: https://epd.example/fhir   # final reports are pushed here (absent: no push)
      epd_credentials: /etc/aifi/epd-client.json  # optional SMART Backend Services client
      poll_seconds: 2          # how often the hub's changes are followed
      base_url: https://gateway.example/fhir  # the facade as the EPD reaches it
    """

    epd_url: str | None = None
    """The EPD's FHIR base URL: each final DiagnosticReport goes there as a transaction of
    conditional creates, with the hospital's identities (:mod:`aifi.gateway.fhir.epd_push`).
    With a gateway the hub's per-tenant ``epd_url`` stays empty."""
    epd_credentials: Path | None = None
    """Credentials file of the gateway's client at the EPD (``aifi.oauth_client``
    ``Credentials``); absent: the push goes without a token."""
    epd_scopes: tuple[str, ...] = ("system/DiagnosticReport.c", "system/Observation.c")
    poll_seconds: float = Field(default=2.0, gt=0, le=3600)
    """How often the subscriptions and the push follow the hub's changes (the hub never
    calls into the hospital: this bounds how late a notification is)."""
    base_url: str | None = None
    """The gateway's FHIR base as the EPD reaches it (notifications name resources under
    it); default ``http://<host>:<port>/fhir`` of the settings."""

    @field_validator("epd_url", "base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} must be an http:// or https:// URL")
        return value.rstrip("/") if value is not None else None


class PriorsConfig(_Section):
    """The ``priors:`` section: where prior studies are found for products that ask for
    them (issue 17; :mod:`aifi.gateway.priors`)::

        priors:
          pacs: main               # the ``pacs`` entry queried (DICOMweb: QIDO/WADO-RS; DIMSE:
                                   # C-FIND + C-MOVE/C-GET); absent: no priors
          retrieve: move           # DIMSE: move (to move_destination) or get
          move_destination: AIFI-GW  # default: the gateway's own AE title
          poll_seconds: 0.5        # how often the hub's prior requests are looked at
          retrieve_timeout_seconds: 600
          forward_timeout_seconds: 600  # how long retrieved priors may take to reach the hub
    """

    pacs: str | None = None
    retrieve: Literal["move", "get"] = "move"
    move_destination: str | None = None
    poll_seconds: float = Field(default=0.5, gt=0, le=3600)
    retrieve_timeout_seconds: float = Field(default=600.0, gt=0, le=24 * 3600)
    forward_timeout_seconds: float = Field(default=600.0, gt=0, le=24 * 3600)

    @field_validator("move_destination")
    @classmethod
    def _move_destination(cls, value: str | None) -> str | None:
        return validate_ae_title(value) if value is not None else None


class GatewayConfig(_Section):
    """The configuration file's content (see the module docstring)."""

    dimse: DimseConfig = DimseConfig()
    stow: StowConfig = StowConfig()
    status: StatusConfig = StatusConfig()
    pacs: tuple[Destination, ...] = ()
    pseudonymisation: dict[str, Any] = Field(default_factory=dict)
    """The ``pseudonymisation:`` section as written; :func:`load_config` checks it with
    :class:`aifi.gateway.deid.Profile` and :meth:`profile` builds it."""
    retention: RetentionConfig = RetentionConfig()
    fhir: FhirConfig = FhirConfig()
    priors: PriorsConfig = PriorsConfig()
    source: Path | None = Field(default=None, exclude=True)
    """The file it was read from (for messages)."""

    @field_validator("pacs")
    @classmethod
    def _unique(cls, value: tuple[Destination, ...]) -> tuple[Destination, ...]:
        seen: set[str] = set()
        for destination in value:
            if destination.name in seen:
                raise ValueError(f"PACS name {destination.name!r} is used twice")
            seen.add(destination.name)
        return value

    def profile(self) -> Any:
        """The pseudonymisation profile (:class:`aifi.gateway.deid.Profile`)."""
        from aifi.gateway.deid import Profile

        where = self.source or Path("(settings)")
        try:
            return Profile.model_validate(self.pseudonymisation)
        except ValidationError as exc:
            raise ConfigError(_explain(where, exc, prefix="pseudonymisation")) from exc

    def destinations(
        self, pacs: Destination | None, *, calling_ae: str | None = None
    ) -> list[Destination]:
        """The PACS results are delivered to: ``--pacs`` (named ``pacs``) first, then the
        file's. A DIMSE PACS of the file without its own ``calling_ae`` is called with
        ``calling_ae`` (the gateway's AE title: the one a PACS administrator allows), not
        the hub's default."""
        out = [pacs] if pacs is not None else []
        for destination in self.pacs:
            if pacs is not None and destination.name == pacs.name:
                raise ConfigError(f"{self.source}: pacs: the name {pacs.name!r} is taken by --pacs")
            if (
                calling_ae is not None
                and isinstance(destination, DimseDestination)
                and "calling_ae" not in destination.model_fields_set
            ):
                destination = destination.model_copy(update={"calling_ae": calling_ae})
            out.append(destination)
        return out


def _explain(path: Path, exc: ValidationError, prefix: str = "") -> str:
    problems = []
    for error in exc.errors():
        location = ".".join(str(part) for part in (prefix, *error.get("loc", ())) if part != "")
        message = str(error.get("msg", "invalid"))
        problems.append(f"{location or '(top level)'}: {message}")
    return f"{path}: " + "; ".join(problems)


def load_config(path: Path | None) -> GatewayConfig:
    """Read and check the configuration file; ``None`` gives the defaults.

    The ``pseudonymisation`` section is checked with :class:`aifi.gateway.deid.Profile`
    here, so a bad option fails at start-up, not at the first instance."""
    if path is None:
        return GatewayConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the gateway configuration: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping (dimse, stow, pacs, pseudonymisation, retention)"
        )
    try:
        config = GatewayConfig.model_validate({**data, "source": path})
    except ValidationError as exc:
        raise ConfigError(_explain(path, exc)) from exc
    config.profile()
    return config


_DESTINATION: TypeAdapter[Destination] = TypeAdapter(Destination)


def parse_pacs(target: str, *, calling_ae: str) -> Destination:
    """``--pacs``: a DICOMweb service root (``http(s)://host/dicom-web``) or
    ``dimse://AE@host:port`` (``calling_ae`` is the gateway's own AE title); the
    destination is named ``pacs``."""
    parts = urlsplit(target.strip())
    try:
        if parts.scheme in ("http", "https"):
            return DicomwebDestination(name=PACS_NAME, url=target.strip())
        if parts.scheme == "dimse":
            if not parts.username or not parts.hostname or parts.port is None:
                raise ValueError("expected dimse://AE_TITLE@host:port")
            return DimseDestination(
                name=PACS_NAME,
                host=parts.hostname,
                port=parts.port,
                called_ae=parts.username,
                calling_ae=calling_ae,
            )
    except ValidationError as exc:
        problems = "; ".join(str(e.get("msg", "")) for e in exc.errors())
        raise ConfigError(f"--pacs {target!r}: {problems}") from exc
    except ValueError as exc:  # urlsplit's port check, and ours
        raise ConfigError(f"--pacs {target!r}: {exc}") from exc
    raise ConfigError(
        f"--pacs {target!r}: expected a DICOMweb root (http://host/dicom-web) or "
        "dimse://AE_TITLE@host:port"
    )
