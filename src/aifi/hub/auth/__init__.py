"""OAuth2 for every API (issue 6): the built-in SMART Backend Services authorization
server, resource-server mode for an external OpenID Connect provider, the scope of every
route, and the principal resolver. See :mod:`aifi.hub.auth.policy` for the scopes."""
