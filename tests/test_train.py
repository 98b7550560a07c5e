"""Training pipeline on a tiny random Llama: masks, dropping, loss falls, resume, output folder, errors."""

from __future__ import annotations

import json

import pytest

from tests.helpers import REPO, make_engine

EXAMPLES = [
    {"instruction": "¿Cuál es la capital de Ecuador?", "input": "", "output": "La capital de Ecuador es Quito."},
    {"instruction": "Resume el texto.", "input": "El niño come una manzana roja en la cocina.", "output": "Un niño come una manzana."},
    {"instruction": "Saluda.", "input": "", "output": "Hola, ¿cómo estás?"},
    {"instruction": "Explica qué es el IVA.", "input": "", "output": "El IVA es un impuesto al valor agregado."},
] * 4


@pytest.fixture()
def dataset(tmp_path):
    p = tmp_path / "datos.json"
    p.write_text(json.dumps({"nombre": "prueba", "data": EXAMPLES}, ensure_ascii=False), encoding="utf-8")
    return p


def recipe_dict(tiny_model, data_path, out_dir, **training):
    return {
        "model": {"source": str(tiny_model.model_dir), "quantization": "none", "device": "cpu"},
        "data": {"path": str(data_path), "eval_fraction": 0.25, "max_seq_len": 256},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
        "training": {"epochs": 4, "learning_rate": 1e-2, "batch_size": 4, "warmup_ratio": 0.0,
                     "eval_every": 2, "save_every": 2, "seed": 1, **training},
        "output": {"dir": str(out_dir), "template": "alpaca-es", "description": "prueba"},
    }


def test_label_mask_is_exactly_answer_tokens_plus_eos(tiny):
    from esllm.engine.templates import get_template
    from esllm.train.data import IGNORE, Example, tokenize
    from tests.tiny import load_plain

    _, tok = load_plain(tiny("llama").model_dir)
    tpl = get_template("alpaca-es")
    ex = Example([{"role": "user", "content": "Saluda."}], "Hola, ¿cómo estás?")
    t = tokenize(ex, tok, tpl)
    prompt_ids = tok(tpl.render(ex.messages, bos_token=tok.bos_token, eos_token=tok.eos_token),
                     add_special_tokens=False)["input_ids"]
    answer_ids = tok("Hola, ¿cómo estás?", add_special_tokens=False)["input_ids"]
    assert t.input_ids == prompt_ids + answer_ids + [tok.eos_token_id]
    assert t.labels == [IGNORE] * len(prompt_ids) + answer_ids + [tok.eos_token_id]
    assert tok.decode([x for x in t.labels if x != IGNORE][:-1]) == "Hola, ¿cómo estás?"


def test_overlong_examples_are_dropped_and_counted(tiny):
    from esllm.engine.templates import get_template
    from esllm.train.data import Example, tokenize_all
    from tests.tiny import load_plain

    _, tok = load_plain(tiny("llama").model_dir)
    exs = [Example([{"role": "user", "content": "Hola"}], "corto"),
           Example([{"role": "user", "content": "Hola"}], "largo " * 200)]
    kept, dropped = tokenize_all(exs, tok, get_template("alpaca-es"), max_len=256)
    assert dropped == 1 and len(kept) == 1 and len(kept[0].input_ids) <= 256


def test_answer_loss_equals_transformers_loss(tiny):
    import torch

    from esllm.engine.templates import get_template
    from esllm.train.data import Example, collate, tokenize
    from esllm.train.loss import answer_loss
    from tests.tiny import load_plain

    model, tok = load_plain(tiny("llama").model_dir)
    model = model.float()
    tpl = get_template("alpaca-es")
    batch = collate([tokenize(Example([{"role": "user", "content": e["instruction"]}], e["output"]), tok, tpl)
                     for e in EXAMPLES[:3]], tok.pad_token_id)
    with torch.no_grad():
        ref = model(**batch).loss
        s, n = answer_loss(model, batch)
    assert torch.allclose(s / n, ref, atol=1e-5)


def test_training_lowers_loss_writes_adapter_and_changes_engine_output(tiny, dataset, tmp_path):
    from esllm.train.recipe import parse_recipe
    from esllm.train.trainer import train

    t = tiny("llama")
    out = tmp_path / "adapters" / "mi-adaptador"
    res = train(parse_recipe(recipe_dict(t, dataset, out)), say=lambda m: None, progress=False)
    meta = json.loads((out / "esllm_adapter.json").read_text())
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert res.steps == meta["steps"] == 12 and [r["step"] for r in log] == list(range(1, 13))
    # A random 2-layer model with frozen embeddings learns slowly; a 5% drop in 12 steps is far
    # outside step-to-step noise (a broken loop, mask or optimizer leaves it flat).
    assert log[-1]["loss"] < log[0]["loss"] * 0.95, "training loss should fall"
    assert meta["final_eval_loss"] < meta["base_eval_loss"], "held-out loss should beat the base"
    assert meta["examples_used"] == 12 and meta["eval_examples"] == 4 and meta["examples_dropped"] == 0
    assert len(meta["dataset_sha256"]) == 64 and meta["template"] == "alpaca-es"
    for f in ("adapter_model.safetensors", "adapter_config.json", "loss.png", "README.md"):
        assert (out / f).is_file(), f
    assert not (out / "adapter_model.bin").exists() and not (out / "checkpoints").exists()

    engine = make_engine(t.config(adapters_dir=out.parent, contestants=[
        {"name": "base", "model": "llama", "preset": "greedy"},
        {"name": "tuned", "model": "llama", "adapter": "mi-adaptador", "preset": "greedy"}]), tmp_path)
    assert engine.registry.contestants["tuned"].available, engine.registry.contestants["tuned"].reason
    assert engine.registry.contestants["tuned"].template.name == "alpaca-es"
    msgs = [{"role": "user", "content": "¿Cuál es la capital de Ecuador?"}]
    tuned = engine.generate("tuned", msgs)
    base = engine.generate("base", msgs)
    assert tuned.text != base.text, "the trained adapter should change the engine's output"


def test_interrupt_leaves_checkpoint_and_resume_continues_step_count(tiny, dataset, tmp_path, monkeypatch):
    from esllm.train import output as O
    from esllm.train.recipe import parse_recipe
    from esllm.train.trainer import train

    t = tiny("llama")
    out = tmp_path / "adapters" / "reanudar"
    recipe = parse_recipe(recipe_dict(t, dataset, out, save_every=100))
    real_append = O.append_log

    def ctrl_c_after_step_5(out_dir, record):
        real_append(out_dir, record)
        if record["step"] == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(O, "append_log", ctrl_c_after_step_5)
    first = train(recipe, say=lambda m: None, progress=False)
    assert first.interrupted and first.steps == 5
    assert (out / "checkpoints" / "step-000005" / "adapter_model.safetensors").is_file()
    from esllm.engine.adapters import inspect_adapter

    assert "--resume" in inspect_adapter(out).reason  # the app says what to do with a half-trained folder
    monkeypatch.setattr(O, "append_log", real_append)
    with pytest.raises(Exception, match="--resume"):
        train(recipe, say=lambda m: None, progress=False)
    second = train(recipe, resume=True, say=lambda m: None, progress=False)
    assert not second.interrupted and second.steps == 12
    steps = [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))

    # Same result as an uninterrupted run with the same seed (data order and schedule are resumed).
    straight = tmp_path / "adapters" / "seguido"
    train(parse_recipe(recipe_dict(t, dataset, straight, save_every=100)), say=lambda m: None, progress=False)
    a = json.loads((out / "esllm_adapter.json").read_text())["final_train_loss"]
    b = json.loads((straight / "esllm_adapter.json").read_text())["final_train_loss"]
    assert a == pytest.approx(b, rel=1e-3)


@pytest.mark.parametrize("patch, expected", [
    ({"lora": {"r": 0}}, "lora.r"),
    ({"training": {"epocs": 3}}, "training.epocs: unknown key"),
    ({"output": {"dir": "x", "template": "chatml"}}, "unknown template"),
    ({"data": {"eval_fraction": 1.5, "path": "x"}}, "data.eval_fraction"),
])
def test_recipe_errors_say_what_to_fix(tiny, dataset, tmp_path, patch, expected):
    from esllm.train.recipe import RecipeError, parse_recipe

    d = recipe_dict(tiny("llama"), dataset, tmp_path / "o")
    for k, v in patch.items():
        d[k] = {**d[k], **v}
    with pytest.raises(RecipeError, match=expected):
        parse_recipe(d)


def test_cli_reports_bad_dataset_with_item_number(tiny, tmp_path, cli):
    bad = tmp_path / "malo.json"
    bad.write_text(json.dumps([{"instruction": "Hola", "output": "Hola"}, {"instruction": "", "output": "x"}]))
    rec = recipe_dict(tiny("llama"), bad, tmp_path / "o")
    import yaml

    (tmp_path / "r.yaml").write_text(yaml.safe_dump(rec))
    p = cli("train", tmp_path / "r.yaml", "training.max_steps=1")
    assert p.returncode == 2 and "item 1" in p.stderr and "instruction" in p.stderr


def test_shipped_recipes_parse():
    from esllm.train.recipe import load_recipe

    for f in (REPO / "configs" / "recipes").glob("*.yaml"):
        r = load_recipe(f)
        assert r.output.dir.startswith("adapters/")
    r = load_recipe(REPO / "configs" / "recipes" / "estudio-7b-qlora.yaml")
    assert (r.lora.r, r.lora.alpha, r.lora.dropout, r.training.warmup_ratio, r.training.optimizer) == \
        (256, 256, 0.2, 0.3, "paged_adamw_8bit")
