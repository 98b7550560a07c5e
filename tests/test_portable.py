"""Portable adapter folders: a folder the trainer writes loads in plain transformers + peft (a subprocess
that never imports esllm), its chat_template.jinja gives exactly the prompt esllm renders, and it names the
public base and the ids / strings that end an answer."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CONVERSATIONS = [
    [{"role": "user", "content": "¿Cuál es la capital de Ecuador?"}],
    [{"role": "system", "content": "Responde en una frase."}, {"role": "user", "content": "  Saluda.  "}],
    [{"role": "user", "content": "Hola"}, {"role": "assistant", "content": "¡Hola! ¿En qué te ayudo?"},
     {"role": "user", "content": "Explica qué es el IVA.\n\nEn dos líneas."}],
    [{"role": "system", "content": "Eres breve."}, {"role": "user", "content": "Uno"},
     {"role": "assistant", "content": "Dos"}, {"role": "user", "content": "Tres"}],
]

# Runs in a fresh interpreter with only transformers and peft: what a user without esllm does.
PLAIN = r'''
import json, sys
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
folder, base, convs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
tok = AutoTokenizer.from_pretrained(folder)
out = {"prompts": [tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in convs]}
out["ids"] = [tok(p, add_special_tokens=False)["input_ids"] for p in out["prompts"]]
gen = GenerationConfig.from_pretrained(folder)
out["eos"], out["stop_strings"] = gen.eos_token_id, gen.stop_strings
if base != "-":
    from peft import PeftModel
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), folder)
    ids = tok(out["prompts"][0], add_special_tokens=False, return_tensors="pt")["input_ids"]
    out["generated"] = model.generate(ids, generation_config=gen, tokenizer=tok, max_new_tokens=4).shape[1] - ids.shape[1]
    out["base_model_name_or_path"] = json.load(open(folder + "/adapter_config.json"))["base_model_name_or_path"]
out["esllm_imported"] = any(m == "esllm" or m.startswith("esllm.") for m in sys.modules)
print(json.dumps(out))
'''


def plain(folder, base="-", tmp_path=None) -> dict:
    p = subprocess.run([sys.executable, "-c", PLAIN, str(folder), str(base), json.dumps(CONVERSATIONS)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path or folder)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["esllm_imported"] is False
    return out


def esllm_prompts(tok, template):
    """The prompt esllm renders (ChatTemplate.render, as engine/messages.prompt_ids does) and its token ids
    (the rendered text already holds BOS: tokenized without adding special tokens)."""
    texts = [template.render(c, bos_token=tok.bos_token or "", eos_token=tok.eos_token or "") for c in CONVERSATIONS]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    return texts, ids


@pytest.mark.parametrize("name", ["alpaca-es", "llama-2", "mistral", "falcon", "gemma"])
def test_chat_template_file_renders_esllm_prompt_in_plain_transformers(tiny, tmp_path, name):
    from esllm.engine.templates import get_template, template_from_jinja
    from esllm.train.portable import end_token_ids, write_portable
    from tests.tiny import load_plain

    _, tok = load_plain(tiny("gemma").model_dir)
    template = get_template(name)
    folder = tmp_path / name
    folder.mkdir()
    write_portable(folder, tok, template, "google/gemma-3-270m")
    texts, ids = esllm_prompts(tok, template)
    out = plain(folder)
    assert out["prompts"] == texts
    assert out["ids"] == ids
    eos = out["eos"] if isinstance(out["eos"], list) else [out["eos"]]
    assert eos == end_token_ids(tok, template) and eos[0] == tok.eos_token_id
    assert out["stop_strings"] == list(template.stop_strings)
    # the same file, read back as an adapter's own template inside esllm, renders the same prompt
    own = template_from_jinja("propia", (folder / "chat_template.jinja").read_text(encoding="utf-8"))
    assert [own.render(c, bos_token=tok.bos_token, eos_token=tok.eos_token) for c in CONVERSATIONS] == texts


def test_trained_folder_loads_in_plain_peft_and_names_public_base(tiny, tmp_path):
    from esllm.engine.templates import get_template
    from esllm.train.recipe import parse_recipe
    from esllm.train.trainer import train
    from tests.tiny import load_plain

    t = tiny("llama")
    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"instruction": f"Pregunta {i}", "output": f"Respuesta {i}."} for i in range(8)]))
    out = tmp_path / "adapters" / "portable"
    train(parse_recipe({
        "model": {"source": str(t.model_dir), "quantization": "none", "device": "cpu"},
        "data": {"path": str(data), "eval_fraction": 0.25},
        "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "training": {"max_steps": 2, "batch_size": 4, "eval_every": 1},
        "output": {"dir": str(out), "template": "alpaca-es", "base_model_name": "example/tiny-llama"},
    }), say=lambda m: None, progress=False)
    for f in ("chat_template.jinja", "generation_config.json", "tokenizer_config.json", "tokenizer.json"):
        assert (out / f).is_file(), f
    res = plain(out, t.model_dir, tmp_path)
    _, tok = load_plain(t.model_dir)
    texts, ids = esllm_prompts(tok, get_template("alpaca-es"))
    assert res["prompts"] == texts and res["ids"] == ids
    assert res["base_model_name_or_path"] == "example/tiny-llama"
    assert res["generated"] >= 1
    assert json.loads((out / "esllm_adapter.json").read_text())["base_model"] == "example/tiny-llama"


def test_public_base_name_is_never_a_local_path(tmp_path):
    from esllm.train.portable import public_base_name

    assert public_base_name("bundled:gemma-3-270m") == "google/gemma-3-270m"
    assert public_base_name("mistralai/Mistral-7B-v0.1") == "mistralai/Mistral-7B-v0.1"
    assert public_base_name("bundled:gemma-3-270m", "org/otro") == "org/otro"
    folder = tmp_path / "cache" / "gemma-3-270m-a5fd3b62"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"_name_or_path": str(tmp_path / "x")}))
    assert public_base_name(str(folder)) == "gemma-3-270m-a5fd3b62"
    (folder / "config.json").write_text(json.dumps({"_name_or_path": "google/gemma-3-270m"}))
    assert public_base_name(str(folder)) == "google/gemma-3-270m"


@pytest.mark.parametrize("name", ["instrucciones-es", "tributario-ec"])
def test_shipped_adapters_are_portable(name):
    from tests.helpers import REPO

    folder = REPO / "adapters" / name
    cfg = json.loads((folder / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "google/gemma-3-270m"
    for f in ("chat_template.jinja", "generation_config.json", "tokenizer_config.json"):
        assert (folder / f).is_file(), f
    gen = json.loads((folder / "generation_config.json").read_text())
    assert gen["stop_strings"] == ["### Instrucción:", "### Respuesta:"]
