"""Belebele's lm-eval mode (issues 14 and 30): lm-evaluation-harness 0.4.13's prompt byte for byte (and the
pre-0.4.4 full-width variant only when asked for), scoring by the log-likelihoods
of " A".." D" (acc, acc_norm), the mode stored with each run and labelled in the CLI, and a tiny model whose
logits are pushed towards one letter picks that letter."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from esllm import EsllmError
from esllm.evals.base import run_contestants
from esllm.evals.belebele import SAMPLE, Belebele, load_belebele
from esllm.evals.belebele_lmeval import CONTINUATIONS, choose, evaluate_lmeval, lmeval_prompt, raw_rows
from esllm.store.models import EvalRun
from tests.helpers import make_engine, new_store

# lm_eval/tasks/belebele/_default_template_yaml (0.4.13), doc_to_text, as Jinja writes it out
LM_EVAL_DOC_TO_TEXT = ("P: {{flores_passage}}\\nQ: {{question.strip()}}\\nA: {{mc_answer1}}\\nB: {{mc_answer2}}\\n"
                       "C: {{mc_answer3}}\\nD: {{mc_answer4}}\\nAnswer:")


def render_jinja_like(row: dict) -> str:
    """The template above filled in by plain substitution (its \\n are the YAML string's newlines)."""
    out = LM_EVAL_DOC_TO_TEXT.replace("\\n", "\n")
    for key in ("flores_passage", "mc_answer1", "mc_answer2", "mc_answer3", "mc_answer4"):
        out = out.replace("{{" + key + "}}", row[key])
    return out.replace("{{question.strip()}}", row["question"].strip())


def test_the_prompt_of_the_first_bundled_item_is_byte_exact():
    first = json.loads(SAMPLE.read_text(encoding="utf-8").splitlines()[0])
    prompt = lmeval_prompt(raw_rows(SAMPLE)[1])
    assert prompt.encode("utf-8") == render_jinja_like(first).encode("utf-8")
    assert prompt.encode("utf-8").endswith(b"\nAnswer:")  # ASCII since lm-eval 0.4.4
    old = lmeval_prompt(raw_rows(SAMPLE)[1], "lm-eval-pre-0.4.4")
    assert old.encode("utf-8") == prompt.encode("utf-8")[:-1] + "\uff1a".encode("utf-8")  # the full-width colon
    with pytest.raises(EsllmError, match="Plantilla de lm-eval desconocida"):
        lmeval_prompt(raw_rows(SAMPLE)[1], "lm-eval-0.4.3")
    assert prompt.startswith("P: " + first["flores_passage"] + "\nQ: ")
    assert CONTINUATIONS == (" A", " B", " C", " D")


def test_choose_is_argmax_and_acc_norm_divides_by_the_choice_length():
    assert choose([-3.0, -1.0, -2.0, -5.0]) == (1, 1)
    assert choose([-1.0, -1.0, -2.0, -5.0]) == (0, 0)  # a tie goes to the earlier letter, as numpy's argmax


class StubEngine:
    """Only `loglikelihood`: the letter `best[item line]` gets -1, the others -5; records the pairs."""

    def __init__(self, best: dict[int, str]):
        self.best, self.pairs = best, []

    def loglikelihood(self, contestant, pairs):
        self.pairs += pairs
        out = []
        for context, cont in pairs:
            line = next(n for n, row in self.rows.items() if lmeval_prompt(row) == context)
            out.append((-1.0 if cont == " " + self.best[line] else -5.0, 1, False))
        return out


def test_scoring_picks_the_letter_with_the_highest_loglikelihood():
    items = load_belebele(SAMPLE)[:6]
    rows = raw_rows(SAMPLE)
    best = {it.line: ("ABCD"[it.correct - 1] if i % 2 == 0 else "ABCD"[it.correct % 4]) for i, it in enumerate(items)}
    eng = StubEngine(best)
    eng.rows = rows
    out = evaluate_lmeval(eng, "x", items, rows, batch_size=4)
    assert [d["predicted"] for d in out["details"]] == [best[it.line] for it in items]
    m = out["metrics"]
    assert m["acc"] == m["accuracy"] == m["acc_norm"] == 0.5 and m["n"] == 6 and m["mode"] == "lm-eval"
    assert len(eng.pairs) == 24 and {c for _, c in eng.pairs} == set(CONTINUATIONS)
    assert all(not ctx.startswith("<") and ctx.endswith("\nAnswer:") for ctx, _ in eng.pairs), "no chat template"


def test_a_tiny_model_pushed_towards_one_letter_picks_it_and_the_run_records_the_mode(tiny, tiny_root, tmp_path):
    import torch

    engine = make_engine(tiny("llama").config(), tiny_root)
    base = engine.registry.bases["llama"]
    tok = base.tok
    items = load_belebele(SAMPLE)[:3]
    ctx = lmeval_prompt(raw_rows(SAMPLE)[items[0].line])
    conts = {L: tok.encode(ctx + " " + L)[len(tok.encode(ctx)):] for L in "ABCD"}
    others = {t for L in "ACD" for t in conts[L]}
    boost = [t for t in conts["B"] if t not in others]
    assert boost, conts
    lm_head = next(m for name, m in base.model.named_modules() if name.endswith("lm_head"))
    bias = torch.zeros(lm_head.out_features)
    bias[boost] = 30.0  # the logits are pushed towards " B"'s own tokens

    hook = lm_head.register_forward_hook(lambda module, args, out: out + bias.to(out.dtype).to(out.device))
    try:
        store = new_store(tmp_path / "b.sqlite3")
        [run] = run_contestants(Belebele(SAMPLE, limit=3, mode="lm-eval"), store.Session, engine, ["llama-base"])
    finally:
        hook.remove()
    assert run.status == "done", run.error
    assert [d["predicted"] for d in run.details] == ["B", "B", "B"]
    assert run.config["mode"] == "lm-eval" and "lm-eval" in run.config["prompt_version"]
    assert run.config["template"] == "lm-eval" and "0.4.13" in run.config["lm_eval_version"]
    with store.Session() as s:
        assert s.scalars(select(EvalRun.config)).one()["mode"] == "lm-eval"
    store.dispose()


def test_the_mode_is_checked_and_labelled(cli, tmp_path):
    with pytest.raises(Exception, match="Modo de Belebele desconocido"):
        Belebele(SAMPLE, mode="raro")
    assert Belebele(SAMPLE).config(load_belebele(SAMPLE)[:2])["mode"] == "chat"
    r = cli("belebele", "--mode", "raro", db_url=f"sqlite:///{tmp_path / 'c.sqlite3'}")
    assert r.returncode == 2 and "lm-eval" in r.stderr


def test_the_summary_shows_acc_the_ties_and_the_dtype():
    from types import SimpleNamespace

    from esllm.evals.belebele import ACC_NOTE, TABLE_HEADER

    m = {"accuracy": 0.5, "acc": 0.5, "acc_norm": 0.5, "ci_low": 0.3, "ci_high": 0.7, "n": 40, "ties": 3}
    line = Belebele(SAMPLE, mode="lm-eval").summary(
        SimpleNamespace(status="done", contestant="gemma-base", metrics=m, hashes={"dtype": "float32"}))
    assert line.split() == ["gemma-base", "50.0%", "[30.0%,", "70.0%]", "40", "25%", "3", "float32"]
    assert "acc_norm" not in line and TABLE_HEADER.split()[-2:] == ["empates", "dtype"]
    assert "acc_norm = acc" in ACC_NOTE
    with pytest.raises(EsllmError, match="Plantilla de lm-eval desconocida"):
        Belebele(SAMPLE, mode="lm-eval", template="lm-eval-0.4.3")
