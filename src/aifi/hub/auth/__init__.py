"""Who may do what on the hub (issue 6; ARCHITECTURE.md step 7).

- :mod:`~aifi.hub.auth.tenants` — valid tenant (hospital) ids, the development resolver;
- :mod:`~aifi.hub.auth.clients` — the OAuth2 client registry (SMART Backend Services:
  ``private_key_jwt`` with a JWKS, or ``client_secret_basic``);
- :mod:`~aifi.hub.auth.tokens` — the signing keys (rotated) and the access tokens they sign;
- :mod:`~aifi.hub.auth.server` — the built-in authorization server (``/oauth/token``);
- :mod:`~aifi.hub.auth.resolver` — who is calling (built-in tokens, an external OpenID
  Connect provider's, or development mode), rate and body limits, the authorizer every
  route goes through;
- :mod:`~aifi.hub.auth.policy` — the scope each route declares, and the OpenAPI security.

May import: :mod:`aifi.hub.persistence`, :mod:`aifi.principal`, :mod:`aifi.errors`,
:mod:`aifi.clock`; never another concept of the hub.
"""
