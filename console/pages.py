"""What every route shares: the caller's SDK client (with their own API key), and rendering a
template with the user, the CSRF token and the navigation filled in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from console.formatting import FILTERS
from console.security import api_key
from console.settings import ConsoleSettings
from maas import AsyncClient

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
NAV = (("/models", "Models"), ("/training", "Training"), ("/queues", "Queues"),
       ("/workers", "Workers"), ("/try", "Try a model"))


class LoginRequired(Exception):
    """Auth is on and the request carries no API key: the handler shows the login page."""


def templates() -> Jinja2Templates:
    """Every value escaped (autoescape on for every template), unknown names an error."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters.update(FILTERS)
    return Jinja2Templates(env=env)


def settings_of(request: Request) -> ConsoleSettings:
    settings: ConsoleSettings = request.app.state.settings
    return settings


async def client_for(request: Request) -> AsyncClient:
    """The client that calls the gateway as this user: their key when auth is on."""
    key = api_key(request)
    if settings_of(request).is_auth and key is None:
        raise LoginRequired
    client: AsyncClient = await request.app.state.clients.get(key)
    return client


def render(request: Request, name: str, context: dict[str, Any] | None = None,
           status_code: int = 200) -> Response:
    page = {"nav": NAV, "path": request.url.path, "csrf_token": request.state.csrf_token,
            "is_auth": settings_of(request).is_auth, "is_logged_in": api_key(request) is not None,
            **(context or {})}
    response: Response = request.app.state.templates.TemplateResponse(
        request, name, page, status_code=status_code)
    response.headers["cache-control"] = "no-store"
    return response
