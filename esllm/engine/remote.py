"""Contestants on an OpenAI-compatible server (vLLM, llama.cpp's llama-server, llama-cpp-python's server, a hosted
API) through the `openai` package: `RemoteModel` is the base as the registry holds it, `RemoteRunner` one contestant
on it (esllm/engine/runner.py's protocol).

    models:
      mistral-7b:
        source: openai:http://gpu-server:8000/v1
        api_key_env: ESLLM_VLLM_KEY      # the *name* of the environment variable holding the key
    contestants:
      - {name: mistral-tributario, model: mistral-7b, served_model: tributario-ec, preset: top-p}

The server holds the weights and the adapters: a contestant names the model the server serves (vLLM: the LoRA
module name given to `--lora-modules`; llama-server: the base, plus `lora: [{id, scale}]` per request, sent in
`extra_body` like the sampling extras top_k, min_p and repetition_penalty). `GET /models` says which contestants
are available. The API key is read from the environment when the base is opened and sent only in the
Authorization header: it is never stored, logged or shown. The server tokenizes and decodes, so esllm caps a
conversation by characters (messages.check_messages), never by tokens, and cannot score tokens.

Retries are ours, not the client's (it runs with `max_retries=0`): a batch answer is tried again after a 429, a
5xx, a network error *or a cut stream* (which the client cannot see), up to `retries` times with jittered
exponential backoff, and a chat answer is never retried (the user sees what arrived, marked cut). Errors are
Spanish `RemoteError`s naming the host (remote_errors.py). A stream that ends before the server says why is a
*cut* answer: its text is kept and marked, never taken for a complete one. «Detener» (the stop event, or the
consumer closing the iterator) closes the HTTP stream, so the server stops generating.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence
from urllib.parse import urlsplit

import openai

from esllm import EsllmError
from esllm.engine.config import Limits, ModelSpec
from esllm.engine.presets import GenParams
from esllm.engine.remote_errors import RemoteError, remote_error
from esllm.engine.runner import Capabilities, ContestantRecord, Counter, Messages
from esllm.engine.templates import ChatTemplate, get_template
from esllm.engine.types import GenerationResult, LoadedContestant, StreamEvent

PREFIX = "openai:"
BACKOFF_S = 0.5  # first wait before a retry; doubled each time, at most MAX_BACKOFF_S
MAX_BACKOFF_S = 8.0
# Strategies a server cannot run: they need the model's hidden states or several hypotheses per step.
UNSUPPORTED = {"contrastive": "la búsqueda contrastiva", "beam": "la búsqueda en haz"}
# Without a key nothing is sent as Authorization (the client would otherwise refuse to send, or read OPENAI_API_KEY).
NO_KEY_HEADERS = {"Authorization": openai.Omit()}


def base_url_of(source: str) -> str:
    """The server's base URL of a `source: openai:<url>`; EsllmError when it is not an http(s) URL."""
    url = source.strip()[len(PREFIX):].rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EsllmError(f"El origen {source!r} no es una URL válida: escriba openai:http://servidor:puerto/v1")
    return url


def host_of(url: str) -> str:
    """host[:port] of a URL, without any user:password written in it."""
    return urlsplit(url).netloc.rsplit("@", 1)[-1]


# Chat templates' control tokens as they are written: ChatML/Llama-3 `<|…|>`, Gemma's turns, Llama-2/Mistral's.
CONTROL_TEXT = re.compile(r"<\|[A-Za-z0-9_]{1,40}\|>|</?start_of_turn>|</?end_of_turn>|</s>|<s>|\[/?INST\]")


def refuse_control_text(messages: Messages, template: ChatTemplate) -> None:
    """With api: completions the server tokenizes the whole prompt, control tokens in a content included: one typed
    in a message would close its turn. EsllmError naming it (the chat API keeps contents apart: nothing to refuse)."""
    for m in messages:
        found = CONTROL_TEXT.search(m["content"]) or next(
            (t for t in (*template.end_tokens, *template.stop_strings) if t and t in m["content"]), None)
        if found:
            mark = found if isinstance(found, str) else found.group(0)
            raise EsllmError(f"El mensaje contiene «{mark}», una marca de control del formato del modelo: en un servidor "
                             "con api: completions se tomaría como fin de turno. Quítela y vuelva a enviarlo.")


def api_key_of(key: str, spec: ModelSpec) -> Optional[str]:
    """The key in the environment variable `spec.api_key_env` names (None when it names none)."""
    if not spec.api_key_env:
        return None
    api_key = os.environ.get(spec.api_key_env) or None
    if api_key is None:
        raise EsllmError(f"La variable de entorno {spec.api_key_env} (api_key_env de {key}) no está definida: "
                         "expórtela con la clave del servidor antes de arrancar esllm.")
    return api_key


class RemoteModel:
    """One OpenAI-compatible server as a base: what it serves and an `openai.OpenAI` client to reach it.
    Thread-safe (the client is); `lock` guards `served` while a refresh replaces it."""

    def __init__(self, key: str, spec: ModelSpec, client: openai.OpenAI, *, keyless: bool):
        self.key, self.spec, self.client = key, spec, client
        self.host = host_of(base_url_of(spec.source))
        self.headers = NO_KEY_HEADERS if keyless else {}  # sent with every request
        self.adapters: dict[str, Any] = {}  # adapters live on the server: always empty
        self.lock = threading.RLock()
        self.served: list[str] = []  # ids from GET /models at the last refresh

    @classmethod
    def open(cls, key: str, spec: ModelSpec, progress: Callable[[str], None] = lambda m: None) -> "RemoteModel":
        """Make the client and list the served models; EsllmError (Spanish, with the host) when that fails."""
        api_key = api_key_of(key, spec)
        client = openai.OpenAI(
            base_url=base_url_of(spec.source), api_key=api_key or "sin-clave", max_retries=0,
            timeout=openai.Timeout(spec.timeout_s, connect=min(10.0, spec.timeout_s)),
            # the client would otherwise send OPENAI_ORG_ID / OPENAI_PROJECT_ID from this machine's environment
            default_headers={"OpenAI-Organization": openai.Omit(), "OpenAI-Project": openai.Omit()})
        model = cls(key, spec, client, keyless=api_key is None)
        try:
            model.refresh()
        except EsllmError:
            model.close()
            raise
        progress(f"{key}: servidor {model.host} con {len(model.served)} modelos ({', '.join(model.served[:8])}).")
        return model

    def refresh(self) -> None:
        """Ask the server again what it serves (`GET /models`); RemoteError when it does not answer."""
        try:
            served = [str(m.id) for m in self.client.models.list(extra_headers=self.headers)]
        except openai.OpenAIError as e:
            raise self.error(e) from None
        except (ValueError, TypeError, AttributeError):
            raise RemoteError(f"El servidor {self.host} no respondió a GET /models como un servidor "
                              "OpenAI-compatible.") from None
        with self.lock:
            self.served = served

    def error(self, e: openai.OpenAIError, model: Optional[str] = None) -> RemoteError:
        return remote_error(e, self.host, model=model, key_env=self.spec.api_key_env, timeout_s=self.spec.timeout_s)

    def unavailable_reason(self, c: LoadedContestant) -> Optional[str]:
        if c.served_model in self.served:
            return None
        return f"el servidor {self.host} no sirve «{c.served_model}» (sirve: {', '.join(self.served) or 'nada'})"

    def runner(self, c: LoadedContestant, limits: Limits) -> "RemoteRunner":
        return RemoteRunner(self, c, limits)

    def load_adapter(self, info: Any) -> None:
        raise self._adapters_live_there()

    def unload_adapter(self, name: str) -> None:
        raise self._adapters_live_there()

    def _adapters_live_there(self) -> EsllmError:
        return EsllmError(f"{self.key} está en el servidor {self.host}: sus adaptadores se cargan allí, no en esllm.")

    def close(self) -> None:
        self.client.close()

    def __repr__(self) -> str:
        return f"RemoteModel({self.key!r}, host={self.host!r}, served={self.served!r})"


@dataclass
class Reply:
    """One streamed answer: pieces of text as they arrive, then why it ended."""

    finish_reason: str = ""  # eos | length | stopped | cut
    prompt_tokens: Optional[int] = None
    completion_tokens: Optional[int] = None
    chunks: int = 0  # text-carrying events received (≈ tokens when the server gives no usage)
    error: str = ""  # why it was cut
    text: list[str] = field(default_factory=list)


class RemoteRunner:
    """One contestant on a server: streams and batch answers; no token scores (the API does not give them)."""

    def __init__(self, model: RemoteModel, contestant: LoadedContestant, limits: Limits):
        self.model, self.contestant, self.limits = model, contestant, limits
        self.chat = model.spec.api == "chat"
        self.template: Optional[ChatTemplate] = None if self.chat else (
            contestant.template or get_template(model.spec.template))
        self.capabilities = Capabilities(strategies=frozenset({"greedy", "sample"}), scores_tokens=False,
                                         max_batch=model.spec.concurrency)
        self._active = Counter()

    @property
    def active(self) -> int:
        return self._active.value

    def record(self) -> ContestantRecord:
        c, m = self.contestant, self.model
        return ContestantRecord(
            name=c.name, available=True, base=c.model_key, base_source=m.spec.source, backend="openai",
            quantization="server", dtype="", device=m.host,
            template=self.template.name if self.template else "server",
            template_sha256=self.template.sha256 if self.template else None, preset=c.preset,
            params=dict(c.overrides), served_model=c.served_model, host=m.host, lora=[dict(x) for x in c.lora],
            details={"api": m.spec.api, "served_models": list(m.served), "concurrency": m.spec.concurrency})

    # ------------------------------------------------------------------------------------------- answers
    def stream(self, messages: Messages, params: GenParams, stop: threading.Event) -> Iterator[StreamEvent]:
        """The text as it grows, then the result (`cut` when the stream broke: the text received is kept).
        Closing the iterator or setting `stop` closes the HTTP stream. Never retried."""
        request = self._request(messages, params)
        reply, t0, first, text = Reply(), time.perf_counter(), None, ""
        with self._active, closing(self._pieces(request, reply, stop)) as pieces:
            for piece in pieces:
                if first is None:
                    first = time.perf_counter() - t0
                text += piece
                yield StreamEvent(text.lstrip())
            yield StreamEvent(text.strip(), self._result(reply, params, time.perf_counter() - t0, first))

    def generate_many(self, conversations: Sequence[Messages], params: GenParams,
                      stop: threading.Event) -> list[GenerationResult]:
        """One answer per conversation, in order, with up to `concurrency` requests in flight (the server
        batches them: vLLM's continuous batching), each retried as the module docstring says."""
        requests = [self._request(m, params) for m in conversations]  # refuse before sending anything
        if not requests:
            return []
        with self._active, ThreadPoolExecutor(max_workers=min(self.model.spec.concurrency, len(requests)),
                                              thread_name_prefix=f"remote-{self.contestant.name}") as pool:
            futures = [pool.submit(self._one, r, params, stop) for r in requests]
            return [f.result() for f in futures]

    def _one(self, request: dict[str, Any], params: GenParams, stop: threading.Event) -> GenerationResult:
        """One batch answer, tried again after a 429, 5xx, network error or cut stream; the last failure comes
        back as its result (finish_reason `error` or `cut`, with the reason)."""
        retries = self.model.spec.retries
        for attempt in range(retries + 1):
            reply, t0, first, retry = Reply(), time.perf_counter(), None, True
            if stop.is_set():  # stopped before it was sent
                reply.finish_reason = "stopped"
                return self._result(reply, params, 0.0, None)
            try:
                for _ in self._pieces(request, reply, stop):
                    first = first if first is not None else time.perf_counter() - t0
            except RemoteError as e:
                reply.finish_reason, reply.error, retry = "error", str(e), e.retry
            res = self._result(reply, params, time.perf_counter() - t0, first)
            if res.finish_reason not in ("cut", "error") or not retry or attempt == retries:
                return res
            # jittered, so requests that failed together do not all come back together
            if stop.wait(min(MAX_BACKOFF_S, BACKOFF_S * 2 ** attempt) * random.uniform(0.5, 1.5)):
                return res
        return res

    # ------------------------------------------------------------------------------------------- one request
    def _request(self, messages: Messages, params: GenParams) -> dict[str, Any]:
        """The keyword arguments of `create` for one answer: the input and the sampling values of `params`."""
        if params.strategy in UNSUPPORTED:
            raise EsllmError(f"{self.contestant.name}: {UNSUPPORTED[params.strategy]} no es posible en un servidor "
                             "OpenAI-compatible (necesita los estados internos del modelo); use greedy, top-k, "
                             "top-p o temperature.")
        greedy = params.strategy == "greedy"
        kw: dict[str, Any] = {"model": self.contestant.served_model, "stream": True,
                              "max_tokens": params.max_new_tokens, "temperature": 0.0 if greedy else params.temperature,
                              "stream_options": {"include_usage": True},  # token counts in the last event
                              "extra_headers": self.model.headers}
        if not greedy:
            kw["top_p"] = params.top_p
        if params.seed is not None:
            kw["seed"] = params.seed
        extra: dict[str, Any] = {}
        if self.model.spec.sampling_extras:  # vLLM and llama.cpp read these; OpenAI's own API refuses them
            extra.update(top_k=1 if greedy else params.top_k, min_p=0.0,
                         repetition_penalty=params.repetition_penalty, repeat_penalty=params.repetition_penalty)
        if self.contestant.lora:  # llama-server: the adapters of this request
            extra["lora"] = [dict(x) for x in self.contestant.lora]
        if extra:
            kw["extra_body"] = extra
        if self.template is None:
            kw["messages"] = [dict(m) for m in messages]
        else:
            refuse_control_text(messages, self.template)
            # esllm's template (the format adapters are trained on); the server adds BOS when its model wants one
            kw["prompt"] = self.template.render(messages, bos_token="", eos_token="")
            if self.template.stop_strings:
                kw["stop"] = list(self.template.stop_strings)[:4]  # OpenAI's limit
        return kw

    def _pieces(self, request: dict[str, Any], reply: Reply, stop: threading.Event) -> Iterator[str]:
        """Yield the answer's text pieces; fill `reply`. RemoteError when the request fails before any text; after
        it, a broken stream ends the answer as `cut`. `stop` between pieces, or closing this iterator, closes the
        HTTP stream."""
        model = self.contestant.served_model
        create = self.model.client.chat.completions.create if self.chat else self.model.client.completions.create
        try:
            response = create(**request)
        except openai.OpenAIError as e:
            raise self.model.error(e, model) from None
        try:
            for chunk in response:
                if stop.is_set():
                    reply.finish_reason = "stopped"
                    return
                piece = self._read(chunk, reply)
                if piece:
                    reply.chunks += 1
                    reply.text.append(piece)
                    yield piece
            if not reply.finish_reason:
                reply.finish_reason, reply.error = "cut", f"el servidor {self.model.host} cerró la respuesta sin terminarla"
        except (openai.OpenAIError, ValueError) as e:  # ValueError: an event that is not JSON
            self._broken(e, reply, model)
        finally:
            response.close()
            if stop.is_set() and reply.finish_reason not in ("eos", "length", "cut"):
                reply.finish_reason = "stopped"

    def _broken(self, e: Exception, reply: Reply, model: Optional[str]) -> None:
        """A stream that failed: before any text, the RemoteError; after it, the answer is `cut` with the reason."""
        host = self.model.host
        if not reply.chunks and not reply.finish_reason:
            if isinstance(e, openai.OpenAIError):
                raise self.model.error(e, model) from None
            raise RemoteError(f"El servidor {host} envió un evento que no es JSON.", retry=True) from None
        if reply.finish_reason:
            return
        reply.finish_reason = "cut"
        if isinstance(e, openai.APIConnectionError):
            cause = type(e.__cause__ or e).__name__
            reply.error = f"el servidor {host} cortó la conexión a mitad de la respuesta ({cause})"
        elif isinstance(e, openai.APIError):
            reply.error = f"el servidor {host} informó un error: {str(e.message)[:200]}"
        else:
            reply.error = f"el servidor {host} envió un evento que no es JSON"

    def _read(self, chunk: Any, reply: Reply) -> str:
        """The text of one streamed chunk; its usage and finish reason go into `reply`."""
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            reply.prompt_tokens = getattr(usage, "prompt_tokens", reply.prompt_tokens)
            reply.completion_tokens = getattr(usage, "completion_tokens", reply.completion_tokens)
        choices = getattr(chunk, "choices", None)
        if not choices:
            return ""
        choice = choices[0]
        finish = getattr(choice, "finish_reason", None)
        if finish:
            reply.finish_reason = {"stop": "eos", "length": "length"}.get(finish, finish)
        if self.chat:
            return getattr(getattr(choice, "delta", None), "content", None) or ""
        return getattr(choice, "text", None) or ""

    def _result(self, reply: Reply, params: GenParams, latency: float,
                first_token_s: Optional[float]) -> GenerationResult:
        c, m = self.contestant, self.model
        broken = reply.finish_reason in ("cut", "error")
        return GenerationResult(
            text="".join(reply.text) if broken else "".join(reply.text).strip(),
            contestant=c.name, base=c.model_key, adapter=None,
            template=self.template.name if self.template else "servidor",
            params={**params.as_dict(), "served_model": c.served_model, "host": m.host,
                    **({"lora": [dict(x) for x in c.lora]} if c.lora else {})},
            prompt_tokens=reply.prompt_tokens or 0,
            new_tokens=reply.completion_tokens if reply.completion_tokens is not None else reply.chunks,
            latency_s=round(latency, 3), first_token_s=None if first_token_s is None else round(first_token_s, 3),
            finish_reason=reply.finish_reason or "stopped", backend="openai", error=reply.error)

    # ------------------------------------------------------------------------------------------- scoring
    def _refuse(self) -> EsllmError:
        return EsllmError(f"{self.contestant.name} está en un servidor OpenAI-compatible ({self.model.host}): esta "
                          "evaluación necesita las probabilidades de cada token del modelo, que esa API no da; use "
                          "un concursante local.")

    def loglikelihood(self, pairs: Sequence[tuple[str, str]], *,
                      add_bos: Optional[bool] = None) -> list[tuple[float, int, bool]]:
        raise self._refuse()

    def next_token_logprobs(self, prompts: Sequence[str], *, chat: bool = True, batch_size: int = 8) -> tuple[Any, Any]:
        raise self._refuse()

    def encode(self, text: str) -> list[int]:
        raise self._refuse()
