"""What an admin does to run a rating study, as plain functions over a DB session: resolve a contestant
name to its stored snapshot, summarise and close sessions, list a prompt's attempts, report coverage.

The CLI (`python -m esllm prompts|sessions …`) and the «Administrar» tab both call these, including
`import_prompts` and `create_named_session`, so an import or a new session is written once; neither checks
roles here (the tab's handlers do, the CLI is the machine's owner). Messages of EsllmError are Spanish.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from esllm import EsllmError
from esllm.store.models import (
    Answer,
    ContestantSnapshot,
    Prompt,
    PromptSet,
    RatingSession,
    SessionContestant,
    SessionRater,
    User,
)
from esllm.study.prompts import import_prompt_set, parse_prompt_file
from esllm.study.sessions import check_session_name, create_session, progress

SET_NAME_MAX = 64
SET_NAME_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{SET_NAME_MAX - 1}}}")
STATUS_ES = {"draft": "borrador", "open": "abierta", "closed": "cerrada"}


def check_set_name(name: str) -> str:
    name = (name or "").strip()
    if not SET_NAME_RE.fullmatch(name):
        raise EsllmError(f"Nombre de conjunto no válido: {name!r}. Use de 1 a {SET_NAME_MAX} letras sin tilde, dígitos, "
                         "'.', '_' o '-'.")
    return name


def get_set(s: Session, set_name: str) -> PromptSet:
    ps = s.scalars(select(PromptSet).where(PromptSet.name == set_name)).first()
    if ps is None:
        raise EsllmError(f"No existe el conjunto de prompts {set_name!r}.")
    return ps


def set_names(s: Session) -> list[str]:
    return list(s.scalars(select(PromptSet.name).order_by(PromptSet.name)))


def _selected_count(s: Session, set_id: int, contestant_id: int) -> int:
    return s.scalar(select(func.count()).select_from(Answer).join(Prompt, Answer.prompt_id == Prompt.id).where(
        Prompt.set_id == set_id, Answer.contestant_id == contestant_id, Answer.selected)) or 0


def complete_snapshots(s: Session, set_name: str) -> dict[str, ContestantSnapshot]:
    """name -> the latest snapshot with that name that has a selected answer for every prompt of the set."""
    ps = get_set(s, set_name)
    n = s.scalar(select(func.count()).select_from(Prompt).where(Prompt.set_id == ps.id)) or 0
    out: dict[str, ContestantSnapshot] = {}
    for c in s.scalars(select(ContestantSnapshot).order_by(ContestantSnapshot.id.desc())):
        if c.name not in out and n and _selected_count(s, ps.id, c.id) == n:
            out[c.name] = c
    return dict(sorted(out.items()))


def resolve_contestants(s: Session, set_name: str, names: list[str]) -> list[ContestantSnapshot]:
    """The snapshots to rate for contestant `names` (see `complete_snapshots`); says how to fix a gap."""
    ready = complete_snapshots(s, set_name)
    out = []
    for name in names:
        if name in ready:
            out.append(ready[name])
            continue
        known = s.scalar(select(func.count()).select_from(ContestantSnapshot).where(ContestantSnapshot.name == name))
        why = "tiene respuestas incompletas" if known else "no tiene respuestas guardadas"
        raise EsllmError(f"El concursante {name!r} {why} para el conjunto {set_name!r}: genérelas con "
                         f"python -m esllm generate --set {set_name} --contestants {name}")
    return out


@dataclass
class SessionSummary:
    id: int
    name: str
    set_name: str
    mode: str
    k: int
    status: str
    contestants: list[str]
    raters: list[tuple[str, int, int]]  # (rater, done, total)

    @property
    def progress_text(self) -> str:
        return " · ".join(f"{r} {d}/{t}" for r, d, t in self.raters) or "—"


def list_sessions(s: Session) -> list[SessionSummary]:
    out = []
    for rs in s.scalars(select(RatingSession).order_by(RatingSession.id)):
        names = list(s.scalars(select(ContestantSnapshot.name).join(
            SessionContestant, SessionContestant.contestant_id == ContestantSnapshot.id)
            .where(SessionContestant.session_id == rs.id).order_by(SessionContestant.position)))
        raters = []
        for u in s.scalars(select(User).join(SessionRater, SessionRater.user_id == User.id)
                           .where(SessionRater.session_id == rs.id).order_by(User.name)):
            raters.append((u.name, *progress(s, rs.id, u.id)))
        out.append(SessionSummary(rs.id, rs.name, s.get(PromptSet, rs.prompt_set_id).name, rs.rubric_mode,
                                  rs.overlap_k, rs.status, names, raters))
    return out


def close_session(s: Session, name: str) -> RatingSession:
    rs = s.scalars(select(RatingSession).where(RatingSession.name == (name or "").strip())).first()
    if rs is None:
        raise EsllmError(f"No existe la sesión {name!r}.")
    if rs.status == "closed":
        raise EsllmError(f"La sesión {rs.name!r} ya está cerrada.")
    rs.status = "closed"
    s.flush()
    return rs


def rater_names(s: Session) -> list[str]:
    return list(s.scalars(select(User.name).where(User.role == "rater", User.active).order_by(User.name)))


def snapshots_with_answers(s: Session, set_name: str) -> list[tuple[str, int]]:
    """(label, snapshot id) of every snapshot with answers in the set; the label tells same-name snapshots apart."""
    ps = get_set(s, set_name)
    ids = s.scalars(select(Answer.contestant_id).join(Prompt, Answer.prompt_id == Prompt.id)
                    .where(Prompt.set_id == ps.id).distinct())
    rows = sorted((s.get(ContestantSnapshot, i) for i in ids), key=lambda c: (c.name, c.id))
    return [(f"{c.name} (#{c.id}{', ' + c.adapter_sha256[:8] if c.adapter_sha256 else ''})", c.id) for c in rows]


def prompt_choices(s: Session, set_name: str) -> list[tuple[str, int]]:
    ps = get_set(s, set_name)
    from esllm.study.prompts import ordered_prompts

    out = []
    for p in ordered_prompts(s, ps.id):
        short = p.text if len(p.text) <= 60 else p.text[:57] + "…"
        out.append((f"{p.external_id} · {p.category} · {short}", p.id))
    return out


def attempts(s: Session, prompt_id: int, contestant_id: int) -> list[Answer]:
    return list(s.scalars(select(Answer).where(Answer.prompt_id == prompt_id, Answer.contestant_id == contestant_id)
                          .order_by(Answer.attempt)))


def coverage(s: Session, set_name: str) -> list[tuple[str, int, int, int]]:
    """(snapshot label, prompts with a selected answer, prompts in the set, answers stored) per snapshot."""
    ps = get_set(s, set_name)
    n = s.scalar(select(func.count()).select_from(Prompt).where(Prompt.set_id == ps.id)) or 0
    out = []
    for label, cid in snapshots_with_answers(s, set_name):
        stored = s.scalar(select(func.count()).select_from(Answer).join(Prompt, Answer.prompt_id == Prompt.id)
                          .where(Prompt.set_id == ps.id, Answer.contestant_id == cid)) or 0
        out.append((label, _selected_count(s, ps.id, cid), n, stored))
    return out


@dataclass(frozen=True)
class ImportSummary:
    set_name: str
    rows: int  # prompts in the file
    new: int  # of them, prompts the set did not have

    @property
    def message(self) -> str:
        return f"Conjunto {self.set_name!r}: {self.rows} prompts en el archivo, {self.new} nuevos."


def import_prompts(s: Session, set_name: str, path: str | Path, *, description: str) -> ImportSummary:
    """Check the set name and the file (a bad file imports nothing), then add the set or its missing prompts."""
    name = check_set_name(set_name)
    rows = parse_prompt_file(path)
    before = len(prompt_choices(s, name)) if name in set_names(s) else 0
    import_prompt_set(s, name, rows, description=description)
    return ImportSummary(name, len(rows), len(rows) - before)


def create_named_session(s: Session, *, name: str, set_name: str, contestants: Sequence[str], raters: Sequence[str],
                         k: int, mode: str = "general", created_by: Optional[int] = None,
                         rng: Optional[random.Random] = None) -> RatingSession:
    """A session over contestant *names* (each its latest complete snapshot, see `resolve_contestants`)."""
    name = check_session_name(name)  # the cheap check first
    snaps = resolve_contestants(s, set_name, [n for n in contestants if n])
    return create_session(s, name=name, prompt_set=set_name, contestant_ids=[c.id for c in snaps], raters=list(raters),
                          k=k, rubric_mode=mode, created_by=created_by, rng=rng or random.Random())
