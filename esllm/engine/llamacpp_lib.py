"""llama-cpp-python's library for the llama.cpp backend (esllm/engine/llamacpp_backend.py): `lib()` initialises
it once per process with llama.cpp's log sent to Python's logging, `LlamaTok` is the GGUF's own tokenizer as a
`backend.Tok`, and `gguf_source` / `file_type` say which GGUF file a spec names, its sha256 and its quantisation.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from pathlib import Path
from typing import Optional, Sequence

from esllm import EsllmError
from esllm.engine.bundled import gguf_path, gguf_sha256
from esllm.engine.config import ModelSpec

# llama.cpp's own log goes to the backend's logger, the name its users configure (see _on_log).
log = logging.getLogger("esllm.engine.llamacpp_backend")

_init_lock = threading.Lock()
_initialised = False


def lib():
    """The `llama_cpp` module, its backend initialised and its log routed to `_on_log` once per process."""
    global _initialised, _log_callback
    import llama_cpp

    with _init_lock:
        if not _initialised:
            _log_callback = _make_log_callback()  # kept referenced: llama.cpp calls it for the process's life
            llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()
            _initialised = True
    return llama_cpp


_last_level = [0]


def _on_log(level: int, text: bytes, _user) -> None:
    """llama.cpp's log into Python's logging (logger `esllm.engine.llamacpp_backend`): errors as errors, the
    rest as debug: its warnings are per-tensor notes (e.g. a LoRA tensor "cannot use buft 'CPU_REPACK'", dozens
    per adapter) that say nothing a user can act on. ggml's levels: 0 none, 1 debug, 2 info, 3 warn, 4 error."""
    if level == 5:  # GGML_LOG_LEVEL_CONT: continues the previous line
        level = _last_level[0]
    _last_level[0] = level
    msg = text.decode("utf-8", errors="replace").rstrip()
    if msg:
        log.log(logging.ERROR if level == 4 else logging.DEBUG, "llama.cpp: %s", msg)


def _make_log_callback():
    import llama_cpp

    return llama_cpp.llama_log_callback(_on_log)


_log_callback = None


class LlamaTok:
    """`backend.Tok` over the GGUF's own vocabulary (llama.cpp's tokenizer)."""

    def __init__(self, model):
        self.m = model  # llama_cpp._internals.LlamaModel
        self.bos_token_id = model.token_bos() if model.token_bos() >= 0 else None
        self.eos_token_id = model.token_eos() if model.token_eos() >= 0 else None
        self.bos_token = model.token_get_text(self.bos_token_id) if self.bos_token_id is not None else ""
        self.eos_token = model.token_get_text(self.eos_token_id) if self.eos_token_id is not None else ""
        self.add_bos = bool(model.add_bos_token())

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        return list(self.m.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def encode_text(self, text: str) -> list[int]:
        if not text:
            return []
        return list(self.m.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        return self.m.detokenize(list(ids), special=not skip_special).decode("utf-8", errors="replace")

    def token_id(self, piece: str) -> Optional[int]:
        ids = self.encode(piece)
        return ids[0] if len(ids) == 1 else None


def file_type(model) -> str:
    """The GGUF's quantisation as its file type says (e.g. Q4_K_M)."""
    ftype = model.metadata().get("general.file_type")
    names = {"0": "F32", "1": "F16", "2": "Q4_0", "3": "Q4_1", "7": "Q8_0", "8": "Q5_0", "9": "Q5_1",
             "10": "Q2_K", "11": "Q3_K_S", "12": "Q3_K_M", "13": "Q3_K_L", "14": "Q4_K_S", "15": "Q4_K_M",
             "16": "Q5_K_S", "17": "Q5_K_M", "18": "Q6_K", "32": "BF16"}
    return f"gguf {names.get(str(ftype), ftype or '?')}"


def gguf_source(spec: ModelSpec) -> tuple[Path, Optional[str]]:
    """(GGUF file, its sha256) of a spec's source: the bundled model or a .gguf path."""

    src = spec.source.strip()
    if src.startswith("bundled:"):
        path = gguf_path(src.removeprefix("bundled:"))
        return path, gguf_sha256(path)
    path = Path(src).expanduser()
    if not path.is_file():
        raise EsllmError(f"No existe el archivo GGUF {src}. Corrija `source:` en la configuración.")
    return path, gguf_sha256(path)
