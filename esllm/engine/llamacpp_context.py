"""llama.cpp's context as one object: the adapter set on it, prompts put into sequences (prefill), one
`llama_decode` of (token, position, sequence, output?) items, the logits and hidden state of an output row, and
the KV cache's sequence operations. The search strategies (esllm/engine/llamacpp_search.py) run on it.

    ctx = LlamaContext(model, llama_context, n_threads)
    last, hidden = ctx.prefill(adapter_ptr_or_None, "nombre", [ids, ...])   # each prompt in sequence i
    ctx.decode([(token, pos, seq, True), ...]); row = ctx.logits(0)

One context with a unified KV cache holds several sequences: sequences share cells, so copying a context to a
candidate (`seq_cp`) costs nothing. A generation starts from an empty cache, so its answer never depends on the
request before it; scoring reuses the cached prefix only under the same adapter. Any other adapter (or none)
clears the cache first, so no state computed under one adapter ever serves another.
"""

from __future__ import annotations

import ctypes
import time
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from esllm import EsllmError
from esllm.engine.llamacpp_lib import lib

N_CTX = 8192  # cells of the unified KV cache, shared by every sequence of a call
N_BATCH = 512  # tokens per llama_decode
PREFILL_OUTPUTS = 64  # prompt tokens per decode when every one's hidden state is needed (contrastive)
_NONE_SET = "\0none-set"  # no adapter call made yet: the first one always sets


class LlamaContext:
    """One llama.cpp context of one model: decoding primitives and what sequence 0 holds (`cached`)."""

    def __init__(self, model: Any, ctx: Any):
        self.model, self.ctx = model, ctx
        self.n_vocab = int(model.n_vocab())
        self.n_embd = int(model.n_embd())
        self.active: Optional[str] = _NONE_SET  # the adapter set now (None: the base alone)
        self.cached: tuple[Optional[str], list[int]] = (None, [])  # (adapter, tokens of sequence 0 in the cache)
        self.switch_seconds: list[float] = []
        self._batch = None
        self._batch_size = 0

    # ------------------------------------------------------------ adapter and cache
    def set_adapter(self, name: Optional[str], ptr: Any) -> None:
        """Make adapter `name` (its llama_adapter_lora_p; None, None: the base alone) the context's; a change
        empties the KV cache."""
        if name == self.active:
            return
        llama_cpp = lib()
        t0 = time.perf_counter()
        if name is None:
            rc = llama_cpp.llama_set_adapters_lora(self.ctx.ctx, None, 0, None)
        else:
            arr = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(ptr)
            rc = llama_cpp.llama_set_adapters_lora(self.ctx.ctx, arr, 1, (ctypes.c_float * 1)(1.0))
        if rc != 0:
            raise EsllmError(f"llama.cpp no pudo activar el adaptador {name} (código {rc}).")
        self.active = name
        self.forget()
        self.switch_seconds.append(time.perf_counter() - t0)

    def forget(self) -> None:
        """Empty the KV cache. Its cells are marked free, not zeroed (`data=False`): zeroing the 8192-cell cache
        wrote ~150 MB and took 8 ms per adapter switch; a free cell is never attended to."""
        lib().llama_memory_clear(self._mem(), False)
        self.cached = (None, [])

    def remember(self, adapter: Optional[str], tokens: list[int]) -> None:
        """Sequence 0 now holds `tokens` computed under `adapter` (reused by the next scoring call if it shares a
        prefix)."""
        self.cached = (adapter, tokens)

    @contextmanager
    def embeddings(self) -> Iterator[None]:
        """Hidden states on for the block (contrastive search); the cache is emptied after it."""
        lib().llama_set_embeddings(self.ctx.ctx, True)
        try:
            yield
        finally:
            lib().llama_set_embeddings(self.ctx.ctx, False)
            self.forget()  # cells written with embeddings on: start clean next time

    def _mem(self):
        return lib().llama_get_memory(self.ctx.ctx)

    def seq_rm(self, seq: int, p0: int = -1, p1: int = -1) -> None:
        lib().llama_memory_seq_rm(self._mem(), seq, p0, p1)

    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        lib().llama_memory_seq_cp(self._mem(), src, dst, p0, p1)

    # ------------------------------------------------------------ decoding
    def _batch_for(self, n: int):
        llama_cpp = lib()
        if self._batch is None or self._batch_size < n:
            if self._batch is not None:
                llama_cpp.llama_batch_free(self._batch)
            self._batch_size = max(n, N_BATCH)
            self._batch = llama_cpp.llama_batch_init(self._batch_size, 0, 1)
        return self._batch

    def decode(self, items: Sequence[tuple[int, int, int, bool]]) -> None:
        """One llama_decode of (token, position, sequence, output?) items."""
        b = self._batch_for(len(items))
        for i, (tok, pos, seq, out) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, out
            b.seq_id[i][0] = seq
        b.n_tokens = len(items)
        rc = lib().llama_decode(self.ctx.ctx, b)
        if rc != 0:
            self.forget()
            if rc == 1:
                raise EsllmError("llama.cpp se quedó sin espacio en la caché KV: acorte el mensaje o la conversación.")
            raise EsllmError(f"llama.cpp falló al decodificar (código {rc}).")

    def logits(self, i: int) -> np.ndarray:
        """The logits of output row `i` of the last decode (its index in that batch)."""
        ptr = lib().llama_get_logits_ith(self.ctx.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float32, copy=True)

    def hidden(self, i: int) -> np.ndarray:
        """The last hidden state of output row `i` (only with `embeddings()` on)."""
        ptr = lib().llama_get_embeddings_ith(self.ctx.ctx, i)
        if not ptr:
            raise EsllmError("llama.cpp no devolvió el estado oculto pedido.")
        return np.ctypeslib.as_array(ptr, shape=(self.n_embd,)).astype(np.float32, copy=True)

    def _reusable(self, adapter: Optional[str], prompt: Sequence[int], first_output: int) -> int:
        """How many leading tokens of `prompt` sequence 0 already holds under `adapter` (scoring only)."""
        if self.cached[0] != adapter:
            return 0
        old, new, reuse = self.cached[1], list(prompt), 0
        while reuse < min(len(old), len(new) - 1) and old[reuse] == new[reuse]:
            reuse += 1
        return min(reuse, first_output)

    def prefill(self, adapter: Optional[str], prompts: Sequence[Sequence[int]], *, all_outputs: bool = False,
                first_output: int = -1) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
        """Put each prompt in sequence i (under the adapter already set); return each one's last logits (and,
        with all_outputs, the hidden state of every prompt token). first_output >= 0 (one prompt, scoring):
        logits for every position from there on, reusing the cached prefix of the same adapter. A generation
        always starts from an empty cache: a prompt split as [cached][new] is computed with other kernels and
        cell positions than the same prompt in one go, and a greedy answer would then depend on whichever request
        ran before it (seen: 8 of 32 answers changed under two concurrent users)."""
        total = sum(len(p) for p in prompts)
        if total + len(prompts) * 2 > N_CTX:
            raise EsllmError(f"Demasiados tokens a la vez para la caché de llama.cpp ({total}, máximo {N_CTX}).")
        one_scored = len(prompts) == 1 and first_output >= 0 and not all_outputs
        reuse = self._reusable(adapter, prompts[0], first_output) if one_scored else 0
        if reuse:
            self.seq_rm(0, reuse, -1)
        else:
            self.forget()
        self.cached = (None, [])
        last: list[np.ndarray] = []
        hidden: list[list[np.ndarray]] = [[] for _ in prompts]
        chunk = PREFILL_OUTPUTS if all_outputs else N_BATCH
        for s, p in enumerate(prompts):
            p = list(p)
            if not p:
                raise EsllmError("No hay tokens que procesar.")
            for a in range(reuse if s == 0 else 0, len(p), chunk):
                items = [(t, a + j, s, all_outputs or a + j == len(p) - 1 or 0 <= first_output <= a + j)
                         for j, t in enumerate(p[a:a + chunk])]
                self.decode(items)
                for j, it in enumerate(items):  # llama_get_*_ith take the index in the batch
                    if all_outputs:
                        hidden[s].append(self.hidden(j))
                    if it[3] and (first_output >= 0 or a + j == len(p) - 1):
                        last.append(self.logits(j))
        if len(prompts) == 1 and first_output < 0:
            self.cached = (adapter, list(prompts[0]))
        return last, hidden
