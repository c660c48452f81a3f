"""What keeps the console's users safe: CSRF protection on every action, the cookie that
carries a user's API key, and headers that forbid scripts from anywhere but the console.

CSRF is a double submit: each browser gets a random token in a cookie (HttpOnly,
SameSite=Strict) and every page puts the same token in its forms (field `csrf_token`) or, for
the script's posts, in the `X-CSRF-Token` header. `CsrfMiddleware` refuses with 403 any POST
(or other unsafe method) whose token is missing or differs from the cookie's, before any route
runs, so no action can forget the check.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

CSRF_COOKIE = "maas_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
KEY_COOKIE = "maas_api_key"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The largest body a POST may have: a form, or an .npy input to try a model.
MAX_BODY_BYTES = 8 * 1024 * 1024
# Scripts, styles and connections only from the console itself; pictures also as data: URLs.
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff",
           "referrer-policy": "no-referrer", "x-frame-options": "DENY"}


def cookie_attributes(is_https: bool) -> dict[str, Any]:
    """The attributes of both cookies: never readable by scripts, never sent cross-site."""
    return {"httponly": True, "samesite": "strict", "secure": is_https, "path": "/"}


def form_fields(body: bytes) -> dict[str, str]:
    """An application/x-www-form-urlencoded body: the first value of each field."""
    parsed = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[0] for name, values in parsed.items()}


async def read_form(request: Request) -> dict[str, str]:
    return form_fields(await request.body())


def api_key(request: Request) -> str | None:
    """The API key the user logged in with (their cookie), if any."""
    return request.cookies.get(KEY_COOKIE) or None


def is_token(value: str | None, expected: str) -> bool:
    return bool(value) and hmac.compare_digest(str(value).encode(), expected.encode())


class CsrfMiddleware:
    """Gives each browser its token (request.state.csrf_token) and refuses unsafe methods
    without it; adds the security headers to every response."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        token = request.cookies.get(CSRF_COOKIE, "")
        fresh = "" if len(token) >= 32 else secrets.token_urlsafe(32)
        scope.setdefault("state", {})["csrf_token"] = fresh or token
        if scope["method"] not in SAFE_METHODS:
            body = await _read_body(receive)
            if body is None:
                too_large = PlainTextResponse("request body too large", status_code=413,
                                              headers=HEADERS)
                await too_large(scope, receive, send)
                return
            refusal = _refusal(request, body, "" if fresh else token)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, _with_headers(send, fresh, scope["scheme"] == "https"))


def _refusal(request: Request, body: bytes, token: str) -> Response | None:
    """None when the request carries the browser's token (header or form field)."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"):
        sent = form_fields(body).get(CSRF_FIELD)
    if token and is_token(sent, token):
        return None
    return PlainTextResponse("403 Forbidden: missing or wrong CSRF token; reload the page and "
                             "try again", status_code=403, headers=HEADERS)


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body, or None past MAX_BODY_BYTES."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, server_receive: Receive) -> Receive:
    """A `receive` that gives the route the body already read, then the server's messages
    (the client's disconnect)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await server_receive()

    return receive


def _with_headers(send: Send, fresh_token: str, is_https: bool) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            for name, value in HEADERS.items():
                headers.setdefault(name, value)
            if fresh_token:
                cookie = Response()
                cookie.set_cookie(CSRF_COOKIE, fresh_token, **cookie_attributes(is_https))
                headers.append("set-cookie", cookie.headers["set-cookie"])
        await send(message)

    return sending
