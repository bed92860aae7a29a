"""The OpenAPI UI (``/schema/swagger``) with Swagger UI's scripts and styles served by this app.

Litestar's Swagger plugin loads them from a CDN by default, so the page stayed blank without internet.
The ``swagger-ui-py`` package ships Swagger UI's release files (5.x, which reads OpenAPI 3.1 as Litestar
writes it; Apache 2.0, the licence beside them in the package); they are served from ``/schema/assets``
and the plugin is pointed at them. Only the files are used: the package's framework glue is not imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

#: where the assets are served; beside the schema, outside every API prefix
ASSETS = "/schema/assets"
FAVICON = "<link rel='icon' href='/console/static/favicon.svg' type='image/svg+xml'>"


def swagger_ui_files() -> Path:
    """The folder of Swagger UI's release files in the installed ``swagger-ui-py`` (found, not imported)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is missing: pip install swagger-ui-py")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def swagger_plugin() -> SwaggerRenderPlugin:
    """The Swagger UI page at ``/schema/swagger``, every file it loads from this server."""
    return SwaggerRenderPlugin(
        path="/swagger",
        js_url=f"{ASSETS}/swagger-ui-bundle.js",
        css_url=f"{ASSETS}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS}/swagger-ui-standalone-preset.js",
        favicon=FAVICON,
    )


def assets_router() -> Router:
    """Swagger UI's release files from the installed package, revalidated on each load (the paths name
    no version, and an upgrade must not leave a stale bundle in a browser)."""
    return create_static_files_router(
        path=ASSETS,
        directories=[swagger_ui_files()],
        name="openapi-assets",
        include_in_schema=False,
        cache_control=CacheControlHeader(no_cache=True),
    )
