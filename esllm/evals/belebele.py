"""Belebele-format benchmark: multiple-choice reading comprehension, zero-shot, scored by the model's
likelihood of each option letter; one `eval_run` row per contestant.

    runs = run_contestants(Belebele(SAMPLE, limit=100), Session, engine, ["gemma-base", "gemma-a1"])  # evals/base.py
    python -m esllm belebele [--file F.jsonl] [--contestants A B] [--limit 100]   # esllm/cli/evals.py
    python -m esllm belebele --mode lm-eval [--template lm-eval-pre-0.4.4]

Protocol (fixed; `PROMPT_VERSION` names it and is stored with every run): the passage, question and
four options go into one Spanish user message (`PROMPT`) rendered with the contestant's own chat
template and its generation prompt; nothing is added on the assistant side. One forward pass per item
gives the next-token log-probabilities there; an option's score is the log-probability of its letter,
the best of the variants "A" and " A" that are a single token (SentencePiece and byte-level BPE
tokenizers write a letter after a space and after a newline with different tokens). The prediction is
the best of the four (an exact tie goes to the earlier letter and is counted in `ties`); no sampling.
Accuracy has a 95% percentile-bootstrap CI over questions; chance is 25% (esllm/evals/belebele_metrics.py).

That is the "chat" mode. The "lm-eval" mode (esllm/evals/belebele_lmeval.py) scores as lm-evaluation-harness
0.4.13 does (no template, its English prompt, continuations " A".." D", acc), so its numbers compare with
published ones; every run stores its `mode` (and, in lm-eval mode, its `template` and the lm-eval releases it
matches) in the config, and tables never mix modes or templates. The base's dtype is in the run's hashes
(what the engine reports) and in its summary line.

As an `Evaluation` (esllm/evals/base.py): the items are the file's questions (the first `limit`), the
config is the file, its sha256, the prompt version and the batch size, `evaluate` scores one contestant,
`summary` is its row of the command line's table. This module does not know Gradio; the «Resultados»
accordion is esllm/ui/resultados_belebele.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from esllm import EsllmError
from esllm.evals import belebele_lmeval
from esllm.evals.base import Evaluation, Outcome, Progress
from esllm.evals.belebele_metrics import CHANCE, LETTERS, best_choice, choice_metrics
from esllm.paths import BELEBELE_DIR, display_path, file_sha256, jsonl_lines

SAMPLE = BELEBELE_DIR / "muestra-es.jsonl"
KIND = "belebele"
MODES = ("chat", "lm-eval")  # chat: this module's protocol; lm-eval: esllm/evals/belebele_lmeval.py
TEXT_FIELDS = ("link", "flores_passage", "question", "mc_answer1", "mc_answer2", "mc_answer3", "mc_answer4",
               "dialect")
MAX_PROBLEMS = 20  # problems listed in a rejection message; the count says how many more there are

# Zero-shot instruction in Spanish, sent as the only user message. The assistant side starts empty:
# every template's generation prompt ends where the answer begins, and the letter is read there.
# Any change to this text, to the assistant side or to the letter variants changes the numbers:
# bump PROMPT_VERSION with it.
PROMPT = (
    "Lee el pasaje y responde la pregunta eligiendo una opción.\n\n"
    "Pasaje: {passage}\n\n"
    "Pregunta: {question}\n\n"
    "A) {a}\nB) {b}\nC) {c}\nD) {d}\n\n"
    "Responde solo con la letra de la opción correcta."
)
ASSISTANT_PREFIX = ""
PROMPT_VERSION = "belebele-es-v1 (instrucción en el turno del usuario; asistente vacío; letras 'X' o ' X')"


@dataclass(frozen=True)
class BelebeleItem:
    link: str
    question_number: int
    passage: str
    question: str
    options: tuple[str, str, str, str]
    correct: int  # 1..4, as in the file
    dialect: str
    line: int  # line in the file, for messages

    @property
    def correct_letter(self) -> str:
        return LETTERS[self.correct - 1]


# ------------------------------------------------------------------ loading
def _as_int(value: Any) -> Optional[int]:
    """An int from an int or a string of digits (the official files write numbers as strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _parse_row(row: Any) -> tuple[Optional[dict[str, Any]], list[str]]:
    if not isinstance(row, dict):
        return None, ["se esperaba un objeto JSON ({…})"]
    problems, clean = [], {}
    for key in TEXT_FIELDS:
        if key not in row:
            problems.append(f"falta el campo {key}")
        elif not isinstance(row[key], str):
            problems.append(f"{key} debe ser texto (es {type(row[key]).__name__})")
        elif not row[key].strip():
            problems.append(f"{key} está vacío")
        else:
            clean[key] = row[key].strip()
    for key in ("question_number", "correct_answer_num"):
        if key not in row:
            problems.append(f"falta el campo {key}")
            continue
        n = _as_int(row[key])
        if n is None:
            problems.append(f"{key} debe ser un número entero (es {row[key]!r})")
        elif key == "correct_answer_num" and not 1 <= n <= 4:
            problems.append(f"correct_answer_num debe ser 1, 2, 3 o 4 (es {row[key]!r})")
        else:
            clean[key] = n
    return (clean if not problems else None), problems


def load_belebele(path: str | Path) -> list[BelebeleItem]:
    """Every item of a Belebele JSONL file, or EsllmError listing each bad line (then nothing is loaded)."""
    path = Path(path)
    if not path.is_file():
        raise EsllmError(f"No existe el archivo {path}.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise EsllmError(f"{path.name} no está en UTF-8 ({e}).") from None
    items, problems = [], []
    for n, row, bad_json in jsonl_lines(text):
        if bad_json:
            problems.append(f"línea {n}: {bad_json}")
            continue
        clean, row_problems = _parse_row(row)
        problems.extend(f"línea {n}: {p}" for p in row_problems)
        if clean is not None:
            items.append(BelebeleItem(
                link=clean["link"], question_number=clean["question_number"], passage=clean["flores_passage"],
                question=clean["question"], options=tuple(clean[f"mc_answer{i}"] for i in range(1, 5)),
                correct=clean["correct_answer_num"], dialect=clean["dialect"], line=n))
    if problems:
        more = len(problems) - MAX_PROBLEMS
        raise EsllmError(
            f"{path.name}: {len(problems)} problema(s); no se cargó ninguna pregunta. Corrija el archivo:\n"
            + "\n".join(problems[:MAX_PROBLEMS]) + (f"\n… y {more} más." if more > 0 else ""))
    if not items:
        raise EsllmError(f"{path.name} está vacío: no tiene ninguna pregunta (formato JSONL de Belebele, una por línea).")
    return items


# ------------------------------------------------------------------ scoring
def format_prompt(item: BelebeleItem) -> str:
    a, b, c, d = item.options
    return PROMPT.format(passage=item.passage, question=item.question, a=a, b=b, c=c, d=d)


def render(item: BelebeleItem, template, tokenizer) -> str:
    """The exact text the model sees: the user message through the chat template, then ASSISTANT_PREFIX."""
    return template.render([{"role": "user", "content": format_prompt(item)}], bos_token=tokenizer.bos_token or "",
                           eos_token=tokenizer.eos_token or "") + ASSISTANT_PREFIX


def letter_token_ids(tokenizer) -> dict[str, list[int]]:
    """For each letter, the ids of its single-token variants among "X" and " X" (an engine backend's Tok,
    or a transformers tokenizer)."""
    if hasattr(tokenizer, "token_id"):  # esllm.engine.backend.Tok
        encode = tokenizer.encode
    else:
        def encode(text: str) -> list[int]:
            return tokenizer(text, add_special_tokens=False)["input_ids"]
    out: dict[str, list[int]] = {}
    for letter in LETTERS:
        ids = set()
        for variant in (letter, " " + letter):
            enc = encode(variant)
            if len(enc) == 1:
                ids.add(int(enc[0]))
        if not ids:
            raise EsllmError(f"El tokenizador no tiene un token para la letra {letter!r}: no se puede puntuar Belebele.")
        out[letter] = sorted(ids)
    seen = [i for ids in out.values() for i in ids]
    if len(seen) != len(set(seen)):
        raise EsllmError("El tokenizador da el mismo token a dos letras de opción: no se puede puntuar Belebele.")
    return out


def letter_scores(logp_rows, letter_ids: dict[str, list[int]]) -> list[dict[str, float]]:
    """Each row's log-probability of each letter: the best of its single-token variants."""
    return [{L: max(float(row[i]) for i in letter_ids[L]) for L in LETTERS} for row in logp_rows]


def evaluate(engine, contestant: str, items: Sequence[BelebeleItem], *, batch_size: int = 8,
             progress: Optional[Progress] = None) -> dict[str, Any]:
    """Score every item for one contestant: {"metrics": {...}, "details": [one dict per item]}.

    The base's lock is taken per batch (Engine.next_token_logprobs), so chat users wait one batch, not the run."""
    if batch_size < 1:
        raise EsllmError("El tamaño de lote debe ser al menos 1.")
    if not items:
        raise EsllmError("No hay preguntas que evaluar.")
    t0 = time.perf_counter()
    details: list[dict[str, Any]] = []
    letter_ids: Optional[dict[str, list[int]]] = None
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        # ASSISTANT_PREFIX is empty: the template's generation prompt is where the letter is read.
        logp, tok = engine.next_token_logprobs(contestant, [format_prompt(it) for it in chunk], chat=True,
                                               batch_size=batch_size)
        letter_ids = letter_ids or letter_token_ids(tok)
        scores = letter_scores(logp, letter_ids)
        for it, sc in zip(chunk, scores):
            # Ties go to the earlier letter. They happen: bf16 logits are coarse, and a small model can give
            # two letters the very same score; `tie` marks them and the metrics count them.
            k, tie = best_choice([sc[L] for L in LETTERS])
            details.append({"link": it.link, "question_number": it.question_number, "line": it.line,
                            "predicted": LETTERS[k], "correct": it.correct_letter,
                            "ok": LETTERS[k] == it.correct_letter, "tie": tie,
                            "logprobs": {L: round(sc[L], 4) for L in LETTERS}})
        if progress:
            progress(len(details), len(items), f"{contestant}: {len(details)}/{len(items)} preguntas")
    metrics = choice_metrics(details, time.perf_counter() - t0)
    metrics["letter_token_ids"] = letter_ids
    return {"metrics": metrics, "details": details}


class Belebele(Evaluation):
    """The benchmark over one Belebele JSONL file: its first `limit` questions, `batch_size` per forward pass,
    in `mode` "chat" or "lm-eval" (then with lm-eval's `template`, esllm/evals/belebele_lmeval.py)."""

    kind = KIND

    def __init__(self, file: str | Path = SAMPLE, *, batch_size: int = 8, limit: Optional[int] = None,
                 mode: str = "chat", template: str = belebele_lmeval.DEFAULT_TEMPLATE):
        if mode not in MODES:
            raise EsllmError(f"Modo de Belebele desconocido {mode!r}; use uno de {', '.join(MODES)}.")
        if limit is not None and limit < 1:
            raise EsllmError("El límite de preguntas debe ser al menos 1.")
        if batch_size < 1:
            raise EsllmError("El tamaño de lote debe ser al menos 1.")
        self.mode, self.template = mode, belebele_lmeval.check_template(template)
        self.file, self.batch_size, self.limit = Path(file), batch_size, limit

    def load(self, store=None) -> list[BelebeleItem]:
        items = load_belebele(self.file)
        return items[:self.limit] if self.limit else items

    def config(self, items: Sequence[BelebeleItem]) -> dict[str, Any]:
        lmeval = self.mode == "lm-eval"
        protocol = ({"prompt_version": belebele_lmeval.prompt_version(self.template), "template": self.template,
                     "lm_eval_version": belebele_lmeval.MATCHES[self.template]} if lmeval
                    else {"prompt_version": PROMPT_VERSION})
        return {"file": display_path(self.file), "file_sha256": file_sha256(self.file), "n_items": len(items),
                "limit": self.limit, "mode": self.mode, **protocol, "batch_size": self.batch_size,
                "dialects": sorted({it.dialect for it in items})}

    def evaluate(self, engine, contestant: str, items: Sequence[BelebeleItem],
                 progress: Optional[Progress] = None) -> Outcome:
        if self.mode == "lm-eval":
            return Outcome(**belebele_lmeval.evaluate_lmeval(
                engine, contestant, items, belebele_lmeval.raw_rows(self.file), batch_size=self.batch_size,
                progress=progress, template=self.template))
        return Outcome(**evaluate(engine, contestant, items, batch_size=self.batch_size, progress=progress))

    def summary(self, run) -> str:
        """The run's row under TABLE_HEADER: accuracy (lm-eval's acc), its 95% CI, n, chance, the ties between
        choices and the base's dtype (as the engine reported it), or the error."""
        if run.status != "done":
            return f"{run.contestant:28s} FALLÓ: {run.error}"
        m = run.metrics
        ci = f"[{m['ci_low']:.1%}, {m['ci_high']:.1%}]"
        dtype = (run.hashes or {}).get("dtype") or "?"
        return (f"{run.contestant:28s} {m['accuracy']:>9.1%}  {ci:15s} {m['n']:>5d}   {CHANCE:.0%}  "
                f"{m.get('ties', 0):>7d}  {dtype}")


TABLE_HEADER = f"{'concursante':28s} {'exactitud':>9s}  {'IC 95 %':15s} {'n':>5s}   azar  {'empates':>7s}  dtype"
# acc_norm divides each choice's log-likelihood by its length in characters; Belebele's choices are one letter
# each, so acc_norm = acc always: the tables show one number.
ACC_NOTE = ("exactitud = acc de lm-eval; acc_norm = acc en esta tarea (cada opción es una sola letra); "
            "empates: preguntas con dos letras de igual puntuación (gana la primera)")
