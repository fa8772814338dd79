"""The interactive API documentation, served without a CDN (issue 19 point 5): Swagger UI at
``/docs`` (with its OAuth2 redirect page at ``/docs/oauth2-redirect``) and ReDoc at ``/redoc``
over the app's OpenAPI document (OpenAPI 3.1), their scripts and styles at
``/docs/assets/{asset}``.

FastAPI's own pages load Swagger UI and ReDoc from a public CDN, so on a hospital network
without internet they stay blank. The assets here come from the ``fastapi-offline``
package, which ships Swagger UI's bundle and stylesheet, ReDoc's standalone bundle and a
favicon as package data; nothing is copied into this repository. The pages are FastAPI's
(:func:`fastapi.openapi.docs.get_swagger_ui_html`, :func:`~fastapi.openapi.docs.get_redoc_html`)
pointed at those assets, with Google Fonts off for ReDoc and Swagger UI's online validator
badge off (it would send the document's URL to a public validator).

The hub's "Authorize" button keeps working: the OpenAPI document declares the built-in
server's client-credentials flow with a relative token URL (``/oauth/token``), the same
origin as the page. Both the hub and the gateway install these routes; the hub's route
table (:data:`aifi.hub.auth.policy.RULES`) declares them public.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, Response

DOCS_PATH = "/docs"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"
REDOC_PATH = "/redoc"
ASSETS_PATH = "/docs/assets"

Asset = Literal["swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"]

MEDIA_TYPES: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
"""Every asset the pages use, with its media type; nothing else is served."""

_PACKAGE = "fastapi_offline"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",  # the page's own inline start-up script
        "style-src 'self' 'unsafe-inline'",  # ReDoc's styles are inserted at run time
        "img-src 'self' data:",
        "worker-src 'self' blob:",  # ReDoc's search index
        "connect-src 'self'",  # the OpenAPI document, the token endpoint
        "frame-ancestors 'none'",
    )
)
"""The pages' Content-Security-Policy (CSP Level 3): the browser loads and connects to
nothing outside the hub, so even what the bundles would fetch by themselves (ReDoc's
sidebar shows a logo from its vendor's CDN) is never requested."""


def asset_bytes(asset: str) -> bytes:
    """The content of ``asset`` as the ``fastapi-offline`` package ships it."""
    if asset not in MEDIA_TYPES:
        raise KeyError(asset)
    return files(_PACKAGE).joinpath("static", asset).read_bytes()


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _same_origin_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page


def install_api_docs(app: FastAPI) -> None:
    """Add ``/docs``, ``/docs/oauth2-redirect``, ``/redoc`` and the assets to ``app`` (built
    with ``docs_url=None, redoc_url=None``). The pages are not part of the OpenAPI document;
    the assets route is (it is a route like any other, public)."""
    assets = {name: asset_bytes(name) for name in MEDIA_TYPES}  # read once, at start-up

    @app.get(DOCS_PATH, include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = _root(request)
        return _same_origin_only(
            get_swagger_ui_html(
                openapi_url=root + (app.openapi_url or "/openapi.json"),
                title=f"{app.title} - Swagger UI",
                oauth2_redirect_url=root + OAUTH2_REDIRECT_PATH,
                swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
                swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
                swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
                init_oauth=app.swagger_ui_init_oauth,
            )
        )

    @app.get(OAUTH2_REDIRECT_PATH, include_in_schema=False)
    def swagger_ui_oauth2_redirect() -> HTMLResponse:
        return _same_origin_only(get_swagger_ui_oauth2_redirect_html())

    @app.get(REDOC_PATH, include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = _root(request)
        return _same_origin_only(
            get_redoc_html(
                openapi_url=root + (app.openapi_url or "/openapi.json"),
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
                with_google_fonts=False,
            )
        )

    @app.get(
        ASSETS_PATH + "/{asset}",
        tags=["operations"],
        summary="A script, stylesheet or icon of the API documentation pages",
        response_class=Response,
        responses={
            200: {
                "description": "The asset, as the fastapi-offline package ships it.",
                "content": {"text/javascript": {}, "text/css": {}, "image/png": {}},
            }
        },
    )
    def docs_asset(asset: Asset) -> Response:
        return Response(
            assets[asset],
            media_type=MEDIA_TYPES[asset],
            headers={"Cache-Control": "public, max-age=86400"},
        )


__all__ = [
    "ASSETS_PATH",
    "CONTENT_SECURITY_POLICY",
    "MEDIA_TYPES",
    "asset_bytes",
    "install_api_docs",
]
