"""DICOM into the gateway, up to "on disk and committed".

- :mod:`~aifi.gateway.ingest.dimse_scp` — the DIMSE SCP (C-ECHO, C-STORE; association
  acceptance);
- :mod:`~aifi.gateway.ingest.stow` — STOW-RS in (``POST /dicomweb/studies``);
- :mod:`~aifi.gateway.ingest.pipeline` — :class:`~aifi.gateway.ingest.pipeline.Ingest`, the one
  path both take: header read, file stored, row committed, then acknowledged;
- :mod:`~aifi.gateway.ingest.store` — the local durable store of received Part 10 files;
- :mod:`~aifi.gateway.ingest.index` — the ingest's SQLite index (``gw_instance``,
  ``gw_study``) with the C-STORE path's statements compiled once;
- :mod:`~aifi.gateway.ingest.part10` — the Part 10 framing (File Meta, header scan, SHA-256)
  and the C-STORE statuses; pure code, also used by :mod:`aifi.gateway.deid`.

Nothing is re-exported here, so importing :mod:`~aifi.gateway.ingest.part10` loads only that
module. May import: :mod:`aifi.gateway.persistence`, :mod:`aifi.gateway.config`, the shared
:mod:`aifi.dicomweb` code, :mod:`aifi.errors`, :mod:`aifi.clock` and
:mod:`aifi.hub.persistence.database`. Never :mod:`aifi.gateway.forward`,
:mod:`aifi.gateway.results` or :mod:`aifi.gateway.deid`: what leaves the hospital is the
workers' business; the ingest rings a doorbell and is done.
"""
