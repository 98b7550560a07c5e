"""The llama.cpp backend (llama-cpp-python's low-level API): the GGUF file as shipped, no conversion, with
LoRA adapters switched per call on the one loaded model.

    backend = LlamaCppBackend.load("gemma-3-270m", spec)          # mmaps the GGUF, one context
    backend.load_adapter(info)        # peft folder -> GGUF LoRA once (esllm/engine/gguf_lora.py), then loaded
    backend.generate("instrucciones-es", [ids], params, stop=rule, on_token=cb)

One context with a unified KV cache holds several sequences: batch jobs decode up to `max_batch` prompts
together; contrastive search scores its top-k candidates as k extra sequences that share the context's
cells (`llama_memory_seq_cp`), reading each candidate's final hidden state (`embeddings`, no pooling)
and logits from one decode; beam search keeps its beams the same way. A generation starts from an empty
cache, so its answer never depends on the request before it; scoring reuses the cached prefix only under the
same adapter. Any other adapter (or none) clears the cache first, so no state computed under one adapter ever
serves another. Sampling (repetition penalty, temperature, top-k,
top-p, seed) is done on the logits with numpy, with the semantics of transformers' processors.

This module holds the backend: loading, adapters and the calls of `backend.Backend`. The context's decoding
primitives are one object (esllm/engine/llamacpp_context.py); the search strategies are functions over it
(esllm/engine/llamacpp_search.py); the library's one-time set-up and log, the tokenizer `LlamaTok` and the GGUF
file's facts (`gguf_source`) are in esllm/engine/llamacpp_lib.py.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from esllm import EsllmError
from esllm.engine.adapters import AdapterInfo
from esllm.engine.backend import Backend, OnToken
from esllm.engine.config import ModelSpec
from esllm.engine.gguf_lora import convert_adapter
from esllm.engine.llamacpp_context import N_BATCH, N_CTX, LlamaContext
from esllm.engine.llamacpp_lib import LlamaTok, file_type, gguf_source, lib
from esllm.engine.llamacpp_search import beam, contrastive, sample
from esllm.engine.presets import GenParams
from esllm.engine.sampling import log_softmax
from esllm.engine.tokens import StopRule

log = logging.getLogger(__name__)

MAX_BATCH = 4  # prompts of a batch job decoded together (2 cores: more only adds latency per answer)


@dataclass
class LlamaCppBackend(Backend):
    model: Any = None  # llama_cpp._internals.LlamaModel
    ctx: Optional[LlamaContext] = None
    n_threads: int = 1
    lora: dict[str, Any] = field(default_factory=dict)  # adapter name -> llama_adapter_lora_p
    lora_files: dict[str, Path] = field(default_factory=dict)
    name = "llama.cpp"
    max_batch = MAX_BATCH

    def __post_init__(self):
        self.arch = self.model.metadata().get("general.architecture", "?") if self.model else "?"

    # ------------------------------------------------------------ loading
    @classmethod
    def load(cls, key: str, spec: ModelSpec, progress: Optional[Callable[[str], None]] = None,
             gguf: Optional[Path] = None) -> "LlamaCppBackend":
        from llama_cpp import _internals

        llama_cpp = lib()
        say = progress or log.info
        t0 = time.perf_counter()
        path, sha = gguf_source(spec) if gguf is None else (Path(gguf), None)
        say(f"Cargando {key} con llama.cpp desde {path}…")
        mparams = llama_cpp.llama_model_default_params()
        try:
            model = _internals.LlamaModel(path_model=str(path), params=mparams, verbose=False)
        except (ValueError, OSError) as e:
            raise EsllmError(f"llama.cpp no pudo abrir {path}: {e}") from None
        n_threads = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = N_CTX
        cparams.n_batch = N_BATCH
        cparams.n_ubatch = N_BATCH
        cparams.n_seq_max = 64
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        cparams.embeddings = False  # switched on for contrastive search only
        cparams.kv_unified = True  # sequences share cells: copying a context to a candidate costs nothing
        cparams.swa_full = True  # keep every position of sliding-window layers, so sequences can be cut anywhere
        cparams.no_perf = True
        cparams.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_NONE
        try:
            ctx = LlamaContext(model, _internals.LlamaContext(model=model, params=cparams, verbose=False))
        except ValueError as e:
            raise EsllmError(f"llama.cpp no pudo crear el contexto de {key}: {e}") from None
        backend = cls(key=key, spec=spec, tok=LlamaTok(model), device="cpu", quantization=file_type(model),
                      dtype=file_type(model), path=str(path), source_sha256=sha, load_seconds=0.0, model=model, ctx=ctx, n_threads=n_threads)
        backend.load_seconds = time.perf_counter() - t0
        say(f"{key} listo en {backend.load_seconds:.1f} s (llama.cpp, {backend.quantization}, {n_threads} hilos).")
        return backend

    @property
    def footprint_bytes(self) -> int:
        return int(self.model.size())

    @property
    def switch_seconds(self) -> list[float]:
        return self.ctx.switch_seconds

    def details(self) -> dict[str, Any]:
        return {**super().details(), "architecture": self.arch, "threads": self.n_threads}

    # ------------------------------------------------------------ adapters
    def load_adapter(self, info: AdapterInfo) -> None:
        out = convert_adapter(info, Path(self.path), self.model.metadata())
        ptr = lib().llama_adapter_lora_init(self.model.model, str(out).encode("utf-8"))
        if not ptr:
            raise EsllmError(f"llama.cpp no pudo cargar el adaptador {info.name} convertido ({out}).")
        self.lora[info.name] = ptr
        self.lora_files[info.name] = out
        self.adapters[info.name] = info

    def unload_adapter(self, name: str) -> None:
        self.adapters.pop(name, None)
        ptr = self.lora.pop(name, None)
        self.lora_files.pop(name, None)
        if ptr is not None:
            if self.ctx.active == name:
                self.ctx.set_adapter(None, None)
            lib().llama_adapter_lora_free(ptr)
        if self.ctx.cached[0] == name:
            self.ctx.forget()

    def _use(self, adapter: Optional[str]) -> LlamaContext:
        """The context with `adapter` (None: the base alone) set; EsllmError if it was unloaded meanwhile."""
        if adapter is not None and adapter not in self.lora:
            raise EsllmError(f"El adaptador {adapter} ya no está cargado; pulse «Actualizar».")
        self.ctx.set_adapter(adapter, self.lora.get(adapter))
        return self.ctx

    # ------------------------------------------------------------ the backend calls
    def generate(self, adapter: Optional[str], prompts: Sequence[Sequence[int]], params: GenParams, *,
                 stop: StopRule, on_token: OnToken) -> list[list[int]]:
        ctx = self._use(adapter)
        if params.strategy == "beam":
            return [beam(ctx, adapter, p, params, stop, partial(on_token, i)) for i, p in enumerate(prompts)]
        search = contrastive if params.strategy == "contrastive" else sample
        outs: list[list[int]] = []
        for a in range(0, len(prompts), self.max_batch):
            outs.extend(search(ctx, adapter, prompts[a:a + self.max_batch], params, stop, _offset(on_token, a)))
        return outs

    def next_logprobs(self, adapter: Optional[str], prompts: Sequence[Sequence[int]]):
        ctx = self._use(adapter)
        rows: list[np.ndarray] = []
        group: list[Sequence[int]] = []
        for pr in list(prompts) + [None]:  # up to max_batch prompts in one prefill, within the cache's cells
            if group and (pr is None or len(group) == self.max_batch
                          or sum(map(len, group)) + len(pr) + 2 * (len(group) + 1) > N_CTX):
                last, _ = ctx.prefill(adapter, group)
                rows.extend(log_softmax(lg) for lg in last)
                group = []
            if pr is not None:
                group.append(pr)
        return np.stack(rows)

    def token_logprobs(self, adapter: Optional[str], ids: Sequence[int], start: int) -> tuple[list[float], list[bool]]:
        if not 1 <= start < len(ids):
            raise ValueError("start must leave at least one token before and one to score")
        ctx = self._use(adapter)
        rows, _ = ctx.prefill(adapter, [ids], first_output=start - 1)
        lps, greedy = [], []
        for row, t in zip(rows, ids[start:]):  # rows[i] predicts ids[start + i]
            lp = log_softmax(row)
            lps.append(float(lp[t]))
            greedy.append(int(np.argmax(row)) == t)
        ctx.remember(adapter, list(ids))  # every position of ids is in the cache now
        return lps, greedy


# ---------------------------------------------------------------- helpers
def _offset(on_token: OnToken, a: int) -> Callable[[int, int], None]:
    """`on_token` for a group of prompts that starts at index `a` of the call's list."""
    def emit(i: int, t: int) -> None:
        on_token(a + i, t)
    return emit
