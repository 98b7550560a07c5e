"""Read a rating study's results out of the store as plain data: a session's scores as the frame that
esllm/study/stats.py takes (plus the columns the CSV export needs), rater pseudonyms and progress, the scores
of every session over a prompt set, and the Comparar votes.

    rs = find_session(s, "estudio-1")            # by name or id; EsllmError (Spanish) if unknown
    df = session_scores_frame(s, rs.id)          # one row per rater × item × contestant × criterion
    progress_by_rater(s, rs.id)                  # [(pseudonym, user name, done, total), ...]

These frames name the contestants: show them to admins only (the caller checks roles). Raters appear
as pseudonyms ("evaluador-01", …), numbered by user id among the session's raters, so a pseudonym is
stable within a session whatever the progress.

Humans and judge models never mix: a judge model (esllm/evals/judge.py) grades as a user of role "judge"
with its own assignments, and everything here reads human raters only unless asked otherwise
(`session_scores_frame(s, id, who="judges")` gives the judges' scores, rater = the judge user's name).
"""

from __future__ import annotations

from typing import Literal, Union

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from esllm import EsllmError
from esllm.store.models import (
    CRITERIA,
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
    Vote,
)
from esllm.study.prompts import ordered_prompts

# Columns of session_scores_frame: report.py's six first, then what the long CSV adds.
WHO = ("humans", "judges", "all")
FRAME_COLUMNS = ["item", "category", "contestant", "rater", "criterion", "value",
                 "session", "series", "turn", "label", "comment", "seconds", "timestamp", "answer_id",
                 "prompt_id", "contestant_id", "position"]


def find_session(s: Session, session: Union[int, str]) -> RatingSession:
    """The rating session with this id or name (a string of digits is tried as a name first)."""
    rs = None
    if isinstance(session, str):
        rs = s.scalars(select(RatingSession).where(RatingSession.name == session.strip())).first()
        if rs is None and session.strip().isdigit():
            rs = s.get(RatingSession, int(session.strip()))
    elif isinstance(session, int) and not isinstance(session, bool):
        rs = s.get(RatingSession, session)
    if rs is None:
        raise EsllmError(f"No existe la sesión {session!r}. Vea las sesiones con: python -m esllm sessions list")
    return rs


def pseudonyms(s: Session, session_id: int) -> dict[int, str]:
    """user id -> "evaluador-NN" for the session's human raters, numbered in user-id order (judges never
    take a number, so adding a judge renames no one)."""
    ids = s.scalars(select(SessionRater.user_id).where(SessionRater.session_id == session_id)
                    .order_by(SessionRater.user_id))
    # raters with assignments but no SessionRater row (not made by create_session) still get a name
    extra = s.scalars(select(Assignment.rater_id).where(Assignment.session_id == session_id).distinct())
    judges = set(s.scalars(select(User.id).where(User.role == "judge")))
    ordered = sorted((set(ids) | set(extra)) - judges)
    width = max(2, len(str(len(ordered))))
    return {uid: f"evaluador-{i:0{width}d}" for i, uid in enumerate(ordered, start=1)}


def contestant_names(s: Session, session_id: int) -> dict[int, str]:
    """contestant id -> display name in position order; snapshots sharing a name get " (#id)" appended."""
    rows = s.execute(select(ContestantSnapshot.id, ContestantSnapshot.name).join(
        SessionContestant, SessionContestant.contestant_id == ContestantSnapshot.id)
        .where(SessionContestant.session_id == session_id).order_by(SessionContestant.position)).all()
    names = [n for _, n in rows]
    return {i: (f"{n} (#{i})" if names.count(n) > 1 else n) for i, n in rows}


def judge_names(s: Session, session_id: int) -> dict[int, str]:
    """user id -> user name of the judge models with assignments in the session."""
    return dict(s.execute(select(User.id, User.name).join(Assignment, Assignment.rater_id == User.id)
                          .where(Assignment.session_id == session_id, User.role == "judge").distinct()).all())


def session_scores_frame(s: Session, session_id: int,
                         who: Literal["humans", "judges", "all"] = "humans") -> pd.DataFrame:
    """The session's scores, one row per rater × item × contestant × criterion (columns FRAME_COLUMNS).

    `who`: "humans" (default: the study's raters only), "judges" (judge models, rater = the judge user's
    name, e.g. "juez-gemma-base") or "all" (both; tell them apart by the rater name).
    item = the prompt's external id; rater = pseudonym; contestant = display name (see contestant_names);
    seconds = the time the rater spent on the whole item (repeated on its rows); timestamp = when the
    score was last given (UTC ISO 8601). Rows come in prompt-set order (standalone items by id, then
    each series by turn), then rater, contestant position and criterion, so categories appear in that order.
    """
    rs = s.get(RatingSession, session_id)
    if rs is None:
        raise EsllmError(f"No existe la sesión {session_id!r}.")
    if who not in WHO:
        raise ValueError(f"who must be one of {WHO}, not {who!r}")
    raters: dict[int, str] = {}
    if who in ("humans", "all"):
        raters.update(pseudonyms(s, session_id))
    if who in ("judges", "all"):
        raters.update(judge_names(s, session_id))
    names = contestant_names(s, session_id)
    position = {cid: i for i, cid in enumerate(names)}
    q = (select(Score.value, Score.criterion, Score.label, Score.comment, Score.updated_at, Score.answer_id,
                Assignment.rater_id, Assignment.seconds_spent, Prompt.id, Prompt.external_id, Prompt.category,
                Prompt.series, Prompt.turn, Answer.contestant_id)
         .join(Assignment, Score.assignment_id == Assignment.id)
         .join(Prompt, Assignment.prompt_id == Prompt.id)
         .join(Answer, Score.answer_id == Answer.id)
         .where(Assignment.session_id == session_id, Assignment.rater_id.in_(list(raters))))
    rows = []
    for (value, crit, label, comment, when, answer_id, rater_id, secs, pid, ext, cat, series, turn,
         cid) in s.execute(q):
        rows.append({"item": ext, "category": cat, "contestant": names.get(cid, f"#{cid}"), "rater": raters[rater_id],
                     "criterion": crit, "value": int(value), "session": rs.name, "series": series, "turn": turn,
                     "label": label, "comment": comment, "seconds": secs,
                     "timestamp": when.isoformat(timespec="seconds") if when else None, "answer_id": answer_id,
                     "prompt_id": pid, "contestant_id": cid, "position": position.get(cid, 99)})
    df = pd.DataFrame(rows, columns=FRAME_COLUMNS)
    if df.empty:
        return df
    df["turn"] = df["turn"].astype("Int64")
    for col in ("category", "contestant", "rater", "criterion"):  # few distinct values: report.py reads the codes
        df[col] = df[col].astype("category")
    order = {p.id: i for i, p in enumerate(ordered_prompts(s, rs.prompt_set_id))}
    crit = {c: i for i, c in enumerate(CRITERIA)}
    df["_order"] = df["prompt_id"].map(order)
    df["_crit"] = df["criterion"].map(crit)
    df = df.sort_values(["_order", "rater", "position", "_crit"], kind="stable")
    return df.drop(columns=["_order", "_crit"]).reset_index(drop=True)


def progress_by_rater(s: Session, session_id: int) -> list[tuple[str, str, int, int]]:
    """(pseudonym, user name, items done, items assigned) per human rater, in pseudonym order."""
    who = pseudonyms(s, session_id)
    total = dict(s.execute(select(Assignment.rater_id, func.count()).where(Assignment.session_id == session_id)
                           .group_by(Assignment.rater_id)).all())
    done = dict(s.execute(select(Assignment.rater_id, func.count()).where(
        Assignment.session_id == session_id, Assignment.finished_at.is_not(None)).group_by(Assignment.rater_id)).all())
    users = dict(s.execute(select(User.id, User.name).where(User.id.in_(list(who)))).all())
    return [(p, users.get(uid, "?"), int(done.get(uid, 0)), int(total.get(uid, 0))) for uid, p in who.items()]


def prompt_set_scores_frame(s: Session, set_name: str,
                            who: Literal["humans", "judges", "all"] = "humans") -> pd.DataFrame:
    """The scores of every session over the prompt set, stacked (column `session` tells them apart;
    pseudonyms are per session, so the same person may appear under different ones); `who` as in
    session_scores_frame."""
    ps = s.scalars(select(PromptSet).where(PromptSet.name == set_name)).first()
    if ps is None:
        raise EsllmError(f"No existe el conjunto de prompts {set_name!r}.")
    ids = list(s.scalars(select(RatingSession.id).where(RatingSession.prompt_set_id == ps.id)
                         .order_by(RatingSession.id)))
    frames = [f for f in (session_scores_frame(s, i, who) for i in ids) if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=FRAME_COLUMNS)


def comparar_votes(s: Session) -> list[tuple[list[str], str]]:
    """All Comparar votes as (names shown as A, B, C; choice), the input of report.bradley_terry."""
    return [(list(shown), choice) for shown, choice in s.execute(select(Vote.shown, Vote.choice).order_by(Vote.id))]
