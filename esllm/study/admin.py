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
from esllm.store import names
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
from esllm.study.attempts import identical_groups, same_text_groups
from esllm.study.prompts import import_prompt_set, ordered_prompts, parse_prompt_file
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
    out = []
    for p in ordered_prompts(s, ps.id):
        short = p.text if len(p.text) <= 60 else p.text[:57] + "…"
        out.append((f"{p.external_id} · {p.category} · {short}", p.id))
    return out


def attempts(s: Session, prompt_id: int, contestant_id: int) -> list[Answer]:
    return list(s.scalars(select(Answer).where(Answer.prompt_id == prompt_id, Answer.contestant_id == contestant_id)
                          .order_by(Answer.attempt)))


def identical_to(answers: Sequence[Answer]) -> dict[int, str]:
    """attempt -> what it is identical to, in words ("= 1, 3 (mismo texto)", "= 2 (mismos parámetros)"), for the
    attempts that share their text or their generation settings with another attempt; the others are absent."""
    out: dict[int, list[str]] = {}
    for groups, why in ((same_text_groups({a.attempt: a.text for a in answers}), "mismo texto"),
                        (identical_groups({a.attempt: a.params or {} for a in answers}), "mismos parámetros")):
        for g in groups:
            for k in g:
                out.setdefault(k, []).append(f"= {', '.join(str(x) for x in g if x != k)} ({why})")
    return {k: "; ".join(v) for k, v in out.items()}


def identical_prompts(s: Session, set_id: int, contestant_id: int) -> int:
    """How many prompts of the set have two or more attempts of this snapshot with the same text."""
    rows = s.execute(select(Answer.prompt_id, Answer.attempt, Answer.text).join(Prompt, Answer.prompt_id == Prompt.id)
                     .where(Prompt.set_id == set_id, Answer.contestant_id == contestant_id)).all()
    by_prompt: dict[int, dict[int, str]] = {}
    for pid, attempt, text in rows:
        by_prompt.setdefault(pid, {})[attempt] = text
    return sum(1 for texts in by_prompt.values() if same_text_groups(texts))


def series_problems(s: Session, set_id: int, contestant_id: int, series: Optional[str] = None) -> list[str]:
    """Where a contextual series' selected answers do not follow one history (Spanish, one line each).

    Turn t of attempt a was generated after attempt a of the earlier turns (esllm/study/answers.py): if the
    answer chosen for an earlier turn is another attempt, raters would read earlier turns the model never saw."""
    q = (select(Prompt.series, Prompt.turn, Answer.attempt).join(Answer, Answer.prompt_id == Prompt.id)
         .where(Prompt.set_id == set_id, Prompt.series.is_not(None), Answer.contestant_id == contestant_id,
                Answer.selected))
    if series is not None:
        q = q.where(Prompt.series == series)
    chosen: dict[str, dict[int, int]] = {}
    for ser, turn, attempt in s.execute(q):
        chosen.setdefault(ser, {})[turn] = attempt
    out = []
    for ser in sorted(chosen):
        turns = chosen[ser]
        for t in sorted(turns):
            earlier = {u: turns[u] for u in sorted(turns) if u < t and turns[u] != turns[t]}
            if earlier:
                seen = ", ".join(f"turno {u}: intento {a}" for u, a in earlier.items())
                out.append(f"Serie {ser!r}, turno {t}: el intento {turns[t]} elegido se generó tras el intento "
                           f"{turns[t]} de los turnos anteriores, pero los evaluadores verían otra historia ({seen}). "
                           f"Elija el mismo intento en toda la serie o regenere los turnos siguientes.")
    return out


def coverage(s: Session, set_name: str) -> list[tuple[str, int, int, int, int]]:
    """(snapshot label, prompts with a selected answer, prompts in the set, answers stored, prompts with identical
    attempts) per snapshot."""
    ps = get_set(s, set_name)
    n = s.scalar(select(func.count()).select_from(Prompt).where(Prompt.set_id == ps.id)) or 0
    out = []
    for label, cid in snapshots_with_answers(s, set_name):
        stored = s.scalar(select(func.count()).select_from(Answer).join(Prompt, Answer.prompt_id == Prompt.id)
                          .where(Prompt.set_id == ps.id, Answer.contestant_id == cid)) or 0
        out.append((label, _selected_count(s, ps.id, cid), n, stored, identical_prompts(s, ps.id, cid)))
    return out


def prompt_series_problems(s: Session, prompt_id: int, contestant_id: int) -> list[str]:
    """`series_problems` of the series a prompt belongs to (none for a standalone prompt)."""
    p = s.get(Prompt, prompt_id)
    return [] if p is None or p.series is None else series_problems(s, p.set_id, contestant_id, p.series)


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
    existing = set_names(s)
    if name not in existing and (other := names.look_alike(name, existing)):
        raise EsllmError(f"Ya existe el conjunto {other!r} y {name!r} se confunde con él (solo cambian mayúsculas o "
                         f"minúsculas): importe en {other!r} o elija otro nombre.")
    rows = parse_prompt_file(path)
    before = len(prompt_choices(s, name)) if name in existing else 0
    import_prompt_set(s, name, rows, description=description)
    return ImportSummary(name, len(rows), len(prompt_choices(s, name)) - before)  # a file may repeat some


def create_named_session(s: Session, *, name: str, set_name: str, contestants: Sequence[str], raters: Sequence[str],
                         k: int, mode: str = "general", created_by: Optional[int] = None,
                         rng: Optional[random.Random] = None) -> RatingSession:
    """A session over contestant *names* (each its latest complete snapshot, see `resolve_contestants`)."""
    name = check_session_name(name)  # the cheap check first
    snaps = resolve_contestants(s, set_name, [n for n in contestants if n])
    set_id = get_set(s, set_name).id
    problems = [f"{c.name}: {p}" for c in snaps for p in series_problems(s, set_id, c.id)]
    if problems:
        raise EsllmError("Las respuestas elegidas de una serie contextual no siguen una misma historia:\n"
                         + "\n".join(f"  - {p}" for p in problems[:10])
                         + (f"\n  … y {len(problems) - 10} más" if len(problems) > 10 else ""))
    return create_session(s, name=name, prompt_set=set_name, contestant_ids=[c.id for c in snaps], raters=list(raters),
                          k=k, rubric_mode=mode, created_by=created_by, rng=rng or random.Random())
