"""Token auth for the dashboard (README *Dashboard*), as a pure ASGI middleware.

With a token, every page, API call and the event stream needs either
``Authorization: Bearer <token>`` or the session cookie. Opening any page
with ``?token=<token>`` sets that cookie and redirects to the same address
without the token (so it does not linger in the address bar or history); a
wrong ``?token=`` is a 401 even when a valid cookie is present.

The cookie's value is an HMAC of a fixed label keyed by the token: there is
no server-side session, every dashboard process started with the same token
accepts it (a restart keeps users logged in), and changing the token logs
everyone out. Static assets (CSS, JS, icon) are public: they hold no data.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE_NAME = "taskmesh_dashboard"
COOKIE_MAX_AGE_S = 30 * 86400
_LABEL = b"taskmesh-dashboard-session-v1"
PUBLIC_PREFIXES = ("/static/", "/favicon.ico")


def session_cookie_value(token: str) -> str:
    return hmac.new(token.encode(), _LABEL, hashlib.sha256).hexdigest()


def _equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def unauthorized(path: str, reason: str) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="taskmesh"'}
    if is_api(path):
        return JSONResponse({"error": reason}, status_code=401, headers=headers)
    body = ("<!doctype html><html lang=en><head><meta charset=utf-8><title>taskmesh · "
            "unauthorized</title><link rel=stylesheet href=/static/dashboard.css>"
            "<link rel=icon href=/static/favicon.svg></head><body><main class=narrow>"
            f"<h1>Unauthorized</h1><p>{reason}</p><p>Open <code>/?token=…</code> with the "
            "dashboard's token, or send <code>Authorization: Bearer …</code>.</p>"
            "</main></body></html>")
    return HTMLResponse(body, status_code=401, headers=headers)


class TokenAuth:
    """Refuses requests without the token (401); a no-op when token is None."""

    def __init__(self, app: ASGIApp, token: str | None):
        self.app = app
        self.token = token
        self.cookie = session_cookie_value(token) if token else ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.token or scope["path"].startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        response = self.check(Request(scope))
        if response is None:
            await self.app(scope, receive, send)
        else:
            await response(scope, receive, send)

    def check(self, request: Request) -> Response | None:
        """None to let the request through, else the response to send."""
        assert self.token
        path = request.url.path
        given = request.query_params.get("token")
        if given is not None and not is_api(path):
            if not _equal(given, self.token):
                return unauthorized(path, "Wrong token.")
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = path + ("?" + urlencode(rest) if rest else "")
            redirect = RedirectResponse(target, status_code=303)
            redirect.set_cookie(COOKIE_NAME, self.cookie, max_age=COOKIE_MAX_AGE_S,
                                httponly=True, samesite="strict", path="/")
            return redirect
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        if header:
            if scheme.lower() == "bearer" and _equal(credential.strip(), self.token):
                return None
            return unauthorized(path, "Wrong token.")
        cookie = request.cookies.get(COOKIE_NAME)
        if cookie is not None and _equal(cookie, self.cookie):
            return None
        return unauthorized(path, "This dashboard needs a token.")
