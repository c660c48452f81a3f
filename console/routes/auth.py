"""Logging in with an API key (kept in an HttpOnly, SameSite=Strict cookie, checked against
the gateway first) and out; `/` leads to the models."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from console.pages import render, settings_of
from console.security import KEY_COOKIE, cookie_attributes, read_form
from maas.errors import MaasError, Unauthenticated


def _next_path(raw: str | None) -> str:
    """Only a path of this console (never another site's URL) to go back to."""
    if raw and raw.startswith("/") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return "/models"


async def home(request: Request) -> Response:
    return RedirectResponse("/models", status_code=303)


async def login_page(request: Request) -> Response:
    return render(request, "login.html", {"next": _next_path(request.query_params.get("next")),
                                          "message": ""})


async def login(request: Request) -> Response:
    form = await read_form(request)
    key, where = form.get("api_key", "").strip(), _next_path(form.get("next"))
    message = "" if key else "Enter an API key."
    if key:
        try:  # the gateway says whether the key is good; the console keeps nothing else
            await request.app.state.clients.verify(key)
        except Unauthenticated:
            message = "The gateway refused this API key (unknown or revoked)."
        except MaasError as err:
            message = f"The gateway answered {err.code.name}: {err.message}"
    if message:
        return render(request, "login.html", {"next": where, "message": message},
                      status_code=401)
    response = RedirectResponse(where, status_code=303)
    response.set_cookie(KEY_COOKIE, key,
                        **cookie_attributes(request.url.scheme == "https"))
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse("/login" if settings_of(request).is_auth else "/models",
                                status_code=303)
    response.delete_cookie(KEY_COOKIE, path="/", httponly=True, samesite="strict")
    return response


ROUTES = [
    Route("/", home),
    Route("/login", login_page, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
]
