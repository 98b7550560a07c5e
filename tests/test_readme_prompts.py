"""The README's prompt-set example (section «Prompt-set files») imports as it stands, in both formats, through
the same importer as `prompts import` and «Administrar»: two single prompts and a two-turn series."""

from __future__ import annotations

import re

import pytest

from tests.helpers import REPO


def readme_block(lang: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Prompt-set files", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(rf"```{lang}\n(.*?)```", section, re.S)
    assert len(blocks) == 1, f"one ```{lang} block in the README's prompt-set section"
    return blocks[0]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_readme_example_imports(fmt, store, tmp_path):
    from esllm.study import admin
    from esllm.study.prompts import parse_prompt_file

    path = tmp_path / f"mi-conjunto.{fmt}"
    path.write_text(readme_block(fmt), encoding="utf-8")
    rows = parse_prompt_file(path)
    assert [(r.id, r.category, r.series, r.turn) for r in rows] == [
        ("iva-1", "comprension_basica", None, None), ("carta-1", "creativas", None, None),
        ("viaje-1", "contextual", "viaje", 1), ("viaje-2", "contextual", "viaje", 2)]
    assert rows[0].reference and rows[1].reference is None
    with store.Session() as s:
        done = admin.import_prompts(s, "mi-conjunto", str(path), description="README")
        s.commit()
    assert (done.rows, done.new) == (4, 4)
