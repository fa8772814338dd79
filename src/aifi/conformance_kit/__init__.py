"""The conformance kit (``aifi conformance …``, issue 18): what an AI vendor, a PACS owner or
an EPD integrator runs to prove their system works with aifi-hub, with a report they hand to
the hub's operator.

* :mod:`~aifi.conformance_kit.performer` — an AI product as an IHE AIW-I Task Performer,
  against the kit's own private hub;
* :mod:`~aifi.conformance_kit.pacs` — a hospital PACS as the destination of AI results
  (DICOMweb or DIMSE);
* :mod:`~aifi.conformance_kit.epd` — an EPD's FHIR endpoint as the hub uses it;
* :mod:`~aifi.conformance_kit.report` — the report (JSON, HTML, JUnit XML);
* :mod:`~aifi.conformance_kit.cli` — the commands; :mod:`~aifi.conformance_kit.finish`.

It is a driver, like :mod:`aifi.demo`: it starts and watches the product, so it may import
:mod:`aifi.hub` (the performer kit's private hub and the hub's own clients for PACS and EPD,
so the kit tests exactly what the hub will do), :mod:`aifi.vendors` (the push adapter),
:mod:`aifi.conformance` (generated studies, DCMTK, Orthanc), :mod:`aifi.ihe_profiles`,
:mod:`aifi.fhir`, :mod:`aifi.gateway` (the pseudonymiser, the EPD push's builders),
:mod:`aifi.dicomweb` and the leaves. Nothing imports it but :mod:`aifi.cli`: the hub reads a
report's JSON with its own code (:mod:`aifi.hub.admin.conformance_records`) to record it.
"""
