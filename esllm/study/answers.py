"""Answers in batch: prompt set x contestants x N attempts, stored with their generation data.

    python -m esllm generate --set general --contestants gemma-base gemma-instrucciones gemma-tributario
    python -m esllm generate --set tributario-ec --attempts 3          # every available contestant

Resumable: an (prompt, contestant snapshot, attempt) already stored is skipped, so a run cut short
goes on where it stopped. A contextual turn is generated with the same contestant's own earlier
answers (same attempt) as history. The first attempt of each prompt and contestant is marked
selected; an admin may pick another (`select_attempt`). Each stored contestant is a snapshot (base,
adapter + sha256, template, preset), so retraining an adapter makes a new contestant, never mixes.
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
from esllm.study.prompts import ordered_prompts


def snapshot(session: Session, engine, name: str) -> ContestantSnapshot:
    """The stored snapshot of an engine contestant as it is loaded now."""
    c = engine.contestant(name)  # raises if unavailable
    base = engine.bases[c.model_key]
    info = engine.adapters.get(c.adapter) if c.adapter else None
    return get_or_create_contestant(
        session, name=c.name, base=base.spec.source, template=c.template.name if c.template else base.spec.template,
        preset=c.preset, params=dict(PRESETS[c.preset][1]), adapter=c.adapter,
        adapter_sha256=info.sha256 if info else None)


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
    max_new_tokens: Optional[int] = None,
    progress: Callable[[int, int, str], None] = lambda done, total, msg: None,
    stop: Optional[threading.Event] = None,
) -> BatchReport:
    if attempts < 1 or attempts > 20:
        raise EsllmError("El número de intentos debe estar entre 1 y 20.")
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
        for attempt in range(1, attempts + 1):
            history: dict[str, list[dict[str, str]]] = {}  # series -> this contestant's conversation so far
            for pid, series, _turn, text in prompt_ids:
                if stop is not None and stop.is_set():
                    return rep
                with sessionmaker() as s:
                    existing = s.scalars(select(Answer).where(
                        Answer.prompt_id == pid, Answer.contestant_id == cid, Answer.attempt == attempt)).first()
                    prior = history.get(series, []) if series else []
                    msgs = prior + [{"role": "user", "content": text}]
                    if existing is not None:
                        rep.skipped += 1
                        answer_text = existing.text
                    else:
                        overrides = {"seed": attempt}  # sampling presets differ per attempt, reproducibly
                        if max_new_tokens:
                            overrides["max_new_tokens"] = max_new_tokens
                        try:
                            res = engine.generate(name, msgs, overrides=overrides)
                        except EsllmError as e:
                            rep.errors.append(f"{name} / prompt {pid} / intento {attempt}: {e}")
                            done += 1
                            continue
                        first = s.scalars(select(Answer).where(Answer.prompt_id == pid, Answer.contestant_id == cid,
                                                               Answer.selected)).first()
                        s.add(Answer(prompt_id=pid, contestant_id=cid, attempt=attempt, text=res.text,
                                     selected=first is None and attempt == 1, params=res.params,
                                     new_tokens=res.new_tokens, latency_s=res.latency_s,
                                     ended_on_eos=res.ended_on_eos, finish_reason=res.finish_reason))
                        s.commit()
                        rep.generated += 1
                        answer_text = res.text
                    if series:
                        history[series] = msgs + [{"role": "assistant", "content": answer_text}]
                done += 1
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
