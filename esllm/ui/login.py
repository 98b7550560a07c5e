"""The page in Spanish: our own login page instead of Gradio's (English, and silent when a login is throttled),
and Gradio's built-in words (the upload box, toasts) asked in Spanish whatever the browser's language.

`LoginPage` is an ASGI middleware installed by app.launch_kwargs (always; the login part only when the app has
accounts). Gradio picks the language of its own words from `navigator.language` as its scripts start, so for
the page root the middleware puts `SPANISH_JS` first in Gradio's <head> (the `head` of launch() is added later,
too late for that). For a GET or HEAD of the page root by a browser without a valid login cookie it answers with
`login_html`: a form that posts the name and password to Gradio's own `POST /login` (so the password check,
the throttle in esllm/ui/throttle.py and the cookies are Gradio's, unchanged) and reloads the page when it
succeeds. A refusal is said in Spanish: wrong name or password (400), too many attempts with the wait (429,
the throttle's own message), or anything else. Every other request goes to Gradio untouched; Gradio still
checks the cookie on every route, so this page is only what a logged-out browser sees, never the check.
Logging out is Gradio's `GET /logout`, which sends the browser back here.
"""

from __future__ import annotations

import html
import json
from typing import Any

from esllm.ui.asgi import request_cookies

PAGE = """<!doctype html>
<html lang="es">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>esllm — iniciar sesión</title>
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; background: #f4f4f5;
         margin: 0; min-height: 100vh; display: flex; align-items: center; justify-content: center; color: #18181b; }
  main { background: #fff; border: 1px solid #e4e4e7; border-radius: 10px; padding: 2em 2.2em; width: min(26em, 90vw);
         box-shadow: 0 2px 10px rgba(0,0,0,.05); }
  h1 { font-size: 1.35em; margin: 0 0 .3em; }
  p.intro { color: #52525b; margin: 0 0 1.4em; line-height: 1.45; font-size: .95em; }
  label { display: block; font-weight: 600; margin: 1em 0 .35em; font-size: .95em; }
  input { width: 100%; box-sizing: border-box; font: inherit; padding: .55em .7em; border: 1px solid #d4d4d8;
          border-radius: 6px; }
  input:focus { outline: 2px solid #f97316; border-color: #f97316; }
  button { margin-top: 1.5em; width: 100%; font: inherit; font-weight: 600; padding: .65em; border: 0; border-radius: 6px;
           background: #f97316; color: #fff; cursor: pointer; }
  button:disabled { opacity: .6; cursor: wait; }
  #error { color: #b91c1c; margin: 1em 0 0; min-height: 1.3em; font-size: .95em; }
</style>
</head>
<body>
<main>
  <h1>esllm · iniciar sesión</h1>
  <p class="intro">__MESSAGE__</p>
  <form id="entrar" autocomplete="on">
    <label for="usuario">Usuario</label>
    <input id="usuario" name="username" type="text" autocomplete="username" autofocus required>
    <label for="clave">Contraseña</label>
    <input id="clave" name="password" type="password" autocomplete="current-password" required>
    <button id="boton-entrar" type="submit">Entrar</button>
    <p id="error" role="alert" aria-live="polite"></p>
  </form>
</main>
<script>
(() => {
  const form = document.getElementById("entrar"), error = document.getElementById("error");
  const button = document.getElementById("boton-entrar");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.textContent = "";
    button.disabled = true;
    try {
      const r = await fetch(new URL("login", window.location.href), {method: "POST", body: new FormData(form)});
      if (r.ok) { window.location.reload(); return; }
      let detail = "";
      try { const d = await r.json(); detail = typeof d.detail === "string" ? d.detail : ""; } catch (_) {}
      if (r.status === 400) {
        error.textContent = "Usuario o contraseña incorrectos.";
        document.getElementById("clave").value = "";
      } else if (r.status === 429) {
        error.textContent = detail || "Demasiados intentos fallidos. Espere y vuelva a intentarlo.";
      } else {
        error.textContent = "No se pudo iniciar sesión (error " + r.status + ")" + (detail ? ": " + detail : ".");
      }
    } catch (_) {
      error.textContent = "No se pudo conectar con el servidor. Compruebe la conexión y vuelva a intentarlo.";
    } finally {
      button.disabled = false;
    }
  });
})();
</script>
</body>
</html>
"""


# Gradio's words that its translations miss (hard-coded aria-labels, read aloud by screen readers), in Spanish.
ARIA_ES = {"Click to upload or drop files": "Haga clic para subir un archivo o suéltelo aquí",
           "File upload": "Subir archivo"}
SPANISH_JS = (b'<script>try{Object.defineProperty(navigator,"language",{get:()=>"es"});'
              b'Object.defineProperty(navigator,"languages",{get:()=>["es"]});}catch(e){}'
              b'(function(){const m=' + json.dumps(ARIA_ES).encode("ascii") + b';'
              b'const one=e=>{const t=m[e.getAttribute("aria-label")];if(t)e.setAttribute("aria-label",t);};'
              b'new MutationObserver(ms=>{for(const x of ms){if(x.type==="attributes"){one(x.target);continue;}'
              b'for(const n of x.addedNodes)if(n.nodeType===1){one(n);n.querySelectorAll("[aria-label]").forEach(one);}}})'
              b'.observe(document,{subtree:true,childList:true,attributes:true,attributeFilter:["aria-label"]});'
              b'})();</script>')  # only what changed is looked at: a streaming answer adds nodes every token


def login_html(message: str) -> bytes:
    return PAGE.replace("__MESSAGE__", html.escape(message)).encode("utf-8")


def _logged_in(scope: dict) -> bool:
    """Whether the request carries a login cookie Gradio knows (the check Gradio itself makes on each route)."""
    app = scope.get("app")
    tokens, cookie_id = getattr(app, "tokens", None), getattr(app, "cookie_id", None)
    if tokens is None or cookie_id is None:
        return True  # not a Gradio app we know: let Gradio decide
    cookies = request_cookies(scope)
    return any(cookies.get(f"{prefix}-{cookie_id}") in tokens
               for prefix in ("access-token", "access-token-unsecure"))


class LoginPage:
    """ASGI middleware: the Spanish login page for a logged-out browser's GET / (see the module docstring)."""

    def __init__(self, app: Any, message: str = "", login: bool = True) -> None:
        self.app = app
        self.body = login_html(message)
        self.login = login

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        root = scope.get("root_path", "") or ""
        path = scope.get("path", "")
        if not (scope.get("type") == "http" and scope.get("method") in ("GET", "HEAD")
                and path in ("/", "", root + "/", root)):
            await self.app(scope, receive, send)
            return
        if self.login and not _logged_in(scope):
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/html; charset=utf-8"),
                                    (b"content-length", str(len(self.body)).encode()),
                                    (b"cache-control", b"no-store")]})
            await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else self.body})
            return
        await self.app(scope, receive, _spanish(send))


def _spanish(send: Any) -> Any:
    """`send` for Gradio's page: an HTML body is held until complete and gets SPANISH_JS first in its <head>."""
    start: dict = {}
    chunks: list[bytes] = []

    async def wrapped(message: dict) -> None:
        if message["type"] == "http.response.start":
            headers = dict(message.get("headers", []))
            if b"text/html" not in headers.get(b"content-type", b""):
                await send(message)
                start["pass"] = True
                return
            start.update(message)
            return
        if start.get("pass") or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        body = b"".join(chunks).replace(b"<head>", b"<head>" + SPANISH_JS, 1)
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return wrapped
