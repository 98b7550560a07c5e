"""Answers in batch: counts, resume, contextual history from the contestant's own answers, selection."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from esllm import EsllmError
from esllm.store.models import Answer, Prompt
from esllm.study.answers import generate_answers, select_attempt
from esllm.study.prompts import import_prompt_set, parse_prompts
from tests.helpers import ROWS, FakeEngine, new_store


@pytest.fixture()
def Session(tmp_path):
    store = new_store(tmp_path / "t.sqlite3", prompt_sets={"mini": ROWS})
    yield store.Session
    store.dispose()


def test_counts_resume_and_selection(Session):
    eng = FakeEngine(["x", "y"])
    rep = generate_answers(Session, eng, "mini", ["x", "y"], attempts=2)
    assert (rep.generated, rep.skipped, rep.total) == (16, 0, 16)
    with Session() as s:
        assert s.scalar(select(func.count()).select_from(Answer)) == 16
        assert s.scalar(select(func.count()).select_from(Answer).where(Answer.selected)) == 8
        assert all(a.attempt == 1 for a in s.scalars(select(Answer).where(Answer.selected)))
    again = generate_answers(Session, FakeEngine(["x", "y"]), "mini", ["x", "y"], attempts=2)
    assert (again.generated, again.skipped) == (0, 16)
    more = generate_answers(Session, FakeEngine(["x", "y"]), "mini", ["x", "y"], attempts=3)
    assert (more.generated, more.skipped) == (8, 16)


def test_contextual_turns_get_own_earlier_answers(Session):
    eng = FakeEngine(["x", "y"])
    generate_answers(Session, eng, "mini", ["x", "y"], attempts=2)
    turn2 = [(n, m, o) for n, m, _preset, o in eng.calls if m[-1]["content"] == "¿Y el segundo?"]
    assert len(turn2) == 4
    with Session() as s:
        c1 = s.scalars(select(Prompt).where(Prompt.external_id == "c1")).one()
        for name, msgs, ov in turn2:
            assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
            assert msgs[0]["content"] == "Dame dos ideas."
            own = s.scalars(select(Answer).where(Answer.prompt_id == c1.id, Answer.attempt == ov["seed"])).all()
            mine = [a.text for a in own if a.text.startswith(eng.code[name] + "#")]
            assert msgs[1]["content"] == mine[0], "history must be this contestant's own answer, same attempt"


def test_select_attempt_moves_the_mark(Session):
    generate_answers(Session, FakeEngine(["x", "y"]), "mini", ["x"], attempts=3)
    with Session() as s:
        a = s.scalars(select(Answer).where(Answer.attempt == 2)).first()
        select_attempt(s, a.prompt_id, a.contestant_id, 3)
        s.commit()
        sel = s.scalars(select(Answer).where(Answer.prompt_id == a.prompt_id, Answer.selected)).all()
        assert [x.attempt for x in sel] == [3]
        with pytest.raises(EsllmError, match="intento 9"):
            select_attempt(s, a.prompt_id, a.contestant_id, 9)


def test_changed_prompt_on_reimport_is_refused(Session):
    changed = ROWS.replace("¿Qué es el RUC?", "¿Qué es el SRI?")
    with Session() as s, pytest.raises(EsllmError, match="otro contenido"):
        import_prompt_set(s, "mini", parse_prompts(changed, "jsonl"))


def test_corrected_bundled_prompt_replaces_an_unused_one_and_keeps_an_answered_one(Session):
    """A newer esllm may correct its own prompt files: an unanswered prompt takes the new text on the next start;
    one that already has answers keeps the text they answered."""
    generate_answers(Session, FakeEngine(["x"]), "mini", ["x"], attempts=1)
    changed = ROWS.replace("¿Qué es el RUC?", "¿Qué es el SRI?").replace("Dame dos ideas.", "Dame tres ideas.")
    with Session() as s:
        c1 = s.scalars(select(Prompt).where(Prompt.external_id == "c1")).one()
        for a in s.scalars(select(Answer).where(Answer.prompt_id != c1.id)):
            s.delete(a)
        s.commit()
        with pytest.raises(EsllmError, match="otro contenido"):  # a user's own set: still refused
            import_prompt_set(s, "mini", parse_prompts(changed, "jsonl"))
        s.rollback()
        import_prompt_set(s, "mini", parse_prompts(changed, "jsonl"), bundled=True)
        s.commit()
        texts = {p.external_id: p.text for p in s.scalars(select(Prompt))}
    assert texts["p1"] == "¿Qué es el SRI?"
    assert texts["c1"] == "Dame dos ideas."  # answered: kept


def test_real_tiny_engine_answers_are_stored(Session, engine):
    eng = engine("llama")
    rep = generate_answers(Session, eng, "mini", ["llama-base", "llama-a1"], attempts=1, max_new_tokens=8)
    assert rep.generated == 8 and not rep.errors
    with Session() as s:
        ans = s.scalars(select(Answer)).all()
        assert all(a.new_tokens >= 1 and a.params["max_new_tokens"] == 8 for a in ans)
        assert {a.params["backend"] for a in ans} == {eng.registry.bases["llama"].name}  # which engine decoded it
        assert {a.params["dtype"] for a in ans} == {"float32"}  # and in which dtype (issue 30: auto on CPU)
        texts = {a.contestant_id: a.text for a in ans if a.prompt_id == ans[0].prompt_id}
        assert len(set(texts.values())) == 2, "the adapter should answer differently"
