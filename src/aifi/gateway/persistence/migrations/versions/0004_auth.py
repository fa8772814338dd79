"""Gateway: OAuth2 for the EPD (SMART Backend Services) — tenant, clients, signing keys,
seen client-assertion jtis, revoked tokens (the hub's auth tables, aifi.gateway.auth.tables)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 21:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant",
        sa.Column("id", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("require_deidentified", sa.Boolean(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "oauth_client",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("products", sa.String(length=2000), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("auth_method", sa.String(length=32), nullable=False),
        sa.Column("jwks", sa.Text(), nullable=True),
        sa.Column("jwks_url", sa.String(length=2000), nullable=True),
        sa.Column("secret_hash", sa.String(length=256), nullable=True),
        sa.Column("description", sa.String(length=400), nullable=False),
        sa.Column("rate_limit_per_minute", sa.Integer(), nullable=True),
        sa.Column("max_request_mb", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant"], ["tenant.id"]),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("client_id", name="uq_oauth_client_id"),
    )
    op.create_table(
        "signing_key",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("alg", sa.String(length=16), nullable=False),
        sa.Column("private_jwk", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("kid", name="uq_signing_key_kid"),
    )
    op.create_table(
        "oauth_jti",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("jti", sa.String(length=256), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("client_id", "jti", name="uq_oauth_jti"),
    )
    op.create_index("ix_oauth_jti_expires", "oauth_jti", ["expires_at"])
    op.create_table(
        "oauth_revoked",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("jti", name="uq_oauth_revoked_jti"),
    )
    op.create_index("ix_oauth_revoked_expires", "oauth_revoked", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_oauth_revoked_expires", table_name="oauth_revoked")
    op.drop_table("oauth_revoked")
    op.drop_index("ix_oauth_jti_expires", table_name="oauth_jti")
    op.drop_table("oauth_jti")
    op.drop_table("signing_key")
    op.drop_table("oauth_client")
    op.drop_table("tenant")
