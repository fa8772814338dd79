"""FHIR R4 for the EPD: a Task per AI request, a DiagnosticReport with Observations per result,
the REST API, search, subscriptions and the EPD client.

* :mod:`~aifi.fhir.mapping` — the hub's state (the views of :mod:`~aifi.fhir.views`) as
  resources: Patient, Device, ImagingStudy, Task, DiagnosticReport, Observation, Provenance,
  Communication (an urgent finding);
* :mod:`~aifi.fhir.api` — the RESTful API (read, vread, search, create, update, delete) on a
  :class:`~aifi.fhir.types.FhirBackend` it is given; :mod:`~aifi.fhir.capability` (the
  CapabilityStatement), :mod:`~aifi.fhir.search` (search parameters, parsing, index values),
  :mod:`~aifi.fhir.bundles` (searchset Bundles);
* :mod:`~aifi.fhir.subscriptions` — rest-hook Subscriptions (R5 Backport IG) and their
  notifications; :mod:`~aifi.fhir.epd_client` — POSTing Bundles to a subscriber or an EPD;
* :mod:`~aifi.fhir.resources` (validation, OperationOutcome), :mod:`~aifi.fhir.codes`
  (identifier and code systems), :mod:`~aifi.fhir.types` (the shapes shared by all of them).

What it may import: the leaves :mod:`aifi` (its version), :mod:`aifi.errors` and
:mod:`aifi.principal`, and fhir.resources, pydantic, FastAPI/Starlette and httpx. Never
:mod:`aifi.hub` or :mod:`aifi.gateway` (the hub implements
:class:`~aifi.fhir.types.FhirBackend` and builds the views), nor :mod:`aifi.dicomweb`,
:mod:`aifi.ihe_profiles` or :mod:`aifi.vendors`.
"""
