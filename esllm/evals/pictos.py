"""Pictograms to sentence (AAC): a contestant turns the keywords chosen on a pictogram board ("yo querer
comer manzana") into one natural Spanish sentence; corpus BLEU and chrF (sacrebleu) against a reference
sentence, per contestant.

    items = load_pictos("data/pictos/muestra-es.jsonl")
    runs = run_contestants(Pictos(file), Session, engine, names, items)   # one stored run each (esllm/evals/base.py)
    python -m esllm pictos [--file F.jsonl] [--contestants A B] [--limit 40]   # esllm/cli/evals.py

Test-set format (JSONL, one object a line, UTF-8; blank lines ignored, other keys refused):

    {"id": "comida-01", "keywords": ["yo", "querer", "comer", "manzana"], "reference": "Quiero comer una manzana."}

Generation: the contestant's own preset (as in rating sessions and «Comparar»), seed 0 for sampling
presets, at most 40 new tokens; `preset="greedy"` (CLI `--preset greedy`) to compare decoding-free.
Only the first sentence of the first non-empty line is scored (models keep writing after it).
BLEU is sacrebleu's default (13a tokenisation, exp smoothing, mixed case), chrF its default chrF2
(character 6-grams, β = 2); both corpus-level, 0–100. Their signature strings are stored with each run.

As an `Evaluation` (esllm/evals/base.py): the items are the file's rows, the config is the file, its
sha256, the prompt version, preset and token limit; `evaluate` generates and scores one contestant and
adds the generation parameters and the sacrebleu signatures to the config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from esllm import EsllmError
from esllm.evals.base import Evaluation, Outcome, Progress
from esllm.evals.runs import latest_runs
from esllm.paths import PICTOS_DIR, ROOT, display_path, file_sha256, jsonl_lines

SAMPLE = PICTOS_DIR / "muestra-es.jsonl"
PROMPT_VERSION = "pictos-v1"
MAX_NEW_TOKENS = 40  # a sentence of 5–15 words is 8–25 tokens; more only lets the model ramble
MAX_KEYWORDS = 20
MAX_ITEMS = 5000
MAX_ERRORS_LISTED = 20

SYSTEM = (
    "Eres un asistente de comunicación aumentativa y alternativa (CAA). Una persona elige pictogramas en un "
    "tablero y tú recibes sus palabras clave en forma básica (verbos en infinitivo, sustantivos en singular, "
    "pronombres como yo, tú o él), en el orden elegido. Escribe una sola oración en español, natural y "
    "correcta, que diga lo que la persona quiere decir: conjuga los verbos, añade artículos y preposiciones, "
    "y no añadas información nueva. Responde solo con la oración."
)
EXAMPLE_KEYWORDS = ["mamá", "ir", "tienda", "comprar", "pan"]
EXAMPLE_SENTENCE = "Mamá va a la tienda a comprar pan."


@dataclass(frozen=True)
class PictoItem:
    id: str
    keywords: tuple[str, ...]
    reference: str


def _row_problem(row: Any) -> Optional[str]:
    if not isinstance(row, dict):
        return "cada línea debe ser un objeto JSON {\"id\", \"keywords\", \"reference\"}"
    extra = sorted(set(row) - {"id", "keywords", "reference"})
    if extra:
        return f"campos desconocidos: {', '.join(extra)} (solo id, keywords, reference)"
    missing = [k for k in ("id", "keywords", "reference") if k not in row]
    if missing:
        return f"faltan campos: {', '.join(missing)}"
    if not isinstance(row["id"], str) or not row["id"].strip() or len(row["id"]) > 100:
        return "«id» debe ser un texto no vacío de hasta 100 caracteres"
    kw = row["keywords"]
    if not isinstance(kw, list) or not kw or len(kw) > MAX_KEYWORDS:
        return f"«keywords» debe ser una lista de 1 a {MAX_KEYWORDS} palabras"
    if not all(isinstance(k, str) and k.strip() and len(k) <= 60 for k in kw):
        return "cada palabra de «keywords» debe ser un texto no vacío (hasta 60 caracteres)"
    if not isinstance(row["reference"], str) or not row["reference"].strip():
        return "«reference» debe ser una oración no vacía"
    return None


def parse_pictos(text: str, name: str = "<texto>") -> list[PictoItem]:
    """Items of a JSONL test set; EsllmError listing every bad row as "línea N: …"."""
    items, errors, seen = [], [], {}
    for i, row, bad_json in jsonl_lines(text):
        if bad_json:
            errors.append(f"línea {i}: {bad_json}")
            continue
        if why := _row_problem(row):
            errors.append(f"línea {i}: {why}")
            continue
        rid = row["id"].strip()
        if rid in seen:
            errors.append(f"línea {i}: id {rid!r} repetido (ya está en la línea {seen[rid]})")
            continue
        seen[rid] = i
        items.append(PictoItem(rid, tuple(k.strip() for k in row["keywords"]), row["reference"].strip()))
    if errors:
        shown = errors[:MAX_ERRORS_LISTED]
        more = f"\n… y {len(errors) - len(shown)} más" if len(errors) > len(shown) else ""
        raise EsllmError(f"{name}: {len(errors)} fila(s) no válida(s), no se evaluó nada:\n" + "\n".join(shown) + more)
    if not items:
        raise EsllmError(f"{name}: el archivo no tiene ningún ítem.")
    if len(items) > MAX_ITEMS:
        raise EsllmError(f"{name}: {len(items)} ítems; el máximo es {MAX_ITEMS}.")
    return items


def load_pictos(path: str | Path) -> list[PictoItem]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EsllmError(f"No existe el archivo {path}.") from None
    except UnicodeDecodeError:
        raise EsllmError(f"{path.name}: el archivo no está en UTF-8.") from None
    return parse_pictos(text, path.name)


def list_files() -> list[Path]:
    """The .jsonl test sets under data/pictos/."""
    return sorted(PICTOS_DIR.glob("*.jsonl")) if PICTOS_DIR.is_dir() else []


def resolve_file(name: str) -> Path:
    """A test set under data/pictos/ by file name (or path inside it); refuses anything outside it."""
    if not isinstance(name, str) or not name.strip():
        raise EsllmError("Elija un archivo de pictogramas.")
    p = Path(name.strip())
    p = (p if p.is_absolute() else PICTOS_DIR / p.name if len(p.parts) == 1 else ROOT / p).resolve()
    if p.parent != PICTOS_DIR.resolve() or p.suffix != ".jsonl" or not p.is_file():
        raise EsllmError(f"Archivo no válido: {name!r}. Elija un .jsonl de data/pictos/.")
    return p


# ---------------------------------------------------------------- prompt and scoring

def build_messages(keywords: Sequence[str]) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Pictogramas: " + ", ".join(EXAMPLE_KEYWORDS)},
        {"role": "assistant", "content": EXAMPLE_SENTENCE},
        {"role": "user", "content": "Pictogramas: " + ", ".join(keywords)},
    ]


_LEAD = re.compile(r"^(?:[-*•>#]+\s*|\d{1,2}[.)]\s+|(?:oraci[oó]n|respuesta|frase)\s*:\s*)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?…](?=\s|$)")


def first_sentence(output: str) -> str:
    """The first sentence of the first non-empty line, without bullets, labels or wrapping quotes."""
    line = next((ln.strip() for ln in (output or "").splitlines() if re.search(r"\w", ln)), "")
    while (m := _LEAD.match(line)) and m.end() > 0:
        line = line[m.end():].lstrip()
    line = line.replace("**", "").strip().strip("\"'«»“”").strip()
    m = _SENTENCE_END.search(line)
    return line[:m.end()].strip() if m else line


def score(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Corpus BLEU and chrF with sacrebleu's defaults (the same numbers as sacrebleu.corpus_bleu and
    corpus_chrf), with their signature strings."""
    import sacrebleu
    from sacrebleu.metrics import BLEU, CHRF

    if len(hypotheses) != len(references) or not hypotheses:
        raise EsllmError("Hacen falta tantas hipótesis como referencias (y al menos una).")
    bleu, chrf = BLEU(), CHRF()
    b = bleu.corpus_score(list(hypotheses), [list(references)])
    c = chrf.corpus_score(list(hypotheses), [list(references)])
    return {"bleu": b.score, "chrf": c.score, "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()), "sacrebleu_version": sacrebleu.__version__}


class Pictos(Evaluation):
    """Pictograms → sentence over one JSONL test set, with a preset (None: each contestant's own) and a token
    limit per sentence."""

    kind = "pictos"

    def __init__(self, file: str | Path = SAMPLE, *, preset: Optional[str] = None,
                 max_new_tokens: int = MAX_NEW_TOKENS):
        self.file, self.preset, self.max_new_tokens = Path(file), preset, max_new_tokens

    def load(self, store=None) -> list[PictoItem]:
        return load_pictos(self.file)

    def config(self, items: Sequence[PictoItem]) -> dict[str, Any]:
        if not items:
            raise EsllmError("No hay ítems que evaluar.")
        return {"file": display_path(self.file), "file_sha256": file_sha256(self.file), "n": len(items),
                "prompt_version": PROMPT_VERSION, "preset": self.preset, "max_new_tokens": self.max_new_tokens}

    def evaluate(self, engine, contestant: str, items: Sequence[PictoItem],
                 progress: Optional[Progress] = None) -> Outcome:
        hyps, details, params = [], [], None
        for i, item in enumerate(items):
            res = engine.generate(contestant, build_messages(item.keywords), preset=self.preset,
                                  overrides={"max_new_tokens": self.max_new_tokens, "seed": 0})
            params = params or dict(res.params)
            hyp = first_sentence(res.text)
            hyps.append(hyp)
            details.append({"id": item.id, "keywords": list(item.keywords), "hypothesis": hyp,
                            "reference": item.reference, "output": res.text})
            if progress:
                progress(i + 1, len(items), f"{contestant}: {i + 1}/{len(items)} ítems")
        sc = score(hyps, [it.reference for it in items])
        return Outcome(metrics={"bleu": sc["bleu"], "chrf": sc["chrf"], "n": len(items)}, details=details,
                       config={"params": params, "sacrebleu_version": sc["sacrebleu_version"],
                               "bleu_signature": sc["bleu_signature"], "chrf_signature": sc["chrf_signature"]})

    def summary(self, run) -> str:
        if run.status != "done":
            return f"{run.contestant}: FALLÓ: {run.error}"
        m = run.metrics
        return f"{run.contestant}: BLEU {m['bleu']:.2f} · chrF {m['chrf']:.2f} · {m['n']} ítems (eval_run #{run.id})"


TABLE_HEADERS = ["concursante", "archivo", "BLEU", "chrF", "n", "fecha (UTC)"]


def latest_table(s) -> list[list[Any]]:
    """The newest finished pictos run per (contestant, file), as rows under TABLE_HEADERS."""
    return [[r.contestant, r.config.get("file", ""), round(r.metrics.get("bleu", 0.0), 2),
             round(r.metrics.get("chrf", 0.0), 2), r.metrics.get("n"),
             f"{r.finished_at:%Y-%m-%d %H:%M}" if r.finished_at else ""]
            for r in latest_runs(s, "pictos", config_key="file")]
