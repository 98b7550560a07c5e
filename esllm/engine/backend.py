"""The backend interface: what one loaded base model can do, whatever runs it.

    backend.load_adapter(info)                       # once per adapter folder
    outs = backend.generate(adapter_or_None, [prompt_ids, ...], params, stop=StopRule(...), on_token=...)
    backend.next_logprobs(adapter_or_None, [prompt_ids, ...])   # [n, vocab] log-probabilities (scoring)
    backend.token_logprobs(adapter_or_None, ids, start)         # log p(ids[i] | ids[:i]) for i >= start

Two implementations: `hf_backend.TransformersBackend` (transformers + peft: the reference, the GPU NF4 path
of the study, what training uses) and `llamacpp_backend.LlamaCppBackend` (llama.cpp on the shipped GGUF,
the CPU default). The engine (core.py, generation.py, scoring.py) sits above: registry, locks, contestants,
caps, templates, stop handling and the text shown. A backend declares what it can do as attributes (`name`,
`max_batch`, `formats`); every call is made with the backend's `lock` held by the engine, and the adapter (or none)
named in each call is the one used for that call: nothing computed under another adapter is reused.

`Tok` is the small tokenizer surface the engine needs; `HFTok` wraps a transformers tokenizer.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Sequence

from esllm.engine.config import ModelSpec
from esllm.engine.presets import GenParams


class Tok(Protocol):
    """Text <-> token ids, as the engine uses them (special tokens written in the text are parsed)."""

    bos_token: str
    eos_token: str
    bos_token_id: Optional[int]
    eos_token_id: Optional[int]
    add_bos: bool  # whether the model expects BOS at the start of a raw (template-free) text

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str: ...
    def token_id(self, piece: str) -> Optional[int]: ...


class HFTok:
    """`Tok` over a transformers tokenizer."""

    def __init__(self, tok):
        self.hf = tok
        self.bos_token, self.eos_token = tok.bos_token or "", tok.eos_token or ""
        self.bos_token_id, self.eos_token_id = tok.bos_token_id, tok.eos_token_id
        probe = tok("a", add_special_tokens=True)["input_ids"]
        self.add_bos = bool(probe) and tok.bos_token_id is not None and probe[0] == tok.bos_token_id

    def encode(self, text: str) -> list[int]:
        return list(self.hf(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special)

    def token_id(self, piece: str) -> Optional[int]:
        tid = self.hf.convert_tokens_to_ids(piece)
        return tid if isinstance(tid, int) and tid != self.hf.unk_token_id else None


@dataclass
class StopRule:
    """When one sequence must end: an EOS id, a stop string in its text, the user's stop, or the length."""

    eos_ids: Sequence[int]
    stop_strings: Sequence[str]
    should_stop: Callable[[], bool]
    decode: Callable[[Sequence[int]], str]  # for stop strings (special tokens kept)

    def hit(self, ids: Sequence[int]) -> bool:
        """Whether `ids` (generated so far, one sequence) end the sequence now (not counting the user's stop)."""
        if ids and ids[-1] in self.eos_ids:
            return True
        if self.stop_strings:
            tail = max(len(s) for s in self.stop_strings) + 8
            text = self.decode(ids[-tail:])
            return any(s in text for s in self.stop_strings)
        return False

    def reason(self, ids: list[int], max_new_tokens: int) -> tuple[list[int], str]:
        """(ids without a final EOS, why decoding ended: eos | stop_string | length | stopped)."""
        if ids and ids[-1] in self.eos_ids:
            return ids[:-1], "eos"
        if self.should_stop():
            return ids, "stopped"
        if self.stop_strings and any(s in self.decode(ids) for s in self.stop_strings):
            return ids, "stop_string"
        return ids, "length" if len(ids) >= max_new_tokens else "stopped"


OnToken = Callable[[int, int], None]  # (sequence index, token id)


@dataclass
class Backend:
    """One base model loaded once; adapters loaded onto it by name. Subclasses implement the calls."""

    key: str
    spec: ModelSpec
    tok: Any  # Tok
    device: str
    quantization: str
    path: str
    source_sha256: Optional[str]
    load_seconds: float
    lock: threading.RLock = field(default_factory=threading.RLock)
    adapters: dict[str, Any] = field(default_factory=dict)  # adapter name -> AdapterInfo

    name = "?"
    max_batch = 1  # sequences decoded together in one generate() call

    @property
    def tokenizer(self):
        """The backend's native tokenizer (transformers: the HF tokenizer; llama.cpp: the Tok)."""
        return self.tok

    # -- adapters
    def load_adapter(self, info) -> None:
        raise NotImplementedError

    def unload_adapter(self, name: str) -> None:
        raise NotImplementedError

    # -- generation and scoring
    def generate(self, adapter: Optional[str], prompts: Sequence[Sequence[int]], params: GenParams, *,
                 stop: StopRule, on_token: OnToken) -> list[list[int]]:
        """New token ids of each prompt (a final EOS included), decoded under `adapter` (None: the base)."""
        raise NotImplementedError

    def next_logprobs(self, adapter: Optional[str], prompts: Sequence[Sequence[int]]):
        """numpy float32 [len(prompts), vocab]: log-probabilities of the next token after each prompt."""
        raise NotImplementedError

    def token_logprobs(self, adapter: Optional[str], ids: Sequence[int], start: int) -> tuple[list[float], list[bool]]:
        """For i in start..len(ids)-1: log p(ids[i] | ids[:i]) and whether ids[i] was the argmax."""
        raise NotImplementedError

    # -- tracing
    @property
    def footprint_bytes(self) -> int:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {
            "modelo": self.key,
            "origen": self.spec.source,
            "motor": self.name,
            "cuantización": self.quantization,
            "dispositivo": self.device,
            "memoria_MiB": round(self.footprint_bytes / 2**20, 1),
            "carga_s": round(self.load_seconds, 2),
        }
