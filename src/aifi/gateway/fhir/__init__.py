"""The gateway's FHIR R4 side for the EPD (issue 17): the EPD talks to ``{gateway}/fhir``
exactly as to the hub, with the hospital's own identities.

- :mod:`~aifi.gateway.fhir.translate` — :class:`FhirTranslator`: pseudonymise queries and
  bodies on the way in, re-identify every answer on the way out (PS3.15 Annex E, E.1.2);
- :mod:`~aifi.gateway.fhir.query` — search parameters and date shifts (search.html);
- :mod:`~aifi.gateway.fhir.hub_fhir` — :class:`HubFhir`, the gateway's FHIR client of the hub;
- :mod:`~aifi.gateway.fhir.backend` — the relaying :class:`~aifi.fhir.types.FhirBackend`;
- :mod:`~aifi.gateway.fhir.facade` — wiring at ``/fhir`` (router, CapabilityStatement, errors);
- :mod:`~aifi.gateway.fhir.subscriptions`, ``changes``, ``epd_push`` — subscriptions relayed
  to the EPD and the EPD push.

Nothing is imported here: the modules are loaded where they are used (the command line and
the worker process do not pay for the web stack).
"""

__all__: list[str] = []
