"""A base model served by an OpenAI-compatible server (vLLM, llama.cpp's llama-server, llama-cpp-python's
server, a hosted API): esllm sends messages and reads the answer as a server-sent-event stream.

    models:
      mistral-7b:
        source: openai:http://gpu-server:8000/v1
        api_key_env: ESLLM_VLLM_KEY      # the *name* of the environment variable holding the key
    contestants:
      - {name: mistral-tributario, model: mistral-7b, served_model: tributario-ec, preset: top-p}

The server holds the weights and the adapters: a contestant names the model the server serves (vLLM: the
LoRA module name given to `--lora-modules`; llama-server: the base, plus `lora: [{id, scale}]` per request).
`GET /v1/models` says which contestants are available. The API key is read from the environment when the
base is opened and sent only in the Authorization header: it is never stored, logged or shown.

Errors are `RemoteError` (an EsllmError) with a Spanish message naming the server's host, and whether a
batch job may retry. A stream that ends before the server says it finished is a *cut* answer: the text
received is kept and marked `cut`, never taken for a complete one.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence
from urllib.parse import urlsplit

import httpx

from esllm import EsllmError
from esllm.engine.config import ModelSpec
from esllm.engine.presets import GenParams

PREFIX = "openai:"
# Strategies an OpenAI-compatible server cannot run: they need the model's hidden states or several
# hypotheses per step, which the API does not expose.
UNSUPPORTED = {"contrastive": "la búsqueda contrastiva", "beam": "la búsqueda en haz"}


class RemoteError(EsllmError):
    """A request to an OpenAI-compatible server failed; `retry`: a batch job may try again (429, 5xx, network)."""

    def __init__(self, message: str, *, retry: bool = False):
        super().__init__(message)
        self.retry = retry


def is_remote(source: str) -> bool:
    return source.strip().startswith(PREFIX)


def base_url_of(source: str) -> str:
    url = source.strip()[len(PREFIX):].rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EsllmError(f"El origen {source!r} no es una URL válida: escriba openai:http://servidor:puerto/v1")
    return url


def host_of(url: str) -> str:
    """host[:port] of a URL, without any user:password written in it."""
    return urlsplit(url).netloc.rsplit("@", 1)[-1]


def check_strategy(params: GenParams, where: str) -> None:
    if params.strategy in UNSUPPORTED:
        raise EsllmError(f"{where}: {UNSUPPORTED[params.strategy]} no es posible en un servidor OpenAI-compatible "
                         "(necesita los estados internos del modelo); use greedy, top-k, top-p o temperature.")


@dataclass
class Reply:
    """One streamed answer: pieces of text as they arrive, then why it ended."""

    finish_reason: str = ""  # eos | length | stopped | cut
    prompt_tokens: Optional[int] = None
    completion_tokens: Optional[int] = None
    chunks: int = 0  # text-carrying events received (≈ tokens when the server gives no usage)
    error: str = ""  # why it was cut
    text: list[str] = field(default_factory=list)


@dataclass
class OpenAIBackend:
    """One OpenAI-compatible server as a base: what it serves, how to reach it. Thread-safe."""

    key: str
    spec: ModelSpec
    base_url: str
    api_key: Optional[str] = field(default=None, repr=False)
    served: list[str] = field(default_factory=list)  # ids from GET /models at the last refresh
    load_seconds: float = 0.0
    lock: threading.RLock = field(default_factory=threading.RLock)  # registry changes only, never held to decode
    adapters: dict[str, Any] = field(default_factory=dict)  # adapters live on the server: always empty
    client: httpx.Client = field(default=None, repr=False)  # type: ignore[assignment]

    name = "openai"
    tok = None
    source_sha256 = None

    @property
    def host(self) -> str:
        return host_of(self.base_url)

    @property
    def device(self) -> str:
        return self.host

    @property
    def quantization(self) -> str:
        return "la del servidor"

    @property
    def max_batch(self) -> int:
        return self.spec.concurrency

    @classmethod
    def open(cls, key: str, spec: ModelSpec, progress: Callable[[str], None] = lambda m: None) -> "OpenAIBackend":
        """Connect and list the served models; RemoteError (Spanish, with the host) when that fails."""
        url = base_url_of(spec.source)
        api_key = None
        if spec.api_key_env:
            api_key = os.environ.get(spec.api_key_env) or None
            if api_key is None:
                raise EsllmError(f"La variable de entorno {spec.api_key_env} (api_key_env de {key}) no está definida: "
                                 "expórtela con la clave del servidor antes de arrancar esllm.")
        limits = httpx.Limits(max_connections=spec.concurrency + 4, max_keepalive_connections=spec.concurrency + 4)
        timeout = httpx.Timeout(spec.timeout_s, connect=min(10.0, spec.timeout_s))
        client = httpx.Client(timeout=timeout, limits=limits, follow_redirects=False)
        b = cls(key=key, spec=spec, base_url=url, api_key=api_key, client=client)
        t0 = time.perf_counter()
        try:
            b.served = b.list_models()
        except EsllmError:
            client.close()
            raise
        b.load_seconds = time.perf_counter() - t0
        progress(f"{key}: servidor {b.host} con {len(b.served)} modelos ({', '.join(b.served[:8])}).")
        return b

    # ---------------------------------------------------------------- HTTP
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _fail(self, e: BaseException, model: Optional[str] = None) -> RemoteError:
        """A Spanish RemoteError for a transport error (never includes headers, so never the key)."""
        h = self.host
        if isinstance(e, httpx.ConnectError):
            return RemoteError(f"No se puede conectar con el servidor {h}: ¿está en marcha? ({type(e).__name__})",
                               retry=True)
        if isinstance(e, httpx.TimeoutException):
            return RemoteError(f"El servidor {h} no respondió en {self.spec.timeout_s:g} s.", retry=True)
        return RemoteError(f"Error de red con el servidor {h}: {type(e).__name__}", retry=True)

    def _status_error(self, r: httpx.Response, model: Optional[str]) -> RemoteError:
        h, code = self.host, r.status_code
        detail = _detail(r)
        if code in (401, 403):
            env = f" (variable {self.spec.api_key_env})" if self.spec.api_key_env else " (api_key_env no configurado)"
            return RemoteError(f"El servidor {h} rechazó la clave de API ({code}): revise la clave{env}.")
        if code == 404:
            what = f"el modelo «{model}»" if model else "esa ruta"
            return RemoteError(f"El servidor {h} no sirve {what} (404). {detail}".strip())
        if code == 429:
            return RemoteError(f"El servidor {h} está saturado (429: demasiadas peticiones); reintente en unos "
                               "segundos.", retry=True)
        if code >= 500:
            return RemoteError(f"El servidor {h} falló ({code}). {detail}".strip(), retry=True)
        return RemoteError(f"El servidor {h} rechazó la petición ({code}). {detail}".strip())

    def list_models(self) -> list[str]:
        try:
            r = self.client.get(f"{self.base_url}/models", headers=self._headers())
        except httpx.HTTPError as e:
            raise self._fail(e) from None
        if r.status_code != 200:
            raise self._status_error(r, None)
        try:
            return [str(m["id"]) for m in r.json()["data"]]
        except (ValueError, KeyError, TypeError):
            raise RemoteError(f"El servidor {self.host} no respondió a GET /models como un servidor "
                              "OpenAI-compatible.") from None

    def body(self, model: str, params: GenParams, *, messages: Optional[Sequence[Mapping[str, str]]] = None,
             prompt: Optional[str] = None, stop: Sequence[str] = (),
             lora: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
        """The JSON of one streamed request: the model, the input and the sampling values of `params`."""
        check_strategy(params, model)
        b: dict[str, Any] = {"model": model, "stream": True, "max_tokens": params.max_new_tokens,
                             "stream_options": {"include_usage": True}}  # token counts in the last event
        if messages is not None:
            b["messages"] = [dict(m) for m in messages]
        else:
            b["prompt"] = prompt
        if stop:
            b["stop"] = list(stop)[:4]  # OpenAI's limit
        if params.strategy == "greedy":
            b["temperature"] = 0.0
        else:
            b["temperature"], b["top_p"] = params.temperature, params.top_p
        if params.seed is not None:
            b["seed"] = params.seed
        if self.spec.sampling_extras:  # vLLM and llama.cpp read these; OpenAI's own API refuses them
            b["top_k"] = 1 if params.strategy == "greedy" else params.top_k
            b["min_p"] = 0.0
            b["repetition_penalty"] = b["repeat_penalty"] = params.repetition_penalty
        if lora:
            b["lora"] = [dict(x) for x in lora]
        return b

    def stream(self, body: Mapping[str, Any], reply: Reply, should_stop: Callable[[], bool]) -> Iterator[str]:
        """Yield the answer's text pieces; fill `reply`. Raises RemoteError before the first piece (nothing
        received: the request failed); after it, a broken stream ends the answer as `cut`. Closing the
        iterator, or `should_stop()` between pieces, closes the HTTP stream (the server stops generating)."""
        chat = "messages" in body
        url = f"{self.base_url}/{'chat/completions' if chat else 'completions'}"
        model = str(body.get("model"))
        try:
            with self.client.stream("POST", url, json=body, headers=self._headers()) as r:
                if r.status_code != 200:
                    r.read()
                    raise self._status_error(r, model)
                for event in _events(r):
                    if should_stop():
                        reply.finish_reason = "stopped"
                        return
                    if event == "[DONE]":
                        break
                    piece, finish = self._parse(event, reply, chat, model)
                    if piece:
                        reply.chunks += 1
                        reply.text.append(piece)
                        yield piece
                    if finish:
                        reply.finish_reason = {"stop": "eos", "length": "length"}.get(finish, finish)
                if not reply.finish_reason:
                    reply.finish_reason, reply.error = "cut", f"el servidor {self.host} cerró la respuesta sin terminarla"
        except httpx.HTTPError as e:
            if not reply.chunks and not reply.finish_reason:
                raise self._fail(e, model) from None
            if not reply.finish_reason:
                reply.finish_reason = "cut"
                reply.error = f"el servidor {self.host} cortó la conexión a mitad de la respuesta ({type(e).__name__})"
        finally:
            if should_stop() and reply.finish_reason not in ("eos", "length", "cut"):
                reply.finish_reason = "stopped"

    def _parse(self, event: str, reply: Reply, chat: bool, model: str) -> tuple[str, Optional[str]]:
        try:
            data = json.loads(event)
        except ValueError:
            raise RemoteError(f"El servidor {self.host} envió un evento que no es JSON.") from None
        if isinstance(data, dict) and data.get("error"):
            err = data["error"]
            msg = err.get("message") if isinstance(err, dict) else str(err)
            if reply.chunks:
                reply.finish_reason, reply.error = "cut", f"el servidor {self.host} informó un error: {str(msg)[:200]}"
                return "", None
            raise RemoteError(f"El servidor {self.host} informó un error con «{model}»: {str(msg)[:200]}", retry=True)
        usage = data.get("usage") if isinstance(data, dict) else None
        if isinstance(usage, dict):
            reply.prompt_tokens = usage.get("prompt_tokens", reply.prompt_tokens)
            reply.completion_tokens = usage.get("completion_tokens", reply.completion_tokens)
        choices = data.get("choices") if isinstance(data, dict) else None
        if not choices:
            return "", None
        ch = choices[0]
        piece = ((ch.get("delta") or {}).get("content") if chat else ch.get("text")) or ""
        return piece, ch.get("finish_reason")

    def describe(self) -> dict[str, Any]:
        return {"modelo": self.key, "motor": "servidor OpenAI-compatible", "servidor": self.host,
                "api": self.spec.api, "modelos_servidos": ", ".join(self.served) or "ninguno",
                "concurrencia": self.spec.concurrency}

    @property
    def footprint_bytes(self) -> int:
        return 0

    def close(self) -> None:
        self.client.close()


def _events(r: httpx.Response) -> Iterator[str]:
    """The `data:` payloads of a server-sent-event stream (multi-line data joined, comments skipped)."""
    data: list[str] = []
    for line in r.iter_lines():
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
    if data:
        yield "\n".join(data)


def _detail(r: httpx.Response) -> str:
    """The server's own error text, short (never the request's headers)."""
    try:
        d = r.json()
        msg = d.get("error", d.get("detail", d)) if isinstance(d, dict) else d
        if isinstance(msg, dict):
            msg = msg.get("message", msg)
        return str(msg)[:200]
    except ValueError:
        return r.text[:200]
