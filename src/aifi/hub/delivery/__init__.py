"""Delivery of released AI results to the hospitals' PACS.

``deliverer`` works the durable ``delivery`` outbox with the outbox engine
(:mod:`aifi.hub.persistence.outbox`); ``attempt`` sends one claimed row's instances;
``destinations`` reads the tenants' PACS destinations and picks a client for each:
``dicomweb_client`` (STOW-RS, PS3.18 §10.5) or ``dimse_client`` (C-STORE, PS3.4 Annex B).

May import: ``aifi.dicomweb``, ``aifi.dicom_json``, ``aifi.errors``, ``aifi.clock``,
``aifi.hub.persistence`` and the DICOM/HTTP libraries (pydicom, pynetdicom, httpx); not the
hub's routers or composition. The gateway reuses ``destinations`` and the clients.
"""
