"""A contestant that answers, whatever runs it: the `Runner` protocol, what a runner can do (`Capabilities`) and
the one description of a contestant (`ContestantRecord`: provenance and the UI card both read it).

    runner = engine.runner("gemma-instrucciones")
    params = engine.params("gemma-instrucciones", preset="greedy")
    for ev in runner.stream(messages, params, threading.Event()):
        print(ev.text)                                  # the last event carries ev.result
    runner.generate_many([messages, ...], params, stop)   # one answer per conversation, in order
    if runner.capabilities.scores_tokens:
        runner.loglikelihood([("Pregunta: …\\nRespuesta:", " A")])

Two implementations: `local.LocalRunner` (a `backend.Backend` in this process: llama.cpp or transformers) and
`remote.RemoteRunner` (an OpenAI-compatible server through the `openai` package). A new kind of model is one class
with these members; `Engine.register` adds it (the tests' fake runner does exactly that). Messages and parameters
arrive already checked (esllm/engine/messages.py's caps, `GenParams.build`); a runner checks what only it knows
(its prompt-token cap, the strategies it runs). Each runner counts its own decodes in flight (`active`).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Mapping, Optional, Protocol, Sequence

from esllm.engine.presets import GenParams
from esllm.engine.types import GenerationResult, StreamEvent

Messages = Sequence[Mapping[str, Any]]
ALL_STRATEGIES = frozenset({"greedy", "sample", "beam", "contrastive"})


@dataclass(frozen=True)
class Capabilities:
    """What a runner can do: the decoding strategies it runs, whether it gives token log-probabilities
    (`loglikelihood`, `next_token_logprobs`, `encode`), and how many answers `generate_many` is worth at once."""

    strategies: frozenset[str] = ALL_STRATEGIES
    scores_tokens: bool = False
    max_batch: int = 1


@dataclass(frozen=True)
class ContestantRecord:
    """What a contestant is, in English keys: the facts of its base (backend, quantisation, dtype, device), its
    adapter (name, sha256, rank, size), its template (name and sha256), its preset and parameters. `details` holds
    what only one kind of runner knows (architecture and threads on llama.cpp, the models a server serves…)."""

    name: str
    available: bool
    reason: str = ""
    base: str = ""  # the config's key of the base model
    base_source: str = ""
    base_sha256: Optional[str] = None
    backend: str = ""  # llama.cpp | transformers | openai | a test's fake
    quantization: str = ""
    dtype: str = ""
    device: str = ""
    adapter: Optional[str] = None
    adapter_sha256: Optional[str] = None
    adapter_rank: Optional[int] = None
    adapter_mib: Optional[float] = None
    template: Optional[str] = None  # "server" when an OpenAI-compatible server applies its own (api: chat)
    template_sha256: Optional[str] = None
    preset: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    served_model: Optional[str] = None
    host: Optional[str] = None
    lora: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def provenance(self) -> dict[str, Any]:
        """What a stored result ran on (an `eval_run`'s hashes): `base` is the base's source (its config key is
        `base_key`); no availability, no display-only details."""
        d = asdict(self)
        d["contestant"], d["base_key"], d["base"] = d.pop("name"), d["base"], d.pop("base_source")
        for k in ("available", "reason", "details", "adapter_rank", "adapter_mib"):
            d.pop(k)
        if not self.served_model:
            for k in ("served_model", "host", "lora"):
                d.pop(k)
        return d


class Runner(Protocol):
    """A contestant that answers. `stream` and `generate_many` are required; the scoring calls only where
    `capabilities.scores_tokens` (else they raise EsllmError in Spanish)."""

    capabilities: Capabilities

    @property
    def active(self) -> int:
        """Decodes of this runner in flight now (a stopped one leaves at its next token)."""
        ...

    def record(self) -> ContestantRecord: ...

    def stream(self, messages: Messages, params: GenParams, stop: threading.Event) -> Iterator[StreamEvent]:
        """The answer as it grows; the last event carries the GenerationResult. Closing the iterator or setting
        `stop` ends decoding at the next token."""
        ...

    def generate_many(self, conversations: Sequence[Messages], params: GenParams,
                      stop: threading.Event) -> list[GenerationResult]:
        """One answer per conversation, in order; a stopped call returns what finished (the rest `stopped`)."""
        ...

    def loglikelihood(self, pairs: Sequence[tuple[str, str]], *,
                      add_bos: Optional[bool] = None) -> list[tuple[float, int, bool]]: ...

    def next_token_logprobs(self, prompts: Sequence[str], *, chat: bool = True, batch_size: int = 8) -> tuple[Any, Any]: ...

    def encode(self, text: str) -> list[int]: ...


class Counter:
    """A thread-safe count of decodes in flight: `with counter:` around one, or `up()` here and `down()` in the
    thread that finishes it."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def up(self) -> None:
        with self._lock:
            self.value += 1

    def down(self) -> None:
        with self._lock:
            self.value -= 1

    def __enter__(self) -> "Counter":
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()


class LoadedModel(Protocol):
    """One base model as the registry (esllm/engine/core.py) holds it, loaded once: in this process (a
    `backend.Backend`) or behind a server (`remote.RemoteModel`). The registry never asks which kind it is."""

    key: str
    adapters: dict[str, Any]  # adapter name -> AdapterInfo loaded on it (a server's: always empty)
    lock: Any  # held while adapters change (and, in process, for each decode)

    def load_adapter(self, info: Any) -> None: ...

    def unload_adapter(self, name: str) -> None: ...

    def refresh(self) -> None:
        """Check again what it can serve (a server lists its models); EsllmError when it cannot."""
        ...

    def unavailable_reason(self, contestant: Any) -> Optional[str]:
        """Why `contestant` (a LoadedContestant on this base) cannot answer now, or None."""
        ...

    def runner(self, contestant: Any, limits: Any) -> Runner:
        """The runner of `contestant` (an available LoadedContestant on this base) under the config's limits."""
        ...
