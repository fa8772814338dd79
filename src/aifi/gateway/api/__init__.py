"""The gateway's HTTP side besides ``/healthz``:

- :mod:`~aifi.gateway.api.routes` — the routes: STOW-RS in (``POST /dicomweb/studies``,
  storing through :mod:`aifi.gateway.ingest.stow`) and ``GET /api/v1/gateway/status``; what
  they receive comes from :mod:`aifi.gateway.api.deps`;
- :mod:`~aifi.gateway.api.status` — the status page: the queues, errors and per-study progress
  read from the gateway's database (JSON), and the same as tables for ``aifi gateway status``.

May import: :mod:`aifi.gateway.api.deps`, :mod:`aifi.gateway.ingest.stow` (the STOW-RS service),
:mod:`aifi.gateway.persistence` (reads the tables), :mod:`aifi.gateway.config`, the shared
DICOMweb code (:mod:`aifi.dicomweb`) and :mod:`aifi.errors`,
:mod:`aifi.hub.persistence.database`. Never forwarding, results (the results part of the page
is handed in as a function) or the composition root.
"""
