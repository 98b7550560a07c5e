"""Spanish errors for OpenAI-compatible servers: each exception of the `openai` package becomes a `RemoteError`
(an EsllmError) that names the server's host, never the API key, and says whether a batch job may try again
(429, 5xx, network, timeout: yes; a wrong key, an unknown model, a refused request: no)."""

from __future__ import annotations

from typing import Optional

import openai

from esllm import EsllmError


class RemoteError(EsllmError):
    """A request to an OpenAI-compatible server failed; `retry`: a batch job may try again (429, 5xx, network)."""

    def __init__(self, message: str, *, retry: bool = False):
        super().__init__(message)
        self.retry = retry


def remote_error(e: openai.OpenAIError, host: str, *, model: Optional[str] = None,
                 key_env: Optional[str] = None, timeout_s: float = 0.0) -> RemoteError:
    """The Spanish RemoteError for `e`, raised by a request for `model` on `host`. Built from the status and the
    server's own error text only: the openai client's messages and requests (with their headers) stay out."""
    if isinstance(e, openai.APITimeoutError):
        return RemoteError(f"El servidor {host} no respondió en {timeout_s:g} s.", retry=True)
    if isinstance(e, openai.APIConnectionError):
        return RemoteError(connection_message(e, host), retry=True)
    if isinstance(e, openai.APIStatusError):
        return status_error(e.status_code, _detail(e.body), host, model=model, key_env=key_env)
    if isinstance(e, openai.APIError):  # an error event in the stream, before any text
        return RemoteError(f"El servidor {host} informó un error con «{model}»: {_detail(e.body) or e.message}",
                           retry=True)
    return RemoteError(f"El servidor {host} respondió algo que no se entiende ({type(e).__name__}).")


def connection_message(e: openai.APIConnectionError, host: str) -> str:
    # The cause is the HTTP library's own error; its class name is the same in httpx and httpx2 (the openai
    # client uses either), so it is read by name.
    cause = type(e.__cause__).__name__ if e.__cause__ is not None else type(e).__name__
    if cause == "ConnectError":
        return f"No se puede conectar con el servidor {host}: ¿está en marcha? ({cause})"
    return f"Error de red con el servidor {host}: {cause}"


def status_error(code: int, detail: str, host: str, *, model: Optional[str] = None,
                 key_env: Optional[str] = None) -> RemoteError:
    """The Spanish RemoteError for an HTTP error status `code` (with the server's short `detail`)."""
    if code in (401, 403):
        env = f" (variable {key_env})" if key_env else " (api_key_env no configurado)"
        return RemoteError(f"El servidor {host} rechazó la clave de API ({code}): revise la clave{env}.")
    if code == 404:
        what = f"el modelo «{model}»" if model else "esa ruta"
        return RemoteError(f"El servidor {host} no sirve {what} (404). {detail}".strip())
    if code == 429:
        return RemoteError(f"El servidor {host} está saturado (429: demasiadas peticiones); reintente en unos "
                           "segundos.", retry=True)
    if code >= 500:
        return RemoteError(f"El servidor {host} falló ({code}). {detail}".strip(), retry=True)
    return RemoteError(f"El servidor {host} rechazó la petición ({code}). {detail}".strip())


def _detail(body: object) -> str:
    """The server's own error text, short: `{"message": …}`, FastAPI's `{"detail": …}` or the raw body."""
    if isinstance(body, dict):
        body = body.get("message", body.get("detail", body))
        if isinstance(body, dict):
            body = body.get("message", body)
    return "" if body is None else str(body)[:200]
