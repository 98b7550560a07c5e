"""Decoding: run one generation on an already-activated model and report each new token.

`decode(model, input_ids, params, ...)` runs greedy / sampling / beam search through
`model.generate` and contrastive search through our own loop (transformers 5 moved contrastive
search to a Hub repo, which we cannot download). Every path checks `should_stop()` after each
token, so a stop button or a closed browser ends the work, and returns the new token ids. It is the
transformers backend's decoding (esllm/engine/hf_backend.py) and knows nothing of adapters, locks or
threads: the caller holds the base model's lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

from esllm.engine.presets import GenParams

if TYPE_CHECKING:  # torch is imported when a decode runs: importing the engine must not cost torch's ~2.5 s
    import torch

OnToken = Callable[[int], None]


class _Streamer:
    """transformers streamer that forwards each new token id (the first put() is the prompt)."""

    def __init__(self, on_token: OnToken):
        self.on_token, self.seen_prompt = on_token, False

    def put(self, value: torch.Tensor) -> None:
        if not self.seen_prompt:
            self.seen_prompt = True
            return
        for t in value.reshape(-1).tolist():
            self.on_token(int(t))

    def end(self) -> None:
        pass


class _StopCriteria:
    """Stops on the user's stop, and on a stop string in the generated text (batch of one)."""

    def __init__(self, should_stop: Callable[[], bool], prompt_len: int, tokenizer, stop_strings: Sequence[str]):
        self.should_stop, self.prompt_len, self.tok, self.stops = should_stop, prompt_len, tokenizer, stop_strings
        self.tail = max((len(s) for s in stop_strings), default=0) + 8

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        import torch

        stop = self.should_stop()
        if not stop and self.stops and input_ids.shape[0] == 1:
            gen = input_ids[0, self.prompt_len:]
            text = self.tok.decode(gen[-self.tail:], skip_special_tokens=False)
            stop = any(s in text for s in self.stops)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


def decode(
    model,
    tokenizer,
    input_ids: torch.LongTensor,
    params: GenParams,
    *,
    eos_ids: Sequence[int],
    stop_strings: Sequence[str],
    should_stop: Callable[[], bool],
    on_token: OnToken,
) -> list[int]:
    """The new token ids (a final EOS included); why decoding ended is tokens.StopRule.reason's job."""
    import torch

    if params.seed is not None:
        torch.manual_seed(params.seed)
    if params.strategy == "contrastive":
        with torch.no_grad():
            return _contrastive(model, input_ids, params, eos_ids, should_stop, on_token, tokenizer, stop_strings)
    return _hf_generate(model, tokenizer, input_ids, params, eos_ids, stop_strings, should_stop, on_token)


def _hf_generate(model, tokenizer, input_ids, p: GenParams, eos_ids, stop_strings, should_stop, on_token) -> list[int]:
    import torch
    from transformers import GenerationConfig, StoppingCriteriaList

    kw = dict(
        max_new_tokens=p.max_new_tokens, eos_token_id=list(eos_ids),
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0],
        repetition_penalty=p.repetition_penalty,
    )
    if p.strategy == "greedy":
        kw.update(do_sample=False, num_beams=1)
    elif p.strategy == "sample":
        kw.update(do_sample=True, temperature=p.temperature, top_k=p.top_k, top_p=p.top_p, num_beams=1)
    elif p.strategy == "beam":
        kw.update(do_sample=False, num_beams=p.num_beams, early_stopping=True)
    else:
        raise ValueError(f"unknown strategy {p.strategy}")
    prompt_len = input_ids.shape[1]
    crit = _StopCriteria(should_stop, prompt_len, tokenizer, stop_strings)
    streamer = _Streamer(on_token) if p.strategy != "beam" else None  # generate() cannot stream beams
    out = model.generate(
        input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
        generation_config=GenerationConfig(**kw), stopping_criteria=StoppingCriteriaList([crit]),
        streamer=streamer,
    )
    ids = out[0, prompt_len:].tolist()
    if streamer is None:
        for t in ids:
            on_token(t)
    # generate() pads a finished sequence; keep up to and including the first EOS.
    for i, t in enumerate(ids):
        if t in eos_ids:
            return ids[: i + 1]
    return ids


def _contrastive(model, input_ids, p: GenParams, eos_ids, should_stop, on_token, tokenizer, stop_strings) -> list[int]:
    import torch

    """Contrastive search (Su et al., 2022): pick, among the top-k next tokens, the one that balances
    model confidence against similarity to the context, score = (1-a)·p(v) - a·max cos(h_v, h_ctx).
    One batched forward of the k candidates per step, on a KV cache repeated k times then narrowed.
    """
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    out = model(input_ids=input_ids, past_key_values=cache, use_cache=True, output_hidden_states=True)
    ctx = out.hidden_states[-1][0].float()  # [T, H]
    logits = out.logits[0, -1].float()
    generated: list[int] = []
    k, alpha = p.top_k, p.penalty_alpha
    seen = input_ids[0].tolist()
    crit = _StopCriteria(should_stop, 0, tokenizer, stop_strings)
    for _ in range(p.max_new_tokens):
        if p.repetition_penalty != 1.0:
            idx = torch.tensor(sorted(set(seen)), device=logits.device)
            vals = logits[idx]
            logits[idx] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
        probs = torch.softmax(logits, dim=-1)
        top_p, top_ids = probs.topk(k)
        cache.batch_repeat_interleave(k)
        o = model(input_ids=top_ids[:, None], past_key_values=cache, use_cache=True, output_hidden_states=True)
        h = o.hidden_states[-1][:, -1, :].float()  # [k, H]
        sim = torch.nn.functional.cosine_similarity(h[:, None, :], ctx[None, :, :], dim=-1).max(dim=-1).values
        best = int(torch.argmax((1 - alpha) * top_p - alpha * sim))
        cache.batch_select_indices(torch.tensor([best], device=top_ids.device))
        tok = int(top_ids[best])
        generated.append(tok)
        seen.append(tok)
        on_token(tok)
        if tok in eos_ids:
            break
        if crit(torch.tensor([generated]), None)[0]:
            break
        ctx = torch.cat([ctx, h[best : best + 1]], dim=0)
        logits = o.logits[best, -1].float()
    return generated
