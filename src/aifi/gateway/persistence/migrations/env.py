"""Alembic environment of the gateway's own database (``Database(url,
migrations=GATEWAY_MIGRATIONS).migrate()``), or on ``sqlalchemy.url`` from the command line."""

from __future__ import annotations

from alembic import context

from aifi.gateway.auth import tables as _auth  # noqa: F401  (oauth_*, tenant)
from aifi.gateway.persistence import fhir_tables as _fhir  # noqa: F401  (gw_fhir_*, gw_epd_push)
from aifi.gateway.persistence import result_tables as _results  # noqa: F401  (gw_result*)
from aifi.gateway.persistence.tables import GatewayModel
from aifi.gateway.priors import tables as _priors  # noqa: F401  (gw_prior_request)
from aifi.hub.persistence.database import run_migrations

run_migrations(context, GatewayModel.metadata)
