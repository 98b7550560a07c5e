"""Rating sessions: create one (assignments with their own A/B/C permutation), serve a rater's next
item without naming contestants, and save a rater's scores for an item atomically.

Every function checks who is asking: a rater only ever sees and scores their own assignments, and
what `next_item` returns carries labels and texts only, never a contestant, adapter or model name.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from esllm import EsllmError
from esllm.store import names
from esllm.store.base import utcnow
from esllm.store.models import (
    ASPECTS,
    LABELS,
    Answer,
    Assignment,
    ContestantSnapshot,
    Prompt,
    PromptSet,
    RatingSession,
    Score,
    SessionContestant,
    SessionRater,
    User,
    save_scores,
)
from esllm.study.answers import selected_answers
from esllm.study.assignment import Item, plan_session

MISSING_FOR_RATER = "Falta una respuesta seleccionada para este ítem; avise al administrador."

COMMENT_MAX = 2000
# A session's name is shown in every rater's dropdown and tables and names the export files; the schema's
# column is String(100) (PostgreSQL would refuse more with an error no one could read).
SESSION_NAME_MAX = 100


def criteria(mode: str) -> tuple[str, ...]:
    return ("general",) + (ASPECTS if mode == "full" else ())


def check_session_name(name: object) -> str:
    """The name normalised (`names.normalize`: NFKC, white space runs as one space, stripped), or EsllmError:
    1 to SESSION_NAME_MAX characters, nothing invisible (`names.refusal`: control and format characters,
    fillers, a name of spaces and marks)."""
    text = names.normalize(name) if isinstance(name, str) else ""
    if not text:
        raise EsllmError("La sesión necesita un nombre.")
    if len(text) > SESSION_NAME_MAX:
        raise EsllmError(f"El nombre de la sesión tiene {len(text)} caracteres; el máximo es {SESSION_NAME_MAX}.")
    if why := names.refusal(name):
        raise EsllmError(f"El nombre de la sesión {why}.")
    return text


def check_session_name_free(s: Session, name: str) -> None:
    """EsllmError naming the stored session that `name` is or looks like (`names.skeleton`: case, NFKC,
    invisible characters, Cyrillic/Greek look-alikes). Checked in Python inside the caller's transaction: the
    schema's UNIQUE stops only exact duplicates."""
    other = names.look_alike(name, s.scalars(select(RatingSession.name)))
    if other == name:
        raise EsllmError(f"Ya existe una sesión llamada {name!r}.")
    if other is not None:
        raise EsllmError(f"Ya existe una sesión llamada {other!r} y {name!r} se confunde con ella (mayúsculas, "
                         "letras de otro alfabeto o caracteres invisibles): elija otro nombre.")


def create_session(s: Session, *, name: str, prompt_set: str, contestant_ids: Sequence[int], raters: Sequence[str],
                   k: int, rubric_mode: str = "general", created_by: Optional[int] = None,
                   rng: Optional[random.Random] = None) -> RatingSession:
    """Validate, plan and store a session (status open). Nothing is written if anything is wrong."""
    if rubric_mode not in ("general", "full"):
        raise EsllmError("El modo de rúbrica debe ser «general» o «full».")
    name = check_session_name(name)
    check_session_name_free(s, name)
    ps = s.scalars(select(PromptSet).where(PromptSet.name == prompt_set)).first()
    if ps is None:
        raise EsllmError(f"No existe el conjunto de prompts {prompt_set!r}.")
    if len(contestant_ids) != 3 or len(set(contestant_ids)) != 3:
        raise EsllmError("Una sesión compara exactamente tres concursantes distintos.")
    users = []
    for rname in dict.fromkeys(r.strip().lower() for r in raters):
        u = s.scalars(select(User).where(User.name == rname)).first()
        if u is None or not u.active:
            raise EsllmError(f"No existe el evaluador {rname!r} (o está desactivado).")
        if u.role != "rater":  # an admin would see the study's own results while rating it; a judge cannot log in
            raise EsllmError(f"La cuenta {rname!r} es de rol «{u.role}», no evaluador: solo las cuentas de rol «rater» "
                             "califican sesiones.")
        users.append(u)
    prompts = list(s.scalars(select(Prompt).where(Prompt.set_id == ps.id)))
    missing = []
    for p in prompts:
        for cid in contestant_ids:
            if s.scalars(select(Answer.id).where(Answer.prompt_id == p.id, Answer.contestant_id == cid,
                                                 Answer.selected)).first() is None:
                missing.append((p.external_id, cid))
    if missing:
        raise EsllmError(f"Faltan {len(missing)} respuestas seleccionadas (p. ej. prompt {missing[0][0]}, "
                         f"concursante {missing[0][1]}): genérelas primero (python -m esllm generate).")
    plan = plan_session([Item(p.id, p.series, p.turn) for p in prompts], [u.id for u in users],
                        list(contestant_ids), k, rng or random.Random())
    rs = RatingSession(name=name, prompt_set_id=ps.id, rubric_mode=rubric_mode, overlap_k=k,
                       status="open", created_by=created_by)
    s.add(rs)
    s.flush()
    for pos, cid in enumerate(contestant_ids):
        s.add(SessionContestant(session_id=rs.id, contestant_id=cid, position=pos))
    for u in users:
        s.add(SessionRater(session_id=rs.id, user_id=u.id))
    for rater_id, prompt_id, idx, perm in plan:
        s.add(Assignment(session_id=rs.id, rater_id=rater_id, prompt_id=prompt_id, order_index=idx,
                         permutation=dict(perm)))
    s.flush()
    return rs


@dataclass
class RaterItem:
    """What a rater's client receives: no contestant, adapter or model name anywhere."""

    assignment_id: int
    position: int  # 1-based
    total: int
    category: str
    context: list[dict[str, str]]  # earlier turns: {"role", "content"}; assistant turns per label
    prompt: str
    answers: dict[str, str]  # label -> text
    criteria: tuple[str, ...]
    previous: dict[str, Any]  # earlier scores of this item by this rater, to edit


def progress(s: Session, session_id: int, rater_id: int) -> tuple[int, int]:
    """(finished, total) assignments of a rater in a session (one aggregate over ix_assignment_queue)."""
    done, total = s.execute(select(func.count(Assignment.finished_at), func.count()).where(
        Assignment.session_id == session_id, Assignment.rater_id == rater_id)).one()
    return done, total


def rater_sessions(s: Session, rater_id: int) -> list[RatingSession]:
    return list(s.scalars(select(RatingSession).join(SessionRater, SessionRater.session_id == RatingSession.id)
                          .where(SessionRater.user_id == rater_id, RatingSession.status == "open")
                          .order_by(RatingSession.id)))


def rater_session(s: Session, session_id: Any, rater_id: int) -> Optional[RatingSession]:
    """Session `session_id` if it is open and `rater_id` is one of its raters, else None (one query)."""
    if isinstance(session_id, bool) or not isinstance(session_id, int):
        return None
    return s.scalars(select(RatingSession).join(SessionRater, SessionRater.session_id == RatingSession.id)
                     .where(RatingSession.id == session_id, SessionRater.user_id == rater_id,
                            RatingSession.status == "open")).first()


def next_item(s: Session, session_id: int, rater_id: int) -> Optional[RaterItem]:
    """The rater's first unfinished item in their order (None when all are done)."""
    # LIMIT 1 matters: without it the ORM loads (and JSON-decodes) every unfinished assignment to keep one.
    row = s.execute(select(Assignment, Prompt, RatingSession)
                    .join(Prompt, Prompt.id == Assignment.prompt_id)
                    .join(RatingSession, RatingSession.id == Assignment.session_id)
                    .where(Assignment.session_id == session_id, Assignment.rater_id == rater_id,
                           Assignment.finished_at.is_(None))
                    .order_by(Assignment.order_index).limit(1)).first()
    if row is None:
        return None
    # `row` keeps its Prompt and RatingSession alive in the identity map: item_view gets them without a query.
    a = row[0]
    if a.started_at is None:
        a.started_at = utcnow()
        s.flush()
    return item_view(s, a)


def item_view(s: Session, a: Assignment) -> RaterItem:
    rs = s.get(RatingSession, a.session_id)
    p = s.get(Prompt, a.prompt_id)
    perm = a.permutation
    earlier: list[Prompt] = []
    if p.series is not None:
        earlier = list(s.scalars(select(Prompt).where(Prompt.set_id == p.set_id, Prompt.series == p.series,
                                                      Prompt.turn < p.turn).order_by(Prompt.turn)))
    texts = selected_answers(s, [e.id for e in earlier] + [p.id], perm.values(), MISSING_FOR_RATER)
    context: list[dict[str, str]] = []
    for e in earlier:
        context.append({"role": "user", "content": e.text})
        for label in LABELS:
            context.append({"role": f"assistant {label}", "content": texts[e.id, perm[label]][1]})
    answers = {label: texts[p.id, perm[label]][1] for label in LABELS}
    done, total = progress(s, a.session_id, a.rater_id)
    prev: dict[str, Any] = {}
    if a.finished_at is not None:  # submit writes scores and finished_at together: unfinished = no scores
        for sc in s.scalars(select(Score).where(Score.assignment_id == a.id)):
            prev.setdefault(sc.label, {})[sc.criterion] = sc.value
            if sc.comment:
                prev["comentario"] = sc.comment
    return RaterItem(a.id, done + 1, total, p.category, context, p.text, answers, criteria(rs.rubric_mode), prev)


def _value(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 5:
        raise EsllmError(f"Puntuación inválida en {where}: debe ser un entero de 1 a 5 (recibido {v!r}).")
    return v


def submit(s: Session, *, rater_id: int, assignment_id: int, scores: Any, comment: Optional[str] = None,
           seconds_spent: Optional[float] = None) -> Assignment:
    """Save every score of one item in one transaction; resubmitting updates, never duplicates.

    `scores` = {"A": {"general": 4, ...}, "B": {...}, "C": {...}}, every criterion of the session's
    mode for every label. Anything invalid raises before a single row is written. Returns the assignment.

    Two saves of an item racing (two tabs of one rater, a repeated request) both read "no scores yet"; the
    first to commit wins and the other's INSERT violates the UNIQUE. That one then reads what was saved: the
    same scores and comment -> its save did happen (returns normally); others -> EsllmError saying the item
    was already saved and which scores are kept (saving again replaces them: a resubmit updates).
    """
    row = None
    if isinstance(assignment_id, int) and not isinstance(assignment_id, bool):
        # status as a column, not through a RatingSession object `s` may already hold: always the stored one
        row = s.execute(select(Assignment, RatingSession.status, RatingSession.rubric_mode)
                        .join(RatingSession, RatingSession.id == Assignment.session_id)
                        .where(Assignment.id == assignment_id)).first()
    if row is None or row[0].rater_id != rater_id:
        raise EsllmError("Ese ítem no existe o no es suyo.")
    a, status, rubric_mode = row
    if status != "open":
        raise EsllmError("La sesión está cerrada.")
    crit = criteria(rubric_mode)
    if not isinstance(scores, dict) or set(scores) != set(LABELS):
        raise EsllmError("Faltan puntuaciones: califique las respuestas A, B y C.")
    clean: dict[str, dict[str, int]] = {}
    for label in LABELS:
        got = scores[label]
        if not isinstance(got, dict) or set(got) != set(crit):
            raise EsllmError(f"Respuesta {label}: califique {', '.join(crit)}.")
        clean[label] = {c: _value(got[c], f"{label}/{c}") for c in crit}
    if comment is not None and (not isinstance(comment, str) or len(comment) > COMMENT_MAX):
        raise EsllmError(f"El comentario debe ser texto de hasta {COMMENT_MAX} caracteres.")
    if comment is not None and "\x00" in comment:  # PostgreSQL's text cannot hold it; SQLite would: refuse on both
        raise EsllmError("El comentario tiene un carácter nulo (\\x00); quítelo y vuelva a guardar.")
    comment = (comment or "").strip() or None
    perm = a.permutation
    answers = selected_answers(s, [a.prompt_id], perm.values(), MISSING_FOR_RATER)
    rows = [(answers[a.prompt_id, perm[label]][0], label, c, v) for label in LABELS for c, v in clean[label].items()]
    assignment = a.id
    try:
        save_scores(s, assignment_id=assignment, comment=comment, scores=rows)
        if a.finished_at is None:
            a.finished_at = utcnow()
        if seconds_spent is not None and isinstance(seconds_spent, (int, float)) and 0 <= seconds_spent < 86400:
            a.seconds_spent = float(seconds_spent)
        s.flush()
    except IntegrityError:
        s.rollback()
        _lost_race(s, assignment, rows, comment)  # raises unless the same scores were saved meanwhile
        a = s.get(Assignment, assignment)
    return a


def _lost_race(s: Session, assignment_id: int, rows: list[tuple[int, str, str, int]], comment: Optional[str]) -> None:
    """After `submit`'s write hit the UNIQUE (and was rolled back): return if the item's stored scores are exactly
    `rows` with `comment` (another save of the same values won the race), else raise the truth: saved with
    other values (which are kept), or — no other save to blame — the data did break a rule."""
    stored = {(sc.answer_id, sc.criterion): sc for sc in s.scalars(select(Score).where(
        Score.assignment_id == assignment_id))}
    if set(stored) != {(answer_id, c) for answer_id, _, c, _ in rows}:
        raise EsllmError("No se pudo guardar: datos inválidos.")
    same_scores = all((stored[answer_id, c].label, stored[answer_id, c].value) == (label, v)
                      for answer_id, label, c, v in rows)
    if same_scores and all(sc.comment == comment for sc in stored.values()):
        return
    if same_scores:
        raise EsllmError("Este ítem ya se guardó mientras se guardaba este (desde otra pestaña o ventana) con las "
                         "mismas notas y otro comentario. Se conserva ese comentario, el del primer guardado; si "
                         "quiere reemplazarlo por el suyo, vuelva a guardar.")
    kept: dict[str, dict[str, int]] = {}
    for sc in stored.values():
        kept.setdefault(sc.label, {})[sc.criterion] = sc.value
    shown = " · ".join(
        f"{label} {kept[label]['general']}"
        + (f" ({', '.join(f'{c} {kept[label][c]}' for c in ASPECTS if c in kept[label])})" if len(kept[label]) > 1
           else "")
        for label in sorted(kept))
    raise EsllmError(f"Este ítem ya se guardó mientras se guardaba este (desde otra pestaña o ventana) con otros "
                     f"valores: {shown}. Se conservan esos, los del primer guardado; si quiere reemplazarlos por "
                     f"los suyos, vuelva a guardar.")


def reveal(s: Session, session_id: int) -> dict[str, str]:
    """contestant id -> name; for admins and for a closed session only."""
    rs = s.get(RatingSession, session_id)
    if rs is None or rs.status != "closed":
        raise EsllmError("Los nombres se revelan al cerrar la sesión.")
    rows = s.execute(select(ContestantSnapshot.id, ContestantSnapshot.name).join(
        SessionContestant, SessionContestant.contestant_id == ContestantSnapshot.id).where(
        SessionContestant.session_id == session_id))
    return {str(i): n for i, n in rows}
