"""Portable adapter folders: what a plain transformers + peft user needs to use an adapter as esllm does.

Every folder esllm writes carries
  * `chat_template.jinja` + the base's tokenizer files, so that
    `AutoTokenizer.from_pretrained(folder).apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)`
    returns exactly the prompt esllm renders (esllm/engine/templates.py);
  * `generation_config.json` with the ids that end an answer (EOS and the template's end-of-turn tokens)
    and the template's stop strings (`model.generate(..., tokenizer=tok)` applies them);
  * `adapter_config.json` whose `base_model_name_or_path` names the public base (e.g. `google/gemma-3-270m`),
    never the local cache folder the weights were trained from.

The same `chat_template.jinja` also renders identically inside esllm (which passes `system_message` and
`default_system`): the template computes both itself only when they are missing or empty (esllm gives an
adapter's own template an empty `default_system`, so the file carries its default system text).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from esllm.engine.templates import ChatTemplate

CHAT_TEMPLATE = "chat_template.jinja"
GENERATION_CONFIG = "generation_config.json"

# The public names of the bases esllm ships (the bundled GGUF is a quantised google/gemma-3-270m).
PUBLIC_BASES = {"bundled:gemma-3-270m": "google/gemma-3-270m"}


def public_base_name(source: str, override: str = "") -> str:
    """The base as a Hub id: the recipe's explicit name, a known bundled model, a hub id, or a folder's name."""
    if override.strip():
        return override.strip()
    src = source.strip()
    if src in PUBLIC_BASES:
        return PUBLIC_BASES[src]
    if src.startswith(("/", "./", "../", "~")) or Path(src).expanduser().exists():
        folder = Path(src).expanduser()
        cfg = folder / "config.json"
        if cfg.is_file():
            name = str(json.loads(cfg.read_text(encoding="utf-8")).get("_name_or_path") or "")
            if name and not name.startswith(("/", ".", "~")) and not Path(name).exists():
                return name
        return folder.resolve().name  # no path: a plain folder name is all we know
    return src


def hf_chat_template(template: ChatTemplate) -> str:
    """The template as a standalone Jinja file transformers can apply.

    transformers passes only `messages` (system turns included), `bos_token`, `eos_token` and
    `add_generation_prompt`; esllm passes the system text apart. The prelude fills the two esllm
    variables from the messages when they are missing, so one file renders the same in both.
    """
    default = json.dumps(template.default_system, ensure_ascii=False)
    prelude = (
        "{% if system_message is not defined %}"
        "{% set system_message = messages | selectattr('role', 'equalto', 'system')"
        " | map(attribute='content') | join('\\n') | trim %}"
        "{% endif %}"
        "{% if default_system is not defined or not default_system %}"
        f"{{% set default_system = {default} %}}"
        "{% endif %}"
    )
    return prelude + template.source


def end_token_ids(tok, template: ChatTemplate) -> list[int]:
    """The tokenizer's EOS plus the template's end-of-turn tokens the vocabulary has (as the engine stops)."""
    ids = [tok.eos_token_id] if tok.eos_token_id is not None else []
    for t in template.end_tokens:
        tid = tok.convert_tokens_to_ids(t)
        if isinstance(tid, int) and tid != tok.unk_token_id and tid not in ids:
            ids.append(tid)
    return ids


def write_portable(out_dir: Path, tok, template: ChatTemplate, base_name: str,
                   max_new_tokens: Optional[int] = None) -> None:
    """Write the tokenizer + chat template, generation_config.json, and fix base_model_name_or_path."""
    source = hf_chat_template(template)
    previous = getattr(tok, "chat_template", None)
    tok.chat_template = source
    try:
        tok.save_pretrained(out_dir)
    finally:
        tok.chat_template = previous
    (out_dir / CHAT_TEMPLATE).write_text(source, encoding="utf-8")
    ends = end_token_ids(tok, template)
    gen = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": ends if len(ends) > 1 else (ends[0] if ends else None),
        "pad_token_id": tok.pad_token_id,
        "do_sample": False,
        "stop_strings": list(template.stop_strings),
    }
    if max_new_tokens:
        gen["max_new_tokens"] = max_new_tokens
    (out_dir / GENERATION_CONFIG).write_text(json.dumps(gen, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    set_base_name(out_dir, base_name)


def set_base_name(out_dir: Path, base_name: str) -> None:
    cfg_path = out_dir / "adapter_config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        cfg["base_model_name_or_path"] = base_name
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
