"""Preference data for DPO and KTO: read the JSONL files esllm exports, check them, render the prompts.

DPO lines: {"prompt", "chosen", "rejected"}; KTO lines: {"prompt", "completion", "label"} (true = 👍).
A prompt is a string (one user turn) or a list of chat messages (TRL's conversational format, as
`dpo.jsonl` carries the earlier turns of a contextual item); an answer is a string or a one-message
assistant list. Other keys (item, scores, contestants) are kept as provenance. Every error names the
line and what to fix.

Prompts are rendered with esllm's own template (the one the adapter is used with), so the trainer
sees exactly the prompt the app sends; the BOS text is left to the tokenizer when it adds BOS itself.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Sequence

from esllm.engine.templates import ChatTemplate
from esllm.train.data import DatasetError

ROLES = ("system", "user", "assistant")


def _messages(v: Any, where: str) -> list[dict[str, str]]:
    if isinstance(v, str):
        if not v.strip():
            raise DatasetError(f"{where}: 'prompt' is empty")
        return [{"role": "user", "content": v}]
    if not isinstance(v, list) or not v:
        raise DatasetError(f"{where}: 'prompt' must be text or a list of messages")
    for m in v:
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise DatasetError(f"{where}: every prompt message needs role (system/user/assistant) and content text")
    if v[-1]["role"] != "user" or not v[-1]["content"].strip():
        raise DatasetError(f"{where}: the prompt must end with a non-empty user message")
    return [{"role": m["role"], "content": m["content"]} for m in v]


def _answer(v: Any, key: str, where: str) -> str:
    if isinstance(v, list) and len(v) == 1 and isinstance(v[0], dict) and v[0].get("role") == "assistant":
        v = v[0].get("content")
    if not isinstance(v, str) or not v.strip():
        raise DatasetError(f"{where}: '{key}' must be non-empty text (or one assistant message)")
    return v.strip()


def parse_records(lines: Sequence[str], method: str, source: str = "<datos>") -> list[dict]:
    """Normalised records: {"messages", "chosen", "rejected"} or {"messages", "completion", "label"}, plus extras."""
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{source}: line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{where}: invalid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise DatasetError(f"{where}: each line must be a JSON object")
        rec: dict[str, Any] = {"messages": _messages(obj.get("prompt"), where)}
        if method == "dpo":
            rec["chosen"] = _answer(obj.get("chosen"), "chosen", where)
            rec["rejected"] = _answer(obj.get("rejected"), "rejected", where)
            if rec["chosen"] == rec["rejected"]:
                raise DatasetError(f"{where}: 'chosen' and 'rejected' are the same text")
        else:
            rec["completion"] = _answer(obj.get("completion"), "completion", where)
            if not isinstance(obj.get("label"), bool):
                raise DatasetError(f"{where}: 'label' must be true (👍) or false (👎)")
            rec["label"] = obj["label"]
        rec["extra"] = {k: v for k, v in obj.items() if k not in ("prompt", "chosen", "rejected", "completion", "label")}
        out.append(rec)
    if not out:
        raise DatasetError(f"{source}: no examples")
    if method == "kto" and len({r["label"] for r in out}) < 2:
        raise DatasetError(f"{source}: KTO needs both 👍 (label true) and 👎 (label false) examples")
    return out


def load_records(path: str | Path, method: str) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"No existe el conjunto de datos {path}.")
    return parse_records(path.read_text(encoding="utf-8").splitlines(), method, str(path))


def split(records: Sequence[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    idx = list(range(len(records)))
    random.Random(seed).shuffle(idx)
    n_eval = int(round(len(idx) * fraction)) if len(idx) > 2 else 0
    return [records[i] for i in idx[n_eval:]], [records[i] for i in idx[:n_eval]]


def tokenizer_adds_bos(tok) -> bool:
    return tok.bos_token_id is not None and tok("a")["input_ids"][:1] == [tok.bos_token_id]


def render(records: Sequence[dict], tok, template: ChatTemplate, system: str = "") -> list[dict]:
    """TRL's standard (text) format: the prompt as esllm renders it; TRL appends EOS to the answers."""
    bos = "" if tokenizer_adds_bos(tok) else (tok.bos_token or "")
    rows = []
    for r in records:
        msgs = ([{"role": "system", "content": system}] if system else []) + r["messages"]
        row = {"prompt": template.render(msgs, bos_token=bos, eos_token=tok.eos_token or "")}
        if "chosen" in r:
            row.update(chosen=r["chosen"], rejected=r["rejected"])
        else:
            row.update(completion=r["completion"], label=r["label"])
        rows.append(row)
    return rows


def too_long(rows: Sequence[dict], tok, max_len: int) -> tuple[list[dict], int]:
    """(rows whose prompt + longest answer fit in max_len tokens, number dropped): never cut, as in SFT."""
    kept, dropped = [], 0
    for r in rows:
        p = len(tok(r["prompt"])["input_ids"])
        a = max(len(tok(r[k], add_special_tokens=False)["input_ids"]) for k in ("chosen", "rejected", "completion") if k in r)
        if p + a + 1 > max_len:
            dropped += 1
        else:
            kept.append(r)
    return kept, dropped
