"""Belebele in lm-evaluation-harness's protocol ("lm-eval" mode), so a score compares with published numbers.

    out = evaluate_lmeval(engine, "gemma-base", items, rows)      # {"metrics": {...}, "details": [...]}
    python -m esllm belebele --mode lm-eval [--file spa_Latn.jsonl]

What lm-evaluation-harness v0.4.x does for `belebele_spa_Latn` (lm_eval/tasks/belebele/_default_template_yaml,
checked against the source): zero-shot, no chat template, `output_type: multiple_choice`,

    doc_to_text:   "P: {{flores_passage}}\\nQ: {{question.strip()}}\\nA: {{mc_answer1}}\\nB: {{mc_answer2}}\\n
                    C: {{mc_answer3}}\\nD: {{mc_answer4}}\\nAnswer："        (the last character is U+FF1A)
    doc_to_choice: ["A", "B", "C", "D"], target_delimiter " " (the default): continuations " A" … " D"
    metrics:       acc (argmax of the summed log-likelihoods) and acc_norm (argmax of log-likelihood / the
                   choice's length in characters; every choice is one character, so acc_norm = acc here)

The prompt is built from the file's raw fields (only the question stripped, as the template does); the
log-likelihoods come from `Engine.loglikelihood` (context tokenized with the base's BOS rule, no template).
Ties go to the earlier letter, as numpy's argmax does.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional, Sequence

from esllm import EsllmError
from esllm.evals.base import Progress
from esllm.paths import jsonl_lines

LETTERS = ("A", "B", "C", "D")
TEMPLATE = "P: {passage}\nQ: {question}\nA: {a}\nB: {b}\nC: {c}\nD: {d}\nAnswer\uff1a"
CONTINUATIONS = tuple(" " + L for L in LETTERS)  # target_delimiter " " + choice
PROMPT_VERSION = "lm-eval belebele (v0.4.x _default_template_yaml; sin plantilla; ' A'..' D'; acc, acc_norm)"


def raw_rows(path: str | Path) -> dict[int, dict[str, Any]]:
    """line number -> the JSON object as written (the loader strips fields; lm-eval does not)."""
    text = Path(path).read_text(encoding="utf-8-sig")
    return {n: row for n, row, bad in jsonl_lines(text) if not bad and isinstance(row, dict)}


def lmeval_prompt(row: dict[str, Any]) -> str:
    """lm-eval's doc_to_text for one raw Belebele row, byte for byte."""
    return TEMPLATE.format(passage=row["flores_passage"], question=str(row["question"]).strip(),
                           a=row["mc_answer1"], b=row["mc_answer2"], c=row["mc_answer3"], d=row["mc_answer4"])


def choose(lls: Sequence[float]) -> tuple[int, int]:
    """(acc prediction, acc_norm prediction) as 0-based indexes: argmax of the log-likelihoods and of the
    log-likelihoods over each choice's length in characters (earlier index on a tie)."""
    def argmax(xs: Sequence[float]) -> int:
        return max(range(len(xs)), key=lambda i: (xs[i], -i))

    return argmax(lls), argmax([ll / len(choice) for ll, choice in zip(lls, LETTERS)])


def evaluate_lmeval(engine, contestant: str, items: Sequence[Any], rows: dict[int, dict[str, Any]], *,
                    batch_size: int = 8, progress: Optional[Progress] = None) -> dict[str, Any]:
    """Score every item (a BelebeleItem, whose `line` finds its raw row) in lm-eval's protocol."""
    from esllm.evals.belebele import CHANCE, accuracy_ci

    if not items:
        raise EsllmError("No hay preguntas que evaluar.")
    t0 = time.perf_counter()
    details: list[dict[str, Any]] = []
    for start in range(0, len(items), max(1, batch_size)):
        chunk = items[start:start + batch_size]
        pairs = [(lmeval_prompt(rows[it.line]), cont) for it in chunk for cont in CONTINUATIONS]
        scored = engine.loglikelihood(contestant, pairs)
        for k, it in enumerate(chunk):
            lls = [float(x[0]) for x in scored[4 * k:4 * k + 4]]
            pred, pred_norm = choose(lls)
            gold = it.correct - 1
            details.append({"link": it.link, "question_number": it.question_number, "line": it.line,
                            "predicted": LETTERS[pred], "predicted_norm": LETTERS[pred_norm],
                            "correct": LETTERS[gold], "ok": pred == gold, "ok_norm": pred_norm == gold,
                            "tie": sum(ll == lls[pred] for ll in lls) > 1,
                            "loglikelihoods": {L: round(ll, 4) for L, ll in zip(LETTERS, lls)}})
        if progress:
            progress(len(details), len(items), f"{contestant}: {len(details)}/{len(items)} preguntas (lm-eval)")
    acc, lo, hi = accuracy_ci([d["ok"] for d in details])
    acc_norm = sum(d["ok_norm"] for d in details) / len(details)
    metrics = {"accuracy": acc, "acc": acc, "acc_norm": acc_norm, "ci_low": lo, "ci_high": hi, "n": len(details),
               "correct": sum(d["ok"] for d in details), "chance": CHANCE, "mode": "lm-eval",
               "predicted_counts": {L: sum(d["predicted"] == L for d in details) for L in LETTERS},
               "ties": sum(d["tie"] for d in details), "seconds": round(time.perf_counter() - t0, 2)}
    return {"metrics": metrics, "details": details}
