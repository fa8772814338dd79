"""The PACS kit (``aifi conformance pacs``, issue 18 point 2): a hospital PACS tested as the
destination of AI results, over DICOMweb (PS3.18: STOW-RS §10.5, QIDO-RS §10.6, WADO-RS
§10.4) or DIMSE (PS3.4: Storage Annex B, Query/Retrieve C-FIND/C-GET/C-MOVE Annex C).

* :mod:`~aifi.conformance_kit.pacs.command` — the typer command :func:`pacs`;
* :mod:`~aifi.conformance_kit.pacs.objects` — the generated study and its five IHE AIR
  results (SR TID 1500, SEG, GSPS, SC, KOS);
* :mod:`~aifi.conformance_kit.pacs.cases` — store, find, retrieve, resend;
  :mod:`~aifi.conformance_kit.pacs.cleanup` — removing what was stored;
* :mod:`~aifi.conformance_kit.pacs.compare` — what the PACS changed (pure);
* :mod:`~aifi.conformance_kit.pacs.services` — the find and retrieve protocols;
  :mod:`~aifi.conformance_kit.pacs.dicomweb` and :mod:`~aifi.conformance_kit.pacs.dimse`
  implement them.

Storing goes through the hub's own delivery clients
(:mod:`aifi.hub.delivery.dicomweb_client`, :mod:`aifi.hub.delivery.dimse_client`), so the kit
tests exactly what the hub will do.

What it may import: :mod:`aifi.hub.delivery` (those clients and AE title validation),
:mod:`aifi.conformance` (generated studies), :mod:`aifi.ihe_profiles.air` (the builders),
:mod:`aifi.dicomweb` (media types, multipart reading), :mod:`aifi.oauth_client`,
:mod:`aifi.errors`, :mod:`aifi.conformance_kit.report` and ``finish``; pydicom, pynetdicom,
httpx, typer. Nothing imports it but :mod:`aifi.conformance_kit.cli`.
"""
