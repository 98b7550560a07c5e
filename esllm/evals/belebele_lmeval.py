"""Belebele in lm-evaluation-harness's protocol ("lm-eval" mode), so a score compares with published numbers.

    out = evaluate_lmeval(engine, "gemma-base", items, rows)      # {"metrics": {...}, "details": [...]}
    python -m esllm belebele --mode lm-eval [--file spa_Latn.jsonl] [--template lm-eval-pre-0.4.4]

What lm-evaluation-harness 0.4.13 does for `belebele_spa_Latn` (lm_eval/tasks/belebele/_default_template_yaml of
the installed package; tests/test_belebele_lmeval_parity.py runs lm-eval itself against this module): zero-shot,
no chat template, `output_type: multiple_choice`,

    doc_to_text:   "P: {{flores_passage}}\\nQ: {{question.strip()}}\\nA: {{mc_answer1}}\\nB: {{mc_answer2}}\\n
                    C: {{mc_answer3}}\\nD: {{mc_answer4}}\\nAnswer:"
    doc_to_choice: ["A", "B", "C", "D"], target_delimiter " " (the default): continuations " A" … " D"
    metrics:       acc (argmax of the summed log-likelihoods) and acc_norm (argmax of log-likelihood / the
                   choice's length in characters; every choice is one character, so acc_norm = acc here)

Until v0.4.3 the prompt ended with a full-width colon, `Answer：` (U+FF1A); v0.4.4 (PR #2111) made it ASCII
without changing the task's version number, and the log-likelihoods move by about 2 nats. `TEMPLATES` holds
both: "lm-eval" (the default, as 0.4.13) and "lm-eval-pre-0.4.4", only for comparing with numbers published
before v0.4.4. The run's configuration stores the template's name and the lm-eval versions it matches.

The prompt is built from the file's raw fields (only the question stripped, as the template does); the
log-likelihoods come from `Engine.loglikelihood` (context tokenized with the base's BOS rule, no template).
Ties go to the earlier letter, as numpy's argmax does, and are counted.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional, Sequence

from esllm import EsllmError
from esllm.evals.base import Progress
from esllm.evals.belebele_metrics import LETTERS, best_choice, choice_metrics
from esllm.paths import jsonl_lines

LM_EVAL_VERSION = "0.4.13"  # the lm-evaluation-harness release the default template was checked against
_BODY = "P: {passage}\nQ: {question}\nA: {a}\nB: {b}\nC: {c}\nD: {d}\n"
TEMPLATES = {"lm-eval": _BODY + "Answer:", "lm-eval-pre-0.4.4": _BODY + "Answer\uff1a"}
DEFAULT_TEMPLATE = "lm-eval"
# The lm-eval releases each template matches, stored with every run.
MATCHES = {"lm-eval": f">=0.4.4 (comprobada con {LM_EVAL_VERSION})", "lm-eval-pre-0.4.4": "<=0.4.3"}
CONTINUATIONS = tuple(" " + L for L in LETTERS)  # target_delimiter " " + choice


def check_template(name: str) -> str:
    if name not in TEMPLATES:
        raise EsllmError(f"Plantilla de lm-eval desconocida {name!r}; use una de {', '.join(TEMPLATES)}.")
    return name


def prompt_version(template: str) -> str:
    """What a run stores as its prompt version: the template and the lm-eval releases it matches."""
    return (f"lm-eval belebele {MATCHES[check_template(template)]} (plantilla {template}; sin plantilla de chat; "
            "' A'..' D'; acc, acc_norm)")


def raw_rows(path: str | Path) -> dict[int, dict[str, Any]]:
    """line number -> the JSON object as written (the loader strips fields; lm-eval does not)."""
    text = Path(path).read_text(encoding="utf-8-sig")
    return {n: row for n, row, bad in jsonl_lines(text) if not bad and isinstance(row, dict)}


def lmeval_prompt(row: dict[str, Any], template: str = DEFAULT_TEMPLATE) -> str:
    """lm-eval's doc_to_text for one raw Belebele row, byte for byte."""
    return TEMPLATES[check_template(template)].format(
        passage=row["flores_passage"], question=str(row["question"]).strip(),
        a=row["mc_answer1"], b=row["mc_answer2"], c=row["mc_answer3"], d=row["mc_answer4"])


def choose(lls: Sequence[float]) -> tuple[int, int]:
    """(acc prediction, acc_norm prediction) as 0-based indexes: argmax of the log-likelihoods and of the
    log-likelihoods over each choice's length in characters (earlier index on a tie)."""
    return best_choice(lls)[0], best_choice([ll / len(choice) for ll, choice in zip(lls, LETTERS)])[0]


def _detail(it: Any, lls: list[float]) -> dict[str, Any]:
    pred, pred_norm = choose(lls)
    gold = it.correct - 1
    return {"link": it.link, "question_number": it.question_number, "line": it.line,
            "predicted": LETTERS[pred], "predicted_norm": LETTERS[pred_norm], "correct": LETTERS[gold],
            "ok": pred == gold, "ok_norm": pred_norm == gold, "tie": best_choice(lls)[1],
            "loglikelihoods": {L: round(ll, 6) for L, ll in zip(LETTERS, lls)}}


def evaluate_lmeval(engine, contestant: str, items: Sequence[Any], rows: dict[int, dict[str, Any]], *,
                    batch_size: int = 8, progress: Optional[Progress] = None,
                    template: str = DEFAULT_TEMPLATE) -> dict[str, Any]:
    """Score every item (a BelebeleItem, whose `line` finds its raw row) in lm-eval's protocol."""
    check_template(template)
    if not items:
        raise EsllmError("No hay preguntas que evaluar.")
    t0 = time.perf_counter()
    details: list[dict[str, Any]] = []
    for start in range(0, len(items), max(1, batch_size)):
        chunk = items[start:start + batch_size]
        pairs = [(lmeval_prompt(rows[it.line], template), cont) for it in chunk for cont in CONTINUATIONS]
        scored = engine.loglikelihood(contestant, pairs)
        details += [_detail(it, [float(x[0]) for x in scored[4 * k:4 * k + 4]]) for k, it in enumerate(chunk)]
        if progress:
            progress(len(details), len(items), f"{contestant}: {len(details)}/{len(items)} preguntas (lm-eval)")
    metrics = choice_metrics(details, time.perf_counter() - t0)
    # acc_norm divides by each choice's length in characters: one letter each, so it always equals acc here.
    metrics.update(acc=metrics["accuracy"], acc_norm=sum(d["ok_norm"] for d in details) / len(details),
                   mode="lm-eval", template=template)
    return {"metrics": metrics, "details": details}
