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

This module holds the backend: loading, adapters, the context's decoding primitives and the calls of
`backend.Backend`. The search strategies (sampling, contrastive, beam) are the `LlamaSearch` mixin in
esllm/engine/llamacpp_search.py; the library's one-time set-up and log, the tokenizer `LlamaTok` and the GGUF
file's facts (`gguf_source`) are in esllm/engine/llamacpp_lib.py.
"""

from __future__ import annotations

import ctypes
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
from esllm.engine.backend import Backend, OnToken, StopRule
from esllm.engine.config import ModelSpec
from esllm.engine.llamacpp_lib import LlamaTok, file_type, gguf_source, lib
from esllm.engine.llamacpp_search import LlamaSearch
from esllm.engine.presets import GenParams
from esllm.engine.sampling import log_softmax

log = logging.getLogger(__name__)

N_CTX = 8192  # cells of the unified KV cache, shared by every sequence of a call
N_BATCH = 512  # tokens per llama_decode
PREFILL_OUTPUTS = 64  # prompt tokens per decode when every one's hidden state is needed (contrastive)
MAX_BATCH = 4  # prompts of a batch job decoded together (2 cores: more only adds latency per answer)


@dataclass
class LlamaCppBackend(LlamaSearch, Backend):
    model: Any = None  # llama_cpp._internals.LlamaModel
    ctx: Any = None  # llama_cpp._internals.LlamaContext
    n_threads: int = 1
    lora: dict[str, Any] = field(default_factory=dict)  # adapter name -> llama_adapter_lora_p
    lora_files: dict[str, Path] = field(default_factory=dict)
    name = "llama.cpp"
    max_batch = MAX_BATCH

    def __post_init__(self):
        self._active: Optional[str] = "\0none-set"
        self._cached: tuple[Optional[str], list[int]] = (None, [])  # (adapter, tokens of sequence 0 in the cache)
        self._batch = None
        self._batch_size = 0
        self.arch = self.model.metadata().get("general.architecture", "?") if self.model else "?"
        self.switch_seconds: list[float] = []

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
            ctx = _internals.LlamaContext(model=model, params=cparams, verbose=False)
        except ValueError as e:
            raise EsllmError(f"llama.cpp no pudo crear el contexto de {key}: {e}") from None
        backend = cls(key=key, spec=spec, tok=LlamaTok(model), device="cpu", quantization=file_type(model),
                      path=str(path), source_sha256=sha, load_seconds=0.0, model=model, ctx=ctx, n_threads=n_threads)
        backend.load_seconds = time.perf_counter() - t0
        say(f"{key} listo en {backend.load_seconds:.1f} s (llama.cpp, {backend.quantization}, {n_threads} hilos).")
        return backend

    @property
    def footprint_bytes(self) -> int:
        return int(self.model.size())

    @property
    def n_vocab(self) -> int:
        return int(self.model.n_vocab())

    # ------------------------------------------------------------ adapters
    def load_adapter(self, info: AdapterInfo) -> None:
        from esllm.engine.gguf_lora import convert_adapter

        llama_cpp = lib()
        out = convert_adapter(info, Path(self.path), self.model.metadata())
        ptr = llama_cpp.llama_adapter_lora_init(self.model.model, str(out).encode("utf-8"))
        if not ptr:
            raise EsllmError(f"llama.cpp no pudo cargar el adaptador {info.name} convertido ({out}).")
        self.lora[info.name] = ptr
        self.lora_files[info.name] = out
        self.adapters[info.name] = info

    def unload_adapter(self, name: str) -> None:
        llama_cpp = lib()
        self.adapters.pop(name, None)
        ptr = self.lora.pop(name, None)
        self.lora_files.pop(name, None)
        if ptr is not None:
            if self._active == name:
                self._set_adapter(None)
            llama_cpp.llama_adapter_lora_free(ptr)
        if self._cached[0] == name:
            self._forget()

    def _set_adapter(self, adapter: Optional[str]) -> None:
        """Make `adapter` (None: the base alone) the context's; a change empties the KV cache."""
        if adapter == self._active:
            return
        llama_cpp = lib()
        t0 = time.perf_counter()
        if adapter is None:
            rc = llama_cpp.llama_set_adapters_lora(self.ctx.ctx, None, 0, None)
        else:
            if adapter not in self.lora:
                raise EsllmError(f"El adaptador {adapter} ya no está cargado; pulse «Actualizar».")
            arr = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self.lora[adapter])
            scales = (ctypes.c_float * 1)(1.0)
            rc = llama_cpp.llama_set_adapters_lora(self.ctx.ctx, arr, 1, scales)
        if rc != 0:
            raise EsllmError(f"llama.cpp no pudo activar el adaptador {adapter} (código {rc}).")
        self._active = adapter
        self._forget()
        self.switch_seconds.append(time.perf_counter() - t0)

    def _forget(self) -> None:
        """Empty the KV cache. Its cells are marked free, not zeroed (`data=False`): zeroing the 8192-cell cache
        wrote ~150 MB and took 8 ms per adapter switch; a free cell is never attended to."""
        lib().llama_memory_clear(self._mem(), False)
        self._cached = (None, [])

    # ------------------------------------------------------------ decoding primitives
    def _batch_for(self, n: int):
        llama_cpp = lib()
        if self._batch is None or self._batch_size < n:
            if self._batch is not None:
                llama_cpp.llama_batch_free(self._batch)
            self._batch_size = max(n, N_BATCH)
            self._batch = llama_cpp.llama_batch_init(self._batch_size, 0, 1)
        return self._batch

    def _decode(self, items: Sequence[tuple[int, int, int, bool]]) -> None:
        """One llama_decode of (token, position, sequence, output?) items."""
        llama_cpp = lib()
        b = self._batch_for(len(items))
        for i, (tok, pos, seq, out) in enumerate(items):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = out
        b.n_tokens = len(items)
        rc = llama_cpp.llama_decode(self.ctx.ctx, b)
        if rc != 0:
            self._forget()
            if rc == 1:
                raise EsllmError("llama.cpp se quedó sin espacio en la caché KV: acorte el mensaje o la conversación.")
            raise EsllmError(f"llama.cpp falló al decodificar (código {rc}).")

    def _logits(self, i: int) -> np.ndarray:
        llama_cpp = lib()
        ptr = llama_cpp.llama_get_logits_ith(self.ctx.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float32, copy=True)

    def _hidden(self, i: int) -> np.ndarray:
        llama_cpp = lib()
        ptr = llama_cpp.llama_get_embeddings_ith(self.ctx.ctx, i)
        if not ptr:
            raise EsllmError("llama.cpp no devolvió el estado oculto pedido.")
        return np.ctypeslib.as_array(ptr, shape=(int(self.model.n_embd()),)).astype(np.float32, copy=True)

    def _mem(self):
        return lib().llama_get_memory(self.ctx.ctx)

    def _seq_rm(self, seq: int, p0: int = -1, p1: int = -1) -> None:
        lib().llama_memory_seq_rm(self._mem(), seq, p0, p1)

    def _seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        lib().llama_memory_seq_cp(self._mem(), src, dst, p0, p1)

    def _prefill(self, adapter: Optional[str], prompts: Sequence[Sequence[int]], *, all_outputs: bool = False,
                 first_output: int = -1) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
        """Put each prompt in sequence i; return each one's last logits (and, with all_outputs, the hidden state
        of every prompt token). A single prompt reuses the cached prefix of the same adapter.
        first_output >= 0: logits are returned for every position from there on (one prompt only)."""
        self._set_adapter(adapter)
        total = sum(len(p) for p in prompts)
        if total + len(prompts) * 2 > N_CTX:
            raise EsllmError(f"Demasiados tokens a la vez para la caché de llama.cpp ({total}, máximo {N_CTX}).")
        reuse = 0
        # Only scoring (first_output >= 0: Belebele's four continuations of one passage) reuses a cached prefix.
        # A generation always starts from an empty cache: a prompt split as [cached][new] is computed with other
        # kernels and cell positions than the same prompt in one go, and a greedy answer would then depend on
        # whichever request ran before it (seen: 8 of 32 answers changed under two concurrent users).
        if len(prompts) == 1 and first_output >= 0 and not all_outputs and self._cached[0] == adapter:
            old, new = self._cached[1], list(prompts[0])
            while reuse < min(len(old), len(new) - 1) and old[reuse] == new[reuse]:
                reuse += 1
            if first_output >= 0:
                reuse = min(reuse, first_output)
        if reuse:
            self._seq_rm(0, reuse, -1)
        else:
            self._forget()
        self._cached = (None, [])
        last: list[np.ndarray] = []
        hidden: list[list[np.ndarray]] = [[] for _ in prompts]
        extra: list[np.ndarray] = []
        chunk = PREFILL_OUTPUTS if all_outputs else N_BATCH
        for s, p in enumerate(prompts):
            p = list(p)
            if not p:
                raise EsllmError("No hay tokens que procesar.")
            start = reuse if s == 0 else 0
            for a in range(start, len(p), chunk):
                piece = p[a:a + chunk]
                items = [(t, a + j, s, all_outputs or a + j == len(p) - 1 or 0 <= first_output <= a + j)
                         for j, t in enumerate(piece)]
                self._decode(items)
                for j, it in enumerate(items):  # llama_get_*_ith take the index in the batch
                    if not it[3]:
                        continue
                    if all_outputs:
                        hidden[s].append(self._hidden(j))
                    if first_output >= 0:
                        extra.append(self._logits(j))
                    elif a + j == len(p) - 1:
                        last.append(self._logits(j))
        if first_output >= 0:
            return extra, hidden
        if len(prompts) == 1:
            self._cached = (adapter, list(prompts[0]))
        return last, hidden

    def _remember(self, adapter: Optional[str], tokens: list[int]) -> None:
        """Sequence 0 now holds `tokens` computed under `adapter` (reused by the next call if it shares a prefix)."""
        self._cached = (adapter, tokens)

    # ------------------------------------------------------------ the backend calls
    def generate(self, adapter: Optional[str], prompts: Sequence[Sequence[int]], params: GenParams, *,
                 stop: StopRule, on_token: OnToken) -> list[list[int]]:
        if params.strategy == "beam":
            return [self._beam(adapter, p, params, stop, partial(on_token, i)) for i, p in enumerate(prompts)]
        outs: list[list[int]] = []
        for a in range(0, len(prompts), self.max_batch):
            group = prompts[a:a + self.max_batch]
            emit = _offset(on_token, a)
            if params.strategy == "contrastive":
                outs.extend(self._contrastive(adapter, group, params, stop, emit))
            else:
                outs.extend(self._sample(adapter, group, params, stop, emit))
        return outs

    def next_logprobs(self, adapter: Optional[str], prompts: Sequence[Sequence[int]]):
        rows: list[np.ndarray] = []
        group: list[Sequence[int]] = []
        for pr in list(prompts) + [None]:  # up to max_batch prompts in one prefill, within the cache's cells
            if group and (pr is None or len(group) == self.max_batch
                          or sum(map(len, group)) + len(pr) + 2 * (len(group) + 1) > N_CTX):
                last, _ = self._prefill(adapter, group)
                rows.extend(log_softmax(lg) for lg in last)
                group = []
            if pr is not None:
                group.append(pr)
        return np.stack(rows)

    def token_logprobs(self, adapter: Optional[str], ids: Sequence[int], start: int) -> tuple[list[float], list[bool]]:
        if not 1 <= start < len(ids):
            raise ValueError("start must leave at least one token before and one to score")
        rows, _ = self._prefill(adapter, [ids], first_output=start - 1)
        want = list(ids[start:])
        lps, greedy = [], []
        for row, t in zip(rows, want):  # rows[i] predicts ids[start + i]
            lp = log_softmax(row)
            lps.append(float(lp[t]))
            greedy.append(int(np.argmax(row)) == t)
        self._cached = (adapter, list(ids))  # every position of ids is in the cache now
        return lps, greedy

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["arquitectura"] = self.arch
        d["hilos"] = self.n_threads
        return d


# ---------------------------------------------------------------- helpers
def _offset(on_token: OnToken, a: int) -> Callable[[int, int], None]:
    """`on_token` for a group of prompts that starts at index `a` of the call's list."""
    def emit(i: int, t: int) -> None:
        on_token(a + i, t)
    return emit
