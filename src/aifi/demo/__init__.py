"""``aifi demo``: the two-tier chain on one machine — a modality, the hospital's gateway,
the central hub, three reference AI products and a PACS — with no set-up (issue 15 point 8).

Demo code drives the product; it is not part of it (ARCHITECTURE.md "Wiring"):
:mod:`aifi.demo.run` (the whole demo), :mod:`aifi.demo.peers` (the processes it starts),
:mod:`aifi.demo.chain` (modality → gateway → hub → products → gateway → PACS),
:mod:`aifi.demo.views` (what it prints).

What it may import: everything it drives — :mod:`aifi.hub`, :mod:`aifi.gateway`,
:mod:`aifi.vendors` (the reference products), :mod:`aifi.conformance` (the pilot studies,
Orthanc, DCMTK), the codecs of :mod:`aifi.dicomweb` and the leaves (:mod:`aifi.dicom_json`,
:mod:`aifi.errors`, :mod:`aifi.oauth_client`). Nothing imports it but the command line.
"""

from aifi.demo.run import DemoResult, run_demo

__all__ = ["DemoResult", "run_demo"]
