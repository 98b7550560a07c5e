"""Gradio's queue routes answered only for the login that owns the session, and `/monitoring` for admins.

Gradio keys its queue by the session hash the browser makes up, and several routes act on a hash or an event
id without asking whose it is: `/gradio_api/queue/data?session_hash=` streams that session's results (a rater
who learns another's hash reads their item), `/gradio_api/heartbeat/<hash>` closes its state on disconnect,
`/gradio_api/deep_link?session_hash=` reads its components' values, `POST /gradio_api/cancel` and
`POST /gradio_api/reset` answer success even to anonymous callers, and `/monitoring/summary` gives any
logged-in user the request counts of every endpoint. `QueueGuard`, an ASGI middleware installed through
`launch(app_kwargs=…)` when the app has accounts, answers first:

- `/monitoring…`: 403 unless the caller is an active admin;
- a session hash (the `session_hash` of a join, call, cancel or component-server JSON body, or of the query
  string, or in a heartbeat/stream path): owned by the first login that presents it (`Owners`); any other
  login gets 403, a caller without a login 401;
- an event id (`/call/<api>/<event_id>`, `/stream/<event_id>`, the `event_id` of cancel and reset): owned by
  the login whose join or call created it (read from Gradio's answer); another login, or an id the guard
  never saw created, gets 403/404.

What remains (Gradio's design): a hash nobody has used yet can be claimed by whoever presents it first, which
only locks its rightful owner out (hashes are random, so they must leak first); `component_server` bodies
sent as multipart are not read (no component of the app has a server function). In local mode the guard is
not installed: the only caller is the local admin.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any, Optional
from urllib.parse import parse_qs

from gradio.route_utils import API_PREFIX
from starlette.middleware import Middleware

from esllm.ui.asgi import TooLarge, caller_role, gradio_user, read_body, replay, send_json

MAX_KEYS = 100_000  # hashes and event ids remembered (each under 200 bytes), the least recently used dropped
MAX_KEY = 128  # characters of a session hash or event id; Gradio's are 11 to 36
MAX_JSON = 64 * 2**20  # a queue body read to find its session hash (a long chat history fits)
BODY_HASH = ("queue/join", "call/", "cancel", "component_server")  # routes whose JSON body names a session hash
PATH_HASH = re.compile(r"/(?:heartbeat|stream)/([^/]+)/")  # heartbeat/<hash>, stream/<hash>/<run>/…
PATH_HASH_END = re.compile(r"/heartbeat/([^/]+)$")
PATH_EVENT = re.compile(r"/(?:call(?:/v2)?/[^/]+|stream)/([^/]+)(?:/close)?$")
NOT_YOURS = "Esa sesión de la página pertenece a otro usuario."


class Owners:
    """Which login owns each session hash and event id (bounded, the least recently used dropped)."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self.max_keys = max_keys
        self.owner: dict[str, str] = {}
        self.lock = threading.Lock()

    def claim(self, key: str, user: str) -> bool:
        """Whether `user` owns `key` (now theirs if nobody did)."""
        with self.lock:
            who = self.owner.pop(key, user)
            self.owner[key] = who  # most recently used last
            while len(self.owner) > self.max_keys:
                del self.owner[next(iter(self.owner))]
            return who == user

    def get(self, key: str) -> Optional[str]:
        with self.lock:
            return self.owner.get(key)


def _route(path: str) -> Optional[str]:
    """The path after Gradio's API prefix, or None for other routes."""
    i = path.find(API_PREFIX + "/")
    return path[i + len(API_PREFIX) + 1:] if i >= 0 else None


class QueueGuard:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app: Any, ctx: Any, owners: Optional[Owners] = None) -> None:
        self.app, self.ctx = app, ctx
        self.sessions = owners or Owners()
        self.events = Owners()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope.get("type") == "http" else ""
        route = _route(path)
        if path.startswith("/monitoring") or f"{API_PREFIX}/monitoring" in path:
            if caller_role(self.ctx, scope) != "admin":
                await send_json(send, 403, "Solo los administradores pueden ver las estadísticas del servidor.")
                return
        elif route is not None and self._watched(route, scope):
            await self._guarded(scope, receive, send, route)
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _watched(route: str, scope: dict) -> bool:
        if scope.get("method") == "POST":
            return route.startswith((*BODY_HASH, "reset", "stream/"))
        return (route.startswith(("queue/data", "heartbeat/", "deep_link", "stream/"))
                or route.startswith("call/") and PATH_EVENT.search("/" + route) is not None)

    async def _guarded(self, scope: dict, receive: Any, send: Any, route: str) -> None:
        user = gradio_user(scope)
        if user is None:
            await send_json(send, 401, "Inicie sesión para usar esta función.")
            return
        body = b""
        if scope.get("method") == "POST" and route.startswith((*BODY_HASH, "reset")):
            try:
                body = await read_body(receive, MAX_JSON)
            except TooLarge:
                await send_json(send, 413, "Solicitud demasiado grande.")
                return
            if body is None:
                return
            receive = replay(body, receive)
        refusal = self._refusal(route, scope, body, user)
        if refusal is not None:
            await send_json(send, *refusal)
            return
        creates = scope.get("method") == "POST" and route.startswith(("queue/join", "call/"))
        await self.app(scope, receive, self._record_event(send, user) if creates else send)

    def _refusal(self, route: str, scope: dict, body: bytes, user: str) -> Optional[tuple[int, str]]:
        hashes, events = self._keys(route, scope, body)
        if any(len(k) > MAX_KEY for k in (*hashes, *events)):
            return 400, "Identificador de sesión demasiado largo."
        if not all(self.sessions.claim(h, user) for h in hashes):
            return 403, NOT_YOURS
        for e in events:
            owner = self.events.get(e)
            if owner is None:
                return 404, "Evento desconocido."
            if owner != user:
                return 403, NOT_YOURS
        return None

    @staticmethod
    def _keys(route: str, scope: dict, body: bytes) -> tuple[list[str], list[str]]:
        """(session hashes, event ids) the request names."""
        hashes: list[str] = []
        events: list[str] = []
        post, path = scope.get("method") == "POST", "/" + route
        hashes += parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_hash", [])
        if not post:
            hashes += PATH_HASH.findall(path) + PATH_HASH_END.findall(path)
        if post and body:
            try:
                data = json.loads(body)
            except ValueError:
                data = None
            if isinstance(data, dict):
                hashes += [str(data["session_hash"])] if data.get("session_hash") is not None else []
                events += [str(data["event_id"])] if route.startswith(("cancel", "reset")) else []
        if (post and route.startswith("stream/")) or (not post and route.startswith("call/")):
            events += [m[1]] if (m := PATH_EVENT.search(path)) else []
        return hashes, events

    def _record_event(self, send: Any, user: str) -> Any:
        """`send` that records the event id of a join or call answer as `user`'s."""
        chunks: list[bytes] = []

        async def wrapped(message: dict) -> None:
            if message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    try:
                        event = json.loads(b"".join(chunks)).get("event_id")
                    except (ValueError, AttributeError):
                        event = None
                    if isinstance(event, str):
                        self.events.claim(event, user)
            await send(message)

        return wrapped


def queue_middleware(ctx: Any) -> list[Middleware]:
    """For `demo.launch(app_kwargs={"middleware": [*…, *queue_middleware(ctx)]})` when the app has accounts."""
    return [Middleware(QueueGuard, ctx=ctx)]
