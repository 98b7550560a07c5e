"""Adapter folders: broken ones are reported and skipped, new ones appear on refresh, own templates win."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from esllm.engine.adapters import WEIGHTS, inspect_adapter
from tests import tiny as tm
from tests.helpers import PROMPT, make_engine

# folder name -> a piece of the reason the engine must give
BROKEN = {
    "sin-config": "falta adapter_config.json",
    "json-roto": "adapter_config.json no es JSON válido",
    "no-lora": "peft_type es 'PREFIX_TUNING'; solo se admiten adaptadores LORA",
    "solo-bin": "solo tiene pesos pickle (adapter_model.bin)",
    "sin-pesos": f"falta {WEIGHTS}",
    "truncado": "está truncado o dañado",
    "cabecera-rota": "dañado o truncado",
    "plantilla-rota": "chat_template.jinja no es una plantilla Jinja válida",
    "de-falcon": "la capa transformer.h.0.self_attention.query_key_value no existe",
    "mas-ancho": "incompatible con este modelo base",
}


def make_broken(dest: Path, llama, falcon) -> None:
    """Next to a good copy of a1 ("bueno"), one folder for each way an adapter can be broken."""
    a1 = llama.adapters_dir / "a1"
    shutil.copytree(a1, dest / "bueno")

    def variant(name: str) -> Path:
        shutil.copytree(a1, dest / name)
        return dest / name

    (variant("sin-config") / "adapter_config.json").unlink()
    (variant("json-roto") / "adapter_config.json").write_text('{"peft_type": "LORA", r: 4', encoding="utf-8")
    cfg_path = variant("no-lora") / "adapter_config.json"
    cfg_path.write_text(json.dumps(dict(json.loads(cfg_path.read_text()), peft_type="PREFIX_TUNING")))
    bin_only = variant("solo-bin")
    torch.save({"x": torch.zeros(2)}, bin_only / "adapter_model.bin")
    (bin_only / WEIGHTS).unlink()
    (variant("sin-pesos") / WEIGHTS).unlink()
    w = variant("truncado") / WEIGHTS
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    w = variant("cabecera-rota") / WEIGHTS
    w.write_bytes(data[:20])
    (variant("plantilla-rota") / "chat_template.jinja").write_text("{% for m in messages %}", encoding="utf-8")
    shutil.copytree(falcon.adapters_dir / "a1", dest / "de-falcon")
    tm.build_wide_llama_adapter(dest / "mas-ancho")


@pytest.fixture(scope="module")
def broken_engine(tiny, tmp_path_factory):
    llama, falcon = tiny("llama"), tiny("falcon")
    root = tmp_path_factory.mktemp("broken")
    make_broken(root / "adapters", llama, falcon)
    return make_engine(llama.config(adapters_dir=root / "adapters", contestants=[
        {"name": "llama-base", "model": "llama"},
        {"name": "roto", "model": "llama", "adapter": "truncado"},
        {"name": "ausente", "model": "llama", "adapter": "no-existe"},
    ]), root)


def test_each_broken_adapter_is_reported_with_its_reason(broken_engine):
    errors = broken_engine.registry.adapter_errors
    assert set(errors) == set(BROKEN), errors
    for name, reason in BROKEN.items():
        assert reason in errors[name], (name, errors[name])
    assert set(broken_engine.registry.adapters) == {"bueno"}


def test_broken_adapters_leave_the_rest_working(broken_engine, reference):
    eng = broken_engine
    assert set(eng.registry.bases["llama"].model.peft_config) == {"bueno"}  # no half-loaded adapter left behind
    assert eng.registry.contestants["llama + bueno"].available and eng.registry.contestants["llama + bueno"].auto
    for c in eng.registry.contestants.values():  # a contestant on a broken folder is shown unavailable, with the reason
        if c.adapter in BROKEN:
            assert not c.available and BROKEN[c.adapter] in c.reason, (c.name, c.reason)
    assert eng.generate("llama + bueno", PROMPT).text == reference("llama", "a1").text
    assert eng.generate("llama-base", PROMPT).text == reference("llama").text


def test_listed_contestants_on_broken_or_missing_adapters_say_why(broken_engine):
    roto, ausente = broken_engine.registry.contestants["roto"], broken_engine.registry.contestants["ausente"]
    assert not roto.available and roto.reason.startswith("adaptador truncado:") and "truncado o dañado" in roto.reason
    assert not ausente.available and "no existe la carpeta" in ausente.reason and "no-existe" in ausente.reason
    with pytest.raises(Exception, match="El concursante roto no está disponible: adaptador truncado"):
        broken_engine.generate("roto", PROMPT)


def test_llama_adapter_on_falcon_is_refused(tiny, tmp_path, reference):
    llama, falcon = tiny("llama"), tiny("falcon")
    shutil.copytree(llama.adapters_dir / "a2", tmp_path / "adapters" / "de-llama")
    eng = make_engine(falcon.config(adapters_dir=tmp_path / "adapters", contestants=[
        {"name": "f", "model": "falcon"}, {"name": "f+llama", "model": "falcon", "adapter": "de-llama"}]), tmp_path)
    assert "incompatible con este modelo base: la capa model.layers.0.self_attn.q_proj no existe" \
        in eng.registry.adapter_errors["de-llama"]
    assert not eng.registry.contestants["f+llama"].available
    assert eng.generate("f", PROMPT).text == reference("falcon").text


def test_inspect_reads_config_and_metadata(tiny, tmp_path):
    a = shutil.copytree(tiny("gemma").adapters_dir / "a1", tmp_path / "con-meta")
    (a / "esllm_adapter.json").write_text(json.dumps({"template": "alpaca-es", "recipe": "x"}), encoding="utf-8")
    info = inspect_adapter(a)
    assert info.ok, info.reason
    assert (info.r, info.alpha, info.target_modules) == (4, 8, ["q_proj", "v_proj"])
    assert info.base_hint == str(tiny("gemma").model_dir)
    assert info.template.name == "alpaca-es" and info.meta["recipe"] == "x"
    assert len(info.sha256) == 64 and any(".lora_B." in k for k in info.shapes)
    assert not inspect_adapter(tmp_path / "no-hay").ok


def test_adapter_own_template_wins(tiny, tmp_path):
    """chat_template.jinja in the adapter folder beats the base's template; esllm_adapter.json's
    `template` names a built-in one."""
    t = tiny("llama")
    ad = t.copy_adapters(tmp_path / "adapters")
    (ad / "a1" / "chat_template.jinja").write_text("{{ bos_token }}P: {{ messages[-1].content }}\nR:", encoding="utf-8")
    (ad / "a1" / "esllm_adapter.json").write_text(json.dumps({"stop_strings": ["\nP:"]}), encoding="utf-8")
    (ad / "a2" / "esllm_adapter.json").write_text(json.dumps({"template": "alpaca-es"}), encoding="utf-8")
    eng = make_engine(t.config(adapters_dir=ad), tmp_path)
    tok = eng.registry.bases["llama"].tokenizer
    own = eng.generate("llama-a1", PROMPT)
    assert own.template == "a1 (propia)"
    assert eng.registry.contestants["llama-a1"].template.stop_strings == ("\nP:",)
    assert own.prompt_tokens == len(tok("<s>P: Hola, ¿cómo estás?\nR:", add_special_tokens=False)["input_ids"])
    assert eng.generate("llama-a2", PROMPT).template == "alpaca-es"
    assert eng.generate("llama-base", PROMPT).template == "llama-2"


def test_refresh_adds_reloads_and_removes_without_restart(tiny, tmp_path, reference):
    t = tiny("llama")
    ad = tmp_path / "adapters"
    shutil.copytree(t.adapters_dir / "a1", ad / "a1")
    eng = make_engine(t.config(adapters_dir=ad, contestants=[
        {"name": "llama-base", "model": "llama"}, {"name": "llama-a1", "model": "llama", "adapter": "a1"}]), tmp_path)
    assert set(eng.registry.contestants) == {"llama-base", "llama-a1"}

    shutil.copytree(t.adapters_dir / "a2", ad / "a3")  # a new folder appears
    report = eng.refresh()
    assert (report.added, report.reloaded, report.removed, report.errors) == (["a3"], [], [], {})
    new = eng.registry.contestants["llama + a3"]
    assert new.available and new.auto and new.adapter == "a3"
    assert eng.generate("llama + a3", PROMPT).text == reference("llama", "a2").text

    assert eng.refresh().added == []  # nothing changed: nothing reloaded

    shutil.rmtree(ad / "a3")  # the folder is replaced by other weights
    shutil.copytree(t.adapters_dir / "a1", ad / "a3")
    report = eng.refresh()
    assert (report.added, report.reloaded, report.removed) == ([], ["a3"], [])
    assert eng.generate("llama + a3", PROMPT).text == reference("llama", "a1").text

    shutil.rmtree(ad / "a3")
    report = eng.refresh()
    assert report.removed == ["a3"]
    assert "llama + a3" not in eng.registry.contestants and "a3" not in eng.registry.adapters
    assert set(eng.registry.bases["llama"].model.peft_config) == {"a1"}


def test_base_still_answers_after_its_last_adapter_is_removed(tiny, tmp_path, reference):
    """Regression: peft's disable_adapter() failed (KeyError) on a PeftModel left with no adapter."""
    from peft import PeftModel

    t = tiny("llama")
    ad = tmp_path / "adapters"
    shutil.copytree(t.adapters_dir / "a1", ad / "a1")
    eng = make_engine(t.config(adapters_dir=ad, contestants=[
        {"name": "llama-base", "model": "llama"}, {"name": "llama-a1", "model": "llama", "adapter": "a1"}]), tmp_path)
    raw = eng.registry.bases["llama"].model.get_base_model()

    shutil.rmtree(ad / "a1")  # a listed adapter disappears: its contestant says why
    eng.refresh()
    assert not eng.registry.contestants["llama-a1"].available and "no existe la carpeta" in eng.registry.contestants["llama-a1"].reason
    assert eng.generate("llama-base", PROMPT).text == reference("llama").text
    assert eng.registry.bases["llama"].model is raw  # no adapter left: the plain model, never reloaded
    assert not any("lora" in n for n, _ in raw.named_modules())

    shutil.copytree(t.adapters_dir / "a1", ad / "a1")  # and adapters can come back
    assert eng.refresh().added == ["a1"]
    assert isinstance(eng.registry.bases["llama"].model, PeftModel) and eng.registry.bases["llama"].model.get_base_model() is raw
    assert eng.generate("llama-a1", PROMPT).text == reference("llama", "a1").text
    assert eng.generate("llama-base", PROMPT).text == reference("llama").text


def test_scoring_uses_each_contestants_own_weights_and_hashes_trace_them(engine, tiny):
    """engine.next_token_logprobs(name, ...) (what evaluations score with) runs the adapter of that
    contestant, or the base alone, equal to peft loading that adapter alone; engine.hashes(name) names
    what it ran on."""
    eng = engine("llama")
    t = tiny("llama")
    text = "Hola, ¿cómo estás?"
    logp = {name: eng.next_token_logprobs(name, [text], chat=False)[0][0]
            for name in ("llama-base", "llama-a1", "llama-a2", "llama-base")}
    assert abs(logp["llama-base"] - logp["llama-a1"]).max() > 0.05
    assert abs(logp["llama-a1"] - logp["llama-a2"]).max() > 0.05
    model, tok = tm.load_with_adapter(t.model_dir, t.adapters_dir / "a2")
    bos = tok.bos_token if eng.registry.bases["llama"].tok.add_bos else ""  # raw text: BOS only where the tokenizer adds it
    want = torch.log_softmax(tm.last_logits(model, tok, bos + text), dim=-1)
    assert abs(logp["llama-a2"] - want.numpy()).max() < 2e-3
    h = eng.hashes("llama-a1")
    assert h["adapter"] == "a1" and len(h["adapter_sha256"]) == 64 and h["base"].endswith("model")
    assert eng.hashes("llama-base")["adapter"] is None
