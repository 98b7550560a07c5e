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
from esllm.rating import LABELS, Item, plan_session
from esllm.store.models import (Answer, Assignment, Contestant, Prompt, PromptSet, RatingSession, Score,
                                SessionContestant, SessionRater, User, utcnow)

ASPECTS = ("exactitud", "relevancia", "coherencia", "comprension")
COMMENT_MAX = 2000


def criteria(mode: str) -> tuple[str, ...]:
    return ("general",) + (ASPECTS if mode == "full" else ())


def create_session(s: Session, *, name: str, prompt_set: str, contestant_ids: Sequence[int], raters: Sequence[str],
                   k: int, rubric_mode: str = "general", created_by: Optional[int] = None,
                   rng: Optional[random.Random] = None) -> RatingSession:
    """Validate, plan and store a session (status open). Nothing is written if anything is wrong."""
    if rubric_mode not in ("general", "full"):
        raise EsllmError("El modo de rúbrica debe ser «general» o «full».")
    if not name or not name.strip():
        raise EsllmError("La sesión necesita un nombre.")
    if s.scalars(select(RatingSession).where(RatingSession.name == name)).first():
        raise EsllmError(f"Ya existe una sesión llamada {name!r}.")
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
    rs = RatingSession(name=name.strip(), prompt_set_id=ps.id, rubric_mode=rubric_mode, overlap_k=k,
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


def _answer(s: Session, prompt_id: int, contestant_id: int) -> Answer:
    a = s.scalars(select(Answer).where(Answer.prompt_id == prompt_id, Answer.contestant_id == contestant_id,
                                       Answer.selected)).first()
    if a is None:
        raise EsllmError("Falta una respuesta seleccionada para este ítem; avise al administrador.")
    return a


def progress(s: Session, session_id: int, rater_id: int) -> tuple[int, int]:
    total = s.scalar(select(func.count()).select_from(Assignment).where(
        Assignment.session_id == session_id, Assignment.rater_id == rater_id)) or 0
    done = s.scalar(select(func.count()).select_from(Assignment).where(
        Assignment.session_id == session_id, Assignment.rater_id == rater_id, Assignment.finished_at.is_not(None))) or 0
    return done, total


def rater_sessions(s: Session, rater_id: int) -> list[RatingSession]:
    return list(s.scalars(select(RatingSession).join(SessionRater, SessionRater.session_id == RatingSession.id)
                          .where(SessionRater.user_id == rater_id, RatingSession.status == "open")
                          .order_by(RatingSession.id)))


def next_item(s: Session, session_id: int, rater_id: int) -> Optional[RaterItem]:
    """The rater's first unfinished item in their order (None when all are done)."""
    a = s.scalars(select(Assignment).where(Assignment.session_id == session_id, Assignment.rater_id == rater_id,
                                           Assignment.finished_at.is_(None)).order_by(Assignment.order_index)).first()
    if a is None:
        return None
    if a.started_at is None:
        a.started_at = utcnow()
        s.flush()
    return item_view(s, a)


def item_view(s: Session, a: Assignment) -> RaterItem:
    rs = s.get(RatingSession, a.session_id)
    p = s.get(Prompt, a.prompt_id)
    perm = a.permutation
    context: list[dict[str, str]] = []
    if p.series is not None:
        earlier = s.scalars(select(Prompt).where(Prompt.set_id == p.set_id, Prompt.series == p.series,
                                                 Prompt.turn < p.turn).order_by(Prompt.turn))
        for e in earlier:
            context.append({"role": "user", "content": e.text})
            for label in LABELS:
                context.append({"role": f"assistant {label}", "content": _answer(s, e.id, perm[label]).text})
    answers = {label: _answer(s, p.id, perm[label]).text for label in LABELS}
    done, total = progress(s, a.session_id, a.rater_id)
    prev = {}
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
           seconds_spent: Optional[float] = None) -> None:
    """Save every score of one item in one transaction; resubmitting updates, never duplicates.

    `scores` = {"A": {"general": 4, ...}, "B": {...}, "C": {...}}, every criterion of the session's
    mode for every label. Anything invalid raises before a single row is written.
    """
    a = s.get(Assignment, assignment_id) if isinstance(assignment_id, int) else None
    if a is None or a.rater_id != rater_id:
        raise EsllmError("Ese ítem no existe o no es suyo.")
    rs = s.get(RatingSession, a.session_id)
    if rs.status != "open":
        raise EsllmError("La sesión está cerrada.")
    crit = criteria(rs.rubric_mode)
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
    comment = (comment or "").strip() or None
    from esllm.store.models import save_score

    try:
        for label in LABELS:
            ans = _answer(s, a.prompt_id, a.permutation[label])
            for c, v in clean[label].items():
                save_score(s, assignment_id=a.id, answer_id=ans.id, label=label, value=v, criterion=c,
                           comment=comment)
        if a.finished_at is None:
            a.finished_at = utcnow()
        if seconds_spent is not None and isinstance(seconds_spent, (int, float)) and 0 <= seconds_spent < 86400:
            a.seconds_spent = float(seconds_spent)
        s.flush()
    except IntegrityError:
        s.rollback()
        raise EsllmError("No se pudo guardar: datos inválidos.") from None


def reveal(s: Session, session_id: int) -> dict[str, str]:
    """contestant id -> name; for admins and for a closed session only."""
    rs = s.get(RatingSession, session_id)
    if rs is None or rs.status != "closed":
        raise EsllmError("Los nombres se revelan al cerrar la sesión.")
    rows = s.execute(select(Contestant.id, Contestant.name).join(
        SessionContestant, SessionContestant.contestant_id == Contestant.id).where(
        SessionContestant.session_id == session_id))
    return {str(i): n for i, n in rows}
