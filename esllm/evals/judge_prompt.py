"""What a judge model is asked and how its reply is read: two grading prompts, and `parse_grade`, which reads a
1-5 grade out of a reply or says there is none. Pure functions; esllm/evals/judge.py runs them against a model.

- "esllm" (ours, `PROMPT_VERSION`): a Spanish system prompt with the study's rubric (four aspects, the 1-5
  anchors), earlier turns of a contextual series, one criterion at a time;
- "estudio" (`STUDY_PROMPT_VERSION`): the study's own prompt to GPT-4, in English, verbatim with the
  instruction and the answer filled in, one user message, no system prompt, no earlier turns, general grade
  only (`study_grading_messages`).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Optional, Sequence

from esllm import EsllmError
from esllm.store.models import CRITERIA

PROMPT_VERSION = "juez-es-v1"  # change it whenever SYSTEM_PROMPT, TASK_*, USER_PROMPT or REMINDER change

ASPECT_TEXT = {
    "exactitud": ("la exactitud", "¿la información es correcta?"),
    "relevancia": ("la relevancia", "¿responde lo que se pidió?"),
    "coherencia": ("la coherencia", "¿el texto es claro y está bien construido?"),
    "comprension": ("la comprensión del contexto", "¿entiende el tema y el contexto de la pregunta?"),
}

SYSTEM_PROMPT = """Eres un evaluador experto e imparcial de respuestas escritas en español. Vas a calificar la \
respuesta de un asistente a la instrucción de un usuario con esta rúbrica.

Aspectos:
- Exactitud: ¿la información es correcta?
- Relevancia: ¿responde lo que se pidió?
- Coherencia: ¿el texto es claro y está bien construido?
- Comprensión del contexto: ¿entiende el tema y el contexto de la pregunta?

Escala:
1 = muy deficiente: errónea o irrelevante, incoherente, sin comprensión del tema.
2 = deficiente: varios errores graves, se aparta de la pregunta, incoherencias notables.
3 = aceptable: mayormente correcta con algunos errores; responde pero de forma superficial; fallos menores de fluidez.
4 = bueno: precisa con errores mínimos; responde por completo; clara y fluida.
5 = perfecto: totalmente correcta y detallada; exhaustiva; excepcionalmente clara; capta los matices.

{task}
Responde solo con un número entero del 1 al 5, sin explicación."""

TASK_GENERAL = "Da una calificación general de la respuesta que tenga en cuenta los cuatro aspectos."
TASK_ASPECT = "Califica solo {name} de la respuesta ({question}), con la misma escala."

# Square-bracket headers, not "###": the Alpaca-style template uses "### Instrucción:" for its own turns.
USER_PROMPT = """{context}[Instrucción del usuario]
{instruction}

[Respuesta a calificar]
{answer}

[Calificación: {what}, un número del 1 al 5]"""

REMINDER = "Responde solo con un número del 1 al 5."

# The study's judge prompt (GPT-4), verbatim: only the instruction and the answer are filled in.
STUDY_PROMPT = ('I need your help grading an answer to an instruction given to a Large Language Model chatbot. '
                'The instruction was written in Spanish and the answer was expected to be in Spanish as well. The '
                'instruction given was "{instruction}" and the answer obtained was "{answer}". In the grading '
                'system, a 5 is the best possible answer in your opinion and 1 was the worst possible answer. '
                'Following that, your grade will be number from 1 to 5.')
STUDY_PROMPT_VERSION = "estudio-gpt4-v1"
JUDGE_PROMPTS = {"esllm": f"el nuestro, en español, con la rúbrica ({PROMPT_VERSION})",
                 "estudio": f"el del estudio (GPT-4, en inglés, literal; {STUDY_PROMPT_VERSION})"}


def study_grading_messages(instruction: str, answer: str, criterion: str = "general",
                           max_chars: int = 4000) -> list[dict[str, str]]:
    """The study's prompt as one user message; the answer is cut in the middle ("[…]") only if the message
    would not fit in `max_chars`. The study asked for one general grade: an aspect is refused."""
    if criterion != "general":
        raise EsllmError("El prompt del estudio solo pide una calificación general; use el criterio «general».")
    room = max_chars - len(STUDY_PROMPT.format(instruction=instruction.strip(), answer=""))
    if room < 200:
        raise EsllmError(f"El ítem no cabe en el límite de {max_chars} caracteres del juez ni recortado.")
    text = STUDY_PROMPT.format(instruction=instruction.strip(), answer=_clip(answer, room))
    return [{"role": "user", "content": text}]


# ---------------------------------------------------------------- prompt

def grading_messages(instruction: str, answer: str, criterion: str = "general",
                     context: Sequence[tuple[str, str]] = (), max_chars: int = 4000) -> list[dict[str, str]]:
    """[system, user] messages asking for one 1-5 grade of `answer` on `criterion`.

    `context`: the earlier turns of a contextual series as (user text, assistant answer). The user
    message is kept within `max_chars` (the engine's max_prompt_chars): long texts are cut in the
    middle ("[…]"), earlier turns first and oldest turns dropped, then the answer; EsllmError if even
    that cannot fit.
    """
    if criterion == "general":
        task = TASK_GENERAL
        what = "general"
    elif criterion in ASPECT_TEXT:
        name, question = ASPECT_TEXT[criterion]
        task, what = TASK_ASPECT.format(name=name, question=question), name.split(" ", 1)[1]
    else:
        raise EsllmError(f"Criterio desconocido {criterion!r}; use uno de {', '.join(CRITERIA)}.")
    system = SYSTEM_PROMPT.format(task=task)
    turns = list(context)
    for clip_context, clip_answer in ((None, None), (1500, None), (600, None), (200, None), (200, 2000),
                                      (200, 1000), (200, 400)):
        while True:
            user = _user_text(instruction, answer, turns, what, clip_context, clip_answer)
            if len(user) <= max_chars or not turns or clip_context is None:
                break
            turns = turns[1:]  # once clipping has started, drop the oldest turns before clipping harder
        if len(user) <= max_chars:
            return [{"role": "system", "content": system}, {"role": "user", "content": user}]
    raise EsllmError(f"El ítem no cabe en el límite de {max_chars} caracteres del juez ni recortado.")


def _clip(text: str, n: Optional[int]) -> str:
    text = text.strip()
    if n is None or len(text) <= n:
        return text
    return text[: n * 2 // 3].rstrip() + " […] " + text[-(n // 3):].lstrip()


def _user_text(instruction, answer, turns, what, clip_context, clip_answer) -> str:
    context = ""
    if turns:
        lines = ["[Turnos anteriores de la conversación]"]
        for u, a in turns:
            lines += [f"Usuario: {_clip(u, clip_context)}", f"Asistente: {_clip(a, clip_context)}"]
        context = "\n".join(lines) + "\n\n"
    return USER_PROMPT.format(context=context, instruction=_clip(instruction, clip_context and max(clip_context, 1000)),
                              answer=_clip(answer, clip_answer), what=what)


def with_reminder(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    out = [dict(m) for m in messages]
    out[-1]["content"] = out[-1]["content"] + "\n\n" + REMINDER
    return out


ECHO_MIN = 8  # shorter reply lines are never taken for an echo ("4", "Cuatro.")


def strip_echo(reply: str, messages: Sequence[dict[str, str]]) -> str:
    """The reply without the lines that repeat the prompt: a small base model often copies the answer
    or the rubric back ("[Respuesta a calificar] …", "4 = bueno: …"), and a digit in a copied line is
    not a grade. A reply line (stripped, at least ECHO_MIN characters) is dropped when it equals a
    prompt line or is the start of one (a copy cut off by the token limit)."""
    if not isinstance(reply, str):
        return reply
    prompt_lines = [ln.strip() for m in messages for ln in str(m.get("content", "")).splitlines() if ln.strip()]
    kept = []
    for line in reply.splitlines():
        s = line.strip()
        if len(s) >= ECHO_MIN and any(pl.startswith(s) for pl in prompt_lines):
            continue
        kept.append(line)
    return "\n".join(kept)


# ---------------------------------------------------------------- parsing

WORDS = {"cero": 0, "uno": 1, "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5, "seis": 6, "siete": 7, "ocho": 8,
         "nueve": 9, "diez": 10}
_NUM = r"\d+(?:[.,]\d+)?"
_SCALE = re.compile(r"(?:\b(?:en\s+)?(?:una\s+)?escala\s+)?\b(?:del?|entre)?\s*\b1\s*(?:-|–|a|al|y|hasta)\s*5\b")
_DENOM = re.compile(rf"({_NUM})\s*(?:/|\bde\b|\bsobre\b|\bout of\b)\s*(?:5|cinco)\b")
_RANGE = re.compile(rf"(?<![\d.,])({_NUM})\s*(?:-|–|—|/|\bo\b|\bu\b|\by\b|\ba\b|\bal\b|\bhasta\b)\s*({_NUM})(?![\d])")
_CANDIDATE = re.compile(rf"(?<![\d.,\w])({_NUM})(?![\d\w])")
_LABEL = re.compile(
    r"\b(?:calificaci[oó]n|puntuaci[oó]n|puntaje|nota|valoraci[oó]n|score|grade|merece|mereces|le doy|doy|"
    r"asigno|otorgo|pongo|califico)\b"
    r"(?:\s*(?:final|general|global|total|es|de|un|una|con|la|el|esta|respuesta|[():=\-–]))*\s*"
    rf"({_NUM})(?![\d\w])")
_LEAD = re.compile(rf"^\s*({_NUM})\s*(?:[.:)\-–—,!]\s*)?(?:\(?[^\d\n]{{0,30}}\)?)?[.!]?\s*$")


def _value(token: str) -> float:
    return float(token.replace(",", "."))


def parse_grade(reply: str) -> Optional[int]:
    """The 1-5 grade in a judge's reply, or None when there is none or it is not unambiguous.

    Rules, in order (case-insensitive; never a guess):
    1. Markdown emphasis and code marks (* _ ` #) are removed; the number words cero…diez become digits
       ("Cuatro." -> "4."); "una" is an article, not a number.
    2. Mentions of the scale ("del 1 al 5", "1-5", "de 1 a 5", "entre 1 y 5") are removed and
       denominators are dropped ("4/5", "4 de 5", "4 sobre 5" -> "4").
    3. A range or alternative between two different numbers ("3-4", "3 o 4", "entre 3 y 4", "3 a 4")
       makes the reply ambiguous: None.
    4. Strong candidates: numbers right after a grade word (calificación, puntuación, puntaje, nota,
       valoración, merece, le doy, asigno, otorgo, …, with filler such as "final", ":" or "un" between:
       "Nota final: 4", "merece un 4 porque…"), and a number that opens the reply's first line when
       that line holds nothing else but punctuation and at most a few words ("4 - bueno", "4 (bueno)").
       If there are strong candidates they decide alone (explanations may quote other numbers).
    5. Otherwise every number in the reply is a candidate ("La respuesta es un 4.").
    6. The deciding candidates must all be the same integer between 1 and 5: "7", "0", "4.5",
       "Nota: 3. Nota final: 4" or "3 4" give None, as do an empty reply and one without a number.
    """
    if not isinstance(reply, str):
        return None
    text = re.sub(r"[*_`#]+", " ", unicodedata.normalize("NFC", reply).lower())
    text = re.sub(r"\b(" + "|".join(WORDS) + r")\b", lambda m: str(WORDS[m.group(1)]), text)
    text = _SCALE.sub(" ", text)
    text = _DENOM.sub(r"\1", text)
    if not text.strip():
        return None
    for a, b in _RANGE.findall(text):
        if _value(a) != _value(b):
            return None
    strong = [m.group(1) for m in _LABEL.finditer(text)]
    first_line = text.strip().splitlines()[0]
    lead = _LEAD.match(first_line)
    if lead:
        strong.append(lead.group(1))
    found = strong or _CANDIDATE.findall(text)
    values = {_value(t) for t in found}
    if len(values) != 1:
        return None
    v = values.pop()
    return int(v) if v.is_integer() and 1 <= v <= 5 else None
