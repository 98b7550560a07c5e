"""Reading-comprehension questions, the pure part: parse a model's output into questions and check them
(esllm/evals/questions.py asks the model and stores the run). Plain functions over text, no model.

Output format asked for (PROMPT_VERSION), one item a line, the open questions first:

    1. [abierta] ¿Con quién fue Lucía al lago?
    2. [V/F] Lucía y su abuelo fueron al lago en autobús.

`parse_questions` also accepts "1)", "1.-", "(1)", "-", "*", "•", "**1.**", "Pregunta 1:" before the tag, the
tag in brackets or parentheses or bare with a colon ("V/F:"), and tag variants ("respuesta corta",
"VF", "V o F", "verdadero/falso"…). A line without a recognised tag is kept with kind "otra", so that
`check_questions` can report it.

Violation kinds (`check_questions`):
  cantidad     the number of open or true/false questions differs from what was asked
  respuesta    an answer is included: "Respuesta:", "R:", "Solución:", "(Verdadero)", "— Falso", a
               line that is only "Verdadero"/"Falso"/"Sí"/"No", or text after an open question's "?"
  duplicada    two questions whose normalised texts (lower case, no accents, no punctuation) have a
               difflib.SequenceMatcher ratio ≥ `similarity` (default 0.8). The ratio counts shared
               characters, so two short questions that differ in one word ("…al lago?" / "…al
               parque?", 0.85) count as duplicates at 0.8; raise it to 0.9 to flag only rewordings
  mal_formada  an open question without "¿…?", a true/false item phrased as a question, an empty or
               too short item (open: fewer than 2 words or 8 letters; true/false: fewer than 3 words)
  ilegible     a line that is no question (marked when it copies the pasted text)
  ejemplo      a question about the worked example instead of the pasted text: it uses two or more of
               the example's distinctive words (EXAMPLE_WORDS) that the pasted text does not contain,
               or one of them and is a near-duplicate of an example question. gemma-3-270m does this a
               lot ("Marta y su abuelo fueron al lago en autobús." about a text with no lake).
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any, Optional

SIMILARITY = 0.8

KINDS = ("abierta", "vf")
VIOLATION_KINDS = ("cantidad", "respuesta", "duplicada", "mal_formada", "ilegible", "ejemplo")
VIOLATION_LABELS = {"cantidad": "número de preguntas", "respuesta": "respuesta incluida",
                    "duplicada": "pregunta casi duplicada", "mal_formada": "pregunta mal formada",
                    "ilegible": "línea no reconocida", "ejemplo": "copia del ejemplo"}

EXAMPLE_TEXT = (
    "El sábado, Lucía y su abuelo fueron en bicicleta hasta el lago. Llevaron pan para los patos, pero un "
    "cartel pedía no darles de comer. Entonces se sentaron a mirar cómo nadaban los patos y volvieron a "
    "casa antes de que empezara a llover."
)
EXAMPLE_OUTPUT = (
    "1. [abierta] ¿Con quién fue Lucía al lago?\n"
    "2. [abierta] ¿Qué pedía el cartel?\n"
    "3. [V/F] Lucía y su abuelo fueron al lago en autobús.\n"
    "4. [V/F] Volvieron a casa antes de que empezara a llover."
)
# What only the worked example is about (normalised): a question using them is about the example.
EXAMPLE_WORDS = frozenset({"lucia", "abuelo", "bicicleta", "lago", "pan", "patos", "pato", "cartel",
                           "nadaban", "llover", "sabado"})


@dataclass(frozen=True)
class Question:
    kind: str   # "abierta" | "vf" | "otra" (a line that is no question; reported by check_questions)
    text: str   # without numbering, bullet and tag
    line: int   # 1-based line of the model output
    raw: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Violation:
    kind: str  # one of VIOLATION_KINDS
    message: str  # Spanish, for the report
    line: Optional[int] = None  # None for count violations
    question: Optional[str] = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- parsing

_PREFIX = re.compile(r"^(?:[-*•·>]+\s*|#+\s*|\(?\d{1,2}\s*(?:\.-|[.):\-])\)?\s*|\(\d{1,2}\)\s*"
                     r"|pregunta\s*\d{0,2}\s*[:.\-]\s*)", re.IGNORECASE)
_TAG = re.compile(r"^[\[(]\s*([^\])\n]{1,30}?)\s*[\])]\s*[:.\-–—]?\s*")
_BARE_TAG = re.compile(r"^(abierta|respuesta corta|v\s*/\s*f|vf|v o f|verdadero\s*/\s*falso|verdadero o falso)"
                       r"\s*[:.\-–—]\s*", re.IGNORECASE)
_NOISE = re.compile(r"^[\W_]*$")  # "---", "```", "**": no content


def _fold(s: str) -> str:
    """Lower case without accents."""
    return "".join(c for c in unicodedata.normalize("NFKD", s.lower()) if not unicodedata.combining(c))


def _tag_kind(tag: str) -> Optional[str]:
    t = re.sub(r"[^a-z/]", "", _fold(tag))
    if t in ("abierta", "preguntaabierta", "respuestacorta", "corta", "a"):
        return "abierta"
    if t in ("v/f", "vf", "vof", "verdadero/falso", "verdaderoofalso", "verdaderofalso", "cierto/falso",
             "ciertoofalso", "v/f/", "afirmacion"):
        return "vf"
    return None


def parse_questions(output: str) -> list[Question]:
    """Every non-empty line of the model output as a Question; lines with no recognised tag get kind
    "otra". Numbering, bullets, markdown bold and the tag are removed from `text`."""
    out: list[Question] = []
    for i, raw in enumerate((output or "").splitlines(), start=1):
        s = raw.strip()
        if _NOISE.match(s):
            continue
        s = s.replace("**", "").replace("__", "").strip()
        while (m := _PREFIX.match(s)) and m.end() > 0:
            s = s[m.end():].lstrip()
        kind = None
        if m := _TAG.match(s):
            kind = _tag_kind(m.group(1))
            if kind:
                s = s[m.end():]
        elif m := _BARE_TAG.match(s):
            kind = _tag_kind(m.group(1))
            s = s[m.end():]
        out.append(Question(kind or "otra", (s if kind else raw).strip(), i, raw))
    return out


# ---------------------------------------------------------------- checks

_ANSWER_WORD = re.compile(r"\b(respuestas?(\s+correctas?)?|soluci[oó]n|answer)\s*[:=]", re.IGNORECASE)
_ANSWER_R = re.compile(r"(^|[\s(\[])R\s*[:/]\s*\S")
_VERDICT = r"(verdader[oa]|fals[oa]|cierto|correcto|incorrecto|v|f)"
_VERDICT_END = re.compile(r"(?:[\(\[]\s*" + _VERDICT + r"\s*[\)\]]|(?:—|–|-|:|→|=>|=|\|)\s*" + _VERDICT + r")"
                          r"\s*\.?\s*$", re.IGNORECASE)
_VERDICT_START = re.compile(r"^[\(\[]?\s*" + _VERDICT + r"\s*[\]:.\-—–)]\s*\S", re.IGNORECASE)
_VERDICT_ONLY = re.compile(r"^[\W_]*(verdader[oa]|fals[oa]|cierto|s[ií]|no|v|f)[\W_]*$", re.IGNORECASE)
_TF_PREFIX = re.compile(r"^(verdadero\s*(o|/)\s*falso|v\s*(o|/)\s*f)\s*[:.\-–—]\s*", re.IGNORECASE)


def normalise(text: str) -> str:
    """Lower case, no accents, no punctuation, single spaces: what the duplicate check compares."""
    return " ".join(re.sub(r"[^\w]+", " ", _fold(text)).split())


def similarity_ratio(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, normalise(a), normalise(b), autojunk=False).ratio()


def _answer_in(q: Question) -> Optional[str]:
    """Why this item includes an answer, or None."""
    t = q.text
    if _ANSWER_WORD.search(t) or _ANSWER_R.search(t):
        return "incluye una respuesta («Respuesta:», «R:» o «Solución:»)"
    if q.kind == "abierta" and "?" in t:
        after = t[t.rindex("?") + 1:].strip(" \t*_\"'»”).")
        if re.search(r"\w", after):
            return f"hay texto después del signo de interrogación: «{after[:60]}» (¿una respuesta?)"
    if q.kind == "vf":
        body = _TF_PREFIX.sub("", t)
        if _VERDICT_END.search(body) or _VERDICT_START.match(body):
            return "indica si la afirmación es verdadera o falsa"
    return None


def _malformed(q: Question) -> Optional[str]:
    t = q.text
    if not t:
        return "está vacía"
    words = re.findall(r"\w+", t)
    letters = sum(c.isalpha() for c in t)
    if q.kind == "abierta":
        if len(words) < 2 or letters < 8:
            return "es demasiado corta"
        problems = []  # "Según el texto, ¿…?" is good Spanish: «¿» need not open the line
        if "¿" not in t or ("?" in t and t.index("¿") > t.rindex("?")):
            problems.append("no abre con «¿»")
        if "?" not in t:
            problems.append("no cierra con «?»")
        return "una pregunta abierta " + " y ".join(problems) if problems else None
    body = _TF_PREFIX.sub("", t)
    if len(re.findall(r"\w+", body)) < 3:
        return "es demasiado corta"
    if "?" in body or "¿" in body:
        return "está formulada como pregunta; debe ser una afirmación que se pueda juzgar verdadera o falsa"
    return None


def _copies_text(line: str, text: str) -> bool:
    n = normalise(line)
    return len(n) >= 20 and n in normalise(text)


def _about_example(q: Question, text_words: set[str], similarity: float) -> Optional[str]:
    hits = sorted((set(normalise(q.text).split()) & EXAMPLE_WORDS) - text_words)
    if len(hits) >= 2 or (hits and any(similarity_ratio(q.text, ex.text) >= similarity
                                       for ex in parse_questions(EXAMPLE_OUTPUT))):
        return f"trata del texto de ejemplo, no del pegado ({', '.join(hits)})"
    return None


def check_questions(questions: list[Question], n_open: int, n_tf: int, *, text: str,
                    similarity: float = SIMILARITY) -> list[Violation]:
    """Every violation (see the module docstring), count violations first, then by line."""
    out: list[Violation] = []
    items = [q for q in questions if q.kind in KINDS]
    got = {k: sum(q.kind == k for q in items) for k in KINDS}
    for kind, wanted, label in (("abierta", n_open, "preguntas abiertas"), ("vf", n_tf, "afirmaciones de verdadero o falso")):
        if got[kind] != wanted:
            out.append(Violation("cantidad", f"Se pidieron {wanted} {label} y hay {got[kind]}."))
    per_line: list[Violation] = []
    text_words = set(normalise(text).split())
    for q in questions:
        if q.kind == "otra":
            if _VERDICT_ONLY.match(q.text) or _ANSWER_WORD.search(q.text) or _ANSWER_R.search(q.text) \
                    or _VERDICT_START.match(q.text):
                per_line.append(Violation("respuesta", f"Línea {q.line}: es una respuesta, no una pregunta.", q.line, q.raw))
            elif _copies_text(q.text, text):
                per_line.append(Violation("ilegible", f"Línea {q.line}: copia el texto en lugar de hacer una pregunta.",
                                          q.line, q.raw))
            elif "?" in q.text:
                per_line.append(Violation("ilegible", f"Línea {q.line}: pregunta sin la etiqueta [abierta] o [V/F].",
                                          q.line, q.raw))
            else:
                per_line.append(Violation("ilegible", f"Línea {q.line}: no tiene el formato «N. [abierta] ¿…?» ni "
                                                      "«N. [V/F] afirmación».", q.line, q.raw))
            continue
        if why := _answer_in(q):
            per_line.append(Violation("respuesta", f"Línea {q.line}: {why}.", q.line, q.text))
        if why := _malformed(q):
            per_line.append(Violation("mal_formada", f"Línea {q.line}: {why}.", q.line, q.text))
        if why := _about_example(q, text_words, similarity):
            per_line.append(Violation("ejemplo", f"Línea {q.line}: {why}.", q.line, q.text))
    for j, q in enumerate(items):
        for p in items[:j]:
            r = similarity_ratio(p.text, q.text)
            if r >= similarity:
                per_line.append(Violation("duplicada", f"Línea {q.line}: casi igual a la línea {p.line} "
                                                       f"(similitud {r:.2f} ≥ {similarity:.2f}).", q.line, q.text))
                break
    return out + sorted(per_line, key=lambda v: v.line or 0)


def violation_counts(violations: list[Violation]) -> dict[str, int]:
    return {k: sum(v.kind == k for v in violations) for k in VIOLATION_KINDS}


def format_questions(questions: list[Question]) -> str:
    """Markdown list of the parsed questions."""
    if not questions:
        return "**Preguntas**\n\n_(no se reconoció ninguna pregunta)_"
    return "**Preguntas** (con su línea en la salida del modelo)\n\n" + "\n".join(
        f"{i}. [{'abierta' if q.kind == 'abierta' else 'V/F'}] {q.text} _(línea {q.line})_"
        for i, q in enumerate(questions, start=1))


def format_violations(violations: list[Violation]) -> str:
    """Markdown: how many problems, then one line each."""
    if not violations:
        return ("**Problemas: 0.** El número de preguntas es el pedido; sin respuestas, sin duplicados y "
                "bien formadas.")
    return f"**Problemas: {len(violations)}**\n\n" + "\n".join(
        f"- *{VIOLATION_LABELS[v.kind]}* — {v.message}" for v in violations)


def format_report(questions: list[Question], violations: list[Violation]) -> str:
    return format_questions(questions) + "\n\n" + format_violations(violations)
