"""The runner of a contestant whose base runs in this process (a `backend.Backend`: llama.cpp or transformers):
the chat template rendered and capped in tokens, decoding under the base's lock with the contestant's adapter,
the text shown as it grows, and token log-probabilities for evaluations that score instead of generating.

    runner = LocalRunner(backend, contestant, limits)     # what backend.runner(contestant, limits) returns
    for ev in runner.stream(messages, params, stop): ...

A backend holds one model's state, so every decode holds `backend.lock` from its first to its last token: two
users on two adapters of one base take turns and each always gets their own adapter's answer. Scoring holds the
lock per batch or pair, so a chat user waits one batch, not a whole evaluation.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from esllm import EsllmError
from esllm.engine.config import Limits
from esllm.engine.messages import eos_token_ids, prompt_ids, render_ids, visible
from esllm.engine.presets import GenParams
from esllm.engine.runner import Capabilities, ContestantRecord, Counter, Messages
from esllm.engine.templates import ChatTemplate, get_template
from esllm.engine.tokens import StopRule
from esllm.engine.types import GenerationResult, LoadedContestant, StreamEvent

log = logging.getLogger(__name__)


class LocalRunner:
    """`runner.Runner` over one in-process backend and one contestant (its adapter, or none: the base alone)."""

    def __init__(self, backend: Any, contestant: LoadedContestant, limits: Limits):
        self.backend, self.c, self.limits = backend, contestant, limits
        self.template: ChatTemplate = contestant.template or get_template(backend.spec.template)
        self.capabilities = Capabilities(scores_tokens=True, max_batch=max(1, backend.max_batch))
        self._active = Counter()

    @property
    def active(self) -> int:
        return self._active.value

    def record(self) -> ContestantRecord:
        b, c = self.backend, self.c
        info = b.adapters.get(c.adapter) if c.adapter else None
        weights = info.path / "adapter_model.safetensors" if info else None
        return ContestantRecord(
            name=c.name, available=True, base=c.model_key, base_source=b.spec.source, base_sha256=b.source_sha256,
            backend=b.name, quantization=b.quantization, dtype=b.dtype, device=b.device, adapter=c.adapter,
            adapter_sha256=info.sha256 if info else None, adapter_rank=info.r if info else None,
            adapter_mib=round(weights.stat().st_size / 2**20, 2) if weights and weights.is_file() else None,
            template=self.template.name, template_sha256=self.template.sha256, preset=c.preset,
            params=dict(c.overrides), details=b.details())

    # ------------------------------------------------------------ generation
    def _stop_rule(self, should_stop) -> StopRule:
        tok = self.backend.tok
        return StopRule(eos_token_ids(tok, self.template), self.template.stop_strings, should_stop,
                        lambda ids: tok.decode(ids, skip_special=False))

    def _prompt(self, messages: Messages, stop: Optional[threading.Event] = None) -> tuple[list[int], int]:
        return prompt_ids(self.backend.tok, self.template, list(messages), self.limits.max_prompt_tokens,
                          stop.is_set if stop is not None else None)

    def _check_adapter(self) -> None:
        if self.c.adapter is not None and self.c.adapter not in self.backend.adapters:
            raise EsllmError(f"El adaptador {self.c.adapter} ya no está cargado; pulse «Actualizar».")

    def _result(self, params: GenParams, prompt: list[int], dropped: int, ids: list[int], reason: str,
                rule: StopRule, latency: float, first_token_s: Optional[float]) -> GenerationResult:
        text, _ = visible(self.backend.tok, ids, rule.eos_ids, self.template, final=True)
        return GenerationResult(
            text=text, contestant=self.c.name, base=self.c.model_key, adapter=self.c.adapter,
            template=self.template.name, params=params.as_dict(), prompt_tokens=len(prompt),
            new_tokens=len(ids) + (reason == "eos"), latency_s=round(latency, 3),
            first_token_s=None if first_token_s is None else round(first_token_s, 3), finish_reason=reason,
            dropped_turns=dropped, backend=self.backend.name, dtype=self.backend.dtype)

    def _decode_thread(self, prompt: list[int], params: GenParams, rule: StopRule, q: queue.Queue) -> None:
        """One decode, counted in `active` from before the thread starts (`stream`) to its end here."""
        try:
            with self.backend.lock:  # held to the last token: the backend's state is this call's
                self._check_adapter()
                ids = self.backend.generate(self.c.adapter, [prompt], params, stop=rule,
                                            on_token=lambda _i, t: q.put(("tok", t)))[0]
            q.put(("done", rule.reason(ids, params.max_new_tokens)))
        except BaseException as e:  # reported to the consumer, never lost in a thread
            q.put(("error", e))
        finally:
            self._active.down()

    def stream(self, messages: Messages, params: GenParams, stop: threading.Event) -> Iterator[StreamEvent]:
        prompt, dropped = self._prompt(messages, stop)
        rule = self._stop_rule(stop.is_set)
        q: "queue.Queue[tuple[str, Any]]" = queue.Queue()
        t0 = time.perf_counter()
        self._active.up()
        threading.Thread(target=self._decode_thread, args=(prompt, params, rule, q), name=f"gen-{self.c.name}",
                         daemon=True).start()
        generated: list[int] = []
        shown, first = "", None
        try:
            while True:
                kind, val = q.get()
                if kind == "tok":
                    first = first if first is not None else time.perf_counter() - t0
                    generated.append(val)
                    text, _ = visible(self.backend.tok, generated, rule.eos_ids, self.template, final=False)
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
                    result = self._result(params, prompt, dropped, ids, reason, rule, time.perf_counter() - t0, first)
                    yield StreamEvent(result.text, result)
                    return
        finally:
            stop.set()  # consumer gone or done: the decoding thread stops at its next token

    def generate_many(self, conversations: Sequence[Messages], params: GenParams,
                      stop: threading.Event) -> list[GenerationResult]:
        """Up to `capabilities.max_batch` conversations decoded together (llama.cpp), the lock taken per group."""
        prepared = [self._prompt(m, stop) for m in conversations]
        rule = self._stop_rule(stop.is_set)
        out: list[GenerationResult] = []
        step = self.capabilities.max_batch
        for start in range(0, len(prepared), step):
            chunk = prepared[start:start + step]
            t0 = time.perf_counter()
            first: dict[int, float] = {}
            with self._active, self.backend.lock:
                self._check_adapter()
                outs = self.backend.generate(self.c.adapter, [p for p, _ in chunk], params, stop=rule,
                                             on_token=lambda i, _t, first=first, t0=t0: first.setdefault(i, time.perf_counter() - t0))
            wall = time.perf_counter() - t0
            for i, ((prompt, dropped), ids) in enumerate(zip(chunk, outs)):
                ids, reason = rule.reason(ids, params.max_new_tokens)
                out.append(self._result(params, prompt, dropped, ids, reason, rule, wall, first.get(i)))
            if stop.is_set():
                break
        return out

    # ------------------------------------------------------------ scoring
    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no template, no BOS) with the base's tokenizer."""
        return self.backend.tok.encode(text)

    def _bos(self) -> list[int]:
        tok = self.backend.tok
        return [tok.bos_token_id] if tok.add_bos and tok.bos_token_id is not None else []

    def next_token_logprobs(self, prompts: Sequence[str], *, chat: bool = True, batch_size: int = 8) -> tuple[Any, Any]:
        """(log-probabilities [len(prompts), vocab] of the next token, the base's Tok). chat=True: each prompt is one
        user message rendered with the template and its generation prompt; chat=False: the raw text, after BOS
        where the model expects one."""
        tok = self.backend.tok
        if chat:
            ids = [render_ids(tok, self.template, [{"role": "user", "content": p}]) for p in prompts]
        else:
            ids = [self._bos() + tok.encode(p) for p in prompts]
        rows = []
        for start in range(0, len(ids), batch_size):
            with self.backend.lock:
                self._check_adapter()
                rows.append(self.backend.next_logprobs(self.c.adapter, ids[start:start + batch_size]))
        return np.concatenate(rows, axis=0), tok

    def loglikelihood(self, pairs: Sequence[tuple[str, str]], *,
                      add_bos: Optional[bool] = None) -> list[tuple[float, int, bool]]:
        """lm-evaluation-harness's loglikelihood: for each (context, continuation), the sum of the continuation
        tokens' log-probabilities, their number, and whether each was the greedy choice. No chat template. As
        lm-eval: trailing spaces of the context move to the continuation, the continuation's tokens are those of
        context+continuation after the context's; BOS first when `add_bos` (default: when the tokenizer adds one)."""
        tok = self.backend.tok
        bos = self._bos() if add_bos is None else (
            [tok.bos_token_id] if add_bos and tok.bos_token_id is not None else [])
        out = []
        for context, continuation in pairs:
            n_space = len(context) - len(context.rstrip())
            if n_space:
                context, continuation = context[:-n_space], context[-n_space:] + continuation
            ids = bos + tok.encode(context + continuation)
            start = len(bos) + len(tok.encode(context))
            if start < 1 or start >= len(ids):
                raise EsllmError("No se puede puntuar: el contexto o la continuación no tienen tokens.")
            with self.backend.lock:
                self._check_adapter()
                lps, greedy = self.backend.token_logprobs(self.c.adapter, ids, start)
            out.append((float(sum(lps)), len(lps), all(greedy)))
        return out
