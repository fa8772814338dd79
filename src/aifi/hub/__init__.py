"""Composition of aifi-hub: settings, persistence, storage, tenants, the app factory and
the services behind the CLI (serve, demo, bench)."""
