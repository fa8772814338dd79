"""What aifi-hub is checked against and with: independent peers and generated studies, for the
interoperability tests, the demo, the benchmarks and (later) the conformance kits
(``aifi conformance ...``) that test external PACS, EPD and AI-product endpoints.

* :mod:`~aifi.conformance.orthanc` — a real Orthanc with its DICOMweb plugin, started on
  demand; :mod:`~aifi.conformance.dcmtk` — DCMTK's command-line tools;
* :mod:`~aifi.conformance.synthetic` — synthetic CT and DX studies;
  :mod:`~aifi.conformance.pilot_studies` — the three pilot use cases' studies, with the
  answer drawn into the pixels. Never patient data.

What it may import: :mod:`aifi.errors` and the codecs of :mod:`aifi.dicomweb` (Part 10),
and pydicom, numpy and httpx. Never :mod:`aifi.hub`, :mod:`aifi.gateway`,
:mod:`aifi.vendors` or :mod:`aifi.demo`: it checks them from outside.
"""
