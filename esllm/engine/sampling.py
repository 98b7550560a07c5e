"""Choosing the next token from a row of logits with numpy, with the semantics of transformers' logits
processors (repetition penalty, temperature, top-k, top-p), for backends that hand out raw logits
(the llama.cpp backend's search strategies, esllm/engine/llamacpp_search.py)."""

from __future__ import annotations

import numpy as np

from esllm.engine.presets import GenParams


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


def unit(h: np.ndarray) -> np.ndarray:
    return h / np.maximum(np.linalg.norm(h, axis=-1, keepdims=True), 1e-8)


def penalised(logits: np.ndarray, penalty: float, seen) -> np.ndarray:
    """transformers' RepetitionPenaltyLogitsProcessor: every token already in the sequence (prompt included)
    has its logit divided by `penalty` if positive, multiplied if negative."""
    if penalty == 1.0 or not seen:
        return logits
    idx = np.fromiter(seen, dtype=np.int64)
    out = logits.copy()
    v = out[idx]
    out[idx] = np.where(v > 0, v / penalty, v * penalty)
    return out


def pick(logits: np.ndarray, p: GenParams, seen, rng: np.random.Generator) -> int:
    """The next token: greedy, or sampled after temperature, top-k and top-p (in transformers' order)."""
    x = penalised(logits, p.repetition_penalty, seen)
    if p.strategy != "sample":
        return int(np.argmax(x))
    x = x / p.temperature
    if p.top_k and p.top_k < x.size:
        kth = np.partition(x, -p.top_k)[-p.top_k]
        x = np.where(x < kth, -np.inf, x)
    if p.top_p < 1.0:
        order = np.argsort(-x, kind="stable")
        probs = softmax(x[order])
        cum = np.cumsum(probs)
        cut = int(np.searchsorted(cum, p.top_p)) + 1  # keep the smallest prefix whose mass reaches top_p
        x_new = np.full_like(x, -np.inf)
        x_new[order[:cut]] = x[order[:cut]]
        x = x_new
    probs = softmax(x)
    return int(rng.choice(x.size, p=probs))
