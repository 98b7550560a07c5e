"""Search strategies on llama.cpp: sampling (greedy is its top-1 case), contrastive search and beam search, each a
function over a `llamacpp_context.LlamaContext` whose adapter is already set:

    gen = sample(ctx, adapter, prompts, params, stop, emit)        # emit(sequence index, token id)
    gen = contrastive(ctx, adapter, prompts, params, stop, emit)
    ids = beam(ctx, adapter, prompt, params, stop, emit)           # one prompt; emit(token id) at the end

`adapter` names what the cache holds (for reuse by the next call), never which weights run. Next tokens are chosen
from the logits with numpy (esllm/engine/sampling.py), with the semantics of transformers' processors.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from esllm.engine.llamacpp_context import LlamaContext
from esllm.engine.presets import GenParams
from esllm.engine.sampling import log_softmax, penalised, pick, softmax, unit
from esllm.engine.tokens import StopRule

Emit = Callable[[int, int], None]  # (sequence index, token id)
Prompts = Sequence[Sequence[int]]


def sample(ctx: LlamaContext, adapter: Optional[str], prompts: Prompts, p: GenParams, stop: StopRule,
           emit: Emit) -> list[list[int]]:
    """Greedy or sampled decoding of every prompt at once (one decode per step for all live sequences)."""
    rng = np.random.default_rng(p.seed)
    last, _ = ctx.prefill(adapter, prompts)
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
        ctx.decode(batch)
        for j, (_, _, s, _) in enumerate(batch):
            logits[s] = ctx.logits(j)
    if n == 1:
        ctx.remember(adapter, list(prompts[0]) + gen[0][:-1] if gen[0] else list(prompts[0]))
    else:
        ctx.forget()
    return gen


def contrastive(ctx: LlamaContext, adapter: Optional[str], prompts: Prompts, p: GenParams, stop: StopRule,
                emit: Emit) -> list[list[int]]:
    """Contrastive search (Su et al., 2022), as esllm/engine/decoding.py does on transformers: among the
    top-k next tokens pick argmax (1-a)·p(v) - a·max cos(h_v, h_context); each candidate is one extra
    sequence sharing the context's cells, all candidates of all prompts in one decode."""
    with ctx.embeddings():
        last, hidden = ctx.prefill(adapter, prompts, all_outputs=True)
        n = len(prompts)
        ctx_h = [unit(np.stack(h)) for h in hidden]
        gen: list[list[int]] = [[] for _ in range(n)]
        seen = [set(pr) for pr in prompts]
        pos = [len(pr) for pr in prompts]
        logits = {s: last[s] for s in range(n)}
        live = list(range(n))
        while live and not stop.should_stop():
            cands = _decode_candidates(ctx, live, logits, seen, pos, n, p)
            for j, s in enumerate(list(live)):
                tok, h, logits[s] = _pick_candidate(ctx, j * p.top_k, s, n, pos[s], cands[s], ctx_h[s], p)
                gen[s].append(tok)
                seen[s].add(tok)
                emit(s, tok)
                if stop.hit(gen[s]) or len(gen[s]) >= p.max_new_tokens:
                    live.remove(s)
                    continue
                ctx_h[s] = np.concatenate([ctx_h[s], h])
                pos[s] += 1
    return gen


def _decode_candidates(ctx: LlamaContext, live: list[int], logits: dict, seen: list[set], pos: list[int], n: int,
                       p: GenParams) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The top-k next tokens of every live sequence, each decoded in its own scratch sequence (a copy of the
    context's cells), all in one decode; returns sequence -> (candidate tokens, their probabilities)."""
    k = p.top_k
    batch, cands = [], {}
    for s in live:
        probs = softmax(penalised(logits[s], p.repetition_penalty, seen[s]))
        top = np.argpartition(-probs, k - 1)[:k]
        top = top[np.argsort(-probs[top], kind="stable")]
        cands[s] = (top, probs[top])
        for c, tok in enumerate(top):
            scratch = n + s * k + c
            ctx.seq_rm(scratch)
            ctx.seq_cp(s, scratch)
            batch.append((int(tok), pos[s], scratch, True))
    ctx.decode(batch)
    return cands


def _pick_candidate(ctx: LlamaContext, row: int, s: int, n: int, pos: int, cand: tuple[np.ndarray, np.ndarray],
                    ctx_h: np.ndarray, p: GenParams) -> tuple[int, np.ndarray, np.ndarray]:
    """Sequence `s`'s choice among its candidates (output rows row..row+k-1 of the last decode): its token, its
    unit hidden state (1 x d) and its next logits; its cell is copied into `s` and the scratch sequences freed."""
    k, alpha = p.top_k, p.penalty_alpha
    top, probs = cand
    hs = np.stack([ctx.hidden(row + c) for c in range(k)])
    # einsum, not `@`: past ~200 context positions numpy's BLAS runs this product on its own threads, which then
    # spin and take the cores from llama.cpp's next decode (steps went from 38 ms to 70-155 ms). Without BLAS it
    # costs ~1 ms.
    sim = np.einsum("kd,nd->kn", unit(hs), ctx_h).max(axis=1)
    best = int(np.argmax((1 - alpha) * probs - alpha * sim))
    next_logits = ctx.logits(row + best)
    ctx.seq_cp(n + s * k + best, s, pos, pos + 1)
    for c in range(k):
        ctx.seq_rm(n + s * k + c)
    return int(top[best]), unit(hs[best:best + 1]), next_logits


def beam(ctx: LlamaContext, adapter: Optional[str], prompt: Sequence[int], p: GenParams, stop: StopRule,
         emit: Callable[[int], None]) -> list[int]:
    """Beam search as transformers' (num_beams, length_penalty 1, early stopping): beams are sequences
    0..B-1 sharing their common cells; a finished hypothesis scores sum(logp) / its length."""
    B = p.num_beams
    (first,), _ = ctx.prefill(adapter, [prompt])
    ctx.cached = (None, [])
    for b in range(1, B):
        ctx.seq_cp(0, b)
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
            ctx.seq_rm(B + i)
            ctx.seq_cp(b, B + i)
        for i in range(len(new)):
            ctx.seq_rm(i)
            ctx.seq_cp(B + i, i)
            ctx.seq_rm(B + i)
        ctx.decode([(t, n0 + step, i, True) for i, (_, _, t) in enumerate(new)])
        logits = [ctx.logits(i) for i in range(len(new))]
        beams = [(s, beams[b][1] + [t]) for s, b, t in new]
    if len(done) < B:
        done.extend((s / max(1, len(t)), t) for s, t in beams)
    best = max(done, key=lambda x: x[0])[1] if done else []
    ctx.forget()
    for t in best:
        emit(t)
    return best
