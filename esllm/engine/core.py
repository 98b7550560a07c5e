"""The engine: base models loaded once, LoRA adapters hot-swapped on them, contestants that answer.

    engine = Engine(load_config("configs/default.yaml"), root=Path("."))
    engine.start()                      # load bases, discover adapters
    for ev in engine.stream("gemma-base", [{"role": "user", "content": "Hola"}]):
        print(ev.text)                  # the answer so far; the last event has ev.result
    engine.runner("gemma-base")         # the contestant's runner.Runner, for everything else

`Engine` is a thin façade over the registry (esllm/engine/registry.py: bases, adapters, contestants, one runner
each): it checks what a caller sends (message caps, generation parameters) and hands it to the contestant's
runner. It knows no backend: llama.cpp, transformers and OpenAI-compatible servers are runners alike.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from esllm import EsllmError
from esllm.engine.config import AppConfig
from esllm.engine.loader import load_base
from esllm.engine.messages import check_messages
from esllm.engine.presets import GenParams
from esllm.engine.registry import Registry
from esllm.engine.runner import ContestantRecord, LoadedModel, Messages, Runner
from esllm.engine.types import GenerationResult, LoadedContestant, StreamEvent

STRATEGY_NAMES = {"contrastive": "la búsqueda contrastiva", "beam": "la búsqueda en haz", "sample": "el muestreo",
                  "greedy": "la decodificación voraz"}


class Engine:
    def __init__(self, config: AppConfig, root: Path, *, loader: Callable[..., Any] = load_base,
                 opener: Optional[Callable[..., LoadedModel]] = None, progress: Optional[Callable[[str], None]] = None):
        """`loader`: a transformers base (tests: tiny models); `opener`: any base (default registry.open_model)."""
        self.config = config
        self.registry = Registry(config, root, loader=loader, opener=opener, progress=progress)

    def start(self) -> None:
        self.registry.start()

    def refresh(self):
        return self.registry.refresh()

    def available(self) -> list[str]:
        """Names of the contestants that can answer now, in config order (then adapters found)."""
        return [name for name, c in self.registry.contestants.items() if c.available]

    def contestant(self, name: str) -> LoadedContestant:
        """An available contestant, or EsllmError saying why not."""
        c = self.registry.contestants.get(name)
        if c is None:
            raise EsllmError(f"No existe el concursante {name!r}.")
        if not c.available:
            raise EsllmError(f"El concursante {name} no está disponible: {c.reason}")
        return c

    def runner(self, name: str) -> Runner:
        self.contestant(name)
        return self.registry.runners[name]

    def record(self, name: str) -> ContestantRecord:
        """What a contestant is (available or not: then with the reason)."""
        c = self.registry.contestants.get(name)
        if c is None:
            raise EsllmError(f"No existe el concursante {name!r}.")
        if c.available:
            return self.registry.runners[name].record()
        return ContestantRecord(name=c.name, available=False, reason=c.reason, base=c.model_key, adapter=c.adapter,
                                preset=c.preset, params=dict(c.overrides), served_model=c.served_model)

    def hashes(self, name: str) -> dict[str, Any]:
        """What an available contestant runs on, for tracing a stored result (ContestantRecord.provenance)."""
        return self.runner(name).record().provenance()

    def params(self, name: str, preset: Optional[str] = None,
               overrides: Optional[Mapping[str, Any]] = None) -> GenParams:
        """The contestant's preset (or `preset`) with its config params and `overrides` over it, checked and capped;
        EsllmError when its runner cannot decode that way."""
        c, runner = self.contestant(name), self.runner(name)
        params = GenParams.build(preset or c.preset, {**c.overrides, **(overrides or {})},
                                 max_new_tokens_cap=self.config.limits.max_new_tokens)
        if params.strategy not in runner.capabilities.strategies:
            ok = ", ".join(sorted(runner.capabilities.strategies))
            raise EsllmError(f"{name}: {STRATEGY_NAMES[params.strategy]} no es posible con este concursante "
                             f"({runner.record().backend}); use {ok}.")
        return params

    def stream(self, name: str, messages: Messages, *, preset: Optional[str] = None,
               overrides: Optional[Mapping[str, Any]] = None,
               stop_event: Optional[threading.Event] = None) -> Iterator[StreamEvent]:
        """The answer as it grows; the last event carries the GenerationResult. Closing the iterator (a browser
        that went away) or setting `stop_event` stops decoding."""
        self.contestant(name)
        msgs = check_messages(messages, self.config.limits)
        params = self.params(name, preset, overrides)
        yield from self.runner(name).stream(msgs, params, stop_event or threading.Event())

    def generate(self, name: str, messages: Messages, **kw) -> GenerationResult:
        """The final result; EsllmError when a server's stream broke (never a cut answer taken for a whole one)."""
        result = None
        for ev in self.stream(name, messages, **kw):
            result = ev.result
        if result is None or result.finish_reason == "cut":
            raise EsllmError(f"La respuesta de {name} se cortó: {result.error if result else 'sin resultado'}.")
        return result

    def generate_many(self, name: str, conversations: Sequence[Messages], *, preset: Optional[str] = None,
                      overrides: Optional[Mapping[str, Any]] = None,
                      stop_event: Optional[threading.Event] = None) -> list[GenerationResult]:
        """One answer per conversation, all by one contestant with the same parameters (batched where the runner
        can); a stopped call returns the results finished so far."""
        self.contestant(name)
        checked = [check_messages(m, self.config.limits) for m in conversations]  # refuse before decoding any
        params = self.params(name, preset, overrides)
        return self.runner(name).generate_many(checked, params, stop_event or threading.Event()) if checked else []

    def loglikelihood(self, name: str, pairs: Sequence[tuple[str, str]], *,
                      add_bos: Optional[bool] = None) -> list[tuple[float, int, bool]]:
        """lm-evaluation-harness's loglikelihood on the contestant (runner.Runner.loglikelihood)."""
        return self.runner(name).loglikelihood(pairs, add_bos=add_bos)

    def next_token_logprobs(self, name: str, prompts: Sequence[str], *, chat: bool = True,
                            batch_size: int = 8) -> tuple[Any, Any]:
        """(log-probabilities [len(prompts), vocab] of the next token, the base's Tok): runner.Runner's."""
        return self.runner(name).next_token_logprobs(prompts, chat=chat, batch_size=batch_size)

    @property
    def active(self) -> int:
        """Decodes in flight now (a stopped one leaves at its next token)."""
        return self.registry.active()
