"""The web console: HTML pages plus their locally served scripts and styles, mounted at ``/console``.

The pages are thin shells; the scripts in ``static/`` call the JSON API (``/api/v1``) of the same
app and follow its Server-Sent Events stream, so one process and one port serve everything and
nothing is loaded from the internet (the Content-Security-Policy below enforces that in the browser).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import MediaType, Response, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

from api.context import AppContext

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
PREFIX = "/console"


@dataclass(frozen=True, slots=True)
class Page:
    key: str
    title: str
    script: str


#: the console's pages, in navigation order (key = URL segment = template name)
PAGES: tuple[Page, ...] = (
    Page("overview", "Overview", "overview.js"),
    Page("profile", "User profile", "profile.js"),
    Page("rules", "Rules", "rules.js"),
    Page("operations", "Operations", "operations.js"),
    Page("data", "Data configuration", "data.js"),
)

# Everything from this origin only: a page that tried to reach a CDN would fail loudly in the
# browser (and in the browser tests) instead of silently depending on the internet.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def console_router() -> Router:
    """Route handlers for ``/console`` (the pages) and ``/console/static`` (scripts, styles, icon)."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    by_key = {p.key: p for p in PAGES}

    def static_url(name: str) -> str:
        return f"{PREFIX}/static/{name}"

    def render(page: Page) -> Response[str]:
        html = env.get_template(f"{page.key}.html").render(
            page=page, pages=PAGES, static=static_url, prefix=PREFIX, api="/api/v1"
        )
        return Response(
            html,
            media_type=MediaType.HTML,
            headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"},
        )

    @get(["/", ""], include_in_schema=False, name="console-index")
    async def index() -> Redirect:
        return Redirect(path=f"{PREFIX}/overview")

    @get("/{key:str}", include_in_schema=False, name="console-page")
    async def page(key: FromPath[str]) -> Response[str]:
        found = by_key.get(key)
        if found is None:
            raise NotFoundException(f"no console page {key!r}; pages: {', '.join(by_key)}")
        return render(found)

    # The profile page's "random user" helper; the API has no user listing, so the console
    # asks the profiles projection itself for one id.
    @get("/random-user", include_in_schema=False, name="console-random-user", sync_to_thread=True)
    def random_user(ctx: NamedDependency[AppContext]) -> dict[str, str]:
        profiles = ctx.store().profiles
        total = profiles.count()
        if total == 0:
            raise NotFoundException("no users yet: the dataflow has not folded any profile")
        return {"user_id": profiles.ids(limit=1, offset=random.randrange(total))[0]}

    static = create_static_files_router(
        path="/static",
        directories=[STATIC],
        name="console-static",
        include_in_schema=False,
        # revalidate every time: the page scripts import each other by plain URL, so a stale copy
        # of one module next to a fresh other would break the page after an upgrade
        cache_control=CacheControlHeader(no_cache=True),
    )
    return Router(path=PREFIX, route_handlers=[index, page, random_user, static], include_in_schema=False)


def __getattr__(name: str) -> object:
    """``route_handlers``: what ``api.app.create_app`` mounts — a fresh router per app, so two apps in
    one process (tests) never share handler objects."""
    if name == "route_handlers":
        return [console_router()]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PAGES", "Page", "console_router"]
