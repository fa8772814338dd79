"""The hospital gateway: what a hospital installs next to its PACS (``aifi gateway serve``).

DICOM in (a DIMSE SCP for C-ECHO and C-STORE, and STOW-RS), a local durable store,
pseudonymisation at egress (DICOM PS3.15 Annex E, :mod:`aifi.gateway.deid`) with the
pseudonym map kept only in the gateway's own database, a store-and-forward outbox to the
central hub (STOW-RS with OAuth2), and results pulled back from the hub, re-identified and
delivered into the PACS. The gateway opens every connection itself: the hub never calls
into the hospital.

Layout, by concept (the same pattern as :mod:`aifi.hub`):

- :mod:`~aifi.gateway.ingest` — DICOM in (DIMSE SCP, STOW-RS), the ingest pipeline, the local
  store and its index, the Part 10 framing;
- :mod:`~aifi.gateway.deid` — pseudonymisation and re-identification (pure code);
- :mod:`~aifi.gateway.forward` — store and forward to the hub, completion signals, purge;
- :mod:`~aifi.gateway.results` — results back from the hub into the PACS;
- :mod:`~aifi.gateway.persistence` — the gateway's own database: tables, pseudonym map,
  migrations;
- :mod:`~aifi.gateway.api` — the HTTP routes (STOW-RS in, the status page);
- composition at the top: :mod:`~aifi.gateway.app` (the one composition root),
  :mod:`~aifi.gateway.serve`, :mod:`~aifi.gateway.cli`, :mod:`~aifi.gateway.settings` and
  :mod:`~aifi.gateway.config` (what is configured), :mod:`~aifi.gateway.api.deps` (the routers'
  FastAPI dependencies), :mod:`~aifi.gateway.hub_connection` (the one HTTP client to the hub),
  :mod:`~aifi.gateway.workers` and :mod:`~aifi.gateway.worker_process` (the background workers
  and their child process), :mod:`~aifi.gateway.memory` (that process's malloc tuning).

The subpackages may import :mod:`aifi.gateway.persistence`, :mod:`aifi.gateway.config`, the
shared leaves (:mod:`aifi.errors`, :mod:`aifi.clock`, :mod:`aifi.dicomweb`,
:mod:`aifi.oauth_client`) and the hub's generic plumbing (:mod:`aifi.hub.persistence.database`,
:mod:`aifi.hub.persistence.outbox`, :mod:`aifi.hub.delivery`); only the top-level modules
wire subpackages together. Nothing outside :mod:`aifi.gateway` imports it except the CLI, the
demo and the benchmarks.
"""
