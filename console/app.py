"""The console's Starlette application: its routes, the CSRF middleware, the static files,
and how maas errors become pages (PERMISSION_DENIED is shown as such, UNAUTHENTICATED leads to
the login page)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from console.clients import ClientPool
from console.pages import STATIC_DIR, LoginRequired, render, templates
from console.routes import auth, models, queues, training, try_model
from console.security import CsrfMiddleware
from console.settings import ConsoleSettings
from maas.errors import MaasError, NotFound, PermissionDenied, Unauthenticated


def build_app(settings: ConsoleSettings) -> Starlette:
    pool = ClientPool(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await pool.close()

    routes = [*auth.ROUTES, *models.ROUTES, *training.ROUTES, *queues.ROUTES,
              *try_model.ROUTES, Mount("/static", StaticFiles(directory=STATIC_DIR),
                                       name="static")]
    app = Starlette(routes=routes, middleware=[Middleware(CsrfMiddleware)], lifespan=lifespan,
                    exception_handlers={LoginRequired: _login, Unauthenticated: _login,
                                        MaasError: _maas_error})
    app.state.settings = settings
    app.state.clients = pool
    app.state.templates = templates()
    return app


async def _login(request: Request, exc: Exception) -> Response:
    """Pages lead to the login form; the scripts' calls get 401."""
    if request.method != "GET" or "text/html" not in request.headers.get("accept", ""):
        return Response("401 Unauthorized: log in with an API key", status_code=401)
    where = quote(request.url.path, safe="/")
    return RedirectResponse(f"/login?next={where}", status_code=303)


async def _maas_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MaasError)
    status = 403 if isinstance(exc, PermissionDenied) else 404 if isinstance(
        exc, NotFound) else 502
    return render(request, "error.html", {"error": exc, "code": exc.code.name},
                  status_code=status)
