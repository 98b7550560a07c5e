"""Early stopping and the best checkpoint: with a planted held-out loss curve that is lowest at step k,
the run stops after `patience` evaluations without improvement and the exported adapter holds the
step-k weights (also across an interruption and --resume); the metadata says which step and why."""

from __future__ import annotations

import json

import pytest

EXAMPLES = [
    {"instruction": "¿Cuál es la capital de Ecuador?", "input": "", "output": "La capital de Ecuador es Quito."},
    {"instruction": "Saluda.", "input": "", "output": "Hola, ¿cómo estás?"},
    {"instruction": "Explica qué es el IVA.", "input": "", "output": "El IVA es un impuesto al valor agregado."},
    {"instruction": "Resume el texto.", "input": "El niño come una manzana roja.", "output": "Un niño come."},
] * 4

# base (no adapter), then one value per evaluation: lowest at step 3, rising after it.
PLANTED = [5.0, 4.0, 3.0, 2.0, 2.5, 2.9, 3.3, 3.6, 4.0]
K = 3


@pytest.fixture()
def dataset(tmp_path):
    p = tmp_path / "datos.json"
    p.write_text(json.dumps(EXAMPLES, ensure_ascii=False), encoding="utf-8")
    return p


def recipe(tiny_model, data_path, out_dir, **training):
    from esllm.train.recipe import parse_recipe

    return parse_recipe({
        "model": {"source": str(tiny_model.model_dir), "quantization": "none", "device": "cpu"},
        "data": {"path": str(data_path), "eval_fraction": 0.25, "max_seq_len": 256},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "training": {"epochs": 10, "learning_rate": 1e-2, "batch_size": 4, "warmup_ratio": 0.0,
                     "eval_every": 1, "save_every": 100, "seed": 1, "patience": 2, **training},
        "output": {"dir": str(out_dir), "template": "alpaca-es"},
    })


@pytest.fixture()
def planted(monkeypatch):
    """Replace the held-out evaluation by the planted curve; remember the LoRA weights at each call."""
    from peft import get_peft_model_state_dict

    from esllm.train import trainer

    seen: list[dict] = []

    def fake_eval(model, examples, pad_id, batch_size):
        seen.append({k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()})
        return PLANTED[len(seen) - 1]

    monkeypatch.setattr(trainer, "eval_loss", fake_eval)
    return seen


def exported_weights(out):
    from safetensors.torch import load_file

    return load_file(str(out / "adapter_model.safetensors"))


def same(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k].float(), b[k].float()) for k in a)


def test_planted_curve_exports_step_k_and_stops_after_patience(tiny, dataset, tmp_path, planted):
    from esllm.train.trainer import train

    out = tmp_path / "temprano"
    res = train(recipe(tiny("llama"), dataset, out), say=lambda m: None, progress=False)
    # evaluations at steps 1..5: best at 3, then two worse ones (patience 2) -> stop at step 5
    assert res.stopped_early and res.steps == K + 2 and res.exported_step == K
    w = exported_weights(out)
    assert same(w, planted[K]), "the exported adapter must be the step-k weights"
    assert not same(w, planted[K + 2]), "not the last step's weights"
    meta = json.loads((out / "esllm_adapter.json").read_text())
    assert meta["exported_step"] == K and meta["stopped_early"] is True
    assert meta["final_eval_loss"] == PLANTED[K] and meta["last_step_eval_loss"] == PLANTED[K + 2]
    assert f"paso {K}" in meta["export_reason"] and "paciencia 2" in meta["export_reason"]
    assert meta["recipe"]["training"]["patience"] == 2
    assert f"paso {K}" in (out / "README.md").read_text()
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["best_step"] for r in log] == [1, 2, 3, 3, 3]
    assert not (out / "checkpoints").exists()


def test_export_last_keeps_the_last_step(tiny, dataset, tmp_path, planted):
    from esllm.train.trainer import train

    out = tmp_path / "ultimo"
    res = train(recipe(tiny("llama"), dataset, out, patience=None, export="last", max_steps=5),
                say=lambda m: None, progress=False)
    assert res.steps == 5 and res.exported_step == 5 and not res.stopped_early
    assert same(exported_weights(out), planted[5])


def test_resume_after_the_best_step_keeps_the_same_best(tiny, dataset, tmp_path, planted, monkeypatch):
    from esllm.train import output as O
    from esllm.train.trainer import train

    out = tmp_path / "reanudar"
    rec = recipe(tiny("llama"), dataset, out, save_every=1)
    real_append = O.append_log

    def ctrl_c_after_step_4(out_dir, record):
        real_append(out_dir, record)
        if record["step"] == K + 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(O, "append_log", ctrl_c_after_step_4)
    first = train(rec, say=lambda m: None, progress=False)
    assert first.interrupted and first.steps == K + 1
    assert (out / "checkpoints" / f"best-step-{K:06d}").is_dir()
    step_k = planted[K]
    monkeypatch.setattr(O, "append_log", real_append)
    del planted[:]  # the resumed run evaluates the base (reads PLANTED[4]), then step 5 (PLANTED[5])
    planted.extend([None] * (K + 1))
    second = train(rec, resume=True, say=lambda m: None, progress=False)
    assert second.steps == K + 2 and second.stopped_early and second.exported_step == K
    assert same(exported_weights(out), step_k)


def test_eos_weight_counts_the_eos_token_that_many_times(tiny):
    import torch

    from esllm.engine.templates import get_template
    from esllm.train.data import IGNORE, Example, collate, tokenize
    from esllm.train.loss import answer_loss
    from tests.tiny import load_plain

    model, tok = load_plain(tiny("llama").model_dir)
    model = model.float()
    batch = collate([tokenize(Example([{"role": "user", "content": e["instruction"]}], e["output"]), tok,
                              get_template("alpaca-es")) for e in EXAMPLES[:3]], tok.pad_token_id)
    with torch.no_grad():
        plain, n = answer_loss(model, batch)
        same, _ = answer_loss(model, batch, tok.eos_token_id, 1.0)
        heavy, n2 = answer_loss(model, batch, tok.eos_token_id, 5.0)
        logits = model(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE
    ce = torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="none")
    eos = labels[keep] == tok.eos_token_id
    assert int(eos.sum()) == 3 and n == n2
    assert float(same) == pytest.approx(float(plain))
    assert float(heavy) == pytest.approx(float(ce.sum() + 4 * ce[eos].sum()), rel=1e-4)
