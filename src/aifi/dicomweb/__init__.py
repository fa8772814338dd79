"""DICOM PS3.18 web services: STOW-RS, QIDO-RS, WADO-RS, capabilities, and their codecs.

This package never imports :mod:`aifi.hub`. Routers get what they need through FastAPI
dependencies (:mod:`aifi.dicomweb.deps`): a :class:`~aifi.dicomweb.store.DicomStore`, the
caller's :class:`~aifi.principal.Principal`, and :class:`~aifi.dicomweb.deps.DicomwebConfig`.
"""
