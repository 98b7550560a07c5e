"""Export files for admins only: where they are written and the guard that keeps them from anyone else.

Gradio serves a file a handler returns from its cache at `/gradio_api/file=<cache path>`, to any
logged-in user who has the link. The link is already hard to guess (the cache folder is a sha256 of
the file salted with a per-install secret, and the export folder carries a random token), but a
rater given an admin's link must still get nothing: `ExportGuard`, an ASGI middleware installed
through `launch(app_kwargs=…)`, answers 403 to every `/file=` (or `/file/`) request for an export file (its name
begins with `EXPORT_PREFIX`) unless the caller's login belongs to an active admin. In local mode the
only caller is the local admin. Export files are written by esllm/study/export.py into `new_export_dir()`.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from starlette.middleware import Middleware

EXPORT_PREFIX = "esllm-export-"


def new_export_dir() -> Path:
    """A fresh folder with an unguessable name for one download (private to this user: mode 0700)."""
    return Path(tempfile.mkdtemp(prefix=f"esllm-descargas-{secrets.token_hex(16)}-"))


def is_export_path(path: str) -> bool:
    """Whether a request path asks Gradio's file route for an export file."""
    for marker in ("/file=", "/file/"):  # Gradio serves files under both (the second is deprecated)
        if marker in path:
            name = os.path.basename(unquote(path.split(marker, 1)[1]).rstrip("/"))
            if name.startswith(EXPORT_PREFIX):
                return True
    return False


class ExportGuard:
    """ASGI middleware: export files go to admins only (see the module docstring)."""

    def __init__(self, app: Any, ctx: Any) -> None:
        self.app = app
        self.ctx = ctx

    def _user(self, scope: dict) -> str | None:
        gradio_app = scope.get("app")
        cookie_id = getattr(gradio_app, "cookie_id", None)
        tokens = getattr(gradio_app, "tokens", None) or {}
        cookies: dict[str, str] = {}
        for key, value in scope.get("headers") or []:
            if key == b"cookie":
                for part in value.decode("latin-1").split(";"):
                    k, _, v = part.strip().partition("=")
                    cookies[k] = v
        token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
        return tokens.get(token) if token else None

    def allowed(self, scope: dict) -> bool:
        if self.ctx.local_mode:
            return True
        name = self._user(scope)
        if not name:
            return False

        class _Req:  # what ctx.caller reads from a gr.Request
            username = name

        c = self.ctx.caller(_Req())
        return c is not None and c.role == "admin"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and is_export_path(scope.get("path", "")) and not self.allowed(scope):
            body = "Solo los administradores pueden descargar exportaciones.".encode("utf-8")
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def guard_middleware(ctx: Any) -> list[Middleware]:
    """For `demo.launch(app_kwargs={"middleware": guard_middleware(ctx)})`."""
    return [Middleware(ExportGuard, ctx=ctx)]
