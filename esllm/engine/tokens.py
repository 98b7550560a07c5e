"""Tokens: the small tokenizer surface the engine needs (`Tok`; `HFTok` over a transformers tokenizer, llama.cpp's
`LlamaTok` in esllm/engine/llamacpp_lib.py) and when one generated sequence must end (`StopRule`: an EOS id, a stop
string in its text, the user's stop, or the length)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence


class Tok(Protocol):
    """Text <-> token ids, as the engine uses them (special tokens written in the text are parsed)."""

    bos_token: str
    eos_token: str
    bos_token_id: Optional[int]
    eos_token_id: Optional[int]
    add_bos: bool  # whether the model expects BOS at the start of a raw (template-free) text

    def encode(self, text: str) -> list[int]: ...
    def encode_text(self, text: str) -> list[int]: ...  # special-token strings stay text (what people write)
    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str: ...
    def token_id(self, piece: str) -> Optional[int]: ...


class HFTok:
    """`Tok` over a transformers tokenizer. Its calls take one lock: `split_special_tokens` is set on the shared Rust
    tokenizer for the length of a call, so a concurrent `encode` would split a template's own control tokens (seen:
    2 of 12 concurrent chat answers decoded from a broken prompt)."""

    def __init__(self, tok):
        self.hf = tok
        self._lock = threading.Lock()
        self.bos_token, self.eos_token = tok.bos_token or "", tok.eos_token or ""
        self.bos_token_id, self.eos_token_id = tok.bos_token_id, tok.eos_token_id
        probe = tok("a", add_special_tokens=True)["input_ids"]
        self.add_bos = bool(probe) and tok.bos_token_id is not None and probe[0] == tok.bos_token_id

    def encode(self, text: str) -> list[int]:
        with self._lock:
            return list(self.hf(text, add_special_tokens=False, split_special_tokens=False)["input_ids"])

    def encode_text(self, text: str) -> list[int]:
        with self._lock:
            return list(self.hf(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special)

    def token_id(self, piece: str) -> Optional[int]:
        tid = self.hf.convert_tokens_to_ids(piece)
        return tid if isinstance(tid, int) and tid != self.hf.unk_token_id else None


@dataclass
class StopRule:
    """When one sequence must end: an EOS id, a stop string in its text, the user's stop, or the length."""

    eos_ids: Sequence[int]
    stop_strings: Sequence[str]
    should_stop: Callable[[], bool]
    decode: Callable[[Sequence[int]], str]  # for stop strings (special tokens kept)

    def hit(self, ids: Sequence[int]) -> bool:
        """Whether `ids` (generated so far, one sequence) end the sequence now (not counting the user's stop)."""
        if ids and ids[-1] in self.eos_ids:
            return True
        if self.stop_strings:
            tail = max(len(s) for s in self.stop_strings) + 8
            text = self.decode(ids[-tail:])
            return any(s in text for s in self.stop_strings)
        return False

    def reason(self, ids: list[int], max_new_tokens: int) -> tuple[list[int], str]:
        """(ids without a final EOS, why decoding ended: eos | stop_string | length | stopped)."""
        if ids and ids[-1] in self.eos_ids:
            return ids[:-1], "eos"
        if self.should_stop():
            return ids, "stopped"
        if self.stop_strings and any(s in self.decode(ids) for s in self.stop_strings):
            return ids, "stop_string"
        return ids, "length" if len(ids) >= max_new_tokens else "stopped"
