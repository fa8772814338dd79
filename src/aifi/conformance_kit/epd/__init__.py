"""``aifi conformance epd`` (issue 18 point 3): an EPD's FHIR endpoint tested as aifi-hub
uses it, with the project's own builders, so the kit sends exactly what the hub and the
gateway send.

* :mod:`~aifi.conformance_kit.epd.command` — the typer command ``epd``;
* :mod:`~aifi.conformance_kit.epd.client` — the kit's HTTP clients toward the EPD (the push's
  authentication: SMART Backend Services client credentials or a given bearer token; the
  hub's timeouts) and what they saw, as evidence;
* :mod:`~aifi.conformance_kit.epd.sample` — the generated report (fresh identifiers and a
  generated patient every run, never real data) built by :mod:`aifi.fhir.mapping` and
  wrapped by :func:`aifi.fhir.epd_client.report_transaction`, the push's own builder;
* :mod:`~aifi.conformance_kit.epd.capability` — ``metadata``, ``types.<Type>`` (FHIR R4
  http.html#capabilities, capabilitystatement.html);
* :mod:`~aifi.conformance_kit.epd.push` — ``push.transaction``, ``push.idempotent``,
  ``push.outcome`` (FHIR R4 http.html#transaction, http.html#ccreate ``If-None-Exist``);
* :mod:`~aifi.conformance_kit.epd.hook` — ``hook.handshake``, ``hook.heartbeat``,
  ``hook.notification``, ``hook.error`` (HL7 Subscriptions R5 Backport IG for R4, built by
  :func:`aifi.fhir.subscriptions.notification_bundle`).
"""
