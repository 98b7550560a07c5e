"""The Engine's scoring: log-probabilities from a contestant's in-process model, for evaluations that read them
instead of generating (lm-evaluation-harness's `loglikelihood`, the next token's distribution), and `encode`.

`Scoring` is mixed into `Engine` (esllm/engine/core.py) and uses its `contestant()`, `bases` and
`_check_adapter` (generation.py's); a contestant on an OpenAI-compatible server has no log-probabilities and is
refused (esllm/engine/remote.py's `refuse_scoring`). Each call holds the base's lock per batch or pair, so a chat
user waits one batch, not the whole run.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from esllm import EsllmError
from esllm.engine.backend import Backend
from esllm.engine.openai_backend import OpenAIBackend
from esllm.engine.templates import get_template
from esllm.engine.types import LoadedContestant


class Scoring:
    """`encode`, `next_token_logprobs` and `loglikelihood` of `Engine` (see the module docstring)."""

    def _local(self, contestant: str) -> tuple[LoadedContestant, Backend]:
        """A contestant and its in-process backend; EsllmError for one on a server (no log-probabilities)."""
        c = self.contestant(contestant)
        base = self.bases[c.model_key]
        if isinstance(base, OpenAIBackend):
            from esllm.engine.remote import refuse_scoring

            raise refuse_scoring(c, base)
        return c, base

    def encode(self, contestant: str, text: str) -> list[int]:
        """Token ids of `text` (no template, no BOS) with the contestant's base tokenizer."""
        return self._local(contestant)[1].tok.encode(text)

    def next_token_logprobs(self, contestant: str, prompts: Sequence[str], *, chat: bool = True,
                            batch_size: int = 8) -> tuple[Any, Any]:
        """(log-probabilities [len(prompts), vocab] of the next token, the base's Tok).

        chat=True: each prompt is one user message rendered with the contestant's template and its
        generation prompt; chat=False: the raw text, after BOS where the model expects one."""
        import numpy as np

        c, base = self._local(contestant)
        template = c.template or get_template(base.spec.template)
        tok = base.tok
        if chat:
            ids = [tok.encode(template.render([{"role": "user", "content": p}], bos_token=tok.bos_token,
                                              eos_token=tok.eos_token)) for p in prompts]
        else:
            ids = [self._bos(tok) + tok.encode(p) for p in prompts]
        rows = []
        for start in range(0, len(ids), batch_size):  # the lock per batch: chat users wait one batch, not the run
            with base.lock:
                self._check_adapter(base, c)
                rows.append(base.next_logprobs(c.adapter, ids[start:start + batch_size]))
        return np.concatenate(rows, axis=0), tok

    def loglikelihood(self, contestant: str, pairs: Sequence[tuple[str, str]], *,
                      add_bos: Optional[bool] = None) -> list[tuple[float, int, bool]]:
        """lm-evaluation-harness's loglikelihood: for each (context, continuation), the sum of the
        continuation tokens' log-probabilities, their number, and whether each was the greedy choice.

        No chat template. As lm-eval: trailing spaces of the context move to the continuation, the
        continuation's tokens are those of context+continuation after the context's; BOS first when
        `add_bos` (default: when the tokenizer adds one)."""
        c, base = self._local(contestant)
        tok = base.tok
        bos = self._bos(tok) if add_bos is None else ([tok.bos_token_id] if add_bos and tok.bos_token_id is not None else [])
        out = []
        for context, continuation in pairs:
            n_space = len(context) - len(context.rstrip())
            if n_space:
                context, continuation = context[:-n_space], context[-n_space:] + continuation
            whole = tok.encode(context + continuation)
            n_ctx = len(tok.encode(context))
            ids = bos + whole
            start = len(bos) + n_ctx
            if start < 1 or start >= len(ids):
                raise EsllmError("No se puede puntuar: el contexto o la continuación no tienen tokens.")
            with base.lock:
                self._check_adapter(base, c)
                lps, greedy = base.token_logprobs(c.adapter, ids, start)
            out.append((float(sum(lps)), len(lps), all(greedy)))
        return out

    @staticmethod
    def _bos(tok) -> list[int]:
        return [tok.bos_token_id] if tok.add_bos and tok.bos_token_id is not None else []
