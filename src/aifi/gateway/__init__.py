"""The hospital edge: DIMSE (C-STORE/C-ECHO), pseudonymisation at egress (PS3.15 Annex E),
re-identification of results and forwarding to the PACS. Not yet implemented.
"""
