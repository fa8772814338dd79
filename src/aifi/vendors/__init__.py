"""Adapters to AI products: the IHE AIW-I Task Performer and what it drives.

* :mod:`aifi.vendors.performer` — :class:`~aifi.vendors.performer.Performer`, a UPS-RS
  Task Performer (PS3.18 ch. 11; IHE RAD TF AIW-I RAD-81..RAD-86) working the hub's
  worklist over HTTP, with Triggered Pull over the WebSocket event channel; the
  :class:`~aifi.vendors.performer.Analyzer` protocol it calls.
* :mod:`aifi.vendors.push` — :class:`~aifi.vendors.push.PushAnalyzer`, for products that
  cannot pull: POSTs the inputs as multipart/related DICOM and reads the results back.
* :mod:`aifi.vendors.reference` — :class:`~aifi.vendors.reference.ReferenceAnalyzer`, a
  Basic Text SR per workitem, for tests and the demo.
* :mod:`aifi.vendors.cli` — ``aifi performer run``.

This package talks to the hub only over HTTP; it never imports :mod:`aifi.hub`.
See ``docs/vendor-guide.md``.
"""
