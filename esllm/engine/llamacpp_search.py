"""The llama.cpp backend's search strategies: sampling (greedy is its top-1 case), contrastive search and beam
search, each over a batch of prompts in the backend's one context.

`LlamaSearch` is mixed into `LlamaCppBackend` (esllm/engine/llamacpp_backend.py) and runs on its decoding
primitives: `_prefill` (prompts into sequences, their last logits or hidden states), `_decode` (one
llama_decode), `_logits` / `_hidden` (an output row), `_seq_rm` / `_seq_cp` (KV-cache cells of a sequence),
`_forget` / `_remember` / `_cached` (what sequence 0 holds), and `ctx`. Next tokens are chosen from the logits
with numpy (esllm/engine/sampling.py), with the semantics of transformers' processors.
"""

from __future__ import annotations

import numpy as np

from esllm.engine.backend import StopRule
from esllm.engine.llamacpp_lib import lib
from esllm.engine.presets import GenParams
from esllm.engine.sampling import log_softmax, penalised, pick, softmax, unit


class LlamaSearch:
    """`_sample`, `_contrastive` and `_beam` for `LlamaCppBackend.generate` (see the module docstring)."""

    def _sample(self, adapter, prompts, p: GenParams, stop: StopRule, emit) -> list[list[int]]:
        rng = np.random.default_rng(p.seed)
        last, _ = self._prefill(adapter, prompts)
        n = len(prompts)
        gen: list[list[int]] = [[] for _ in range(n)]
        seen = [set(pr) for pr in prompts]
        pos = [len(pr) for pr in prompts]
        live = list(range(n))
        logits = {s: last[s] for s in range(n)}
        while live:
            batch = []
            for s in list(live):
                tok = pick(logits[s], p, seen[s], rng)
                gen[s].append(tok)
                seen[s].add(tok)
                emit(s, tok)
                if stop.hit(gen[s]) or len(gen[s]) >= p.max_new_tokens:
                    live.remove(s)
                else:
                    batch.append((tok, pos[s], s, True))
                    pos[s] += 1
            if stop.should_stop() or not batch:
                break
            self._decode(batch)
            for j, (_, _, s, _) in enumerate(batch):
                logits[s] = self._logits(j)
        if n == 1:
            self._remember(adapter, list(prompts[0]) + gen[0][:-1] if gen[0] else list(prompts[0]))
        else:
            self._forget()
        return gen

    def _contrastive(self, adapter, prompts, p: GenParams, stop: StopRule, emit) -> list[list[int]]:
        """Contrastive search (Su et al., 2022), as esllm/engine/decoding.py does on transformers: among the
        top-k next tokens pick argmax (1-a)·p(v) - a·max cos(h_v, h_context); each candidate is one extra
        sequence sharing the context's cells, all candidates of all prompts in one decode."""
        llama_cpp = lib()
        llama_cpp.llama_set_embeddings(self.ctx.ctx, True)
        try:
            last, hidden = self._prefill(adapter, prompts, all_outputs=True)
            n, k, alpha = len(prompts), p.top_k, p.penalty_alpha
            ctx_h = [unit(np.stack(h)) for h in hidden]
            gen: list[list[int]] = [[] for _ in range(n)]
            seen = [set(pr) for pr in prompts]
            pos = [len(pr) for pr in prompts]
            logits = {s: last[s] for s in range(n)}
            live = list(range(n))
            while live and not stop.should_stop():
                batch, cands = [], {}
                for s in live:
                    probs = softmax(penalised(logits[s], p.repetition_penalty, seen[s]))
                    top = np.argpartition(-probs, k - 1)[:k]
                    top = top[np.argsort(-probs[top], kind="stable")]
                    cands[s] = (top, probs[top])
                    for c, tok in enumerate(top):
                        scratch = n + s * k + c
                        self._seq_rm(scratch)
                        self._seq_cp(s, scratch)
                        batch.append((int(tok), pos[s], scratch, True))
                self._decode(batch)
                j = 0
                for s in list(live):
                    top, probs = cands[s]
                    hs = np.stack([self._hidden(j + c) for c in range(k)])
                    # einsum, not `@`: past ~200 context positions numpy's BLAS runs this product on its own
                    # threads, which then spin and take the cores from llama.cpp's next decode (steps went from
                    # 38 ms to 70-155 ms). Without BLAS it costs ~1 ms.
                    sim = np.einsum("kd,nd->kn", unit(hs), ctx_h[s]).max(axis=1)
                    best = int(np.argmax((1 - alpha) * probs - alpha * sim))
                    tok = int(top[best])
                    next_logits = self._logits(j + best)
                    self._seq_cp(n + s * k + best, s, pos[s], pos[s] + 1)
                    for c in range(k):
                        self._seq_rm(n + s * k + c)
                    j += k
                    gen[s].append(tok)
                    seen[s].add(tok)
                    emit(s, tok)
                    if stop.hit(gen[s]) or len(gen[s]) >= p.max_new_tokens:
                        live.remove(s)
                        continue
                    ctx_h[s] = np.concatenate([ctx_h[s], unit(hs[best:best + 1])])
                    logits[s] = next_logits
                    pos[s] += 1
        finally:
            llama_cpp.llama_set_embeddings(self.ctx.ctx, False)
        self._forget()  # candidate cells were written with embeddings on: start clean next time
        return gen

    def _beam(self, adapter, prompt, p: GenParams, stop: StopRule, emit) -> list[int]:
        """Beam search as transformers' (num_beams, length_penalty 1, early stopping): beams are sequences
        0..B-1 sharing their common cells; a finished hypothesis scores sum(logp) / its length."""
        B = p.num_beams
        (first,), _ = self._prefill(adapter, [prompt])
        self._cached = (None, [])
        for b in range(1, B):
            self._seq_cp(0, b)
        n0 = len(prompt)
        beams: list[tuple[float, list[int]]] = [(0.0, [])]
        logits = [first]
        done: list[tuple[float, list[int]]] = []
        seen = set(prompt)
        for step in range(p.max_new_tokens):
            if stop.should_stop():
                break
            cand = []
            for b, (score, toks) in enumerate(beams):
                lp = log_softmax(penalised(logits[b], p.repetition_penalty, seen | set(toks)))
                top = np.argpartition(-lp, 2 * B - 1)[:2 * B]
                cand.extend((score + float(lp[t]), b, int(t)) for t in top)
            cand.sort(key=lambda x: -x[0])
            new: list[tuple[float, int, int]] = []
            for score, b, t in cand:
                toks = beams[b][1] + [t]
                if t in stop.eos_ids or stop.hit(toks):
                    if len(done) < B:
                        done.append((score / len(toks), toks))
                    continue
                new.append((score, b, t))
                if len(new) == B:
                    break
            if len(done) >= B or not new:
                break
            best_done = max((s for s, _ in done), default=-np.inf)
            if done and best_done >= new[0][0] / (step + 1):
                break  # early stopping: no open beam can beat the best finished one
            for i, (_, b, _) in enumerate(new):  # reorder the cache: beam i continues beam b
                self._seq_rm(B + i)
                self._seq_cp(b, B + i)
            for i in range(len(new)):
                self._seq_rm(i)
                self._seq_cp(B + i, i)
                self._seq_rm(B + i)
            self._decode([(t, n0 + step, i, True) for i, (_, _, t) in enumerate(new)])
            logits = [self._logits(i) for i in range(len(new))]
            beams = [(s, beams[b][1] + [t]) for s, b, t in new]
        if len(done) < B:
            done.extend((s / max(1, len(t)), t) for s, t in beams)
        best = max(done, key=lambda x: x[0])[1] if done else []
        self._forget()
        for t in best:
            emit(t)
        return best
