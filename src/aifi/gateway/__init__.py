"""The hospital gateway: what a hospital installs next to its PACS (``aifi gateway serve``).

DICOM in (a DIMSE SCP for C-ECHO and C-STORE, and STOW-RS), a local durable store,
pseudonymisation at egress (DICOM PS3.15 Annex E, :mod:`aifi.gateway.deid`) with the
pseudonym map kept only in the gateway's own database, a store-and-forward outbox to the
central hub (STOW-RS with OAuth2), and results pulled back from the hub, re-identified and
delivered into the PACS. The gateway opens every connection itself: the hub never calls
into the hospital.
"""
