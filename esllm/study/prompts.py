"""Prompt sets: read and check JSONL or CSV files of prompts (bundled sets live in data/prompts/).

Each row: id, category, series (optional), turn (optional), text, reference (optional). A contextual
series is the rows sharing a `series`, with turns 1..n; each turn depends on the earlier ones.
`parse_prompt_file` rejects a bad file as a whole, with every problem's line number and reason, so
an import never half-happens. A file is at most `MAX_FILE_BYTES` and `MAX_ROWS` prompts, and so is a set.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from esllm import EsllmError
from esllm.paths import PROMPTS_DIR as BUNDLED_DIR
from esllm.paths import jsonl_lines
from esllm.store.models import Answer, Assignment, Prompt, PromptSet

MAX_TEXT = 8000
# One import (and one set) at most: the bundled sets are 50 and 30 prompts (~14 KB); a study of thousands of
# prompts already means contestants × attempts × thousands of answers to generate and k × thousands of items to
# rate. 2 MB holds 5,000 prompts of ~400 characters; the caps keep one upload from tying up the server's memory
# and time (the web app refuses any upload over app.MAX_UPLOAD before it gets here).
MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_ROWS = 5000
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # fullmatch: no trailing newline slips through
CATEGORY_RE = re.compile(r"[a-z0-9_áéíóúñ]{1,40}")
log = logging.getLogger(__name__)
REJECTED = "Archivo rechazado, no se importó nada"

CATEGORY_LABELS = {
    "comprension_basica": "Comprensión básica",
    "tareas_complejas": "Tareas complejas",
    "creativas": "Creativas",
    "contextual": "Contextual",
    "basicas": "Básicas",
    "complejas": "Complejas",
}


class PromptFileError(EsllmError):
    """The file was rejected; the message has one line per problem."""


@dataclass(frozen=True)
class PromptRow:
    id: str
    category: str
    text: str
    series: Optional[str] = None
    turn: Optional[int] = None
    reference: Optional[str] = None
    line: int = 0


def _row(obj: dict, line: int, errors: list[str]) -> Optional[PromptRow]:
    def bad(msg: str) -> None:
        errors.append(f"línea {line}: {msg}")

    unknown = set(obj) - {"id", "category", "series", "turn", "text", "reference"}
    if unknown:
        bad(f"claves desconocidas {sorted(unknown)}")
        return None
    pid, cat, text = obj.get("id"), obj.get("category"), obj.get("text")
    series, turn, ref = obj.get("series"), obj.get("turn"), obj.get("reference")
    ok = True
    if not isinstance(pid, str) or not ID_RE.fullmatch(pid):
        bad("'id' debe ser texto de 1-64 letras, dígitos, . _ -")
        ok = False
    if not isinstance(cat, str) or not CATEGORY_RE.fullmatch(cat):
        bad("'category' debe ser una palabra en minúsculas (p. ej. comprension_basica)")
        ok = False
    if not isinstance(text, str) or not text.strip():
        bad("'text' está vacío")
        ok = False
    elif len(text) > MAX_TEXT:
        bad(f"'text' tiene {len(text)} caracteres (máximo {MAX_TEXT})")
        ok = False
    elif "\x00" in text:  # PostgreSQL cannot store it; no prompt needs it
        bad("'text' contiene un carácter nulo")
        ok = False
    if series in ("", None):
        series = None
        if turn not in (None, ""):
            bad("'turn' sin 'series'")
            ok = False
        turn = None
    else:
        if not isinstance(series, str) or not ID_RE.fullmatch(series):
            bad("'series' debe ser un identificador corto")
            ok = False
        try:
            turn = int(turn)
            if turn < 1 or str(turn) != str(obj.get("turn")).strip():
                raise ValueError
        except (TypeError, ValueError):
            bad("'turn' debe ser un entero ≥ 1 cuando hay 'series'")
            ok = False
    if ref is not None and not isinstance(ref, str):
        bad("'reference' debe ser texto")
        ok = False
    elif ref is not None and len(ref) > MAX_TEXT:
        bad(f"'reference' tiene {len(ref)} caracteres (máximo {MAX_TEXT})")
        ok = False
    elif ref is not None and "\x00" in ref:
        bad("'reference' contiene un carácter nulo")
        ok = False
    if not ok:
        return None
    return PromptRow(pid, cat, text.strip(), series, turn, (ref or None) and ref.strip(), line)


def _too_big(size: int) -> PromptFileError:
    def n(x: int) -> str:  # 2.097.152: Spanish thousands
        return f"{x:,}".replace(",", ".")

    return PromptFileError(f"{REJECTED}: el archivo pesa {n(size)} bytes y el máximo es {n(MAX_FILE_BYTES)} bytes "
                           f"({MAX_FILE_BYTES // 2**20} MB); divídalo en varios archivos.")


def _too_many() -> PromptFileError:
    return PromptFileError(f"{REJECTED}: el archivo tiene más de {MAX_ROWS} prompts (el máximo por archivo y por "
                           "conjunto); divídalo en varios conjuntos.")


def _counted(items):
    """`items` unchanged, PromptFileError as soon as there are more than MAX_ROWS of them."""
    for n, item in enumerate(items, 1):
        if n > MAX_ROWS:
            raise _too_many()
        yield item


def parse_prompts(content: str, fmt: str) -> list[PromptRow]:
    """The rows of a prompt file's text; PromptFileError listing every problem (nothing is half-read)."""
    size = len(content.encode("utf-8", errors="surrogatepass"))
    if size > MAX_FILE_BYTES:
        raise _too_big(size)
    errors: list[str] = []
    rows: list[PromptRow] = []
    if fmt == "jsonl":
        for n, obj, bad_json in _counted(jsonl_lines(content)):
            if bad_json:
                errors.append(f"línea {n}: {bad_json}")
                continue
            if not isinstance(obj, dict):
                errors.append(f"línea {n}: se esperaba un objeto JSON")
                continue
            if (r := _row(obj, n, errors)) is not None:
                rows.append(r)
    elif fmt == "csv":
        reader = csv.DictReader(io.StringIO(content))
        try:
            if not reader.fieldnames or not {"id", "category", "text"} <= set(reader.fieldnames):
                raise PromptFileError(f"{REJECTED}: el CSV necesita una cabecera con al menos id, category, text "
                                      "(opcionales: series, turn, reference).")
            for obj in _counted(reader):
                n = reader.line_num
                if None in obj:
                    errors.append(f"línea {n}: más columnas que la cabecera")
                    continue
                obj = {k: (v if v != "" else None) for k, v in obj.items()}
                if (r := _row(obj, n, errors)) is not None:
                    rows.append(r)
        except csv.Error:  # a NUL byte, a field over csv's own size limit (an unclosed quote swallows the rest)
            raise PromptFileError(f"{REJECTED}: CSV mal formado después de la línea {reader.line_num}: revise que no "
                                  "haya comillas sin cerrar, bytes nulos ni campos de más de "
                                  f"{MAX_TEXT} caracteres.") from None
    else:
        raise PromptFileError(f"Formato desconocido {fmt!r}: use .jsonl o .csv")
    seen: dict[str, int] = {}
    for r in rows:
        if r.id in seen:
            errors.append(f"línea {r.line}: el id {r.id!r} ya apareció en la línea {seen[r.id]}")
        seen.setdefault(r.id, r.line)
    series: dict[str, list[PromptRow]] = {}
    for r in rows:
        if r.series:
            series.setdefault(r.series, []).append(r)
    for name, turns in series.items():
        got = sorted(t.turn for t in turns)
        if got != list(range(1, len(turns) + 1)):
            errors.append(f"línea {turns[0].line}: la serie {name!r} debe tener los turnos 1..{len(turns)} sin huecos ni repetidos (tiene {got})")
    if not rows and not errors:
        errors.append("el archivo no tiene ningún prompt")
    if errors:
        raise PromptFileError(f"{REJECTED}:\n" + "\n".join(f"  - {e}" for e in errors[:50])
                              + (f"\n  … y {len(errors) - 50} problemas más" if len(errors) > 50 else ""))
    return rows


def parse_prompt_file(path: str | Path) -> list[PromptRow]:
    path = Path(path)
    fmt = {".jsonl": "jsonl", ".csv": "csv"}.get(path.suffix.lower())
    if fmt is None:
        raise PromptFileError(f"{path.name}: use un archivo .jsonl o .csv")
    try:
        size = path.stat().st_size
    except OSError:
        raise PromptFileError(f"No se puede leer el archivo {path.name}.") from None
    if size > MAX_FILE_BYTES:  # before reading it
        raise _too_big(size)
    try:
        content = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise PromptFileError(f"{path.name}: el archivo debe estar en UTF-8") from None
    return parse_prompts(content, fmt)


def bundled_sets() -> dict[str, Path]:
    return {p.stem: p for p in sorted(BUNDLED_DIR.glob("*.jsonl"))}


# ------------------------------------------------------------ prompt sets in the store
def import_prompt_set(session: Session, name: str, rows: Sequence[PromptRow], description: str = "",
                      bundled: bool = False) -> PromptSet:
    """Create a prompt set, or add the rows it lacks (by external id); a changed row is an error.

    `bundled`: the set is one of esllm's own files, which a newer version may have corrected. A changed row
    then replaces the stored one if nothing refers to it yet (no answer, no assignment); otherwise the stored
    row stays (what was answered and rated keeps its text) and a warning is logged.
    """
    ps = session.scalars(select(PromptSet).where(PromptSet.name == name)).first()
    have = {} if ps is None else {p.external_id: p for p in session.scalars(select(Prompt).where(Prompt.set_id == ps.id))}
    total = len(have) + len({r.id for r in rows} - set(have))
    if total > MAX_ROWS:  # checked before anything is written
        raise EsllmError(f"El conjunto {name!r} tendría {total} prompts y el máximo es {MAX_ROWS}; "
                         "importe el archivo con otro nombre de conjunto.")
    if ps is None:
        ps = PromptSet(name=name, description=description)
        session.add(ps)
        session.flush()
    for r in rows:
        old = have.get(r.id)
        if old is None:
            session.add(Prompt(set_id=ps.id, external_id=r.id, category=r.category, series=r.series, turn=r.turn,
                               text=r.text, reference=r.reference))
        elif (old.category, old.series, old.turn, old.text) != (r.category, r.series, r.turn, r.text):
            if bundled:
                _update_bundled(session, name, old, r)
                continue
            raise EsllmError(f"El conjunto {name!r} ya tiene el prompt {r.id!r} con otro contenido; "
                             "importe con otro nombre de conjunto.")
    session.flush()
    return ps


def _update_bundled(session: Session, name: str, old: Prompt, r: PromptRow) -> None:
    used = (session.scalars(select(Answer.id).where(Answer.prompt_id == old.id).limit(1)).first() is not None
            or session.scalars(select(Assignment.id).where(Assignment.prompt_id == old.id).limit(1)).first() is not None)
    if used:
        log.warning("El conjunto incluido %r cambió el prompt %r, pero la base ya tiene respuestas o asignaciones "
                    "para él: se conserva el texto guardado.", name, r.id)
        return
    old.category, old.series, old.turn, old.text, old.reference = r.category, r.series, r.turn, r.text, r.reference


def ensure_bundled_sets(session: Session) -> list[str]:
    names = []
    for name, path in bundled_sets().items():
        import_prompt_set(session, name, parse_prompt_file(path), description=f"incluido: data/prompts/{path.name}",
                          bundled=True)
        names.append(name)
    return names


def ordered_prompts(session: Session, set_id: int) -> list[Prompt]:
    """Standalone prompts by id, then each series in turn order (earlier turns first)."""
    prompts = list(session.scalars(select(Prompt).where(Prompt.set_id == set_id).order_by(Prompt.id)))
    return sorted(prompts, key=lambda p: (p.series is not None, p.series or "", p.turn or 0, p.id))
