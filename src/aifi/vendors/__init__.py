"""Adapters to AI products: the IHE AIW-I Task Performer and what it drives.

* :mod:`aifi.vendors.performer` — :class:`~aifi.vendors.performer.Performer`, a UPS-RS
  Task Performer (PS3.18 ch. 11; IHE RAD TF AIW-I RAD-81..RAD-86) working the hub's
  worklist over HTTP, with Triggered Pull over the WebSocket event channel; the
  :class:`~aifi.vendors.performer.Analyzer` protocol it calls.
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
  :mod:`aifi.vendors.transport` — HTTP helpers.
* :mod:`aifi.vendors.cli` — ``aifi performer run``, ``aifi vendors run|list``.

This package talks to the hub only over HTTP; it never imports :mod:`aifi.hub`.
See ``docs/vendor-guide.md``.
"""
