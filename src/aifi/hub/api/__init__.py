"""The hub's own HTTP API (``/api/v1``), for what the standards leave to the hub:
:mod:`~aifi.hub.api.studies` (the explicit completion signal, the routing explanation) and
:mod:`~aifi.hub.api.results` (AI results, the review gate, the results feed, notifications).

Routers receive their services as ``Annotated`` dependencies from :mod:`aifi.hub.api.deps`.
May import: :mod:`aifi.hub.api.deps` and the hub's concept packages, :mod:`aifi.principal`,
:mod:`aifi.errors`, :mod:`aifi.clock`.
"""
