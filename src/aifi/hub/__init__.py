"""The central hub: composition at the top, one subpackage per concept.

Top level (composition only): :mod:`~aifi.hub.settings` (what an operator sets),
:mod:`~aifi.hub.wiring` (the composition root: :func:`~aifi.hub.wiring.build_hub` builds every
part once, in the order a study meets them), :mod:`~aifi.hub.app` (the FastAPI app over it),
:mod:`~aifi.hub.serve` with :mod:`~aifi.hub.log_hygiene` and :mod:`~aifi.hub.direct_send`
(running it under uvicorn).

Concepts, in the order of a study's path (ARCHITECTURE.md):

- :mod:`~aifi.hub.persistence` — the database, tables per concern, migrations, the outbox;
- :mod:`~aifi.hub.store` — the SQL DICOM store (files + index) and QIDO-RS over it;
- :mod:`~aifi.hub.orchestration` — the study router and the AIW-I Task Manager;
- :mod:`~aifi.hub.worklist` — the UPS worklist, its events, a performer's visibility;
- :mod:`~aifi.hub.results` — the IHE AIR result gate, completion, release;
- :mod:`~aifi.hub.delivery` — PACS destinations, their clients, the delivery outbox;
- :mod:`~aifi.hub.fhir` — the hub's FHIR store, projection, notifications, EPD requests;
- :mod:`~aifi.hub.audit` — the audit trail (IHE BALP, ATNA export);
- :mod:`~aifi.hub.auth` — tenants, OAuth2 clients and tokens, the principal resolver;
- :mod:`~aifi.hub.admin` — what an operator runs outside the app (clients, tenants);
- :mod:`~aifi.hub.api` — the hub's own HTTP API (``/api/v1``) and its ``Annotated``
  dependencies (:mod:`~aifi.hub.api.deps`).

Dependencies point down that list's foundations: every concept may import
:mod:`aifi.dicom_json`, :mod:`aifi.clock`, :mod:`aifi.errors`, the standards packages
(:mod:`aifi.dicomweb`, :mod:`aifi.fhir`, :mod:`aifi.ihe_profiles`) and
:mod:`~aifi.hub.persistence`; a concept imports another only through what its
``__init__`` says; nothing in a concept imports the composition modules at the top. The hub
never imports :mod:`aifi.vendors`, :mod:`aifi.conformance`, :mod:`aifi.bench` or
:mod:`aifi.demo` (they drive the hub; they are not part of it).
"""
