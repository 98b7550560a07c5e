"""The Engine's generation: a chat answer streamed from a decoding thread (`stream`, `generate`), and batches of
answers by one contestant (`generate_many`), each with the parameters, tokens, latency and finish reason of its
`GenerationResult`.

`Generation` is mixed into `Engine` (esllm/engine/core.py) and uses its registry: `contestant()` (an available
contestant or EsllmError), `contestants`, `bases` (key -> backend, each with its `lock`), `config.limits`, and
the count of running decodes (`active`, `_active_lock`). A contestant on an OpenAI-compatible server goes to
esllm/engine/remote.py instead.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from esllm import EsllmError
from esllm.engine.backend import Backend, StopRule
from esllm.engine.messages import check_messages, eos_token_ids, prompt_ids, visible
from esllm.engine.openai_backend import OpenAIBackend
from esllm.engine.presets import GenParams
from esllm.engine.templates import ChatTemplate, get_template
from esllm.engine.types import GenerationResult, LoadedContestant, StreamEvent

log = logging.getLogger(__name__)


class Generation:
    """`stream`, `generate`, `generate_many` and `batch_size` of `Engine` (see the module docstring)."""

    def _prepare(self, c: LoadedContestant, messages: Sequence[Mapping[str, Any]], preset: Optional[str],
                 overrides: Optional[Mapping[str, Any]]):
        msgs = check_messages(messages, self.config.limits)
        params = GenParams.build(preset or c.preset, {**c.overrides, **(overrides or {})},
                                 max_new_tokens_cap=self.config.limits.max_new_tokens)
        base = self.bases[c.model_key]
        template = c.template or get_template(base.spec.template)
        ids, dropped = prompt_ids(base.tok, template, msgs, self.config.limits.max_prompt_tokens)
        return base, template, params, ids, dropped

    def _result(self, c: LoadedContestant, base: Backend, template: ChatTemplate, params: GenParams,
                prompt: list[int], dropped: int, ids: list[int], reason: str, eos_ids: Sequence[int],
                latency: float, first_token_s: Optional[float]) -> GenerationResult:
        text, _ = visible(base.tok, ids, eos_ids, template, final=True)
        return GenerationResult(
            text=text, contestant=c.name, base=c.model_key, adapter=c.adapter, template=template.name,
            params=params.as_dict(), prompt_tokens=len(prompt), new_tokens=len(ids) + (reason == "eos"),
            latency_s=round(latency, 3), first_token_s=None if first_token_s is None else round(first_token_s, 3),
            finish_reason=reason, dropped_turns=dropped, backend=base.name)

    def _stop_rule(self, base: Backend, template: ChatTemplate, should_stop: Callable[[], bool]) -> StopRule:
        return StopRule(eos_token_ids(base.tok, template), template.stop_strings, should_stop,
                        lambda ids: base.tok.decode(ids, skip_special=False))

    def stream(
        self,
        contestant: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        preset: Optional[str] = None,
        overrides: Optional[Mapping[str, Any]] = None,
        stop_event: Optional[threading.Event] = None,
    ) -> Iterator[StreamEvent]:
        """Yield the answer as it grows; the last event carries the GenerationResult.

        Closing the iterator (a browser that went away) or setting `stop_event` stops decoding.
        """
        c = self.contestant(contestant)
        if isinstance(self.bases[c.model_key], OpenAIBackend):
            from esllm.engine import remote

            yield from remote.stream(self, c, self.bases[c.model_key], messages, preset=preset, overrides=overrides,
                                     stop_event=stop_event)
            return
        base, template, params, input_ids, dropped = self._prepare(c, messages, preset, overrides)
        stop = stop_event or threading.Event()
        rule = self._stop_rule(base, template, stop.is_set)
        q: "queue.Queue[tuple[str, Any]]" = queue.Queue()
        t_start = time.perf_counter()

        def work() -> None:
            try:
                with base.lock:  # held to the last token: the backend's state is this call's
                    self._check_adapter(base, c)
                    ids = base.generate(c.adapter, [input_ids], params, stop=rule,
                                        on_token=lambda _i, t: q.put(("tok", t)))[0]
                q.put(("done", rule.reason(ids, params.max_new_tokens)))
            except BaseException as e:  # reported to the consumer, never lost in a thread
                q.put(("error", e))
            finally:
                with self._active_lock:
                    self.active -= 1

        with self._active_lock:
            self.active += 1
        threading.Thread(target=work, name=f"gen-{contestant}", daemon=True).start()
        generated: list[int] = []
        shown, first_token_s = "", None
        try:
            while True:
                kind, val = q.get()
                if kind == "tok":
                    if first_token_s is None:
                        first_token_s = time.perf_counter() - t_start
                    generated.append(val)
                    text, _ = visible(base.tok, generated, rule.eos_ids, template, final=False)
                    if text != shown:
                        shown = text
                        yield StreamEvent(text)
                elif kind == "error":
                    if isinstance(val, EsllmError):
                        raise val
                    log.error("generation failed", exc_info=val)
                    raise EsllmError(f"La generación falló: {type(val).__name__}: {val}")
                else:
                    ids, reason = val
                    result = self._result(c, base, template, params, input_ids, dropped, ids, reason, rule.eos_ids,
                                          time.perf_counter() - t_start, first_token_s)
                    yield StreamEvent(result.text, result)
                    return
        finally:
            stop.set()  # consumer gone or done: the worker stops at its next token

    def generate_many(
        self,
        contestant: str,
        conversations: Sequence[Sequence[Mapping[str, Any]]],
        *,
        preset: Optional[str] = None,
        overrides: Optional[Mapping[str, Any]] = None,
        stop_event: Optional[threading.Event] = None,
    ) -> list[GenerationResult]:
        """One answer per conversation, all by one contestant with the same parameters: the backend decodes
        up to `max_batch` of them together (llama.cpp), else one after the other. A stopped call returns the
        results finished so far (the last ones may be `stopped`)."""
        c = self.contestant(contestant)
        if isinstance(self.bases[c.model_key], OpenAIBackend):
            from esllm.engine import remote

            return remote.generate_many(self, c, self.bases[c.model_key], conversations, preset=preset,
                                        overrides=overrides, stop_event=stop_event)
        stop = stop_event or threading.Event()
        prepared = [self._prepare(c, m, preset, overrides) for m in conversations]
        if not prepared:
            return []
        base, template, params = prepared[0][:3]
        rule = self._stop_rule(base, template, stop.is_set)
        out: list[GenerationResult] = []
        step = max(1, base.max_batch)
        for start in range(0, len(prepared), step):
            chunk = prepared[start:start + step]
            t0 = time.perf_counter()
            first: dict[int, float] = {}

            def seen(i: int, _t: int, first=first, t0=t0) -> None:
                first.setdefault(i, time.perf_counter() - t0)

            with self._active_lock:
                self.active += 1
            try:
                with base.lock:
                    self._check_adapter(base, c)
                    outs = base.generate(c.adapter, [p[3] for p in chunk], params, stop=rule, on_token=seen)
            finally:
                with self._active_lock:
                    self.active -= 1
            wall = time.perf_counter() - t0
            for i, (p, ids) in enumerate(zip(chunk, outs)):
                ids, reason = rule.reason(ids, params.max_new_tokens)
                out.append(self._result(c, base, template, params, p[3], p[4], ids, reason, rule.eos_ids, wall,
                                        first.get(i)))
            if stop.is_set():
                break
        return out

    @staticmethod
    def _check_adapter(base: Backend, c: LoadedContestant) -> None:
        if c.adapter is not None and c.adapter not in base.adapters:
            raise EsllmError(f"El adaptador {c.adapter} ya no está cargado; pulse «Actualizar».")

    def batch_size(self, contestant: str) -> int:
        """How many answers of `contestant` are worth asking `generate_many` for at once."""
        c = self.contestants.get(contestant)
        base = self.bases.get(c.model_key) if c else None
        return max(1, getattr(base, "max_batch", 1))

    def generate(self, contestant: str, messages: Sequence[Mapping[str, Any]], **kw) -> GenerationResult:
        """Non-streaming convenience: the final result; EsllmError when a server's stream broke (never a cut
        answer taken for a whole one)."""
        result = None
        for ev in self.stream(contestant, messages, **kw):
            result = ev.result
        assert result is not None
        if result.finish_reason == "cut":
            raise EsllmError(f"La respuesta de {contestant} se cortó: {result.error}.")
        return result
