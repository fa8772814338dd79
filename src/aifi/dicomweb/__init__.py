"""DICOM PS3.18 web services: STOW-RS, QIDO-RS, WADO-RS, UPS-RS, capabilities, and their codecs.

What it holds, by concern:

* the service root: :mod:`~aifi.dicomweb.router` (one router, mounted by the app factory),
  :mod:`~aifi.dicomweb.capabilities`, :mod:`~aifi.dicomweb.deps` (FastAPI dependencies),
  :mod:`~aifi.dicomweb.errors` (``Warning: 299`` headers);
* STOW-RS: :mod:`~aifi.dicomweb.stow` (the transaction), :mod:`~aifi.dicomweb.stow_upload`,
  :mod:`~aifi.dicomweb.stow_staging`, :mod:`~aifi.dicomweb.stow_writer`,
  :mod:`~aifi.dicomweb.stow_response`, :mod:`~aifi.dicomweb.instance_checks`,
  :mod:`~aifi.dicomweb.multipart_reader`;
* QIDO-RS: :mod:`~aifi.dicomweb.qido` (the router), :mod:`~aifi.dicomweb.qido_query` (the
  query model), :mod:`~aifi.dicomweb.matching` (attribute matching),
  :mod:`~aifi.dicomweb.query_attributes`, :mod:`~aifi.dicomweb.attributes` (level sets and
  index records), :mod:`~aifi.dicomweb.vr_values`;
* WADO-RS: :mod:`~aifi.dicomweb.wado`, :mod:`~aifi.dicomweb.wado_request`,
  :mod:`~aifi.dicomweb.wado_bodies`, :mod:`~aifi.dicomweb.wado_rendered`,
  :mod:`~aifi.dicomweb.transfer_syntax`, :mod:`~aifi.dicomweb.transcode`,
  :mod:`~aifi.dicomweb.frames`, :mod:`~aifi.dicomweb.bulkdata`,
  :mod:`~aifi.dicomweb.rendering`, :mod:`~aifi.dicomweb.direct_send`;
* UPS-RS: :mod:`~aifi.dicomweb.ups_rs` (the router), :mod:`~aifi.dicomweb.worklist` (what it
  needs from a worklist, and the event queue);
* codecs: :mod:`~aifi.dicomweb.dicomjson` (metadata of stored instances),
  :mod:`~aifi.dicomweb.header_json`, :mod:`~aifi.dicomweb.json_model`,
  :mod:`~aifi.dicomweb.dicomxml`, :mod:`~aifi.dicomweb.multipart`,
  :mod:`~aifi.dicomweb.media`, :mod:`~aifi.dicomweb.part10`;
* what it needs from storage, as protocols: :mod:`~aifi.dicomweb.store`
  (:class:`~aifi.dicomweb.store.DicomStore`), :mod:`~aifi.dicomweb.visibility`.

What it may import: the leaves :mod:`aifi.dicom_json`, :mod:`aifi.errors` and
:mod:`aifi.principal`, and :mod:`aifi.ihe_profiles` (UPS-RS runs the UPS state machine and
the AIW-I workitem rules). The dependency between the two standards packages runs one way,
``dicomweb`` → ``ihe_profiles``; :mod:`aifi.ihe_profiles` never imports this package. Never
:mod:`aifi.hub`, :mod:`aifi.gateway`, :mod:`aifi.fhir` or :mod:`aifi.vendors`: routers get
what they need through FastAPI dependencies (:mod:`aifi.dicomweb.deps`): a
:class:`~aifi.dicomweb.store.DicomStore`, the caller's :class:`~aifi.principal.Principal`,
and :class:`~aifi.dicomweb.deps.DicomwebConfig`. Third-party: pydicom (with its pixel
decoders), numpy, Pillow, FastAPI/Starlette and anyio.
"""
