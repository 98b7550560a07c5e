"""What the app's ASGI guards share: a request's cookies and body, the login Gradio knows it by, its caller's
role, and a refusal as JSON `{"detail": "…"}` in Spanish.

The guards (esllm/ui/downloads.py, login_guard.py, uploads.py, queue_guard.py) are middlewares installed through
`launch(app_kwargs={"middleware": …})`, so they run before Gradio's routes; they read the login cookie the way
Gradio's own `get_current_user` does (`access-token-<cookie_id>` or `access-token-unsecure-<cookie_id>`, looked
up in the app's `tokens`).
"""

from __future__ import annotations

import json
from typing import Any, Optional


def request_cookies(scope: dict) -> dict[str, str]:
    """The request's cookies, name -> value (the last one wins, as starlette's parser)."""
    cookies: dict[str, str] = {}
    for key, value in scope.get("headers") or []:
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                k, _, v = part.strip().partition("=")
                cookies[k] = v
    return cookies


def header(scope: dict, name: bytes) -> Optional[bytes]:
    """The first value of header `name` (lower case), or None."""
    return next((v for k, v in scope.get("headers") or [] if k == name), None)


def gradio_user(scope: dict) -> Optional[str]:
    """The user name of the request's Gradio login cookie, or None (no cookie, or one Gradio does not know)."""
    app = scope.get("app")
    cookie_id, tokens = getattr(app, "cookie_id", None), getattr(app, "tokens", None) or {}
    cookies = request_cookies(scope)
    token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
    return tokens.get(token) if token else None


def caller_role(ctx: Any, scope: dict) -> Optional[str]:
    """The role of the request's caller (an active account, or local mode's admin), or None."""
    name = None if ctx.local_mode else gradio_user(scope)

    class _Req:  # what ctx.caller reads from a gr.Request
        username = name

    c = ctx.caller(_Req())
    return c.role if c is not None else None


async def send_json(send: Any, status: int, detail: str, headers: Any = ()) -> None:
    """Answer `{"detail": detail}` with `status` (and extra `headers`, a list of byte pairs)."""
    body = json.dumps({"detail": detail}, ensure_ascii=False).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class TooLarge(Exception):
    """A request body over the limit a guard reads."""


async def read_body(receive: Any, limit: int) -> Optional[bytes]:
    """The whole request body; None if the client went away; TooLarge beyond `limit` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Any) -> Any:
    """A `receive` that hands the app `body` (already read by a guard) and then the client's own messages."""
    sent = False

    async def again() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again
