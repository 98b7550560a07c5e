"""The engine's calls for a contestant on an OpenAI-compatible server (openai_backend.OpenAIBackend):
streaming chat and batch answers, with the same checks, caps and results as a local contestant.

The server tokenizes and decodes, so esllm caps the conversation by characters (limits.max_prompt_chars,
max_conversation_chars), never by tokens. Batch work keeps `concurrency` requests in flight (the server
batches them: vLLM's continuous batching) and retries a 429, 5xx, network error or cut stream with backoff;
an answer that still fails comes back with finish_reason `error` or `cut` and its reason, never as a
complete answer. A chat answer is not retried: the user sees what arrived, marked as cut.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, Mapping, Optional, Sequence

from esllm import EsllmError
from esllm.engine.messages import check_messages
from esllm.engine.openai_backend import OpenAIBackend, RemoteError, Reply, check_strategy
from esllm.engine.presets import GenParams
from esllm.engine.templates import get_template
from esllm.engine.types import GenerationResult, LoadedContestant, StreamEvent

BACKOFF_S = 0.5  # first wait before a retry; doubled each time, at most MAX_BACKOFF_S
MAX_BACKOFF_S = 8.0


def request(engine, c: LoadedContestant, base: OpenAIBackend, messages: Sequence[Mapping[str, Any]],
            preset: Optional[str], overrides: Optional[Mapping[str, Any]]) -> tuple[dict[str, Any], GenParams, str]:
    """(JSON body, params, template name) of one answer of `c` to `messages`; EsllmError if not allowed."""
    msgs = check_messages(messages, engine.config.limits)
    params = GenParams.build(preset or c.preset, {**c.overrides, **(overrides or {})},
                             max_new_tokens_cap=engine.config.limits.max_new_tokens)
    check_strategy(params, c.name)
    if base.spec.api == "chat":
        return base.body(c.served_model, params, messages=msgs, lora=c.lora), params, "servidor"
    template = c.template or get_template(base.spec.template)
    prompt = template.render(msgs, bos_token="", eos_token="")  # the server adds BOS when its model wants one
    return (base.body(c.served_model, params, prompt=prompt, stop=template.stop_strings, lora=c.lora),
            params, template.name)


def result(c: LoadedContestant, base: OpenAIBackend, template: str, params: GenParams, reply: Reply,
           latency: float, first_token_s: Optional[float]) -> GenerationResult:
    return GenerationResult(
        text="".join(reply.text).strip() if reply.finish_reason not in ("cut", "error") else "".join(reply.text),
        contestant=c.name, base=c.model_key, adapter=None, template=template,
        params={**params.as_dict(), "served_model": c.served_model, "host": base.host,
                **({"lora": [dict(x) for x in c.lora]} if c.lora else {})},
        prompt_tokens=reply.prompt_tokens or 0,
        new_tokens=reply.completion_tokens if reply.completion_tokens is not None else reply.chunks,
        latency_s=round(latency, 3), first_token_s=None if first_token_s is None else round(first_token_s, 3),
        finish_reason=reply.finish_reason or "stopped", backend=base.name, error=reply.error)


def stream(engine, c: LoadedContestant, base: OpenAIBackend, messages, *, preset=None, overrides=None,
           stop_event: Optional[threading.Event] = None) -> Iterator[StreamEvent]:
    """Engine.stream for a server: the text as it grows, then the result (finish_reason `cut` when the
    stream broke: the text received is kept). Closing the iterator closes the HTTP stream."""
    body, params, template = request(engine, c, base, messages, preset, overrides)
    stop = stop_event or threading.Event()
    reply = Reply()
    t0 = time.perf_counter()
    first: Optional[float] = None
    text = ""
    with engine._active_lock:
        engine.active += 1
    try:
        for piece in base.stream(body, reply, stop.is_set):
            if first is None:
                first = time.perf_counter() - t0
            text += piece
            yield StreamEvent(text.lstrip())
        yield StreamEvent(text.strip(), result(c, base, template, params, reply, time.perf_counter() - t0, first))
    finally:
        stop.set()
        with engine._active_lock:
            engine.active -= 1


def _one(base: OpenAIBackend, c: LoadedContestant, body: dict, template: str, params: GenParams,
         stop: threading.Event) -> GenerationResult:
    """One batch answer with retries (429, 5xx, network, cut): the last failure comes back as its result."""
    retries = base.spec.retries
    for attempt in range(retries + 1):
        reply = Reply()
        t0 = time.perf_counter()
        first: list[float] = []
        try:
            for _ in base.stream(body, reply, stop.is_set):
                if not first:
                    first.append(time.perf_counter() - t0)
        except RemoteError as e:
            reply.finish_reason, reply.error = "error", str(e)
            if not e.retry:
                break
        res = result(c, base, template, params, reply, time.perf_counter() - t0, first[0] if first else None)
        if res.finish_reason not in ("cut", "error") or stop.is_set() or attempt == retries:
            return res
        # jittered, so requests that failed together do not all come back together
        if stop.wait(min(MAX_BACKOFF_S, BACKOFF_S * 2 ** attempt) * random.uniform(0.5, 1.5)):
            return res
    return res


def generate_many(engine, c: LoadedContestant, base: OpenAIBackend, conversations, *, preset=None, overrides=None,
                  stop_event: Optional[threading.Event] = None) -> list[GenerationResult]:
    """Engine.generate_many for a server: up to `concurrency` requests at once, results in order."""
    stop = stop_event or threading.Event()
    prepared = [request(engine, c, base, m, preset, overrides) for m in conversations]  # refuse before sending
    if not prepared:
        return []
    with engine._active_lock:
        engine.active += 1
    try:
        with ThreadPoolExecutor(max_workers=min(base.spec.concurrency, len(prepared)),
                                thread_name_prefix=f"remote-{c.name}") as pool:
            futures = [pool.submit(_one, base, c, body, template, params, stop) for body, params, template in prepared]
            return [f.result() for f in futures]
    finally:
        with engine._active_lock:
            engine.active -= 1


def refuse_scoring(c: LoadedContestant, base: OpenAIBackend) -> EsllmError:
    return EsllmError(f"{c.name} está en un servidor OpenAI-compatible ({base.host}): esta evaluación necesita las "
                      "probabilidades de cada token del modelo, que esa API no da; use un concursante local.")
