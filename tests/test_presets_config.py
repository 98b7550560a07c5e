"""Generation presets and parameter checks; the contestants YAML and its error messages."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from esllm import EsllmError
from esllm.engine.config import ConfigError, load_config, parse_config
from esllm.engine.presets import PRESETS, GenParams, preset_choices
from tests.helpers import REPO

# ---------------------------------------------------------------- presets


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_with_its_own_values(name):
    p = GenParams.build(name, max_new_tokens_cap=512)
    assert p.preset == name and p.max_new_tokens == 256
    for key, value in PRESETS[name][1].items():
        assert getattr(p, key) == value, key
    assert GenParams(**p.as_dict()) == p


def test_preset_choices_list_every_preset_with_a_spanish_label():
    assert [n for _, n in preset_choices()] == list(PRESETS)
    assert dict((n, label) for label, n in preset_choices())["beam"] == "Búsqueda en haz (beam search)"


def test_caps_are_applied_not_refused():
    assert GenParams.build("greedy", {"max_new_tokens": 5000}, max_new_tokens_cap=100).max_new_tokens == 100
    assert GenParams.build("greedy", None, max_new_tokens_cap=100).max_new_tokens == 100  # default 256, capped
    assert GenParams.build("greedy", {"max_new_tokens": 7}, max_new_tokens_cap=100).max_new_tokens == 7


def test_overrides_merge_and_empty_values_are_ignored():
    p = GenParams.build("top-p", {"top_p": 0.5, "temperature": None, "seed": "", "top_k": 3.0},
                        max_new_tokens_cap=64)
    assert (p.top_p, p.temperature, p.seed, p.top_k) == (0.5, 1.0, None, 3)
    assert isinstance(p.top_k, int)


@pytest.mark.parametrize("preset, overrides, message", [
    ("rapido", {}, "Preset desconocido 'rapido'"),
    ("greedy", {"do_sample": True}, "Parámetro desconocido 'do_sample'"),
    ("greedy", {"max_new_tokens": 0}, "max_new_tokens debe estar entre 1"),
    ("greedy", {"max_new_tokens": 2.5}, "max_new_tokens debe ser un entero"),
    ("greedy", {"max_new_tokens": "10"}, "max_new_tokens debe ser un número"),
    ("greedy", {"max_new_tokens": True}, "max_new_tokens debe ser un número"),
    ("temperature", {"temperature": math.nan}, "temperature debe estar entre"),
    ("temperature", {"temperature": 0}, "temperature debe estar entre 0.01 y 5.0"),
    ("top-p", {"top_p": 1.5}, "top_p debe estar entre"),
    ("top-k", {"top_k": -1}, "top_k debe estar entre 0 y 1000"),
    ("greedy", {"repetition_penalty": 0.5}, "repetition_penalty debe estar entre 1.0 y 2.0"),
    ("greedy", {"seed": -1}, "seed debe estar entre"),
    ("beam", {"num_beams": 1}, "La búsqueda en haz necesita num_beams ≥ 2"),
    ("beam", {"num_beams": 9}, "num_beams debe estar entre 1 y 8"),
    ("contrastive", {"top_k": 1}, "La búsqueda contrastiva necesita top_k ≥ 2"),
    ("contrastive", {"penalty_alpha": 0}, "La búsqueda contrastiva necesita top_k ≥ 2 y penalty_alpha > 0"),
])
def test_bad_parameters_are_refused_with_a_clear_message(preset, overrides, message):
    with pytest.raises(EsllmError, match=message.replace("(", r"\(")):
        GenParams.build(preset, overrides, max_new_tokens_cap=512)


# ---------------------------------------------------------------- config


def minimal(**extra):
    return {"models": {"m": {"source": "org/modelo"}}, "contestants": [{"name": "a", "model": "m"}], **extra}


def test_minimal_config_gets_documented_defaults():
    cfg = parse_config(minimal())
    m = cfg.models["m"]
    assert (m.quantization, m.device, m.template) == ("nf4", "auto", "alpaca-es")
    assert cfg.contestants[0].preset == "greedy" and cfg.contestants[0].adapter is None
    assert cfg.limits.max_new_tokens == 512 and cfg.auto_contestants is True


def config_error(data) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(data, Path("mi.yaml"))
    msg = str(e.value)
    assert msg.startswith("Configuración inválida en mi.yaml")
    return msg


@pytest.mark.parametrize("change, location, what", [
    (lambda d: d.update(modelos={}), "modelos", "unknown key; remove it or check its spelling"),
    (lambda d: d["models"]["m"].update(quantizaton="none"), "models.m.quantizaton", "unknown key"),
    (lambda d: d["contestants"][0].update(preset="rapido"), "contestants.0.preset", "unknown preset 'rapido'"),
    (lambda d: d["contestants"][0].update(template="chatml"), "contestants.0.template", "unknown template 'chatml'"),
    (lambda d: d["models"]["m"].update(template="chatml"), "models.m.template", "unknown template 'chatml'"),
    (lambda d: d["models"]["m"].update(quantization="int4"), "models.m.quantization", "'nf4', 'int8' or 'none'"),
    (lambda d: d["contestants"][0].pop("model"), "contestants.0.model", "required key is missing"),
    (lambda d: d["contestants"][0].update(name="a/b"), "contestants.0.name", "name must be"),
    (lambda d: d.update(limits={"max_prompt_tokens": 4}), "limits.max_prompt_tokens", "greater than or equal to 8"),
])
def test_config_errors_name_the_location(change, location, what):
    data = minimal()
    change(data)
    msg = config_error(data)
    assert f"  - {location}: " in msg and what in msg


def test_unknown_model_reference_names_the_contestant():
    data = minimal()
    data["contestants"].append({"name": "b", "model": "llama"})
    msg = config_error(data)
    assert "contestants[1] (b): model 'llama' is not defined under models: (defined: ['m'])" in msg


def test_duplicate_contestant_name():
    data = minimal()
    data["contestants"].append({"name": "a", "model": "m", "adapter": "x"})
    assert "contestants[1]: the name 'a' is used twice" in config_error(data)


@pytest.mark.parametrize("adapter", ["../../../etc", "/etc", "sub/carpeta", "..", ".", "a\\b", " "])
def test_an_adapter_that_is_not_a_folder_name_under_adapters_dir_is_refused(adapter, tmp_path, cli):
    """A contestant's adapter is a folder *name* under adapters_dir: a path (which could leave that folder) is
    refused by parse_config and by `python -m esllm check-config`, naming the key."""
    import yaml

    data = minimal()
    data["contestants"].append({"name": "b", "model": "m", "adapter": adapter})
    msg = config_error(data)
    assert "  - contestants.1.adapter: " in msg and "nombre de una carpeta dentro de adapters_dir" in msg
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    r = cli("check-config", path)
    assert r.returncode == 2 and "contestants.1.adapter" in r.stderr and "adapters_dir" in r.stderr, r
    assert "OK" not in r.stdout
    ok = minimal()
    ok["contestants"].append({"name": "b", "model": "m", "adapter": "mi-adaptador.v2"})
    assert parse_config(ok).contestants[1].adapter == "mi-adaptador.v2"


def test_a_contestant_name_with_a_trailing_newline_is_refused():
    data = minimal()
    data["contestants"][0]["name"] = "a\n"
    assert "  - contestants.0.name: name must be" in config_error(data)


def test_every_problem_is_listed_at_once():
    data = minimal(extra=1)
    data["contestants"][0]["preset"] = "rapido"
    lines = config_error(data).splitlines()
    assert len(lines) == 3 and any("extra" in x for x in lines) and any("preset" in x for x in lines)


@pytest.mark.parametrize("data", [None, [], "models: x"])
def test_config_must_be_a_mapping(data):
    assert "must be a YAML mapping" in config_error(data)


def test_empty_models_or_contestants_are_refused():
    assert "list at least one base model" in config_error({"models": {}, "contestants": [{"name": "a", "model": "m"}]})
    assert "list at least one contestant" in config_error(minimal(contestants=[]))


def test_bad_yaml_file_names_the_file_and_line(tmp_path):
    p = tmp_path / "roto.yaml"
    p.write_text("models:\n  m:\n    source: [sin cerrar\ncontestants: []\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(p) in str(e.value) and "YAML syntax error" in str(e.value) and "line" in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="No existe el archivo de configuración .*nada.yaml"):
        load_config(tmp_path / "nada.yaml")


def test_yaml_file_errors_name_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("models:\n  m: {source: x}\ncontestants:\n  - {name: a, model: m, preset: lento}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value).splitlines() == [f"Configuración inválida en {p}:",
                                         "  - contestants.0.preset: unknown preset 'lento'; choose one of "
                                         f"{sorted(PRESETS)}"]


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    cfg = load_config(path)
    assert cfg.contestants


def test_default_config_comes_from_env_or_repo(tmp_path, monkeypatch):
    assert load_config().models["gemma-3-270m"].source == "bundled:gemma-3-270m"
    p = tmp_path / "otra.yaml"
    p.write_text("models:\n  m: {source: x}\ncontestants:\n  - {name: solo, model: m}\n", encoding="utf-8")
    monkeypatch.setenv("ESLLM_CONFIG", str(p))
    assert [c.name for c in load_config().contestants] == ["solo"]


def test_adapters_dir_is_relative_to_root_unless_absolute_or_overridden(tmp_path, monkeypatch):
    cfg = parse_config(minimal(adapters_dir="mis_adaptadores"))
    assert cfg.resolve_adapters_dir(tmp_path) == tmp_path / "mis_adaptadores"
    assert parse_config(minimal(adapters_dir="/srv/a")).resolve_adapters_dir(tmp_path) == Path("/srv/a")
    monkeypatch.setenv("ESLLM_ADAPTERS_DIR", "/otro")
    assert cfg.resolve_adapters_dir(tmp_path) == Path("/otro")
