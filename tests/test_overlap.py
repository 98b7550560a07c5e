"""`python -m esllm check-overlap` (issue 14): rating prompts found in an adapter's training data, exactly or nearly;
the bundled prompt sets pass against the bundled adapters' and recipes' data."""

from __future__ import annotations

import json

from esllm.study.overlap import check_overlap, compare, training_sources

PROMPTS = "\n".join(json.dumps(r, ensure_ascii=False) for r in [
    {"id": "p1", "category": "basicas", "text": "¿Por qué el cielo se ve azul durante el día?"},
    {"id": "p2", "category": "basicas", "text": "¿Qué es la fracción básica desgravada del impuesto a la renta?"},
    {"id": "p3", "category": "basicas", "text": "Escribe un haiku sobre un volcán dormido."},
    {"id": "p4", "category": "basicas", "text": "¿Qué es el IVA?"},
])
TRAIN = {"data": [
    {"instruction": "¿POR QUÉ el cielo se ve azul, durante el día?", "input": "", "output": "Por la dispersión."},
    {"instruction": "¿Cuál es la fracción básica desgravada del impuesto a la renta?", "input": "", "output": "…"},
    {"instruction": "Resume este texto.", "input": "¿Qué es el IVA y quién lo cobra en el Ecuador?", "output": "…"},
]}


def planted(tmp_path):
    (tmp_path / "prompts.jsonl").write_text(PROMPTS, encoding="utf-8")
    (tmp_path / "train.json").write_text(json.dumps(TRAIN, ensure_ascii=False), encoding="utf-8")
    folder = tmp_path / "adapters" / "mi-adaptador"
    folder.mkdir(parents=True)
    (folder / "esllm_adapter.json").write_text(json.dumps({"recipe": {"data": {"path": str(tmp_path / "train.json")}}}),
                                               encoding="utf-8")
    return tmp_path / "prompts.jsonl", tmp_path / "adapters"


def test_finds_a_planted_duplicate_and_a_near_one(tmp_path):
    prompts, adapters = planted(tmp_path)
    sources = training_sources(adapters)
    assert list(sources.values()) == [["mi-adaptador"]]
    rep = check_overlap([prompts], sources)
    found = {(f.prompt_id, f.kind, f.example, f.field) for f in rep.findings}
    assert found == {("p1", "exacta", 0, "instruction"), ("p2", "casi", 1, "instruction")}, rep.findings
    assert rep.findings[0].adapters == ("mi-adaptador",) and rep.prompts == 4 and rep.examples == 3
    assert compare("¿Qué es el IVA?", TRAIN["data"][2]["input"]) is None  # short and generic


def test_cli_exit_codes_and_the_bundled_data_passes(tmp_path, cli):
    prompts, adapters = planted(tmp_path)
    r = cli("check-overlap", "--prompts", prompts, "--adapters-dir", adapters)
    assert r.returncode == 1 and "exacta (1.00)" in r.stdout and "p2" in r.stdout and "mi-adaptador" in r.stdout
    r = cli("check-overlap")  # the bundled prompt sets against every adapter's and recipe's training data
    assert r.returncode == 0, r.stdout
    assert "data/instrucciones-es/train.json" in r.stdout and "data/tributario-ec/train.json" in r.stdout
    assert "Sin coincidencias" in r.stdout
