"""The training objective: summed cross-entropy over the answer tokens only (the answer-ending EOS optionally
weighted), and the held-out loss per answer token that evaluation, early stopping and the benches report.
Used by esllm/train/trainer.py, esllm/train/pref.py and the benches.
"""

from __future__ import annotations

from typing import Optional

import torch

from esllm.train import data as D


def answer_loss(model, batch: dict, eos_id: Optional[int] = None, eos_weight: float = 1.0) -> tuple[torch.Tensor, int]:
    """(summed cross-entropy, token count) over the answer tokens only.

    `eos_weight` > 1 counts the answer-ending EOS that many times (training only; evaluation is unweighted):
    a small model learns *when* to stop much later than *what* to say, and an adapter that never stops is
    useless in the app, while more epochs to teach it overfit the content.

    The LM head runs on the answer positions alone: with Gemma's 262k-token vocabulary the full
    logits tensor would dominate time and memory on a CPU. Equivalent to `model(..., labels=)`.
    """
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    out = causal.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    hidden = out.last_hidden_state[:, :-1]
    labels = batch["labels"][:, 1:]
    keep = labels != D.IGNORE
    logits = causal.get_output_embeddings()(hidden[keep]).float()
    cap = getattr(causal.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    n = int(keep.sum())
    target = labels[keep]
    if eos_id is None or eos_weight == 1.0:
        return torch.nn.functional.cross_entropy(logits, target, reduction="sum"), n
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    w = torch.where(target == eos_id, torch.tensor(eos_weight, dtype=ce.dtype, device=ce.device), torch.ones_like(ce))
    return (ce * w).sum(), n


@torch.no_grad()
def eval_loss(model, examples: list[D.Tokenized], pad_id: int, batch_size: int) -> float:
    """Mean cross-entropy per answer token over the held-out examples."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        batch = {k: v.to(model.device) for k, v in D.collate(examples[i:i + batch_size], pad_id).items()}
        loss_sum, n = answer_loss(model, batch)
        total += float(loss_sum)
        count += n
    if was_training:
        model.train()
    return total / max(count, 1)
