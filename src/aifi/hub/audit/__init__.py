"""The audit trail (issue 6): every access to patient-related data, and every export of it
by the hub, is recorded as one append-only ``audit_event`` row, following the IHE Basic
Audit Log Patterns (BALP) and DICOM PS3.15 A.5; it is read back as FHIR AuditEvents and sent
to a hospital's ATNA audit record repository over syslog.

Modules, from the pure core outwards:

- :mod:`~aifi.hub.audit.events` — what one record says (:class:`AuditEntry`), its
  classification and its FHIR R4 AuditEvent: pure code, no I/O.
- :mod:`~aifi.hub.audit.rows` — an entry as an ``audit_event`` row and back.
- :mod:`~aifi.hub.audit.trail` — :class:`AuditTrail`, the writer (a group-committing writer
  thread for requests, synchronous records for the rest), with the patient looked up.
- :mod:`~aifi.hub.audit.recording` — :class:`AuditMiddleware`, the ASGI layer that records
  each request to patient data.
- :mod:`~aifi.hub.audit.exports` — the reporters the PACS delivery and the FHIR notifier
  receive (:class:`PacsDeliveryAudit`, :class:`FhirExportAudit`).
- :mod:`~aifi.hub.audit.search` and :mod:`~aifi.hub.audit.backend` — AuditEvent read and
  search from the table (:class:`AuditingFhirBackend` wraps the hub's FHIR backend).
- :mod:`~aifi.hub.audit.syslog` — DICOM audit messages in RFC 5424 frames
  (:class:`SyslogExporter`, from a cursor in ``audit_cursor``); :mod:`~aifi.hub.audit.loop`
  keeps that export going in the app's lifespan.

Audit is declared by the composition root (:mod:`aifi.hub.app`), never patched in::

    trail = AuditTrail(db, fhir_store, operator_tenant=settings.default_tenant)
    deliverer = Deliverer(..., audit=PacsDeliveryAudit(trail, destinations))
    notifier = FhirNotifier(..., audit=FhirExportAudit(trail, settings.epd_fhir_urls))
    backend = AuditingFhirBackend(HubFhirBackend(...), trail)
    exporter = SyslogExporter(db, url, ca_file=...) if url else None
    app.add_middleware(AuditMiddleware, trail=trail)  # last: the outermost middleware
    stop = start_audit_loop(trail, exporter, settings.audit_poll_seconds)  # in the lifespan

May import: :mod:`aifi.clock`, :mod:`aifi.dicom_json`, :mod:`aifi.errors`, :mod:`aifi.fhir`
(mapping, codes, search, types), the hub's persistence (:mod:`aifi.hub.persistence`), the
FHIR store's date helpers (:mod:`aifi.hub.fhir.store`) and the policy's rules
(:mod:`aifi.hub.auth.policy`). Nothing in the hub imports this package
but the composition root, the CLI and tests: the reporters are handed to the senders, which
know them only as the callables they call.
"""
