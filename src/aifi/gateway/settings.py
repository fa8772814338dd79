"""The gateway's one pydantic-settings :class:`GatewaySettings`, built in the process entry
point (``aifi gateway serve``) or by a test, and injected; never created at import time.

Every field can be set as ``AIFI_GATEWAY_<NAME>`` (``AIFI_GATEWAY_DATA_DIR``,
``AIFI_GATEWAY_HUB``, ``AIFI_GATEWAY_PSEUDONYM_KEY`` ...); development mode is the
project-wide ``AIFI_DEV_MODE``. Everything that is not a single value (allowed peers,
several PACS, the pseudonymisation profile, retention) lives in the YAML file
``config_file`` points to (:mod:`aifi.gateway.config`).

Fail fast: :func:`check_startable` refuses a gateway without hub credentials outside
development mode, before anything is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aifi.errors import ConfigurationError
from aifi.hub.delivery.destinations import validate_ae_title


class GatewayNotStartable(ConfigurationError):
    """The settings are unsafe or incomplete: the gateway refuses to start (the message
    says what to change)."""


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AIFI_GATEWAY_", extra="ignore", validate_by_name=True, validate_by_alias=True
    )

    data_dir: Path = Field(
        default=Path("aifi-gateway-data"),
        description="Folder for the gateway's database (gateway.db), the received originals "
        "(instances/), re-identified results (results/) and the pseudonym key.",
    )
    host: str = Field(
        default="127.0.0.1", description="Address of the HTTP side (STOW-RS, status)."
    )
    port: int = Field(default=8100, ge=0, le=65535, description="TCP port of the HTTP side.")
    dimse_port: int = Field(
        default=11112, ge=0, le=65535, description="TCP port of the DIMSE SCP (C-ECHO, C-STORE)."
    )
    ae_title: str = Field(default="AIFI-GW", description="The gateway's own AE title.")
    hub: str = Field(
        default="http://127.0.0.1:8000",
        description="The central hub's base URL (the gateway uses its /dicomweb, /api/v1, /fhir).",
    )
    credentials: Path | None = Field(
        default=None,
        description="The hospital client's credentials file (SMART Backend Services, as "
        "'aifi clients add --write-credentials' writes it); required outside development mode.",
    )
    pacs: str | None = Field(
        default=None,
        description="The hospital PACS, for the one-PACS case: a DICOMweb service root "
        "(http://pacs/dicom-web) or dimse://AE@host:port. More PACS: the config file.",
    )
    config_file: Path | None = Field(
        default=None,
        validation_alias="AIFI_GATEWAY_CONFIG",
        description="YAML with everything else: allowed peers, several PACS, the "
        "pseudonymisation profile, retention, STOW-RS quiet time (aifi.gateway.config).",
    )
    pseudonym_key: SecretStr | None = Field(
        default=None,
        description="The hospital's pseudonymisation key; default: <data_dir>/pseudonym.key, "
        "generated (0600) on first start.",
    )
    dev_mode: bool = Field(
        default=False,
        validation_alias="AIFI_DEV_MODE",
        description="Development mode (AIFI_DEV_MODE): allows running without hub credentials "
        "against a hub with authentication off. Never in production.",
    )
    fsync: bool = Field(
        default=True,
        description="fsync each received file and its folder before acknowledging it "
        "(turn off only for throw-away test data).",
    )
    max_associations: int = Field(
        default=16, ge=1, le=256, description="Concurrent DIMSE associations accepted."
    )
    dimse_max_pdu: int = Field(
        default=1_048_576,
        ge=0,
        description="Largest P-DATA PDU the SCP receives (bytes; 0: no limit). Large PDUs "
        "cost the sender fewer round trips.",
    )
    workers: bool = Field(
        default=True,
        description="Run the background workers (forwarding to the hub, results, PACS "
        "delivery) in this process; off: receive only (tests, a receive-only node).",
    )
    worker_process: bool = Field(
        default=True,
        description="Run the background workers in a child process of their own, at a "
        "lower CPU priority (worker_priority): receiving never waits for pseudonymisation or "
        "forwarding. Off: in the gateway's process (tests, a single-core box).",
    )
    worker_priority: Literal["idle", "low", "normal"] = Field(
        default="idle",
        description="CPU priority of the workers' process: idle (Linux SCHED_IDLE: only CPU "
        "time nothing else wants; the backlog of a burst is sent once receiving pauses), "
        "low (nice 10), normal (the same as receiving).",
    )
    worker_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often the background workers look for due work."
    )
    retry_backoff_seconds: float = Field(
        default=2.0,
        gt=0,
        description="First wait before sending again what the hub or the PACS could not "
        "take (down, busy, timed out); doubled per attempt up to retry_max_backoff_seconds.",
    )
    retry_max_backoff_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Longest wait between two attempts: after an outage, the hub or the PACS "
        "is tried again at most this long after it came back.",
    )
    results_poll_seconds: float = Field(
        default=0.5,
        gt=0,
        description="How often the gateway asks the hub's results feed for newly released "
        "results (the hub never calls into the hospital, so this bounds how late a result "
        "reaches the PACS; one small GET per poll).",
    )
    status_rows: int = Field(
        default=50, ge=1, le=10_000, description="Rows per list on the status page."
    )
    log_level: str = Field(default="info", description="uvicorn log level.")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Log lines as text, or as one JSON object per line with the route "
        "template, status, duration and request id of each request (aifi.hub.json_logs).",
    )
    public_url: str | None = Field(
        default=None,
        description="The gateway's base URL as the EPD reaches it (FHIR paging links at "
        "<public_url>/fhir, ImagingStudy endpoints at <public_url>/dicomweb); default: the "
        "base URL each request came in on.",
    )
    auth: Literal["builtin", "off"] = Field(
        default="builtin",
        description="Who may read /fhir and /dicomweb (WADO-RS): builtin = the gateway's own "
        "OAuth2 authorization server (SMART Backend Services; clients registered with 'aifi "
        "gateway clients add'); off = everyone, only in development mode.",
    )
    tenant: str = Field(
        default="default",
        description="The gateway's one hospital, as its OAuth2 clients are registered for it.",
    )
    access_token_seconds: int = Field(
        default=300, ge=60, le=3600, description="Lifetime of the access tokens it issues."
    )
    signing_key_days: int = Field(
        default=30, ge=1, description="How long one key signs access tokens before a new one."
    )

    @model_validator(mode="after")
    def _backoff(self) -> GatewaySettings:
        if self.retry_max_backoff_seconds < self.retry_backoff_seconds:
            raise ValueError("retry_max_backoff_seconds must be at least retry_backoff_seconds")
        return self

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, value: str) -> str:
        return validate_ae_title(value)

    @field_validator("hub")
    @classmethod
    def _hub(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"hub {value!r} must be an http:// or https:// base URL")
        return value.rstrip("/")

    @property
    def database_url(self) -> str:
        return f"sqlite:///{(self.data_dir / 'gateway.db').resolve()}"

    @property
    def instances_dir(self) -> Path:
        """The received originals (until forwarded and past retention)."""
        return self.data_dir / "instances"

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"

    @property
    def key_file(self) -> Path:
        return self.data_dir / "pseudonym.key"


def check_startable(settings: GatewaySettings) -> None:
    """Refuse unsafe settings before anything is built (CONVENTIONS: fail fast outside
    development mode). Raises :class:`GatewayNotStartable`."""
    if settings.auth == "off" and not settings.dev_mode:
        raise GatewayNotStartable(
            "authentication is off (AIFI_GATEWAY_AUTH=off) outside development mode: set "
            "AIFI_GATEWAY_AUTH=builtin and register the EPD with 'aifi gateway clients add', "
            "or run in development mode (AIFI_DEV_MODE=true)"
        )
    if settings.credentials is None:
        if not settings.dev_mode:
            raise GatewayNotStartable(
                "no hub credentials: pass --credentials FILE (AIFI_GATEWAY_CREDENTIALS), the "
                "file 'aifi clients add --role hospital --write-credentials FILE' wrote on the "
                "hub; without it the gateway runs only in development mode (AIFI_DEV_MODE=true) "
                "against a hub with authentication off"
            )
        return
    if not settings.credentials.is_file():
        raise GatewayNotStartable(f"credentials file {settings.credentials} does not exist")
