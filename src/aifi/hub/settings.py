"""One pydantic-settings :class:`Settings`, built by the app factory or the CLI and
injected; never created at import time. Every field can be set as ``AIFI_<NAME>``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aifi.hub.auth.tenants import validate_tenant_id


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIFI_", extra="ignore")

    data_dir: Path = Field(
        default=Path("aifi-data"),
        description="Folder for the embedded database and the DICOM files.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default: SQLite (WAL) at <data_dir>/aifi.db. "
        "PostgreSQL: postgresql+psycopg://user@host:5432/db",
    )
    default_tenant: str = Field(
        default="default",
        description="Tenant (hospital) the hub creates at start; in development mode every "
        "request resolves to it.",
    )
    auth: Literal["builtin", "external", "off"] = Field(
        default="builtin",
        description="OAuth2: 'builtin' (the hub is a SMART Backend Services authorization "
        "server; register clients with 'aifi clients add'), 'external' (resource server for "
        "an OpenID Connect provider, AIFI_OIDC_*), or 'off' (only with AIFI_DEV_MODE=true).",
    )
    dev_mode: bool = Field(
        default=False,
        description="Development mode: allows auth 'off', where every request is the default "
        "tenant with every right. Never in production.",
    )
    require_deidentified: bool | None = Field(
        default=None,
        description="STOW-RS refuses instances whose Patient Identity Removed (0012,0062) is "
        "not YES (PS3.15 Annex E: the hub must never hold a patient's identity; a hospital's "
        "gateway pseudonymises). Default: on outside development mode. A tenant's own "
        "setting ('aifi tenants set') overrides it.",
    )
    access_token_seconds: int = Field(
        default=300, ge=30, le=3600, description="Lifetime of the access tokens the hub issues."
    )
    signing_key_days: float = Field(
        default=30.0,
        gt=0,
        description="The hub rotates its token signing key after this many days (the old "
        "key stays in the JWKS until its tokens have expired); 'aifi clients rotate-key' "
        "rotates at once.",
    )
    jwks_url_allowlist: list[str] = Field(
        default_factory=list,
        description="URL prefixes a client's JWKS URL must start with (SMART Backend "
        "Services), e.g. '[\"https://vendor.example/\"]'; empty: no JWKS URLs.",
    )
    oidc_issuer: str | None = Field(
        default=None, description="External mode: the OpenID Connect issuer ('iss')."
    )
    oidc_jwks_url: str | None = Field(
        default=None,
        description="External mode: the issuer's JWKS URL; default: from its discovery "
        "document (<issuer>/.well-known/openid-configuration).",
    )
    oidc_audience: str | None = Field(
        default=None, description="External mode: the 'aud' access tokens must carry."
    )
    oidc_tenant_claim: str = Field(
        default="aifi_tenant", description="External mode: the claim naming the hospital."
    )
    oidc_role_claim: str = Field(
        default="aifi_role",
        description="External mode: the claim naming the role (hospital, performer, admin).",
    )
    oidc_products_claim: str = Field(
        default="aifi_products",
        description="External mode: the claim listing a performer's AI products.",
    )
    oidc_client_claim: str = Field(
        default="azp",
        description="External mode: the claim naming the client ('azp', 'client_id' or "
        "'sub' is used when it is absent).",
    )
    rate_limit_per_minute: int = Field(
        default=6000,
        ge=1,
        description="Requests per minute per client (a client's own limit overrides it); "
        "beyond it: 429 with Retry-After.",
    )
    max_request_mb: int = Field(
        default=4096,
        ge=1,
        description="Largest request body per client in MB (a client's own limit overrides "
        "it); beyond it: 413.",
    )
    public_url: str | None = Field(
        default=None,
        description="Base URL clients reach the hub at (for Retrieve URLs); default: "
        "taken from each request.",
    )
    qido_default_limit: int = Field(default=1000, ge=1)
    qido_max_limit: int = Field(default=10000, ge=1)
    qido_max_offset: int = Field(default=1_000_000, ge=0)
    fsync: bool = Field(
        default=True,
        description="fsync each stored file and its folder before acknowledging it.",
    )
    rules_file: Path | None = Field(
        default=None,
        description="Routing rules (YAML: AI products, tenants, quiet periods); default: "
        "the shipped rules (aifi/ihe_profiles/default_rules.yaml).",
    )
    task_manager: bool = Field(
        default=True,
        description="Run the AIW-I Task Manager (study completion, routing, deadlines) in "
        "this process; with several processes one of them leads.",
    )
    task_manager_poll_seconds: float = Field(
        default=0.05,
        gt=0,
        description="How often the Task Manager looks for complete studies (deadlines and "
        "waiting EPD requests: once a second).",
    )
    destinations_file: Path | None = Field(
        default=None,
        description="PACS destinations per tenant (YAML, aifi.hub.delivery.destinations); default: "
        "none, released AI results stay in the hub's own store.",
    )
    delivery: bool = Field(
        default=True,
        description="Run the delivery loop (released AI results -> PACS destinations) in "
        "this process; the outbox rows are leased, so several processes may run it.",
    )
    delivery_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often the delivery loop looks for due deliveries."
    )
    delivery_max_attempts: int = Field(
        default=20, ge=1, description="Attempts per destination before a delivery is failed."
    )
    delivery_backoff_seconds: float = Field(
        default=2.0,
        gt=0,
        description="First retry delay of a delivery; doubled per attempt (capped).",
    )
    fhir_request_wait_hours: float = Field(
        default=24.0,
        gt=0,
        description="How long an EPD's request for AI (FHIR Task) waits for its study "
        "before it fails.",
    )
    epd_fhir_urls: dict[str, str] = Field(
        default_factory=dict,
        description="Per tenant, the EPD's FHIR base URL that each final DiagnosticReport "
        "(with its Observations) is pushed to as a transaction Bundle, e.g. "
        '\'{"default": "https://epd.example/fhir"}\'; default: no push.',
    )
    notify_webhook_url: str | None = Field(
        default=None,
        description="Webhook every tenant's urgent AI findings are POSTed to (a small JSON "
        "object with pseudonymous ids only: type, tenant, product, communication, "
        "diagnosticReport, sent), retried on the FHIR outbox; default: none.",
    )
    notify_webhook_urls: dict[str, str] = Field(
        default_factory=dict,
        description="Per tenant, the urgent-finding webhook (over notify_webhook_url), e.g. "
        '\'{"default": "https://pager.example/hooks/aifi"}\'.',
    )
    fhir_notify: bool = Field(
        default=True,
        description="Run the FHIR notification loop (subscriptions, EPD push) in this process.",
    )
    fhir_notify_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often the FHIR notification loop looks for work."
    )
    fhir_notify_max_attempts: int = Field(
        default=10, ge=1, description="Attempts per FHIR notification or push before it fails."
    )
    fhir_notify_backoff_seconds: float = Field(
        default=2.0,
        gt=0,
        description="First retry delay of a FHIR notification or push; doubled per attempt.",
    )

    # --- audit trail (issue 6, aifi.hub.audit.trail) ----------------------------------------------
    audit_syslog_url: str | None = Field(
        default=None,
        description="ATNA audit record repository the audit trail is sent to as DICOM audit "
        "messages over syslog (RFC 5424): udp://host:514 (RFC 5426), tcp://host:601 (RFC 6587 "
        "octet counting) or tls://host:6514 (RFC 5425); default: none.",
    )
    audit_syslog_ca_file: Path | None = Field(
        default=None,
        description="CA certificates (PEM) that sign the syslog server's TLS certificate; "
        "default: the system's.",
    )
    audit_poll_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often the audit loop sends the new audit records to syslog.",
    )
    # --- end audit trail ---------------------------------------------------------------------
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Log lines as text, or as one JSON object per line with the route "
        "template, status, duration and request id of each request (aifi.hub.json_logs).",
    )

    @field_validator("default_tenant")
    @classmethod
    def _tenant(cls, value: str) -> str:
        return validate_tenant_id(value)

    @property
    def deidentified_by_default(self) -> bool:
        """Whether tenants without a setting of their own accept only de-identified
        instances: ``require_deidentified``, else on outside development mode."""
        if self.require_deidentified is not None:
            return self.require_deidentified
        return not self.dev_mode

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'aifi.db').resolve()}"

    @property
    def dicom_dir(self) -> Path:
        return self.data_dir / "dicom"
