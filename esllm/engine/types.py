"""What the engine hands out: a contestant as loaded now, a finished generation, a streamed step, and the
report of an adapter refresh. Plain dataclasses, no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from esllm.engine.templates import ChatTemplate


@dataclass
class LoadedContestant:
    name: str
    model_key: str
    adapter: Optional[str]
    template: Optional[ChatTemplate]
    preset: str
    available: bool = False
    reason: str = ""
    auto: bool = False  # found in adapters/ rather than listed in the config
    overrides: dict[str, Any] = field(default_factory=dict)  # the config's `params:` over the preset
    served_model: Optional[str] = None  # on an OpenAI-compatible server: the model name sent
    lora: list[dict[str, Any]] = field(default_factory=list)  # llama-server: adapters of each request


@dataclass
class GenerationResult:
    text: str
    contestant: str
    base: str
    adapter: Optional[str]
    template: str
    params: dict[str, Any]
    prompt_tokens: int
    new_tokens: int
    latency_s: float
    first_token_s: Optional[float]
    finish_reason: str  # eos | stop_string | length | stopped | cut (a server's stream broke) | error
    dropped_turns: int = 0
    backend: str = ""  # which engine decoded it: llama.cpp | transformers | openai
    dtype: str = ""  # the weights' type it ran with (transformers: float32/bfloat16/…; llama.cpp: the GGUF's file type)
    error: str = ""  # why an answer is `cut` or `error` (never a complete answer)

    @property
    def complete(self) -> bool:
        """Whether this is a whole answer that may be stored or rated (not stopped, cut or failed)."""
        return self.finish_reason not in ("stopped", "cut", "error")

    @property
    def ended_on_eos(self) -> bool:
        return self.finish_reason == "eos"

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["ended_on_eos"] = self.ended_on_eos
        return d


@dataclass
class StreamEvent:
    text: str
    result: Optional[GenerationResult] = None


@dataclass
class RefreshReport:
    added: list[str] = field(default_factory=list)
    reloaded: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
