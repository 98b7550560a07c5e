"""Judge model: a contestant grades the answers of a rating session with the study's rubric (the four
aspects and the 1-5 scale of esllm/evals/judge_prompt.py), its scores are stored like a rater's, and
compared with the humans' (esllm/evals/agreement.py).

    [run] = run_contestants(Judge("estudio-1", criterion="general"), Session, engine, ["gemma-instrucciones"])
    rep = Judge("estudio-1").grade(Session, engine, "gemma-instrucciones")   # the same run, as a JudgeReport
    rep.graded, rep.unparsable, rep.agreement.exact, rep.agreement.alpha
    python -m esllm judge --session estudio-1 --judge gemma-instrucciones [--criterion full]   # esllm/cli/evals.py

How it maps to the evaluation shape (esllm/evals/base.py): `Judge(session, criterion=…)` holds the
settings; its items are the session's items with each of its three contestants' selected answers,
read from the database (`load(store)` needs the store, and fails before any model loads); the contestant
is the judge, not a contestant being measured, and `run_contestants` over several judges has each grade
the same session. It overrides `run_one` instead of writing `evaluate`: the grading writes the judge's
scores as it goes, one commit per item, so that a stopped run resumes. `grade` is the same run that
returns the JudgeReport (counts and agreement); `summary` is the report's first line.

How it is stored: the judge is a user of role "judge" (`judge_user_name`: "juez-" + the contestant's name,
password hash "!" and inactive, so it can never log in), never a member of the session (no session_rater
row): it has its own assignments (one per item, labels A/B/C in a random order from `random.Random(seed)`)
and its scores go through `save_score`. esllm/study/results.py reads human raters only unless asked for judges,
so the study's tables, exports and progress never include a judge. Each call is one `eval_run` row of
kind "judge" (config, hashes of the judge, metrics, details = the replies that gave no grade).

What it does: for every item, each of the session's three contestants' selected answers (with that
contestant's own earlier turns for a contextual item) is shown to the judge with the grading prompt
(esllm/evals/judge_prompt.py, `PROMPT_VERSION`), greedy. A reply `parse_grade` cannot read is asked
again up to `retries` times with the reminder `REMINDER` appended (the first retry greedy, later ones
sampled at temperature 0.7 with a seed derived from `seed`), then recorded as unparsable: never
guessed, never stored as a score. The asking (`ask_grade`, `ask_grades`) lives in esllm/evals/judge_ask.py.
Resumable: an answer × criterion this judge already scored in the session is skipped; an unparsable one
is asked again by the next run. What it does not know: whether the judge is any good; the agreement
figures are there to tell.
"""

from __future__ import annotations

import hashlib
import random
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from esllm import EsllmError
from esllm.evals.agreement import NO_AGREEMENT, JudgeAgreement, judge_agreement
from esllm.evals.base import Evaluation, Progress, failure_message, session_scope
from esllm.evals.judge_ask import MAX_NEW_TOKENS, ask_grades
from esllm.evals.judge_prompt import (
    JUDGE_PROMPTS,
    PROMPT_VERSION,
    STUDY_PROMPT_VERSION,
    grading_messages,
    study_grading_messages,
)
from esllm.evals.runs import fail_run, finish_run, latest_runs, start_run
from esllm.store.base import utcnow
from esllm.store.models import ASPECTS, CRITERIA, Assignment, EvalRun, Score, User, save_score
from esllm.study.answers import selected_answers
from esllm.study.assignment import label_permutations
from esllm.study.prompts import ordered_prompts
from esllm.study.results import contestant_names, find_session, session_scores_frame

CRITERION_CHOICES = CRITERIA + ("full",)  # "full": the general score and the four aspects, one question each
MAX_RETRIES = 10
JUDGE_PREFIX = "juez-"
STUDY_JUDGE_PREFIX = "juez-estudio-"  # the study's prompt grades as another judge user: its scores never mix with ours


# ---------------------------------------------------------------- the judge's user and assignments

def judge_user_name(contestant: str, prompt: str = "esllm") -> str:
    """"juez-" ("juez-estudio-" with the study's prompt) + the contestant's name in lower case ASCII
    ([a-z0-9._-], other characters -> "-"), at most 40 characters; a name that had to be changed or cut gets a
    short hash, so two contestants never share a judge user."""
    prefix = STUDY_JUDGE_PREFIX if prompt == "estudio" else JUDGE_PREFIX
    ascii_name = unicodedata.normalize("NFKD", contestant).encode("ascii", "ignore").decode().lower()
    clean = re.sub(r"[^a-z0-9._-]+", "-", ascii_name).strip("-._") or "modelo"
    name = prefix + clean
    if clean != contestant or len(name) > 40:
        digest = hashlib.sha256(contestant.encode("utf-8")).hexdigest()[:8]
        name = prefix + clean[: 40 - len(prefix) - 9].rstrip("-._") + "-" + digest
    return name


def judge_user(s: Session, contestant: str, prompt: str = "esllm") -> User:
    """The judge's user (created, flushed, if new): role "judge", inactive, password hash "!" (matches no
    password). EsllmError if a person already has that name."""
    name = judge_user_name(contestant, prompt)
    user = s.scalars(select(User).where(User.name == name)).first()
    if user is None:
        user = User(name=name, password_hash="!", role="judge", active=False)
        s.add(user)
        s.flush()
    elif user.role != "judge":
        raise EsllmError(f"Ya existe un usuario {name!r} que no es un juez; renómbrelo o use otro concursante.")
    return user


def _judge_assignments(s: Session, session_id: int, judge_id: int, prompts: Sequence[SessionItem],
                       contestant_ids: Sequence[int], rng: random.Random) -> dict[int, Assignment]:
    """prompt id -> the judge's assignment, creating the missing ones (prompt-set order, random labels)."""
    have = {a.prompt_id: a for a in s.scalars(select(Assignment).where(
        Assignment.session_id == session_id, Assignment.rater_id == judge_id))}
    missing = [p for p in prompts if p.id not in have]
    if missing:
        start = max((a.order_index for a in have.values()), default=-1) + 1
        perms = label_permutations(len(missing), list(contestant_ids), rng)
        for i, (p, perm) in enumerate(zip(missing, perms)):
            a = Assignment(session_id=session_id, rater_id=judge_id, prompt_id=p.id, order_index=start + i,
                           permutation=dict(perm))
            s.add(a)
            have[p.id] = a
        s.flush()
    return have


# ---------------------------------------------------------------- grading

@dataclass
class JudgeReport:
    run_id: int
    graded: int = 0  # scores stored by this run
    skipped: int = 0  # answer × criterion already scored by this judge before
    unparsable: int = 0  # no grade after the retries (in the run's details)
    errors: int = 0  # the engine refused the request (in the run's details)
    total: int = 0  # answer × criterion in the session
    stopped: bool = False  # `limit` reached or `stop` set before every item was graded
    agreement: JudgeAgreement = NO_AGREEMENT  # over all of this judge's scores in the session
    details: list[dict[str, Any]] = field(default_factory=list)  # the unparsable replies and errors


def _prompt_limit(engine) -> int:
    try:
        return int(engine.config.limits.max_prompt_chars)
    except AttributeError:
        return 4000


@dataclass(frozen=True)
class SessionItem:
    """One item of the session as the judge sees it."""

    id: int  # prompt id
    external_id: str
    series: Optional[str]  # contextual series, or None
    text: str


@dataclass(frozen=True)
class SessionItems:
    """The judge's items (`Judge.load`): a rating session's items and its contestants' selected answers."""

    session_id: int
    session_name: str
    names: dict[int, str]  # contestant id -> display name, position order (three)
    items: list[SessionItem]  # prompt-set order
    texts: dict[tuple[int, int], tuple[int, str]]  # (prompt id, contestant id) -> (answer id, text)

    def __len__(self) -> int:
        return len(self.items)


class Judge(Evaluation):
    """A judge contestant grades a rating session (see the module docstring).

    `criterion`: "general", one aspect, or "full" (general and the four aspects). `retries`: new tries for
    a reply without a grade. `seed`: the judge's A/B/C labels and sampled retries. `limit`: at most this
    many items that still have something to grade. `stop`: set it to stop after the current item."""

    kind = "judge"

    def __init__(self, session: int | str, *, criterion: str = "general", retries: int = 2, seed: int = 0,
                 limit: Optional[int] = None, stop: Optional[threading.Event] = None, prompt: str = "esllm"):
        if criterion not in CRITERION_CHOICES:
            raise EsllmError(f"Criterio desconocido {criterion!r}; use uno de {', '.join(CRITERION_CHOICES)}.")
        if prompt not in JUDGE_PROMPTS:
            raise EsllmError(f"Prompt de juez desconocido {prompt!r}; use uno de {', '.join(JUDGE_PROMPTS)}.")
        if prompt == "estudio" and criterion != "general":
            raise EsllmError("El prompt del estudio solo pide una calificación general; use el criterio «general».")
        self.prompt = prompt
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
            raise EsllmError(f"Los reintentos deben ser un entero de 0 a {MAX_RETRIES}.")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise EsllmError("El límite de ítems debe ser un entero positivo.")
        self.session, self.criterion, self.retries, self.seed = session, criterion, retries, seed
        self.limit, self.stop = limit, stop
        self.criteria = ("general",) + ASPECTS if criterion == "full" else (criterion,)

    def load(self, store=None) -> SessionItems:
        """The session's items and answers; EsllmError if the session does not exist, has no items or
        does not have three contestants with an answer to each."""
        if store is None:
            raise ValueError("Judge.load needs the store (a session factory or a Session)")
        with session_scope(store) as s:
            rs = find_session(s, self.session)
            names = contestant_names(s, rs.id)
            if len(names) != 3:
                raise EsllmError(f"La sesión {rs.name!r} no tiene tres concursantes.")
            prompts = ordered_prompts(s, rs.prompt_set_id)
            if not prompts:
                raise EsllmError(f"La sesión {rs.name!r} no tiene ítems.")
            texts = selected_answers(s, [p.id for p in prompts], list(names))
            return SessionItems(rs.id, rs.name, names,
                                [SessionItem(p.id, p.external_id, p.series, p.text) for p in prompts], texts)

    def summary(self, run) -> str:
        if run.status != "done":
            return f"Ejecución {run.id} ({run.contestant}): FALLÓ: {run.error}"
        m = run.metrics
        return (f"Ejecución {run.id}: {m['graded']} calificadas, {m['unparsable']} sin calificación legible, "
                f"{m['errors']} errores, {m['skipped']} ya estaban (de {m['total']})"
                + (" — parcial" if m["stopped"] else ""))

    def run_one(self, store, engine, contestant: str, items: SessionItems, progress: Optional[Progress] = None,
                *, raise_errors: bool = True) -> EvalRun:
        return self._grade(store, engine, contestant, items, progress, raise_errors)[0]

    def grade(self, store, engine, judge: str, items: Optional[SessionItems] = None,
              progress: Optional[Progress] = None) -> JudgeReport:
        """`run_one` (the items loaded first when not given), returning the report; an unexpected error marks the
        run failed and is raised again."""
        return self._grade(store, engine, judge, items if items is not None else self.load(store), progress, True)[1]

    def _grade(self, store, engine, judge: str, items: SessionItems, progress: Optional[Progress],
               raise_errors: bool) -> tuple[EvalRun, JudgeReport]:
        """The run: start it, grade item by item (a commit each; what this judge scored before is skipped),
        finish it with the agreement; "failed" with the details so far on any error."""
        engine.contestant(judge)  # EsllmError if unknown or unavailable
        g = self._start(store, engine, judge, items)
        earlier: dict[str, list[int]] = {}  # series -> prompt ids of the turns before the current one
        started = 0
        try:
            for pid, ext, series, text, aid, perm in g.plan:
                before = list(earlier.get(series, [])) if series else []
                if series:
                    earlier.setdefault(series, []).append(pid)
                todo = [(label, int(perm[label]), c) for label in ("A", "B", "C") for c in self.criteria
                        if (aid, items.texts[pid, int(perm[label])][0], c) not in g.done_keys]
                g.rep.skipped += 3 * len(self.criteria) - len(todo)
                g.done += 3 * len(self.criteria) - len(todo)
                if not todo:
                    continue
                if (self.limit is not None and started >= self.limit) or (self.stop is not None and self.stop.is_set()):
                    g.rep.stopped = True
                    break
                started += 1
                self._grade_item(store, engine, g, (pid, ext, text, aid, perm), before, todo, progress)
            run = self._finish(store, g)
        except BaseException as e:  # KeyboardInterrupt too: the run must not stay "running"
            with session_scope(store) as s:
                run = s.get(EvalRun, g.rep.run_id)
                run.details = list(g.rep.details)
                fail_run(s, run, failure_message(e))
                s.commit()
            if raise_errors or not isinstance(e, Exception):
                raise
        return run, g.rep

    def _start(self, store, engine, judge: str, items: SessionItems) -> "_Grading":
        """The judge's user and assignments, what it already scored, and its run stored as "running"."""
        with session_scope(store) as s:
            user = judge_user(s, judge, self.prompt)
            assignments = _judge_assignments(s, items.session_id, user.id, items.items, list(items.names),
                                             random.Random(self.seed))
            done_keys = set(s.execute(select(Score.assignment_id, Score.answer_id, Score.criterion).join(
                Assignment, Score.assignment_id == Assignment.id).where(
                Assignment.session_id == items.session_id, Assignment.rater_id == user.id)).all())
            config = {"session_id": items.session_id, "session": items.session_name, "judge": judge,
                      "judge_user": user.name, "criterion": self.criterion, "prompt": self.prompt,
                      "prompt_version": STUDY_PROMPT_VERSION if self.prompt == "estudio" else PROMPT_VERSION,
                      "retries": self.retries, "seed": self.seed, "limit": self.limit, "preset": "greedy",
                      "max_new_tokens": MAX_NEW_TOKENS, "scope": f"{items.session_id}/{self.criterion}"
                      + ("/estudio" if self.prompt == "estudio" else "")}
            run = start_run(s, self.kind, judge, config=config, hashes=engine.hashes(judge))
            s.commit()
            plan = [(p.id, p.external_id, p.series, p.text, assignments[p.id].id,
                     dict(assignments[p.id].permutation)) for p in items.items]
            return _Grading(judge, items, JudgeReport(run_id=run.id, total=len(items.items) * 3 * len(self.criteria)),
                            plan, done_keys, user.id, user.name, _prompt_limit(engine))

    def _requests(self, g: "_Grading", pid: int, text: str, before: list[int], todo: list) -> tuple[list, list]:
        """(per todo entry: its index in the requests, or the EsllmError that kept it from being asked; the
        requests for ask_grades)."""
        prompt_text = {p.id: p.text for p in g.items.items}
        asked: list[Any] = []
        requests = []
        for _label, cid, crit in todo:
            answer_id, answer = g.items.texts[pid, cid]
            context = [(prompt_text[e], g.items.texts[e, cid][1]) for e in before]
            try:
                msgs = (study_grading_messages(text, answer, crit, g.max_chars) if self.prompt == "estudio"
                        else grading_messages(text, answer, crit, context, g.max_chars))
            except EsllmError as e:
                asked.append(e)
                continue
            asked.append(len(requests))
            requests.append((msgs, (self.seed * 100_003 + answer_id * 16) % 2**30))
        return asked, requests

    def _grade_item(self, store, engine, g: "_Grading", item: tuple, before: list[int], todo: list,
                    progress: Optional[Progress]) -> None:
        """Every answer × criterion of one item asked at once (one batch for the engine), stored, committed."""
        pid, ext, text, aid, perm = item
        rep = g.rep
        asked, requests = self._requests(g, pid, text, before, todo)
        with session_scope(store) as s:
            a = s.get(Assignment, aid)
            if a.started_at is None:
                a.started_at = utcnow()
            answers = ask_grades(engine, g.judge, requests, retries=self.retries)
            for (label, cid, crit), got in zip(todo, asked):
                answer_id = g.items.texts[pid, cid][0]
                record = {"item": ext, "label": label, "contestant": g.items.names[cid], "criterion": crit}
                got = got if isinstance(got, EsllmError) else answers[got]
                if isinstance(got, EsllmError):
                    rep.errors += 1
                    rep.details.append({**record, "status": "error", "error": str(got)})
                elif got[0] is None:
                    rep.unparsable += 1
                    rep.details.append({**record, "status": "unparsable", "replies": got[1]})
                else:
                    save_score(s, assignment_id=aid, answer_id=answer_id, label=label, value=got[0], criterion=crit)
                    rep.graded += 1
                    g.done_keys.add((aid, answer_id, crit))
                g.done += 1
                if progress:
                    progress(g.done, rep.total, f"ítem {ext} · {label} · {crit}")
            if all((aid, g.items.texts[pid, int(perm[lb])][0], c) in g.done_keys
                   for lb in ("A", "B", "C") for c in self.criteria):
                a.finished_at = a.finished_at or utcnow()
            s.commit()

    def _finish(self, store, g: "_Grading") -> EvalRun:
        """The agreement over all of this judge's scores in the session, stored with the counts: "done"."""
        rep, session_id = g.rep, g.items.session_id
        with session_scope(store) as s:
            humans = session_scores_frame(s, session_id)
            judges = session_scores_frame(s, session_id, who="judges")
            mine = judges[judges["rater"].astype(str) == g.judge_uname] if not judges.empty else judges
            rep.agreement = (judge_agreement(humans, mine, None if self.criterion == "full" else self.criterion)
                             if not humans.empty and not mine.empty else NO_AGREEMENT)
            stored = int(s.scalar(select(func.count()).select_from(Score)
                                  .join(Assignment, Score.assignment_id == Assignment.id)
                                  .where(Assignment.session_id == session_id,
                                         Assignment.rater_id == g.judge_uid)) or 0)
            metrics = {"graded": rep.graded, "unparsable": rep.unparsable, "errors": rep.errors,
                       "skipped": rep.skipped, "total": rep.total, "judge_scores": stored,
                       "stopped": rep.stopped, **rep.agreement.as_dict()}
            run = finish_run(s, s.get(EvalRun, rep.run_id), metrics=metrics, details=rep.details)
            s.commit()
            return run


@dataclass
class _Grading:
    """One judge run in progress: what its items share."""

    judge: str
    items: SessionItems
    rep: JudgeReport
    plan: list[tuple]  # per item: prompt id, external id, series, text, assignment id, label -> contestant index
    done_keys: set  # (assignment id, answer id, criterion) this judge has scored
    judge_uid: int
    judge_uname: str
    max_chars: int
    done: int = 0  # answer × criterion handled so far (progress)


def latest_judge_runs(s: Session) -> list[EvalRun]:
    """The newest finished judge run per (judge, session, criterion), newest first; its metrics are the
    agreement as measured at the end of that run."""
    return latest_runs(s, "judge", config_key="scope")
