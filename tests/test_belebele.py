"""Belebele-format benchmark: letter-likelihood scoring on a tiny Llama whose last-position logits are
steered, batched scores equal single-prompt scores computed with plain transformers, the loader's
line-numbered rejections, the bootstrap CI, the bundled sample, stored runs, the CLI, and the
«Belebele» accordion over HTTP with accounts (rater and anonymous refused).

    .venv/bin/python -m pytest tests/test_belebele.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter
from contextlib import contextmanager

import httpx
import pytest
import yaml
from sqlalchemy import select

from esllm import EsllmError
from esllm.evals import belebele as B
from esllm.evals.base import run_contestants
from esllm.evals.belebele_metrics import LETTERS, accuracy_ci
from tests import tiny as tm
from tests.helpers import new_store, serve

PW = "contraseña-segura"


def row(**over):
    r = {"link": "esllm://t/1", "question_number": 1, "flores_passage": "Ana compró pan y leche en la tienda.",
         "question": "¿Qué compró Ana?", "mc_answer1": "Pan y leche", "mc_answer2": "Fruta",
         "mc_answer3": "Carne", "mc_answer4": "Nada", "correct_answer_num": "1", "dialect": "spa_Latn"}
    r.update(over)
    return r


def write_jsonl(path, lines):
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in lines) + "\n",
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sample():
    return B.load_belebele(B.SAMPLE)


@contextmanager
def favour(engine, family: str, token_id: int):
    """Add a large bonus to `token_id` in the output layer of the family's loaded base (every forward)."""
    model = engine.registry.bases[family].model

    def hook(module, args, output):
        output = output.clone()
        output[..., token_id] += 1e4
        return output

    handle = model.get_output_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


# ------------------------------------------------------------------ scoring
def test_scoring_picks_the_letter_whose_logit_is_raised_and_follows_the_control(engine, sample):
    eng = engine("llama")
    items = sample[:10]
    letter_ids = B.letter_token_ids(eng.registry.bases["llama"].tokenizer)
    for name in ("llama-base", "llama-a1"):
        for letter in ("C", "A"):
            with favour(eng, "llama", letter_ids[letter][-1]):
                res = B.evaluate(eng, name, items, batch_size=4)
            assert [d["predicted"] for d in res["details"]] == [letter] * len(items)
            hand = sum(it.correct_letter == letter for it in items)
            assert res["metrics"]["correct"] == hand
            assert res["metrics"]["accuracy"] == pytest.approx(hand / len(items))
            assert res["metrics"]["predicted_counts"][letter] == len(items)
            assert res["metrics"]["ties"] == 0 and not any(d["tie"] for d in res["details"])
    # the counts really differ between the two controls (the fixed sample has both letters)
    assert Counter(it.correct_letter for it in items)["C"] != Counter(it.correct_letter for it in items)["A"]


def test_batched_left_padded_scores_equal_plain_single_prompt_scores(engine, tiny, sample):
    import torch

    from esllm.engine.templates import get_template

    eng = engine("llama")
    items = sample[:5]  # passages of different lengths: rows are padded differently
    base = B.evaluate(eng, "llama-base", items, batch_size=5)
    adapted = B.evaluate(eng, "llama-a1", items, batch_size=2)
    t = tiny("llama")
    model, tok = tm.load_plain(t.model_dir)
    ref_adapter, _ = tm.load_with_adapter(t.model_dir, t.adapters_dir / "a1")
    tpl = get_template(t.template)
    ids = B.letter_token_ids(tok)
    lengths = {len(tok(B.render(it, tpl, tok), add_special_tokens=False)["input_ids"]) for it in items}
    assert len(lengths) > 1, "the test needs prompts of different lengths"
    for res, ref_model in ((base, model), (adapted, ref_adapter)):
        for it, d in zip(items, res["details"]):
            logp = torch.log_softmax(tm.last_logits(ref_model, tok, B.render(it, tpl, tok)), dim=-1)
            for L in LETTERS:
                assert d["logprobs"][L] == pytest.approx(max(float(logp[i]) for i in ids[L]), abs=2e-3)
    # the adapter is really active for llama-a1 (and not for llama-base)
    diffs = [abs(a["logprobs"][L] - b["logprobs"][L]) for a, b in zip(adapted["details"], base["details"])
             for L in LETTERS]
    assert max(diffs) > 0.05


class FakeTok:
    def __init__(self, vocab):
        self.vocab = vocab

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": self.vocab.get(text, [0, 0])}


def test_letter_variants_keep_only_single_tokens():
    tok = FakeTok({"A": [5], " A": [50], "B": [6], " B": [1, 6], " C": [70], "D": [8], " D": [8]})
    assert B.letter_token_ids(tok) == {"A": [5, 50], "B": [6], "C": [70], "D": [8]}
    with pytest.raises(EsllmError, match="letra 'B'"):
        B.letter_token_ids(FakeTok({"A": [5], " C": [7], "D": [8]}))


# ------------------------------------------------------------------ loading
def test_malformed_rows_are_rejected_with_their_line_numbers(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [
        row(),                                               # 1 ok
        '{"link": "x", ',                                    # 2 bad JSON
        {k: v for k, v in row().items() if k != "question"},  # 3 missing field
        row(correct_answer_num="5"),                         # 4 out of range
        row(mc_answer2=3),                                   # 5 wrong type
        row(flores_passage="   "),                           # 6 empty
        "[1, 2]",                                            # 7 not an object
        "",                                                  # 8 blank: skipped
        row(correct_answer_num=2),                           # 9 ok (int accepted)
        row(question_number="x", correct_answer_num=True),   # 10 two problems
    ])
    with pytest.raises(EsllmError) as e:
        B.load_belebele(bad)
    msg = str(e.value)
    for n, what in ((2, "JSON inválido"), (3, "falta el campo question"), (4, "correct_answer_num debe ser 1, 2, 3 o 4"),
                    (5, "mc_answer2 debe ser texto"), (6, "flores_passage está vacío"), (7, "se esperaba un objeto JSON"),
                    (10, "question_number debe ser un número entero"), (10, "correct_answer_num debe ser un número")):
        assert f"línea {n}: {what}" in msg
    assert "línea 1:" not in msg and "línea 9:" not in msg and "línea 8:" not in msg
    assert "8 problema(s)" in msg
    good = B.load_belebele(write_jsonl(tmp_path / "good.jsonl", [row(), "", row(correct_answer_num=2, link="y")]))
    assert [(it.correct, it.correct_letter, it.line) for it in good] == [(1, "A", 1), (2, "B", 3)]


def test_empty_file_and_many_problems(tmp_path):
    with pytest.raises(EsllmError, match="vacío"):
        B.load_belebele(write_jsonl(tmp_path / "empty.jsonl", ["", "  "]))
    with pytest.raises(EsllmError, match="No existe"):
        B.load_belebele(tmp_path / "nope.jsonl")
    with pytest.raises(EsllmError) as e:
        B.load_belebele(write_jsonl(tmp_path / "many.jsonl", ["{"] * 25))
    msg = str(e.value)
    assert "línea 20:" in msg and "línea 21:" not in msg and "… y 5 más" in msg


def test_bundled_sample_loads_with_balanced_positions(sample):
    assert len(sample) >= 40
    counts = Counter(it.correct for it in sample)
    assert set(counts) == {1, 2, 3, 4} and max(counts.values()) - min(counts.values()) <= 2
    assert all(it.dialect == "spa_Latn" and it.question_number == 1 for it in sample)
    assert len({it.link for it in sample}) == len(sample)
    assert all(len(set(it.options)) == 4 for it in sample)
    raw = [json.loads(x) for x in B.SAMPLE.read_text(encoding="utf-8").splitlines()]
    assert all(isinstance(r["correct_answer_num"], str) for r in raw)  # as in the official files


# ------------------------------------------------------------------ accuracy
def test_accuracy_and_bootstrap_ci():
    assert accuracy_ci([True] * 12) == (1.0, 1.0, 1.0)
    assert accuracy_ci([False] * 7) == (0.0, 0.0, 0.0)
    correct = [True] * 30 + [False] * 10
    acc, lo, hi = accuracy_ci(correct, seed=0)
    assert acc == 30 / 40
    assert lo < acc < hi
    assert (lo, hi) == accuracy_ci(correct, seed=0)[1:]  # fixed seed, fixed bounds
    # the normal approximation 0.75 ± 1.96·sqrt(0.75·0.25/40) = [0.616, 0.884]; grid of 1/40
    assert lo == pytest.approx(0.616, abs=0.03) and hi == pytest.approx(0.884, abs=0.03)
    assert lo * 40 == pytest.approx(round(lo * 40)) and hi * 40 == pytest.approx(round(hi * 40))
    with pytest.raises(EsllmError):
        accuracy_ci([])


# ------------------------------------------------------------------ stored runs and CLI
def test_the_runner_stores_one_done_belebele_run_per_contestant(engine, store, monkeypatch):
    from esllm.store.models import EvalRun

    eng = engine("llama")
    url, Session = store
    seen = []
    runs = run_contestants(B.Belebele(B.SAMPLE, batch_size=3, limit=5), Session, eng, ["llama-base", "llama-a1"],
                           progress=lambda d, t, m: seen.append((d, t)))
    assert [r.status for r in runs] == ["done", "done"]
    assert seen[-1] == (5, 5) and (3, 5) in seen
    sha = hashlib.sha256(B.SAMPLE.read_bytes()).hexdigest()
    with Session() as s:
        stored = s.scalars(select(EvalRun).order_by(EvalRun.id)).all()
    assert [(r.kind, r.contestant, r.status) for r in stored] == [("belebele", "llama-base", "done"),
                                                                   ("belebele", "llama-a1", "done")]
    for r in stored:
        assert r.config["file"] == "data/belebele/muestra-es.jsonl" and r.config["file_sha256"] == sha
        assert r.config["n_items"] == 5 and r.config["prompt_version"] == B.PROMPT_VERSION
        assert r.metrics["n"] == 5 and len(r.details) == 5 and r.finished_at is not None
        assert r.metrics["accuracy"] == sum(d["ok"] for d in r.details) / 5
        assert r.hashes["contestant"] == r.contestant
    assert stored[0].hashes["adapter_sha256"] is None and len(stored[1].hashes["adapter_sha256"]) == 64

    # a contestant that fails is stored as failed; the others still run
    real = B.evaluate

    def flaky(eng_, name, items, **kw):
        if name == "llama-a2":
            raise RuntimeError("sin memoria")
        return real(eng_, name, items, **kw)

    monkeypatch.setattr(B, "evaluate", flaky)
    runs = run_contestants(B.Belebele(B.SAMPLE, limit=2), Session, eng, ["llama-a2", "llama-base"])
    assert [(r.contestant, r.status) for r in runs] == [("llama-a2", "failed"), ("llama-base", "done")]
    assert "RuntimeError: sin memoria" in runs[0].error
    # unknown contestant: refused before anything is stored
    with pytest.raises(EsllmError, match="No existe el concursante"):
        run_contestants(B.Belebele(B.SAMPLE, limit=2), Session, eng, ["llama-base", "nadie"])
    with Session() as s:
        assert len(s.scalars(select(EvalRun)).all()) == 4


def _parser():
    from esllm.cli.evals import register

    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="cmd", required=True))
    return p


def test_cli_runs_on_a_tiny_config(tiny, tmp_path, store, monkeypatch, capsys):
    from esllm.store.models import EvalRun

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny("llama").config()), encoding="utf-8")
    monkeypatch.setenv("ESLLM_DATABASE_URL", store.url)
    args = _parser().parse_args(["belebele", "--config", str(cfg), "--limit", "4", "--batch-size", "3",
                                 "--contestants", "llama-base", "llama-a2"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "4 preguntas" in out and "azar 25 %" in out
    assert "empates" in out and "acc_norm = acc" in out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("llama-")}
    assert set(lines) == {"llama-base", "llama-a2"}
    with store.Session() as s:
        runs = s.scalars(select(EvalRun)).all()
    assert sorted(r.contestant for r in runs) == ["llama-a2", "llama-base"]
    for r in runs:
        assert r.status == "done" and r.config["batch_size"] == 3
        assert f"{r.metrics['accuracy']:.1%}" in lines[r.contestant] and "25%" in lines[r.contestant]
    # default contestants: every available one
    args = _parser().parse_args(["belebele", "--config", str(cfg), "--limit", "2"])
    assert args.func(args) == 0
    assert {ln.split()[0] for ln in capsys.readouterr().out.splitlines() if ln.startswith("llama-")} == \
        {"llama-base", "llama-a1", "llama-a2"}
    # a bad file: message on stderr, exit 2 (esllm.cli.main turns the command's EsllmError into 2)
    from esllm.cli import main

    bad = write_jsonl(tmp_path / "bad.jsonl", [row(correct_answer_num="7")])
    args = _parser().parse_args(["belebele", "--config", str(cfg), "--file", str(bad)])
    with pytest.raises(EsllmError, match="línea 1: correct_answer_num"):
        args.func(args)
    assert main(["belebele", "--config", str(cfg), "--file", str(bad)]) == 2
    assert "línea 1: correct_answer_num" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parser().parse_args(["belebele", "--batch-size", "0"])


# ------------------------------------------------------------------ UI over HTTP
@pytest.fixture(scope="module")
def belebele_app(engine, tiny, tmp_path_factory):
    import gradio as gr

    from esllm.engine.config import parse_config
    from esllm.ui.context import AppContext
    from esllm.ui.resultados_belebele import build_belebele

    store = new_store(tmp_path_factory.mktemp("belebele-ui") / "ui.sqlite3", accounts={"admin": "admin", "ana": "rater"},
                      password=PW)
    Session = store.Session
    eng = engine("llama")
    ctx = AppContext(config=parse_config(tiny("llama").config()), engine=eng, sessionmaker=Session, local_mode=False)
    with gr.Blocks() as demo:
        fn, outputs = build_belebele(ctx)
        demo.load(fn, None, outputs, api_name=False)
    demo.queue()
    yield serve(demo, ctx), Session, fn
    demo.close()
    store.dispose()


def client(url, name):
    from gradio_client import Client

    return Client(url, auth=(name, PW), verbose=False)


def _runs(Session):
    from esllm.store.models import EvalRun

    with Session() as s:
        return s.scalars(select(EvalRun)).all()


def test_ui_admin_evaluates_and_sees_the_table(belebele_app):
    from gradio_client.exceptions import AppError

    url, Session, _ = belebele_app
    admin = client(url, "admin")
    md, table = admin.predict("data/belebele/muestra-es.jsonl", ["llama-base", "llama-a1"], 3,
                              api_name="/belebele_evaluar")
    assert "3 preguntas" in md and "25%" in md
    rows = {r[0]: r for r in table["data"]}
    assert set(rows) == {"llama-base", "llama-a1"}
    stored = {r.contestant: r for r in _runs(Session)}
    for name, r in rows.items():
        assert r[1] == "data/belebele/muestra-es.jsonl" and r[4] == 3
        assert r[2] == f"{stored[name].metrics['accuracy']:.1%}"
    assert rows["llama-base"][7] == "—" and rows["llama-a1"][7] == stored["llama-a1"].hashes["adapter_sha256"][:12]
    assert admin.predict(api_name="/belebele_tabla")["data"] == table["data"]
    n = len(_runs(Session))
    for bad, msg in (("../prompts/general.jsonl", "Solo se evalúan"), ("/etc/passwd", "Solo se evalúan"),
                     ("data/belebele/no-existe.jsonl", "No existe"), ("", "Elija un archivo")):
        with pytest.raises(AppError, match=msg):
            admin.predict(bad, ["llama-base"], 2, api_name="/belebele_evaluar")
    with pytest.raises(AppError, match="al menos un concursante"):
        admin.predict("data/belebele/muestra-es.jsonl", [], 2, api_name="/belebele_evaluar")
    assert len(_runs(Session)) == n


def test_ui_refuses_rater_and_anonymous(belebele_app):
    from gradio_client.exceptions import AppError

    url, Session, _ = belebele_app
    n = len(_runs(Session))
    rater = client(url, "ana")
    with pytest.raises(AppError, match="permiso"):
        rater.predict("data/belebele/muestra-es.jsonl", ["llama-base"], 2, api_name="/belebele_evaluar")
    with pytest.raises(AppError, match="permiso"):
        rater.predict(api_name="/belebele_tabla")
    assert httpx.post(url + "gradio_api/call/belebele_evaluar",
                      json={"data": ["data/belebele/muestra-es.jsonl", ["llama-base"], 2]}, timeout=30).status_code \
        in (401, 403)
    assert len(_runs(Session)) == n


def test_ui_load_fills_files_and_contestants_for_admins_only(belebele_app):
    from types import SimpleNamespace

    *_, on_load = belebele_app
    files, who, table = on_load(SimpleNamespace(username="admin"))
    assert files["choices"][0] == "data/belebele/muestra-es.jsonl" and files["value"] == files["choices"][0]
    assert who["choices"] == ["llama-base", "llama-a1", "llama-a2"]
    for name in ("ana", None):
        files, who, table = on_load(SimpleNamespace(username=name))
        assert files["choices"] == [] and who["choices"] == [] and table is None
