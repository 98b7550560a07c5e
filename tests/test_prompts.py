"""Prompt-set files: the bundled sets are well formed; bad imports are refused with line and reason."""

from __future__ import annotations

from collections import Counter

import pytest

from esllm import EsllmError
from esllm.study.prompts import PromptFileError, bundled_sets, parse_prompt_file, parse_prompts


def test_bundled_general_set_has_the_study_shape():
    rows = parse_prompt_file(bundled_sets()["general"])
    cats = Counter(r.category for r in rows)
    assert cats == {"comprension_basica": 10, "tareas_complejas": 10, "creativas": 5, "contextual": 25}
    series = Counter(r.series for r in rows if r.series)
    assert len(series) == 5 and set(series.values()) == {5}


def test_bundled_tax_set_has_the_study_shape():
    rows = parse_prompt_file(bundled_sets()["tributario-ec"])
    assert Counter(r.category for r in rows) == {"basicas": 15, "complejas": 15}


GOOD = '{"id": "a1", "category": "basicas", "text": "¿Qué es el RUC?"}\n'


@pytest.mark.parametrize("content, fmt, expected", [
    (GOOD + "{no json\n", "jsonl", "línea 2: JSON inválido"),
    (GOOD + GOOD, "jsonl", "línea 2: el id 'a1' ya apareció en la línea 1"),
    ('{"id": "b", "category": "x", "text": ""}\n', "jsonl", "línea 1: 'text' está vacío"),
    ('{"id": "b", "category": "x", "text": "t", "extra": 1}\n', "jsonl", "claves desconocidas"),
    ('{"id": "b", "category": "x", "text": "t", "series": "s", "turn": 2}\n', "jsonl", "turnos 1..1"),
    ('{"id": "b", "category": "x", "text": "t", "series": "s", "turn": "dos"}\n', "jsonl", "'turn' debe ser un entero"),
    ('{"id": "b", "category": "x", "text": "t", "turn": 1}\n', "jsonl", "'turn' sin 'series'"),
    ("id,category,text\nb,x,hola,extra\n", "csv", "línea 2: más columnas"),
    ("id,text\nb,hola\n", "csv", "cabecera"),
    ("", "jsonl", "ningún prompt"),
])
def test_bad_files_are_rejected_with_line_and_reason(content, fmt, expected):
    with pytest.raises(PromptFileError) as e:
        parse_prompts(content, fmt)
    assert expected in str(e.value) and "no se importó nada" in str(e.value)


def test_csv_with_series_is_read():
    rows = parse_prompts("id,category,series,turn,text,reference\n"
                         "c1,contextual,s1,1,Primer turno,\nc2,contextual,s1,2,\"Segundo, turno\",\n", "csv")
    assert [(r.id, r.series, r.turn, r.text) for r in rows] == [("c1", "s1", 1, "Primer turno"),
                                                                ("c2", "s1", 2, "Segundo, turno")]


def _jsonl(n: int, text: str = "¿Qué es el RUC?") -> str:
    import json

    return "".join(json.dumps({"id": f"p{i}", "category": "basicas", "text": text}, ensure_ascii=False) + "\n"
                   for i in range(n))


def _imported(store) -> tuple[int, int]:
    from sqlalchemy import func, select

    from esllm.store.models import Prompt, PromptSet

    with store.Session() as s:
        return tuple(s.scalar(select(func.count()).select_from(m)) for m in (PromptSet, Prompt))


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_import_over_the_row_cap_is_refused_and_writes_nothing(fmt, tmp_path, store):
    from esllm.study import admin
    from esllm.study.prompts import MAX_ROWS

    rows = _jsonl(MAX_ROWS + 1) if fmt == "jsonl" else "id,category,text\n" + "".join(
        f"p{i},basicas,hola\n" for i in range(MAX_ROWS + 1))
    path = tmp_path / f"grande.{fmt}"
    path.write_text(rows, encoding="utf-8")
    with store.Session() as s, pytest.raises(PromptFileError, match=f"no se importó nada: el archivo tiene más de {MAX_ROWS} prompts"):
        admin.import_prompts(s, "grande", path, description="")
    assert _imported(store) == (0, 0)
    assert len(parse_prompts(_jsonl(MAX_ROWS), "jsonl")) == MAX_ROWS  # exactly the cap is fine


def test_an_import_over_the_byte_cap_is_refused_before_reading_and_writes_nothing(tmp_path, store):
    from esllm.study import admin
    from esllm.study.prompts import MAX_FILE_BYTES, MAX_ROWS

    text = "x" * 7000  # under MAX_TEXT: only the file's size is wrong
    n = MAX_FILE_BYTES // 7000 + 1
    assert n < MAX_ROWS
    path = tmp_path / "pesado.jsonl"
    path.write_text(_jsonl(n, text), encoding="utf-8")
    assert path.stat().st_size > MAX_FILE_BYTES
    with store.Session() as s, pytest.raises(PromptFileError, match=r"no se importó nada: el archivo pesa [\d.]+ bytes y "
                                                                    r"el máximo es 2\.097\.152 bytes \(2 MB\)"):
        admin.import_prompts(s, "pesado", path, description="")
    assert _imported(store) == (0, 0)
    with pytest.raises(PromptFileError, match="el máximo es 2.097.152 bytes"):  # the same cap on text
        parse_prompts(_jsonl(n, text), "jsonl")


def test_a_set_grown_past_the_row_cap_by_a_second_import_is_refused(tmp_path, store, monkeypatch):
    from esllm.study import admin, prompts

    monkeypatch.setattr(prompts, "MAX_ROWS", 3)
    (tmp_path / "a.jsonl").write_text(_jsonl(3), encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(_jsonl(3).replace('"p', '"q'), encoding="utf-8")
    with store.Session() as s:
        admin.import_prompts(s, "cap", tmp_path / "a.jsonl", description="")
        s.commit()
        with pytest.raises(EsllmError, match="tendría 6 prompts y el máximo es 3"):
            admin.import_prompts(s, "cap", tmp_path / "b.jsonl", description="")
        s.rollback()
        assert admin.import_prompts(s, "cap", tmp_path / "a.jsonl", description="").new == 0  # re-import: fine
    assert _imported(store) == (1, 3)


@pytest.mark.parametrize("content, expected", [
    ('{"id": "p1\\n", "category": "basicas", "text": "t"}\n', "'id' debe ser"),
    ('{"id": "p1", "category": "basicas\\n", "text": "t"}\n', "'category' debe ser"),
    ("id,category,text\np1,basicas," + "x" * 200_000 + "\n", "CSV mal formado"),
    ("id,category,text\np1,basicas,a\x00b\n", "línea 2: 'text' contiene un carácter nulo"),
    ('{"id": "p1", "category": "basicas", "text": "t", "reference": "' + "r" * 8001 + '"}\n', "'reference' tiene 8001"),
])
def test_ids_categories_and_csv_fields_are_checked_whole(content, expected):
    fmt = "csv" if content.startswith("id,") else "jsonl"
    with pytest.raises(PromptFileError, match=expected):
        parse_prompts(content, fmt)


def test_cli_lists_every_command_including_the_automatic_evaluations():
    """The one subprocess smoke test of the command line: `python -m esllm --help` starts and lists every command
    (the evaluation modules register theirs; a typo in the wiring breaks --help). The other CLI tests call
    esllm.cli.main in-process."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "esllm", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for cmd in ("train", "generate", "sessions", "export", "belebele", "judge", "questions", "pictos"):
        assert cmd in out.stdout


def test_cli_refuses_a_missing_belebele_file(cli):
    bad = cli("belebele", "--file", "/no/existe.jsonl", "--contestants", "x")
    assert bad.returncode == 2 and "existe" in bad.stderr.lower()
