"""The guard in front of Gradio's login route: the throttle asked before the password check, the outcome
recorded after it, and the signed «this browser logged in before» cookie set on success.

Gradio's login route (`POST /login`, also `/login/`) checks a name and password with the app's `auth`
function and answers 200 (with the login cookies) or 400 («Incorrect credentials.»). `LoginGuard`, an ASGI
middleware installed through `launch(app_kwargs=…)` when the app has accounts, reads the login form (and
replays it to Gradio), takes the client address (esllm/ui/addresses.py: the TCP peer unless a proxy is named
in ESLLM_TRUSTED_PROXIES; a malformed or over-long one is refused with 400), checks the browser's signed cookie
for that name (esllm/ui/device.py), asks `LoginThrottle.begin` (esllm/ui/throttle.py) whether the attempt may go
ahead, and records the outcome from the status Gradio answers. A refused attempt gets 429 with `Retry-After`
and `{"detail": "Demasiados intentos fallidos. Espere N s y vuelva a intentarlo."}`; it never reaches the
password check (no scrypt cost). A successful one also gets the signed cookie.

`threaded_login(ctx)` is the `auth` function to give Gradio: a coroutine that runs `ctx.check_login` (a
~40 ms scrypt) in a worker thread, so a login does not stall the server's event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional

from starlette.middleware import Middleware
from starlette.requests import Request

from esllm.ui.addresses import client_key
from esllm.ui.asgi import TooLarge, read_body, replay, request_cookies, send_json
from esllm.ui.device import DeviceCookies, load_secret
from esllm.ui.throttle import LoginThrottle

MAX_BODY = 64 * 1024  # a login form is a few hundred bytes
BAD_ADDRESS = ("No se pudo determinar la dirección del cliente (cabecera X-Forwarded-For no válida o demasiado "
               "larga). Si el servidor está detrás de un proxy, revise ESLLM_TRUSTED_PROXIES.")


def is_login_path(path: str) -> bool:
    """Gradio's login route: /login or /login/ (under whatever prefix the app is mounted at)."""
    return path.rstrip("/").endswith("/login")


async def _form_username(scope: dict, body: bytes) -> str:
    """The `username` field of the login form, parsed as FastAPI parses it for Gradio ("" if none)."""
    async def once() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        async with Request(scope, once).form() as form:
            value = form.get("username")
            return value if isinstance(value, str) else ""
    except Exception:  # a malformed form: Gradio refuses it too (422)
        return ""


class LoginGuard:
    """ASGI middleware: `ctx.login_throttle` in front of Gradio's login route (see the module docstring).
    `devices`: the signed cookies (default: signed with the install's secret, esllm/ui/device.py)."""

    def __init__(self, app: Any, ctx: Any, devices: Optional[DeviceCookies] = None) -> None:
        self.app = app
        self.ctx = ctx
        self.devices = devices or DeviceCookies(load_secret())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if not (scope.get("type") == "http" and scope.get("method") == "POST"
                and is_login_path(scope.get("path", ""))):
            await self.app(scope, receive, send)
            return
        address = client_key(scope)
        if address is None:
            await send_json(send, 400, BAD_ADDRESS)
            return
        try:
            body = await read_body(receive, MAX_BODY)
        except TooLarge:
            await send_json(send, 413, "Solicitud de inicio de sesión demasiado grande.")
            return
        if body is None:
            return
        await self._attempt(scope, receive, send, body, address)

    async def _attempt(self, scope: dict, receive: Any, send: Any, body: bytes, address: str) -> None:
        throttle: LoginThrottle = self.ctx.login_throttle
        name = await _form_username(scope, body)
        user = throttle.key(name)
        device = self.devices.valid(request_cookies(scope), user)
        refusal = throttle.begin(name, address, device=device)
        if refusal is not None:
            await send_json(send, 429, refusal.message, [(b"retry-after", str(refusal.wait_s).encode())])
            return
        status: Optional[int] = None

        async def watch(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == 200:
                    cookie = self.devices.issue(user, secure=scope.get("scheme") == "https")
                    message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        try:
            await self.app(scope, replay(body, receive), watch)
        finally:
            # 200: logged in; 400: wrong name or password; no answer at all (an error, a cancelled request)
            # counts as a failure so that nothing escapes the count; anything else (422: no form) is neither.
            throttle.end(name, address, True if status == 200 else False if status in (400, None) else None, device)


def threaded_login(ctx: Any) -> Callable[[str, str], Any]:
    """Gradio's `auth`: a coroutine (Gradio awaits it) running `ctx.check_login` in a worker thread, so the
    scrypt check does not stall the event loop. Looked up at each call (tests may wrap it)."""
    async def auth(username: str, password: str) -> bool:
        return await asyncio.to_thread(ctx.check_login, username, password)

    return auth


def login_middleware(ctx: Any) -> list[Middleware]:
    """For `demo.launch(app_kwargs={"middleware": [*…, *login_middleware(ctx)]})` when the app has accounts."""
    return [Middleware(LoginGuard, ctx=ctx)]
