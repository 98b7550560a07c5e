"""Tiny random models, tokenizers and LoRA adapters built in-process (nothing is downloaded).

One tiny model per supported family (Llama, Mistral, Falcon, Gemma-3): two layers, hidden size 64,
a byte-level BPE tokenizer trained here on a few Spanish sentences. `build_family` saves a model
folder that `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained` load like a real
one; `build_adapter` saves a peft LoRA folder with random (non-zero) weights, so every adapter
really changes the model's output.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

SPECIAL_TOKENS = ["<s>", "</s>", "<unk>", "<pad>", "<start_of_turn>", "<end_of_turn>"]

CORPUS = [
    "Hola, ¿cómo estás? Estoy muy bien, gracias por preguntar.",
    "El niño come una manzana roja en la cocina de su abuela.",
    "La declaración del impuesto a la renta vence en marzo para las personas naturales.",
    "¿Cuál es la capital de Ecuador? La capital de Ecuador es Quito.",
    "Escribe un poema corto sobre el mar y las montañas de los Andes.",
    "Los contribuyentes deben presentar sus facturas electrónicas al Servicio de Rentas Internas.",
    "### Instrucción:\nResume el texto siguiente en una oración.\n\n### Respuesta:\n",
    "User: ¿Qué hora es?\nFalcon: Son las tres de la tarde.\n",
    "[INST] Explica qué es el IVA. [/INST] El IVA es un impuesto al valor agregado.",
    "Una respuesta en español que complete adecuadamente lo que se pide.",
]


def build_tokenizer(vocab_size: int = 400):
    """A byte-level BPE (every text can be encoded) wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 5, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
    )


def _ids(tok) -> dict[str, int]:
    return {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}


def _llama(tok, vocab: int, hidden: int = 64):
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, **_ids(tok)))


def _mistral(tok, vocab: int):
    from transformers import MistralConfig, MistralForCausalLM

    return MistralForCausalLM(MistralConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, sliding_window=None,
        **_ids(tok)))


def _falcon(tok, vocab: int):
    from transformers import FalconConfig, FalconForCausalLM

    return FalconForCausalLM(FalconConfig(
        vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=1024, **_ids(tok)))


def _gemma3(tok, vocab: int):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    # One sliding-window layer with a short window, so prompts longer than 16 tokens use the
    # sliding cache like the real gemma-3-270m does beyond 512 tokens.
    return Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
        sliding_window=16, layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=1024, **_ids(tok)))


@dataclass(frozen=True)
class Family:
    name: str
    make: Callable[[Any, int], Any]  # (tokenizer, vocab_size) -> model
    target_modules: tuple[str, ...]
    template: str


FAMILIES: dict[str, Family] = {
    "llama": Family("llama", _llama, ("q_proj", "v_proj"), "llama-2"),
    "mistral": Family("mistral", _mistral, ("q_proj", "v_proj"), "mistral"),
    "falcon": Family("falcon", _falcon, ("query_key_value",), "falcon"),
    "gemma": Family("gemma", _gemma3, ("q_proj", "v_proj"), "gemma"),
}



def build_family(family: str, out_dir: Path, seed: int = 0) -> Path:
    """Save a tiny random model of `family` plus its tokenizer to `out_dir`."""
    tok = build_tokenizer()
    torch.manual_seed(seed)
    # vocab_size = len(tok): every id the model can emit decodes to text, so two different
    # generations (almost surely) decode to different strings.
    model = FAMILIES[family].make(tok, len(tok)).to(torch.bfloat16)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def build_adapter(model_dir: Path, target_modules: tuple[str, ...], out_dir: Path, seed: int) -> Path:
    """Save a LoRA adapter (r=4) for the model in `model_dir`, with random non-zero A and B."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    torch.manual_seed(seed)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=list(target_modules), init_lora_weights=False,
                     task_type="CAUSAL_LM")
    get_peft_model(base, cfg).save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def build_wide_llama_adapter(out_dir: Path, seed: int = 7) -> Path:
    """A LoRA adapter for a Llama with hidden size 96: same layer names as our tiny Llama, other shapes."""
    from peft import LoraConfig, get_peft_model

    tok = build_tokenizer()
    torch.manual_seed(seed)
    model = _llama(tok, len(tok), hidden=96)
    model.config._name_or_path = "otro/llama-ancho"
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                     task_type="CAUSAL_LM")
    get_peft_model(model, cfg).save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def load_plain(model_dir: Path):
    """The model as a user would load it, without the engine (float32 on CPU: the engine's default there,
    esllm.engine.loader.resolve_dtype; the weights are stored in bf16)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(model_dir)


def load_with_adapter(model_dir: Path, adapter_dir: Path):
    """A fresh base with one adapter loaded by peft directly: the reference for the engine."""
    from peft import PeftModel

    model, tok = load_plain(model_dir)
    return PeftModel.from_pretrained(model, str(adapter_dir)).eval(), tok


def greedy_ids(model, tok, prompt: str, max_new_tokens: int, eos_ids: list[int]) -> list[int]:
    """Reference greedy decoding with plain `generate`: the new ids, up to and including the first end token."""
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
                             max_new_tokens=max_new_tokens, eos_token_id=eos_ids, pad_token_id=tok.pad_token_id)
    new = out[0, ids.shape[1]:].tolist()
    for i, t in enumerate(new):
        if t in eos_ids:
            return new[: i + 1]
    return new


@torch.no_grad()
def last_logits(model, tok, prompt: str) -> torch.Tensor:
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    return model(input_ids=ids).logits[0, -1].float()


@torch.no_grad()
def contrastive_reference(model, input_ids: torch.Tensor, top_k: int, alpha: float, max_new_tokens: int,
                          eos_ids: list[int]) -> list[int]:
    """Contrastive search written the slow, obvious way (no KV cache, one full forward per candidate)."""
    seq = input_ids[0].tolist()
    out: list[int] = []
    for _ in range(max_new_tokens):
        o = model(input_ids=torch.tensor([seq]), output_hidden_states=True)
        ctx = o.hidden_states[-1][0].float()
        probs = torch.softmax(o.logits[0, -1].float(), dim=-1)
        top_p, top_ids = probs.topk(top_k)
        best_score, best = None, None
        for p, v in zip(top_p.tolist(), top_ids.tolist()):
            h = model(input_ids=torch.tensor([seq + [v]]), output_hidden_states=True).hidden_states[-1][0, -1].float()
            sim = torch.nn.functional.cosine_similarity(h[None, :], ctx, dim=-1).max().item()
            score = (1 - alpha) * p - alpha * sim
            if best_score is None or score > best_score:
                best_score, best = score, v
        seq.append(best)
        out.append(best)
        if best in eos_ids:
            break
    return out


@contextmanager
def forced_tokens(model, token_ids: list[Optional[int]]):
    """Make `model` (a transformers model, not a PeftModel wrapper) emit `token_ids` first, one per forward.

    A forward hook on the output layer adds a large bonus to the wanted token at the last position
    (None: leave that step alone); after the list is used up the model runs unchanged.
    """
    calls = {"n": 0}

    def hook(module, args, output):
        n = calls["n"]
        calls["n"] += 1
        if n < len(token_ids) and token_ids[n] is not None:
            output = output.clone()
            output[..., -1, token_ids[n]] += 1e4
            return output
        return output

    handle = model.get_output_embeddings().register_forward_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


@contextmanager
def slowed(model, seconds: float):
    """Make every forward of `model` take at least `seconds`; yields a dict counting forwards."""
    calls = {"n": 0}

    def hook(module, args):
        calls["n"] += 1
        time.sleep(seconds)

    handle = model.register_forward_pre_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()
