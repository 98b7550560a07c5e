"""Export files for admins only: where they are written and the guard that keeps them from anyone else.

Gradio serves a file a handler returns from its cache at `/gradio_api/file=<cache path>` (and at the older
`/gradio_api/file/<cache path>`), to any logged-in user who has the link. The link is already hard to guess
(the cache folder is a sha256 of the file salted with a per-install secret, and the export folder carries a
random token), but a rater given an admin's link must still get nothing: `ExportGuard`, an ASGI middleware
installed through `launch(app_kwargs=…)`, answers 403 unless the caller's login belongs to an active admin
to every request that
- names, once resolved as Gradio's file route resolves it, an export file (its name begins with
  `EXPORT_PREFIX`) or anything in an export folder (`new_export_dir()`, named `EXPORT_DIR_PREFIX…`): the route
  takes its parameter from the ASGI path (already percent-decoded once), then `gradio.utils.abspath` removes
  `.`/`..` segments and trailing slashes, so `…/.`, `…/x/..` and `…/%2e` name the same file as the link;
  the guard decides on that resolved path, and on the raw path and on repeated decodings too;
- or mentions either prefix anywhere in its path, however spelled (a second line: no legitimate request of
  a non-admin does).
In local mode the only caller is the local admin. Export files are written by esllm/study/export.py into
`new_export_dir()`.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import unquote

from gradio.route_utils import API_PREFIX
from gradio.utils import abspath
from starlette.middleware import Middleware

from esllm.ui.asgi import caller_role

EXPORT_PREFIX = "esllm-export-"
EXPORT_DIR_PREFIX = "esllm-descargas-"
# Gradio's routes that serve a file named by the rest of the path (file_fetch); the second is deprecated.
FILE_ROUTES = (f"{API_PREFIX}/file=", f"{API_PREFIX}/file/")
MAX_DECODINGS = 8  # "%25" nests: every decoding of a spelling is checked, up to this many


def new_export_dir() -> Path:
    """A fresh folder with an unguessable name for one download (private to this user: mode 0700)."""
    return Path(tempfile.mkdtemp(prefix=f"{EXPORT_DIR_PREFIX}{secrets.token_hex(16)}-"))


def is_export_file(path: Path) -> bool:
    """Whether a resolved path is an export file, an export folder or inside one (case-insensitively: a
    case-insensitive file system would serve `ESLLM-EXPORT-…` too)."""
    return any(part.lower().startswith((EXPORT_PREFIX, EXPORT_DIR_PREFIX)) for part in path.parts)


def _decodings(spelling: str) -> Iterable[str]:
    """`spelling` and each further percent-decoding of it, until it no longer changes."""
    yield spelling
    for _ in range(MAX_DECODINGS):
        decoded = unquote(spelling)
        if decoded == spelling:
            return
        spelling = decoded
        yield spelling


def path_spellings(scope: dict) -> set[str]:
    """Every spelling of the request's path worth checking: the ASGI path (what routing sees: decoded once)
    and the raw path as received, each with all its further decodings, with and without the root path."""
    raw = scope.get("raw_path") or b""
    found = {scope.get("path") or "", raw.split(b"?", 1)[0].decode("latin-1")}
    out: set[str] = set()
    root = scope.get("root_path") or ""
    for spelling in found:
        for s in _decodings(spelling):
            out.add(s)
            if root and s.startswith(root + "/"):  # as starlette's get_route_path strips it
                out.add(s[len(root):])
    return out


def requested_files(scope: dict) -> set[Path]:
    """The files Gradio's file routes could serve for this request: each route parameter (the rest of the
    path after `/gradio_api/file=` or `/gradio_api/file/`) resolved as `file_fetch` resolves it
    (`gradio.utils.abspath`), and where the result is a symbolic link, what it points to."""
    out: set[Path] = set()
    for spelling in path_spellings(scope):
        for route in FILE_ROUTES:
            if route in spelling:
                try:
                    target = abspath(spelling.split(route, 1)[1])
                    out.update((target, Path(os.path.realpath(target))))
                except (ValueError, OSError):  # a NUL byte: Gradio cannot open it either
                    continue
    return out


def is_export_request(scope: dict) -> bool:
    """Whether an HTTP request could reach an export file (see the module docstring)."""
    if any(is_export_file(p) for p in requested_files(scope)):
        return True
    return any(prefix in s.lower() for s in path_spellings(scope) for prefix in (EXPORT_PREFIX, EXPORT_DIR_PREFIX))


class ExportGuard:
    """ASGI middleware: export files go to admins only (see the module docstring)."""

    def __init__(self, app: Any, ctx: Any) -> None:
        self.app = app
        self.ctx = ctx

    def allowed(self, scope: dict) -> bool:
        return caller_role(self.ctx, scope) == "admin"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and is_export_request(scope) and not self.allowed(scope):
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
