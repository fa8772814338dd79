"""aifi-hub: an open, standards-based integration hub for radiology AI.

Subpackages, one per concern (see ARCHITECTURE.md):

- :mod:`aifi.dicomweb` — DICOM PS3.18 web services (STOW-RS, QIDO-RS, WADO-RS) and codecs.
- :mod:`aifi.ihe_profiles` — IHE AIW-I and AIR.
- :mod:`aifi.fhir` — FHIR R4 for the EPD.
- :mod:`aifi.vendors` — adapters to AI products.
- :mod:`aifi.hub` — composition: settings, persistence, storage, app factory, CLI services.
- :mod:`aifi.gateway` — the hospital edge (DIMSE, pseudonymisation).
- :mod:`aifi.conformance` — conformance kits for external endpoints.
"""

__version__ = "0.1.0"
