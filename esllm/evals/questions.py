"""Reading-comprehension questions: a contestant writes N short-answer and M true/false questions about a
pasted Spanish text, with no answers; the output is parsed and checked.

    qs, violations, raw = generate_questions(engine, "gemma-base", texto, 3, 2)
    [run] = run_contestants(Questions(texto, 3, 2), Session, engine, ["gemma-base"])   # stored (esllm/evals/base.py)
    r = questions_result(run)                                    # the same QuestionsRun, from the stored run
    python -m esllm questions --text-file texto.txt --n 3 --m 2   # from the command line (esllm/cli/evals.py)

As an `Evaluation` (esllm/evals/base.py): `Questions(text, n, m)` has one item, the checked request
(text, N, M); the config is the text's sha256 and length, N, M, the prompt version, threshold and
preset; `evaluate` is one generation, parsed and checked, and adds its parameters to the config. The
stored details are the questions, the violations and the raw output, from which `questions_result`
rebuilds the QuestionsRun.

The parsing and the checks (output format, violation kinds) are in esllm/evals/question_checks.py.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from typing import Any, Optional, Sequence

from esllm import EsllmError
from esllm.evals.base import Evaluation, Outcome, Progress
from esllm.evals.question_checks import (
    EXAMPLE_OUTPUT,
    EXAMPLE_TEXT,
    KINDS,
    SIMILARITY,
    Question,
    Violation,
    check_questions,
    parse_questions,
    violation_counts,
)

PROMPT_VERSION = "preguntas-v1"
MAX_TEXT_CHARS = 3000  # with the instructions, stays under the default 4000-character message limit
MIN_TEXT_CHARS = 40    # shorter than a couple of sentences gives nothing to ask about
MAX_PER_KIND = 10
TOKENS_PER_QUESTION = 48  # max_new_tokens = 48 × (N + M) + 32: a question is 15–30 tokens on gemma-3

SYSTEM = (
    "Eres un docente que prepara ejercicios de comprensión lectora en español. Lee el texto que te dan y "
    "escribe exactamente el número de preguntas que se pide: primero las preguntas abiertas de respuesta "
    "corta y después las afirmaciones de verdadero o falso.\n"
    "Formato obligatorio, una por línea, numeradas y sin nada más:\n"
    "1. [abierta] ¿pregunta?\n"
    "2. [V/F] afirmación.\n"
    "Reglas: no escribas respuestas ni soluciones; no digas si las afirmaciones son verdaderas o falsas; "
    "cada pregunta abierta empieza con ¿ y termina con ?; cada afirmación de verdadero o falso es una "
    "oración afirmativa, no una pregunta; no repitas preguntas; todas se responden con el texto."
)


# ---------------------------------------------------------------- prompt

def _ask(n_open: int, n_tf: int) -> str:
    def part(n: int, one: str, many: str) -> str:
        return "ninguna " + one if n == 0 else (f"1 {one}" if n == 1 else f"{n} {many}")

    return (f"Escribe {part(n_open, 'pregunta abierta de respuesta corta', 'preguntas abiertas de respuesta corta')} "
            f"y {part(n_tf, 'afirmación de verdadero o falso', 'afirmaciones de verdadero o falso')} sobre el texto. "
            "Solo las preguntas, sin respuestas.")


def build_messages(text: str, n_open: int, n_tf: int) -> list[dict[str, str]]:
    """System prompt, one worked example (2 + 2 questions) and the request."""
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Texto:\n{EXAMPLE_TEXT}\n\n{_ask(2, 2)}"},
        {"role": "assistant", "content": EXAMPLE_OUTPUT},
        {"role": "user", "content": f"Texto:\n{text.strip()}\n\n{_ask(n_open, n_tf)}"},
    ]


def check_request(text: Any, n_open: Any, n_tf: Any, similarity: float = SIMILARITY) -> tuple[str, int, int]:
    """(text, N, M) validated (and the similarity threshold); EsllmError with a Spanish message otherwise."""
    if isinstance(similarity, bool) or not isinstance(similarity, (int, float)) or not 0 < similarity <= 1:
        raise EsllmError(f"El umbral de similitud debe estar entre 0 y 1 (recibido {similarity!r}).")
    if not isinstance(text, str) or not text.strip():
        raise EsllmError("Pegue un texto en español sobre el que hacer las preguntas: el texto está vacío.")
    text = text.strip()
    if len(text) > MAX_TEXT_CHARS:
        raise EsllmError(f"El texto es demasiado largo: {len(text)} caracteres (máximo {MAX_TEXT_CHARS}). Acórtelo.")
    if len(text) < MIN_TEXT_CHARS:
        raise EsllmError(f"El texto es demasiado corto: {len(text)} caracteres (mínimo {MIN_TEXT_CHARS}).")
    out = []
    for name, v in (("abiertas (N)", n_open), ("de verdadero o falso (M)", n_tf)):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_PER_KIND:
            raise EsllmError(f"El número de preguntas {name} debe ser un entero entre 0 y {MAX_PER_KIND} "
                             f"(recibido {v!r}).")
        out.append(v)
    if out[0] + out[1] == 0:
        raise EsllmError("Pida al menos una pregunta: N y M son 0.")
    return text, out[0], out[1]


# ---------------------------------------------------------------- generation and storage

@dataclass
class QuestionsRun:
    questions: list[Question]  # the items (kind "abierta" or "vf")
    violations: list[Violation]
    raw_output: str
    params: dict[str, Any]
    run_id: Optional[int] = None


def _generate(engine, contestant: str, text: str, n_open: int, n_tf: int, *, similarity: float,
              preset: Optional[str], max_new_tokens: Optional[int]) -> QuestionsRun:
    text, n_open, n_tf = check_request(text, n_open, n_tf, similarity)
    mnt = max_new_tokens or TOKENS_PER_QUESTION * (n_open + n_tf) + 32
    res = engine.generate(contestant, build_messages(text, n_open, n_tf), preset=preset,
                          overrides={"max_new_tokens": mnt, "seed": 0})
    parsed = parse_questions(res.text)
    violations = check_questions(parsed, n_open, n_tf, text=text, similarity=similarity)
    return QuestionsRun([q for q in parsed if q.kind in KINDS], violations, res.text, dict(res.params))


def generate_questions(engine, contestant: str, text: str, n_open: int, n_tf: int, *,
                       similarity: float = SIMILARITY, preset: Optional[str] = None,
                       max_new_tokens: Optional[int] = None) -> tuple[list[Question], list[Violation], str]:
    """(questions, violations, raw output). Uses the contestant's preset unless `preset` is given (seed 0
    for sampling presets, so a run can be repeated)."""
    r = _generate(engine, contestant, text, n_open, n_tf, similarity=similarity, preset=preset,
                  max_new_tokens=max_new_tokens)
    return r.questions, r.violations, r.raw_output


@dataclass(frozen=True)
class QuestionsRequest:
    """The one item of a questions run: the text and how many questions of each kind, checked."""

    text: str
    n_open: int
    n_tf: int


class Questions(Evaluation):
    """N open and M true/false questions about one text (see the module docstring)."""

    kind = "questions"

    def __init__(self, text: Any, n_open: Any, n_tf: Any, *, similarity: float = SIMILARITY,
                 preset: Optional[str] = None, max_new_tokens: Optional[int] = None):
        self.text, self.n_open, self.n_tf = text, n_open, n_tf
        self.similarity, self.preset, self.max_new_tokens = similarity, preset, max_new_tokens

    def load(self, store=None) -> list[QuestionsRequest]:
        return [QuestionsRequest(*check_request(self.text, self.n_open, self.n_tf, self.similarity))]

    def config(self, items: Sequence[QuestionsRequest]) -> dict[str, Any]:
        (req,) = items
        return {"text_sha256": hashlib.sha256(req.text.encode("utf-8")).hexdigest(), "text_chars": len(req.text),
                "n_open": req.n_open, "n_tf": req.n_tf, "prompt_version": PROMPT_VERSION,
                "similarity": self.similarity, "preset": self.preset}

    def evaluate(self, engine, contestant: str, items: Sequence[QuestionsRequest],
                 progress: Optional[Progress] = None) -> Outcome:
        (req,) = items
        r = _generate(engine, contestant, req.text, req.n_open, req.n_tf, similarity=self.similarity,
                      preset=self.preset, max_new_tokens=self.max_new_tokens)
        if progress:
            progress(1, 1, f"{contestant}: preguntas generadas")
        metrics = {"n_open": sum(q.kind == "abierta" for q in r.questions),
                   "n_tf": sum(q.kind == "vf" for q in r.questions), "requested_open": req.n_open,
                   "requested_tf": req.n_tf, "violations": len(r.violations),
                   "violations_by_kind": violation_counts(r.violations)}
        details = ([{"record": "question", **q.as_dict()} for q in r.questions]
                   + [{"record": "violation", **v.as_dict()} for v in r.violations]
                   + [{"record": "output", "text": r.raw_output}])
        return Outcome(metrics=metrics, details=details, config={"params": r.params})

    def summary(self, run) -> str:
        if run.status != "done":
            return f"{run.contestant}: FALLÓ: {run.error}"
        m = run.metrics
        return (f"{run.contestant}: {m['n_open']} abiertas + {m['n_tf']} V/F (pedidas {m['requested_open']} + "
                f"{m['requested_tf']}), {m['violations']} problema(s) (eval_run #{run.id})")


def _record(cls, d: dict[str, Any]):
    return cls(**{f.name: d[f.name] for f in fields(cls)})


def questions_result(run) -> QuestionsRun:
    """The QuestionsRun of a finished stored run (rebuilt from its details)."""
    return QuestionsRun(questions=[_record(Question, d) for d in run.details if d["record"] == "question"],
                        violations=[_record(Violation, d) for d in run.details if d["record"] == "violation"],
                        raw_output=next(d["text"] for d in run.details if d["record"] == "output"),
                        params=dict(run.config.get("params") or {}), run_id=run.id)
