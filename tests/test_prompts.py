"""Prompt-set files: the bundled sets are well formed; bad imports are refused with line and reason."""

from __future__ import annotations

from collections import Counter

import pytest

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
