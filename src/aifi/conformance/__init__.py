"""Conformance kits (``aifi conformance ...``) that test external PACS, EPD and AI-product
endpoints and report exactly what is and is not conformant. Not yet implemented.
"""
