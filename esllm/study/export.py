"""Write a rating session's results as files for spreadsheets and for preference training.

    python -m esllm export SESSION --out DIR     # SESSION = name or id; prints the files written
    paths = write_exports(s, session_id, out_dir)

Files:
- puntuaciones.csv  raw scores, long format: one row per rater × item × contestant × criterion: sesion,
                    evaluador (pseudonym, see results.pseudonyms), item (the prompt's id), categoria (the key),
                    categoria_nombre (its label, tables.category_labels), serie, turno, etiqueta (A/B/C as
                    shown), concursante, criterio, criterio_nombre, puntuacion, comentario, segundos_item (time
                    on the whole item, repeated on its rows), fecha_utc (ISO 8601).
- tabla.csv         the study table (general; in "full" mode one block per aspect too): mean, 95% bootstrap
                    CI, n items, n scores, Promedio row last in each block; numbers rounded to 4
                    decimals; bootstrap seed 0 (parameter), so the same scores give the same file.
                    Columns: criterio, criterio_nombre, categoria, categoria_nombre, concursante, media, ...
- acuerdo.csv       Krippendorff's alpha (ordinal) per criterion (id and name), with the pairable units and values.
- respuestas.csv    every attempt of every (item, contestant) of the session, with `seleccionada` (shown to
                    raters now) and `calificada` (scored in this session), generation parameters as JSON,
                    tokens, latency, EOS flag, finish reason.
- dpo.jsonl         preference pairs from score differences (see `dpo_pairs`), TRL's conversational format.
- kto.jsonl         every thumbs up/down of Conversar (the whole chat_feedback table, not per session):
                    {"prompt", "completion", "label", "contestant"}; written even when empty.
- tabla_estudio.{csv,md,tex}     the study's table as the thesis prints it (Tables 4 and 6: category labels of
                    the set, plain means, two decimals, Promedio = mean of the category means); wide CSV,
                    Markdown and LaTeX (booktabs). esllm/study/tables.py.
- tabla_estudio_ic.{csv,md,tex}  the same with the 95% bootstrap CI and n per cell.
- tabla_<juez>.{csv,md,tex}      each judge model's scores in the same layout (tabla_juez-gemma-base.csv, …;
                    only when a judge graded the session).

CSV files are UTF-8 with a BOM (`utf-8-sig`), so Excel opens accents right; every string cell that starts
with = + - @ tab or CR gets a leading ' (OWASP's advice against formula injection). JSONL files are
training data, not spreadsheets, and are left unescaped. Each file is written atomically (esllm/study/files.py
writes every file), so a reader never sees half a file. These files name the contestants: offer them to
admins only.
"""

from __future__ import annotations

import json
import math
from itertools import combinations
from pathlib import Path
from typing import Any, Sequence, Union

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from esllm import EsllmError
from esllm.store.models import (
    CRITERIA,
    CRITERION_LABELS,
    Answer,
    Assignment,
    ChatFeedback,
    Prompt,
    PromptSet,
    RatingSession,
    Score,
)
from esllm.study import stats, tables
from esllm.study.files import write_csv, write_jsonl
from esllm.study.krippendorff import Agreement, krippendorff_alpha_ordinal
from esllm.study.prompts import ordered_prompts
from esllm.study.results import contestant_names, find_session, session_scores_frame

DPO_THRESHOLD = 1.0  # one rubric step: smaller gaps between item means are mostly rater noise

SCORE_CSV = {  # frame column -> puntuaciones.csv header; ids (categoria, criterio) with their names beside them
    "session": "sesion", "rater": "evaluador", "item": "item", "category": "categoria",
    "category_name": "categoria_nombre", "series": "serie", "turn": "turno", "label": "etiqueta",
    "contestant": "concursante", "criterion": "criterio", "criterion_name": "criterio_nombre",
    "value": "puntuacion", "comment": "comentario", "seconds": "segundos_item", "timestamp": "fecha_utc",
}
TABLE_HEADER = ["criterio", "criterio_nombre", "categoria", "categoria_nombre", "concursante", "media", "ic95_inf",
                "ic95_sup", "n", "n_puntuaciones"]


# ---------------------------------------------------------------- what goes in the files

def _r(x: float) -> float:
    return round(float(x), 4)


def table_records(df: pd.DataFrame, criteria: Sequence[str], *, seed: int = 0, n_boot: int = 2000) -> list[dict]:
    rows = []
    for crit in criteria:
        rows += stats.table_rows(stats.study_table(df, crit, seed=seed, n_boot=n_boot))
    for r in rows:
        r.update(media=_r(r["media"]), ic95_inf=_r(r["ic95_inf"]), ic95_sup=_r(r["ic95_sup"]))
    return rows


def _conversation(s: Session, prompt: Prompt, contestant_id: int) -> list[dict[str, str]]:
    """The prompt as the contestant saw it: earlier turns of its series with its own selected answers."""
    msgs: list[dict[str, str]] = []
    if prompt.series is not None:
        for e in s.scalars(select(Prompt).where(Prompt.set_id == prompt.set_id, Prompt.series == prompt.series,
                                                Prompt.turn < prompt.turn).order_by(Prompt.turn)):
            ans = s.scalars(select(Answer.text).where(Answer.prompt_id == e.id, Answer.contestant_id == contestant_id,
                                                      Answer.selected)).first()
            msgs += [{"role": "user", "content": e.text}, {"role": "assistant", "content": ans or ""}]
    return msgs + [{"role": "user", "content": prompt.text}]


def dpo_pairs(s: Session, df: pd.DataFrame, threshold: float = DPO_THRESHOLD) -> list[dict]:
    """Preference pairs from one session's scores (the frame of session_scores_frame).

    Per item and scored answer, the mean "general" score over raters; every two answers of different
    contestants whose means differ by >= threshold give a pair, chosen = the higher one. Format (TRL,
    conversational): {"prompt": [messages], "chosen": [{"role": "assistant", ...}], "rejected": [...]}, plus
    item, score_chosen, score_rejected, contestant_chosen, contestant_rejected. For a contextual turn the
    prompt carries the earlier turns with the *chosen* contestant's own answers (the history its answer
    was written after); the rejected answer was written after its own history, which the pair does not show.
    """
    if threshold <= 0:
        raise EsllmError("El umbral de diferencia para DPO debe ser mayor que 0.")
    g = df[df["criterion"] == "general"]
    if g.empty:
        return []
    means = g.groupby(["prompt_id", "answer_id", "contestant_id", "contestant", "item"], sort=False,
                      observed=True)["value"].mean()
    out = []
    for prompt_id, grp in means.groupby(level="prompt_id", sort=False):
        prompt = s.get(Prompt, int(prompt_id))
        answers = [(int(aid), int(cid), name, item, float(v)) for (_, aid, cid, name, item), v in grp.items()]
        for a, b in combinations(answers, 2):
            if a[1] == b[1] or abs(a[4] - b[4]) < threshold:
                continue
            hi, lo = (a, b) if a[4] > b[4] else (b, a)
            out.append({"prompt": _conversation(s, prompt, hi[1]),
                        "chosen": [{"role": "assistant", "content": s.get(Answer, hi[0]).text}],
                        "rejected": [{"role": "assistant", "content": s.get(Answer, lo[0]).text}],
                        "item": hi[3], "score_chosen": _r(hi[4]), "score_rejected": _r(lo[4]),
                        "contestant_chosen": hi[2], "contestant_rejected": lo[2]})
    return out


def kto_records(s: Session) -> list[dict]:
    return [{"prompt": f.prompt, "completion": f.answer, "label": f.thumbs == "up", "contestant": f.contestant}
            for f in s.scalars(select(ChatFeedback).order_by(ChatFeedback.id))]


ANSWER_HEADER = ["sesion", "item", "categoria", "serie", "turno", "prompt", "concursante", "intento", "seleccionada",
                 "calificada", "texto", "parametros", "tokens_nuevos", "latencia_s", "fin_por_eos", "motivo_fin",
                 "fecha_utc", "respuesta_id"]


def answer_rows(s: Session, rs: RatingSession) -> list[list[Any]]:
    names = contestant_names(s, rs.id)
    scored = set(s.scalars(select(Score.answer_id).join(Assignment, Score.assignment_id == Assignment.id)
                           .where(Assignment.session_id == rs.id).distinct()))
    rows = []
    for p in ordered_prompts(s, rs.prompt_set_id):
        for cid, name in names.items():
            for a in s.scalars(select(Answer).where(Answer.prompt_id == p.id, Answer.contestant_id == cid)
                               .order_by(Answer.attempt)):
                rows.append([rs.name, p.external_id, p.category, p.series, p.turn, p.text, name, a.attempt,
                             int(a.selected), int(a.id in scored), a.text,
                             json.dumps(a.params, ensure_ascii=False, sort_keys=True), a.new_tokens, a.latency_s,
                             int(a.ended_on_eos), a.finish_reason, a.created_at.isoformat(timespec="seconds"), a.id])
    return rows


def write_exports(s: Session, session_id: Union[int, str], out_dir: Union[str, Path], *,
                  dpo_threshold: float = DPO_THRESHOLD, seed: int = 0, n_boot: int = 2000) -> dict[str, Path]:
    """Write the six files for one session (by id or name) into out_dir (created if missing);
    returns {file name: path}. A folder that cannot be written raises EsllmError."""
    rs = find_session(s, session_id)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EsllmError(f"No se pudo crear la carpeta {out}: {e.strerror or e}. Elija otra carpeta.") from e
    df = session_scores_frame(s, rs.id)
    criteria = CRITERIA if rs.rubric_mode == "full" else ("general",)
    paths: dict[str, Path] = {}
    labels, _ = set_labels_and_order(s, rs.prompt_set_id)
    cat_name = lambda c: labels.get(str(c), str(c))  # noqa: E731
    crit_name = lambda c: CRITERION_LABELS.get(str(c), str(c))  # noqa: E731
    # categorical columns: map() names each distinct value once, not each row
    named = df.assign(category_name=df["category"].map(cat_name), criterion_name=df["criterion"].map(crit_name))
    paths["puntuaciones.csv"] = write_csv(out / "puntuaciones.csv", list(SCORE_CSV.values()),
                                          named[list(SCORE_CSV)].itertuples(index=False, name=None))
    table = table_records(df, criteria, seed=seed, n_boot=n_boot) if not df.empty else []
    for r in table:
        r.update(categoria_nombre=cat_name(r["categoria"]), criterio_nombre=crit_name(r["criterio"]))
    paths["tabla.csv"] = write_csv(out / "tabla.csv", TABLE_HEADER, ([r[h] for h in TABLE_HEADER] for r in table))
    agreement = []
    for crit in criteria:
        a = krippendorff_alpha_ordinal(df, crit) if not df.empty else Agreement(float("nan"), 0, 0)
        agreement.append([crit, crit_name(crit), None if math.isnan(a.alpha) else _r(a.alpha),
                          a.units, a.values])
    paths["acuerdo.csv"] = write_csv(out / "acuerdo.csv", ["criterio", "criterio_nombre", "alfa_krippendorff_ordinal",
                                                           "unidades_con_2_o_mas", "puntuaciones"], agreement)
    paths["respuestas.csv"] = write_csv(out / "respuestas.csv", ANSWER_HEADER, answer_rows(s, rs))
    paths["dpo.jsonl"] = write_jsonl(out / "dpo.jsonl", dpo_pairs(s, df, dpo_threshold) if not df.empty else [])
    paths["kto.jsonl"] = write_jsonl(out / "kto.jsonl", kto_records(s))
    if not df.empty:
        for stem, grid in study_grids(s, rs, df, seed=seed, n_boot=n_boot).items():
            paths.update(tables.write_table(grid, out, stem))
    judges = session_scores_frame(s, rs.id, who="judges")
    for name, part in (judges.groupby("rater", observed=True) if not judges.empty else []):
        paths.update(tables.write_table(plain_grid(s, rs, part, title=str(name)), out, f"tabla_{name}"))
    return paths


def set_labels_and_order(s: Session, prompt_set_id: int) -> tuple[dict[str, str], list[str]]:
    """The category labels of a prompt set (tables.category_labels) and its categories in the set's order."""
    ps = s.get(PromptSet, prompt_set_id)
    order = list(dict.fromkeys(p.category for p in ordered_prompts(s, prompt_set_id)))
    return tables.category_labels(ps.name if ps else None), order


def plain_grid(s: Session, rs: RatingSession, df: pd.DataFrame, *, criterion: str = "general",
               title: str = "") -> tables.Grid:
    """The study's plain table (Tables 4/6) of a session's score frame."""
    labels, order = set_labels_and_order(s, rs.prompt_set_id)
    return tables.plain_table(df, criterion, labels=labels, order=order, title=title or rs.name)


def study_grids(s: Session, rs: RatingSession, df: pd.DataFrame, *, criterion: str = "general", seed: int = 0,
                n_boot: int = 2000) -> dict[str, tables.Grid]:
    """{"tabla_estudio": plain means, "tabla_estudio_ic": with CIs and n} of a session's human scores."""
    labels, order = set_labels_and_order(s, rs.prompt_set_id)
    ci = tables.ci_table(stats.study_table(df, criterion, seed=seed, n_boot=n_boot), labels=labels, order=order,
                         title=rs.name)
    return {"tabla_estudio": plain_grid(s, rs, df, criterion=criterion), "tabla_estudio_ic": ci}
