"""The hub side of FHIR R4 for the EPD (ARCHITECTURE.md steps 3, 5 and 6).

- :mod:`~aifi.hub.fhir.store` — :class:`SqlFhirStore`: versioned resources per tenant with
  their search index, telling its subscribers of each change;
- :mod:`~aifi.hub.fhir.changes` and :mod:`~aifi.hub.fhir.projection` — what a transaction
  changed is noted in it and projected after the commit: Task per workitem,
  DiagnosticReport + Observations + Provenance per result, Device per product, ImagingStudy
  per routed study (:mod:`~aifi.hub.fhir.study_view`);
- :mod:`~aifi.hub.fhir.notify` — subscription notifications (R4 Subscriptions Backport,
  rest-hook) and the EPD push, on the outbox engine;
- :mod:`~aifi.hub.fhir.requests` — the EPD asks for AI with a Task;
- :mod:`~aifi.hub.fhir.backend` — the hub behind the FHIR REST API of :mod:`aifi.fhir`.

May import: :mod:`aifi.fhir`, :mod:`aifi.hub.persistence`, :mod:`aifi.hub.orchestration`
(requests), :mod:`aifi.hub.worklist`, :mod:`aifi.ihe_profiles`, :mod:`aifi.dicomweb`,
:mod:`aifi.dicom_json`, :mod:`aifi.clock`, :mod:`aifi.errors`.
"""
