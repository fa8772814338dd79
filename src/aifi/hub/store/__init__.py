"""The hub's DICOM store: instances as files in a folder, indexed in SQL.

:class:`~aifi.hub.store.repository.SqlDicomStore` is the hub's
:class:`~aifi.dicomweb.store.DicomStore` (STOW-RS, WADO-RS, QIDO-RS); its parts are the
folder and its staging area (``files``), the statements compiled once per dialect
(``statements``), the index rows of a batch (``index``), QIDO-RS over the index (``qido``,
the attributes it returns in ``qido_attributes``), and a tenant's de-identification policy
(``deidentified``).

May import: :mod:`aifi.dicom_json`, :mod:`aifi.clock`, :mod:`aifi.errors`,
:mod:`aifi.dicomweb` and :mod:`aifi.hub.persistence`; nothing else of the hub.
"""
