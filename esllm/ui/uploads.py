"""Uploads for admins only, one file at a time, a total per admin per hour, and the upload cache emptied.

Gradio stores whatever a logged-in user posts to `POST /gradio_api/upload` (as many files as the form holds,
each up to `max_file_size`) before any handler runs, and keeps it. The only upload of the app is a prompt file
for «Administrar» › «Importar prompts», so `UploadGuard`, an ASGI middleware installed through
`launch(app_kwargs=…)`, answers before Gradio reads a byte:

- 401 without a login, 403 unless the caller is an active admin (local mode: the local admin);
- 413 if the body is over `max_file_size` plus `FORM_OVERHEAD` (told by Content-Length, or found reading);
- 400 if the form holds more than one file (the body is read into memory, at most that cap, and its parts
  counted before Gradio gets it);
- 429 with `Retry-After` once the admin's uploads in the last hour reach `HOURLY_BYTES`.

Stored uploads are deleted by Gradio's own sweep (`gr.Blocks(delete_cache=CACHE_SWEEP)` in esllm/ui/__init__.py:
every hour, files older than an hour; all of them when the server stops), and the import handler deletes
its file once read (`discard_upload`).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Optional

from gradio.route_utils import API_PREFIX
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware

from esllm.ui.asgi import TooLarge, caller_role, gradio_user, header, read_body, replay, send_json

UPLOAD_ROUTE = f"{API_PREFIX}/upload"
FORM_OVERHEAD = 64 * 1024  # bytes of a multipart form beyond its file: the boundary, the part headers
HOURLY_BYTES = 50 * 2**20  # per admin per hour: ten full prompt files, far beyond any real import
CACHE_SWEEP = (3600, 3600)  # gr.Blocks(delete_cache=(every, older than)) in seconds


class UploadBudget:
    """Bytes each admin uploaded in the last hour (thread-safe; `clock` injectable for tests)."""

    def __init__(self, hourly: int = HOURLY_BYTES, clock: Callable[[], float] = time.monotonic) -> None:
        self.hourly, self.clock = hourly, clock
        self.spent: dict[str, deque[tuple[float, int]]] = {}
        self.lock = threading.Lock()

    def wait(self, user: str, size: int) -> float:
        """0 and `size` counted against `user`, or the seconds before it would fit the hour."""
        with self.lock:
            now = self.clock()
            q = self.spent.setdefault(user, deque())
            while q and now - q[0][0] >= 3600:
                q.popleft()
            total = sum(n for _, n in q)
            if total + size > self.hourly:
                return max(1.0, 3600 - (now - q[0][0])) if q else 3600.0
            q.append((now, size))
            return 0.0


def is_upload_path(path: str) -> bool:
    return path.rstrip("/").endswith(UPLOAD_ROUTE)


def count_parts(body: bytes, content_type: bytes) -> Optional[int]:
    """How many parts a multipart body holds, or None if it is not multipart."""
    ctype = content_type.decode("latin-1")
    if not ctype.lower().startswith("multipart/"):
        return None
    boundary = next((p.split("=", 1)[1].strip().strip('"') for p in ctype.split(";")[1:]
                     if p.strip().lower().startswith("boundary=")), "")
    if not boundary:
        return None
    return max(0, body.count(b"--" + boundary.encode("latin-1")) - 1)


class UploadGuard:
    """ASGI middleware: Gradio's upload route for admins only, one file, an hourly total (see the docstring)."""

    def __init__(self, app: Any, ctx: Any, max_file_size: int) -> None:
        self.app, self.ctx = app, ctx
        self.cap = max_file_size + FORM_OVERHEAD

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if not (scope.get("type") == "http" and scope.get("method") == "POST" and is_upload_path(scope.get("path", ""))):
            await self.app(scope, receive, send)
            return
        refusal = self._who(scope) or self._declared_size(scope)
        if refusal is None:
            try:
                body = await read_body(receive, self.cap)
            except TooLarge:
                refusal = (413, self._too_large(), ())
            else:
                if body is None:
                    return
                refusal = self._check(scope, body)
                if refusal is None:
                    await self.app(scope, replay(body, receive), send)
                    return
        await send_json(send, *refusal)

    def _too_large(self) -> str:
        return f"Archivo demasiado grande: el máximo es {(self.cap - FORM_OVERHEAD) / 2**20:.0f} MB."

    def _who(self, scope: dict) -> Optional[tuple]:
        if not self.ctx.local_mode and gradio_user(scope) is None:
            return 401, "Inicie sesión para subir archivos.", ()
        if caller_role(self.ctx, scope) != "admin":
            return 403, "Solo los administradores pueden subir archivos.", ()
        return None

    def _declared_size(self, scope: dict) -> Optional[tuple]:
        length = header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.cap):
            return 413, self._too_large(), ()
        return None

    def _check(self, scope: dict, body: bytes) -> Optional[tuple]:
        parts = count_parts(body, header(scope, b"content-type") or b"")
        if parts is not None and parts > 1:
            return 400, f"Suba un solo archivo por vez (la solicitud traía {parts}).", ()
        user = "local" if self.ctx.local_mode else gradio_user(scope) or ""
        budget: UploadBudget = self.ctx.upload_budget  # the context's: one per app
        wait = budget.wait(user, len(body))
        if wait > 0:
            s = math.ceil(wait)
            return 429, (f"Ha subido demasiados datos en la última hora (máximo {budget.hourly / 2**20:.1f} MB). "
                         f"Espere {s} s y vuelva a intentarlo."), [(b"retry-after", str(s).encode())]
        return None


def discard_upload(path: Any) -> None:
    """Delete an uploaded file once read, if it lies in Gradio's upload folder (nothing else is touched)."""
    if not path:
        return
    try:
        p = Path(os.path.realpath(str(path)))
        if p.is_file() and p.is_relative_to(os.path.realpath(get_upload_folder())):
            p.unlink(missing_ok=True)
    except (OSError, ValueError):
        pass


def upload_middleware(ctx: Any, max_file_size: int) -> list[Middleware]:
    """For `demo.launch(app_kwargs={"middleware": [*…, *upload_middleware(ctx, cap)]})`."""
    return [Middleware(UploadGuard, ctx=ctx, max_file_size=max_file_size)]
