"""Adapters to AI products: the IHE AIW-I Task Performer and what it drives.

* :mod:`aifi.vendors.performer` — :class:`~aifi.vendors.performer.Performer`, a UPS-RS
  Task Performer (PS3.18 ch. 11; IHE RAD TF AIW-I RAD-81..RAD-86) working the hub's
  worklist over HTTP, with Triggered Pull over the WebSocket event channel; the
  :class:`~aifi.vendors.performer.Analyzer` protocol it calls. The requests it makes are
  :class:`~aifi.vendors.ups_client.UpsClient`'s (:mod:`aifi.vendors.ups_client`).
* :mod:`aifi.vendors.push` — :class:`~aifi.vendors.push.PushAnalyzer`, for products that
  cannot pull: POSTs the inputs as multipart/related DICOM and reads the results back.
* :mod:`aifi.vendors.reference` — :class:`~aifi.vendors.reference.ReferenceAnalyzer`, a
  Basic Text SR per workitem, for tests and the demo.
* :mod:`aifi.vendors.products` — the reference products (DEMONSTRATORS, not for clinical
  use): ``skeletal-age``, ``fracture-detection``, ``incidental-pe``, returning IHE AIR
  results computed from the pixels of :mod:`aifi.conformance.pilot_studies`.
* :mod:`aifi.vendors.convert` — :class:`~aifi.vendors.convert.ConvertingAnalyzer`, for
  products that answer only with Secondary Capture / GSPS: adds the algorithm
  identification and a TID 1500 SR read from them.
* :mod:`aifi.vendors.channel` — the UPS event channel (wake-ups, Cancel Requested);
  :mod:`aifi.vendors.transport` — HTTP helpers; :mod:`aifi.vendors.workitem` — workitems
  as a performer reads and writes them.
* :mod:`aifi.vendors.cli` — ``aifi performer run``, ``aifi vendors run|list``.

What it may import: the leaves :mod:`aifi.dicom_json`, :mod:`aifi.errors` and
:mod:`aifi.oauth_client`; the codecs of :mod:`aifi.dicomweb` (multipart, media types,
Part 10); and :mod:`aifi.ihe_profiles` (IHE AIR result builders). This package talks to the
hub only over HTTP: it never imports :mod:`aifi.hub` or :mod:`aifi.gateway` (nor
:mod:`aifi.fhir`, :mod:`aifi.conformance` or :mod:`aifi.demo`). See ``docs/vendor-guide.md``.
"""
