"""What an operator runs against a hub's database, outside the running app: ``aifi clients``
(:mod:`~aifi.hub.admin.clients_cli`: register OAuth2 clients, rotate, revoke; a performer
with its conformance report, read and recorded by :mod:`~aifi.hub.admin.conformance_records`),
``aifi tenants`` (:mod:`~aifi.hub.admin.tenants_cli`), and the same registration for the
project's own harnesses (:mod:`~aifi.hub.admin.local_clients`: ``aifi demo`` and the
benchmarks run the hub with authentication on).

May import: :mod:`aifi.hub.settings` and :mod:`aifi.hub.serve` (to find the hub's database
as ``aifi serve`` would), :mod:`aifi.hub.auth`, :mod:`aifi.hub.persistence`,
:mod:`aifi.oauth_client`. Nothing in the hub imports it.
"""
