"""Answers in batch: prompt set x contestants x N attempts, stored with their generation data.

    python -m esllm generate --set general --contestants gemma-base gemma-instrucciones gemma-tributario
    python -m esllm generate --set tributario-ec --attempts 3          # every available contestant

Resumable: an (prompt, contestant snapshot, attempt) already stored is skipped, so a run cut short
goes on where it stopped. A contextual turn is generated with the same contestant's own earlier
answers (same attempt) as history. The first attempt of each prompt and contestant is marked
selected; an admin may pick another (`select_attempt`). Each stored contestant is a snapshot (base,
adapter + sha256, template, preset and its own params from the config), so retraining an adapter or
changing its settings makes a new contestant, never mixes.

How attempts 2..N differ is planned by esllm/study/attempts.py (the batch's `vary`, else the contestant's
`vary_attempts`); a plan with identical attempts (a deterministic preset, N > 1, no variation) is refused
before anything is generated. Each answer stores the exact parameters it was generated with.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from esllm import EsllmError
from esllm.engine.presets import PRESETS
from esllm.store.models import Answer, ContestantSnapshot, PromptSet, get_or_create_contestant
from esllm.study.attempts import PlannedAttempt, Setting, plan_attempts
from esllm.study.prompts import ordered_prompts


def own_params(c) -> dict:
    """A loaded contestant's own generation values: its preset's kwargs with the config's `params` over them."""
    return {**PRESETS[c.preset][1], **(c.overrides)}


# A server that applies its own chat template (api: chat) has been stored under this word since the first answers:
# another word would split such a contestant's answers over two snapshots.
SERVER_TEMPLATE = "servidor"


def snapshot(session: Session, engine, name: str) -> ContestantSnapshot:
    """The stored snapshot of an engine contestant as it is loaded now (params: preset + the config's params)."""
    c = engine.contestant(name)  # raises if unavailable
    r = engine.record(name)
    params = own_params(c)
    if r.served_model:  # on a server: what it serves is part of the contestant's identity
        params = {**params, "served_model": r.served_model, **({"lora": r.lora} if r.lora else {})}
    return get_or_create_contestant(
        session, name=r.name, base=r.base_source, template=SERVER_TEMPLATE if r.template == "server" else r.template,
        preset=r.preset, params=params, adapter=r.adapter, adapter_sha256=r.adapter_sha256)


def stored_params(res) -> dict:
    """An answer's stored parameters: what it was generated with, and which engine and dtype decoded it."""
    return {**res.params, **({"backend": res.backend} if res.backend else {}), **({"dtype": res.dtype} if res.dtype else {})}


def contestant_vary(engine, name: str) -> list[Setting]:
    """The config's `vary_attempts` of a contestant (one found in the adapters folder takes those of the first
    contestant listed on its base, as it takes its preset)."""
    specs = list(getattr(getattr(engine, "config", None), "contestants", None) or [])
    spec = next((x for x in specs if x.name == name), None)
    if spec is None:
        c = engine.registry.contestants.get(name)
        spec = next((x for x in specs if c is not None and x.model == c.model_key), None)
    return [(v.preset, dict(v.params)) for v in (spec.vary_attempts if spec else [])]


def plan_for(engine, name: str, attempts: int, vary: Optional[Sequence[Setting]] = None,
             max_new_tokens: Optional[int] = None) -> list[PlannedAttempt]:
    """The attempts of one contestant (the batch's `vary` wins over its own); EsllmError if they would be the same."""
    c = engine.contestant(name)
    settings = list(vary) if vary else contestant_vary(engine, name)
    try:
        return plan_attempts(c.preset, c.overrides, settings, attempts,
                             cap=engine.config.limits.max_new_tokens, max_new_tokens=max_new_tokens)
    except EsllmError as e:
        raise EsllmError(f"{name}: {e}") from None


BATCH = 8  # answers asked of the engine at once (it decodes up to its backend's max_batch together)


@dataclass
class BatchReport:
    generated: int = 0
    skipped: int = 0
    total: int = 0
    errors: list[str] = field(default_factory=list)


def generate_answers(
    sessionmaker: Callable[[], Session],
    engine,
    set_name: str,
    contestants: Sequence[str],
    attempts: int = 3,
    *,
    vary: Optional[Sequence[Setting]] = None,
    max_new_tokens: Optional[int] = None,
    progress: Callable[[int, int, str], None] = lambda done, total, msg: None,
    stop: Optional[threading.Event] = None,
) -> BatchReport:
    """Generate (or skip, when stored) every answer of the set for `contestants` × `attempts`; `vary` = how
    attempts 2..N differ for this run (default: each contestant's `vary_attempts`)."""
    plans = {name: plan_for(engine, name, attempts, vary, max_new_tokens) for name in contestants}  # refuse early
    rep = BatchReport()
    with sessionmaker() as s:
        ps = s.scalars(select(PromptSet).where(PromptSet.name == set_name)).first()
        if ps is None:
            raise EsllmError(f"No existe el conjunto de prompts {set_name!r}.")
        prompts = ordered_prompts(s, ps.id)
        snap_ids = {name: snapshot(s, engine, name).id for name in contestants}
        s.commit()
        prompt_ids = [(p.id, p.series, p.turn, p.text) for p in prompts]
    rep.total = len(prompt_ids) * len(contestants) * attempts
    done = 0
    for name in contestants:
        cid = snap_ids[name]
        for plan in plans[name]:
            attempt = plan.attempt
            history: dict[str, list[dict[str, str]]] = {}  # series -> this contestant's conversation so far
            pending = list(prompt_ids)
            while pending:
                # One wave: every single prompt and the next turn of each series. Their answers do not depend
                # on each other, so the engine decodes them together (llama.cpp batches them).
                wave, later, taken = [], [], set()
                for item in pending:
                    series = item[1]
                    if series and series in taken:
                        later.append(item)
                        continue
                    if series:
                        taken.add(series)
                    wave.append(item)
                pending = later
                todo: list[tuple[int, Optional[str], list[dict[str, str]]]] = []
                with sessionmaker() as s:
                    stored = {a.prompt_id: a.text for a in s.scalars(select(Answer).where(
                        Answer.prompt_id.in_([w[0] for w in wave]), Answer.contestant_id == cid,
                        Answer.attempt == attempt))}
                for pid, series, _turn, text in wave:
                    msgs = (history.get(series, []) if series else []) + [{"role": "user", "content": text}]
                    if pid in stored:
                        rep.skipped += 1
                        done += 1
                        if series:
                            history[series] = msgs + [{"role": "assistant", "content": stored[pid]}]
                        progress(done, rep.total, f"{name} · intento {attempt}")
                    else:
                        todo.append((pid, series, msgs))
                if stop is not None and stop.is_set():
                    return rep
                step = max(BATCH, engine.runner(name).capabilities.max_batch)
                for start in range(0, len(todo), step):
                    chunk = todo[start:start + step]
                    try:
                        results = engine.generate_many(name, [m for _, _, m in chunk], preset=plan.preset,
                                                       overrides=dict(plan.overrides), stop_event=stop)
                    except EsllmError as e:
                        rep.errors.extend(f"{name} / prompt {pid} / intento {attempt}: {e}" for pid, _, _ in chunk)
                        done += len(chunk)
                        for _pid, series, _ in chunk:  # a later turn of that series cannot be generated either
                            if series:
                                pending = [x for x in pending if x[1] != series]
                        continue
                    if stop is not None and stop.is_set():
                        return rep  # a stopped batch's answers are cut short: none is stored
                    failed = [(item, res) for item, res in zip(chunk, results) if not getattr(res, "complete", True)]
                    for (pid, series, _), res in failed:  # a cut or failed answer is never stored as an answer
                        rep.errors.append(f"{name} / prompt {pid} / intento {attempt}: {res.error or res.finish_reason}")
                        done += 1
                        if series:
                            pending = [x for x in pending if x[1] != series]
                    kept = [(item, res) for item, res in zip(chunk, results) if getattr(res, "complete", True)]
                    with sessionmaker() as s:
                        for (pid, _series, _msgs), res in kept:
                            first = s.scalars(select(Answer).where(Answer.prompt_id == pid, Answer.contestant_id == cid,
                                                                   Answer.selected)).first()
                            s.add(Answer(prompt_id=pid, contestant_id=cid, attempt=attempt, text=res.text,
                                         selected=first is None and attempt == 1,
                                         params=stored_params(res),
                                         new_tokens=res.new_tokens, latency_s=res.latency_s,
                                         ended_on_eos=res.ended_on_eos, finish_reason=res.finish_reason))
                            s.flush()
                        s.commit()
                    for (_pid, series, msgs), res in kept:
                        rep.generated += 1
                        done += 1
                        if series:
                            history[series] = msgs + [{"role": "assistant", "content": res.text}]
                    progress(done, rep.total, f"{name} · intento {attempt}")
    return rep


def select_attempt(session: Session, prompt_id: int, contestant_id: int, attempt: int) -> None:
    """Mark one attempt as the answer shown to raters (unmarking the previous one)."""
    rows = list(session.scalars(select(Answer).where(Answer.prompt_id == prompt_id,
                                                     Answer.contestant_id == contestant_id)))
    if not any(a.attempt == attempt for a in rows):
        raise EsllmError(f"No existe el intento {attempt} para ese prompt y concursante.")
    for a in rows:
        if a.selected and a.attempt != attempt:
            a.selected = False
    session.flush()
    for a in rows:
        if a.attempt == attempt:
            a.selected = True
    session.flush()


MISSING_ANSWERS = "Faltan respuestas seleccionadas en la sesión; genérelas (python -m esllm generate)."


def selected_answers(s: Session, prompt_ids: Sequence[int], contestant_ids: Iterable[int],
                     missing: str = MISSING_ANSWERS) -> dict[tuple[int, int], tuple[int, str]]:
    """(prompt id, contestant id) -> (answer id, text) of the selected answers of these contestants to these
    prompts, in one query; EsllmError(`missing`) if any is missing."""
    contestants = set(contestant_ids)
    rows = s.execute(select(Answer.prompt_id, Answer.contestant_id, Answer.id, Answer.text).where(
        Answer.prompt_id.in_(prompt_ids), Answer.contestant_id.in_(contestants), Answer.selected))
    found = {(p, c): (i, t) for p, c, i, t in rows}
    if len(found) != len(prompt_ids) * len(contestants):
        raise EsllmError(missing)
    return found
