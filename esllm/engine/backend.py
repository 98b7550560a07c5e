"""The backend interface: what one loaded base model can do, whatever runs it.

    backend.load_adapter(info)                       # once per adapter folder
    outs = backend.generate(adapter_or_None, [prompt_ids, ...], params, stop=StopRule(...), on_token=...)
    backend.next_logprobs(adapter_or_None, [prompt_ids, ...])   # [n, vocab] log-probabilities (scoring)
    backend.token_logprobs(adapter_or_None, ids, start)         # log p(ids[i] | ids[:i]) for i >= start

Two implementations: `hf_backend.TransformersBackend` (transformers + peft: the reference, the GPU NF4 path
of the study, what training uses) and `llamacpp_backend.LlamaCppBackend` (llama.cpp on the shipped GGUF,
the CPU default). Above it, `local.LocalRunner` (what `runner()` returns) renders templates, caps prompts, handles
stops and the text shown; the registry (registry.py) holds it as a `runner.LoadedModel`. A backend declares what
it can do as attributes (`name`, `max_batch`); every call is made with the backend's `lock` held by its runner,
and the adapter (or none) named in each call is the one used for that call: nothing computed under another
adapter is reused. The tokenizer surface (`Tok`) and `StopRule` are in esllm/engine/tokens.py.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from esllm.engine.config import Limits, ModelSpec
from esllm.engine.local import LocalRunner
from esllm.engine.presets import GenParams
from esllm.engine.tokens import StopRule
from esllm.engine.types import LoadedContestant

OnToken = Callable[[int, int], None]  # (sequence index, token id)


@dataclass
class Backend(ABC):
    """One base model loaded once; adapters loaded onto it by name. Subclasses implement the abstract calls."""

    key: str
    spec: ModelSpec
    tok: Any  # Tok
    device: str
    quantization: str
    path: str
    source_sha256: Optional[str]
    load_seconds: float
    dtype: str = ""  # the weights' type as computed: float32, bfloat16, … (llama.cpp: the GGUF's file type)
    lock: threading.RLock = field(default_factory=threading.RLock)
    adapters: dict[str, Any] = field(default_factory=dict)  # adapter name -> AdapterInfo

    name = "?"
    max_batch = 1  # sequences decoded together in one generate() call

    @property
    def tokenizer(self):
        """The backend's native tokenizer (transformers: the HF tokenizer; llama.cpp: the Tok)."""
        return self.tok

    # -- as the registry holds it (runner.LoadedModel)
    def runner(self, contestant: LoadedContestant, limits: Limits) -> LocalRunner:
        return LocalRunner(self, contestant, limits)

    def refresh(self) -> None:
        """Nothing to check again: the model is in this process."""
        return None

    def unavailable_reason(self, contestant: LoadedContestant) -> Optional[str]:
        return None

    def close(self) -> None:
        """Nothing to close: the model is freed with the process."""
        return None

    # -- adapters
    @abstractmethod
    def load_adapter(self, info) -> None:
        """Load an adapters.AdapterInfo onto the base (once), under its name."""

    @abstractmethod
    def unload_adapter(self, name: str) -> None:
        """Free the adapter `name`; the base alone is untouched."""

    # -- generation and scoring
    @abstractmethod
    def generate(self, adapter: Optional[str], prompts: Sequence[Sequence[int]], params: GenParams, *,
                 stop: StopRule, on_token: OnToken) -> list[list[int]]:
        """New token ids of each prompt (a final EOS included), decoded under `adapter` (None: the base)."""

    @abstractmethod
    def next_logprobs(self, adapter: Optional[str], prompts: Sequence[Sequence[int]]):
        """numpy float32 [len(prompts), vocab]: log-probabilities of the next token after each prompt."""

    @abstractmethod
    def token_logprobs(self, adapter: Optional[str], ids: Sequence[int], start: int) -> tuple[list[float], list[bool]]:
        """For i in start..len(ids)-1: log p(ids[i] | ids[:i]) and whether ids[i] was the argmax."""

    # -- tracing
    @property
    @abstractmethod
    def footprint_bytes(self) -> int:
        """Bytes the loaded weights take."""

    def details(self) -> dict[str, Any]:
        """Facts for the contestant's card (English keys; esllm/ui/ labels them)."""
        return {"memory_mib": round(self.footprint_bytes / 2**20, 1), "load_s": round(self.load_seconds, 2)}
