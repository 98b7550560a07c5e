"""lm-evaluation-harness 0.4.13 itself against esllm's Belebele lm-eval mode (issue 30): lm-eval's `hf` model on the
tiny random Llama (tests/tiny.py, saved to a temporary folder) with a local task made from the installed belebele
template and a local JSONL of the bundled sample's first items, offline, in a child process
(esllm/evals/lmeval_harness.py); esllm's lm-eval mode on the same model (transformers, float32) and items. Same
letters, log-likelihoods within TOL. lm-eval is in requirements-dev.txt (`pip install --dry-run` of it with every
pin of requirements*.txt changes none of them, so it shares the project's environment).

    .venv/bin/python -m pytest tests/test_belebele_lmeval_parity.py
"""

from __future__ import annotations

import importlib.util

import pytest

from esllm.evals.base import run_contestants
from esllm.evals.belebele import SAMPLE, Belebele, load_belebele
from esllm.evals.lmeval_harness import run_lmeval
from tests.helpers import make_engine, new_store

if importlib.util.find_spec("lm_eval") is None:
    pytest.skip("lm-eval is not installed (pip install -r requirements-dev.txt)", allow_module_level=True)

N_ITEMS = 8
TOL = 1e-4  # |Δ log-likelihood|: the same fp32 weights and torch kernels on both sides, the order of sums aside


@pytest.mark.slow
def test_lm_eval_and_esllm_give_the_same_letters_and_loglikelihoods(tiny, tiny_root, tmp_path):
    t = tiny("llama")
    data = tmp_path / "belebele.jsonl"
    data.write_text("".join(SAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)[:N_ITEMS]), encoding="utf-8")
    ref = run_lmeval(t.model_dir, data, tmp_path / "lmeval")
    assert ref["version"] == "0.4.13" and [r["doc_id"] for r in ref["rows"]] == list(range(N_ITEMS))

    engine = make_engine(t.config(), tiny_root)
    store = new_store(tmp_path / "b.sqlite3")
    [run] = run_contestants(Belebele(data, mode="lm-eval", batch_size=4), store.Session, engine, ["llama-base"])
    assert run.status == "done", run.error
    assert run.config["template"] == "lm-eval" and "0.4.13" in run.config["lm_eval_version"]
    items = load_belebele(data)
    assert len(items) == N_ITEMS
    ours = [[d["loglikelihoods"][L] for L in "ABCD"] for d in run.details]
    theirs = [r["lls"] for r in ref["rows"]]
    delta = max(abs(a - b) for x, y in zip(ours, theirs) for a, b in zip(x, y))
    assert delta <= TOL, f"max |Δ loglik| {delta:.2e}"
    assert [d["predicted"] for d in run.details] == ["ABCD"[max(range(4), key=lambda i: r[i])] for r in theirs]
    assert [d["ok"] for d in run.details] == [bool(r["acc"]) for r in ref["rows"]]
    assert [d["ok_norm"] for d in run.details] == [bool(r["acc_norm"]) for r in ref["rows"]]
    # the comparison can tell templates apart: the pre-0.4.4 full-width colon is another prompt
    old_template = Belebele(data, mode="lm-eval", template="lm-eval-pre-0.4.4")
    [old] = run_contestants(old_template, store.Session, engine, ["llama-base"])
    assert max(abs(old.details[i]["loglikelihoods"][L] - theirs[i]["ABCD".index(L)])
               for i in range(len(items)) for L in "ABCD") > 100 * TOL
    store.dispose()
