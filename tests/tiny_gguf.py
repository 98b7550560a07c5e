"""Tiny HF models written as GGUF files (fp32), so the llama.cpp backend can be compared with transformers on
the very same weights. Families: the `llama` architecture (Llama, Mistral) and `gemma3`.

    path = to_gguf(model_dir, out_file)

The names come from the `gguf` package's HF-to-GGUF table; the transformations are llama.cpp's converter's:
q/k rows permuted for `llama`, Gemma's norm weights stored as 1 + w. The byte-level BPE tokenizer of
tests/tiny.py is written as a `gpt2` vocabulary with its merges; special tokens are control tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ARCH = {"llama": "llama", "mistral": "llama", "gemma3_text": "gemma3"}


def _permute(w: np.ndarray, n_head: int, n_kv: int) -> np.ndarray:
    if n_kv and n_head != n_kv:
        n_head = n_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def to_gguf(model_dir: Path, out: Path) -> Path:
    import gguf
    import torch
    from safetensors.torch import load_file

    cfg = json.loads((model_dir / "config.json").read_text())
    arch = ARCH[cfg["model_type"]]
    n_blocks = cfg["num_hidden_layers"]
    n_head, n_kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    hidden = cfg["hidden_size"]
    head_dim = cfg.get("head_dim") or hidden // n_head
    w = gguf.GGUFWriter(str(out), arch)
    w.add_context_length(cfg.get("max_position_embeddings", 1024))
    w.add_embedding_length(hidden)
    w.add_block_count(n_blocks)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    rope = cfg.get("rope_parameters") or {}
    if arch == "gemma3":
        full = rope.get("full_attention", rope) if isinstance(rope, dict) else {}
        w.add_rope_freq_base(float(full.get("rope_theta", cfg.get("rope_theta", 1e6))))
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_sliding_window(int(cfg["sliding_window"]))
        # llama.cpp's default for gemma3 is 5 sliding layers then 1 full: write the tiny model's own layout
        w.add_array("gemma3.attention.sliding_window_pattern",
                    [t == "sliding_attention" for t in cfg["layer_types"]])
        local = rope.get("sliding_attention", {}) if isinstance(rope, dict) else {}
        w.add_float32("gemma3.rope.freq_base_swa", float(local.get("rope_theta", cfg.get("rope_local_base_freq", 10000.0))))
    else:
        w.add_rope_freq_base(float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0))))
        w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    _tokenizer(w, model_dir)
    tmap = gguf.TensorNameMap({v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[arch], n_blocks)
    state = load_file(str(model_dir / "model.safetensors"))
    for name, t in state.items():
        arr = t.to(torch.float32).numpy()
        new = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ValueError(f"unmapped tensor {name}")
        if arch == "llama" and name.endswith("q_proj.weight"):
            arr = _permute(arr, n_head, n_head)
        elif arch == "llama" and name.endswith("k_proj.weight"):
            arr = _permute(arr, n_head, n_kv)
        if arch == "gemma3" and name.endswith("norm.weight"):
            arr = arr + 1.0
        w.add_tensor(new, np.ascontiguousarray(arr))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def _tokenizer(w, model_dir: Path) -> None:
    tj = json.loads((model_dir / "tokenizer.json").read_text())
    vocab = dict(tj["model"]["vocab"])
    for t in tj.get("added_tokens", []):
        vocab[t["content"]] = t["id"]
    special = {t["content"] for t in tj.get("added_tokens", []) if t.get("special")}
    tokens = [None] * len(vocab)
    for tok, i in vocab.items():
        tokens[i] = tok
    types = [3 if t in special else 1 for t in tokens]  # 3 = control, 1 = normal
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    for key, setter in (("bos_token", w.add_bos_token_id), ("eos_token", w.add_eos_token_id),
                        ("unk_token", w.add_unk_token_id), ("pad_token", w.add_pad_token_id)):
        val = cfg.get(key)
        if isinstance(val, dict):
            val = val.get("content")
        if val in vocab:
            setter(vocab[val])
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
