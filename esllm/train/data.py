"""Training data: read Alpaca JSON or chat-messages JSONL, render with a template, mask the prompt.

Every example becomes (input_ids, labels) where labels are -100 on the prompt and equal to the
ids on the answer tokens plus one appended EOS (without it a tuned model never stops). Examples
longer than `max_seq_len` are dropped and counted, never cut. For a multi-turn `messages` example
the last assistant turn is the answer and earlier turns are its context.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from esllm import EsllmError
from esllm.engine.templates import ChatTemplate

IGNORE = -100


class DatasetError(EsllmError):
    pass


@dataclass
class Example:
    messages: list[dict[str, str]]  # context, ending with the user turn
    answer: str


@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]


def _alpaca(items: Any, path: Path) -> list[Example]:
    if isinstance(items, dict) and isinstance(items.get("data"), list):
        items = items["data"]
    if not isinstance(items, list):
        raise DatasetError(f"{path}: Alpaca JSON must be a list of objects (or an object with a 'data' list)")
    out = []
    for i, it in enumerate(items):
        where = f"{path}: item {i}"
        if not isinstance(it, dict):
            raise DatasetError(f"{where}: must be an object with instruction, input, output")
        ins, inp, ans = it.get("instruction"), it.get("input", ""), it.get("output")
        if not isinstance(ins, str) or not ins.strip():
            raise DatasetError(f"{where}: 'instruction' must be non-empty text")
        if not isinstance(ans, str) or not ans.strip():
            raise DatasetError(f"{where}: 'output' must be non-empty text")
        if inp is None:
            inp = ""
        if not isinstance(inp, str):
            raise DatasetError(f"{where}: 'input' must be text")
        user = ins.strip() + (f"\n\n{inp.strip()}" if inp.strip() else "")
        out.append(Example([{"role": "user", "content": user}], ans.strip()))
    return out


def _messages(path: Path) -> list[Example]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}: line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{where}: invalid JSON ({e.msg})") from None
        msgs = obj.get("messages") if isinstance(obj, dict) else None
        if not isinstance(msgs, list) or len(msgs) < 2:
            raise DatasetError(f"{where}: needs a 'messages' list with at least a user and an assistant turn")
        for m in msgs:
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                    or not isinstance(m.get("content"), str):
                raise DatasetError(f"{where}: every message needs role (system/user/assistant) and content text")
        if msgs[-1]["role"] != "assistant" or not msgs[-1]["content"].strip():
            raise DatasetError(f"{where}: the last message must be a non-empty assistant answer")
        out.append(Example([dict(m) for m in msgs[:-1]], msgs[-1]["content"].strip()))
    return out


def load_examples(path: str | Path, fmt: str = "auto") -> list[Example]:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"No existe el conjunto de datos {path}.")
    if fmt == "auto":
        fmt = "messages" if path.suffix == ".jsonl" else "alpaca"
    if fmt == "messages":
        ex = _messages(path)
    else:
        try:
            ex = _alpaca(json.loads(path.read_text(encoding="utf-8")), path)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    if not ex:
        raise DatasetError(f"{path}: no examples")
    return ex


def split(examples: Sequence[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    idx = list(range(len(examples)))
    random.Random(seed).shuffle(idx)
    n_eval = int(round(len(idx) * fraction))
    return [examples[i] for i in idx[n_eval:]], [examples[i] for i in idx[:n_eval]]


def tokenize(ex: Example, tok, template: ChatTemplate, system: str = "") -> Tokenized:
    msgs = ([{"role": "system", "content": system}] if system else []) + ex.messages
    prompt = template.render(msgs, bos_token=tok.bos_token or "", eos_token=tok.eos_token or "")
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tok(ex.answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return Tokenized(p_ids + a_ids, [IGNORE] * len(p_ids) + a_ids)


def tokenize_all(examples: Sequence[Example], tok, template: ChatTemplate, max_len: int,
                 system: str = "") -> tuple[list[Tokenized], int]:
    """(kept, number dropped for being longer than max_len)."""
    kept, dropped = [], 0
    for ex in examples:
        t = tokenize(ex, tok, template, system)
        if len(t.input_ids) > max_len:
            dropped += 1
        else:
            kept.append(t)
    return kept, dropped


def collate(batch: Sequence[Tokenized], pad_id: int):
    import torch

    n = max(len(b.input_ids) for b in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, b in enumerate(batch):
        L = len(b.input_ids)
        ids[i, :L] = torch.tensor(b.input_ids)
        labels[i, :L] = torch.tensor(b.labels)
        mask[i, :L] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}
