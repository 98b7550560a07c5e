"""Attempts that differ (issue 14): the plan of N attempts, the refusal of identical ones, per-contestant
settings in the config, identical attempts shown to admins, and contextual series that must follow one history."""

from __future__ import annotations

import pytest
import yaml
from sqlalchemy import select

from esllm import EsllmError
from esllm.engine.config import ConfigError, parse_config
from esllm.store.models import Answer, ContestantSnapshot, Prompt
from esllm.study import admin
from esllm.study.answers import generate_answers, select_attempt
from esllm.study.attempts import identical_groups, parse_vary, plan_attempts
from tests.helpers import REPO, ROWS, FakeEngine, new_store

NAMES = ["x", "y", "z"]


@pytest.fixture()
def Session(tmp_path):
    store = new_store(tmp_path / "t.sqlite3", prompt_sets={"mini": ROWS}, accounts={"ana": "rater", "beto": "rater"})
    yield store.Session
    store.dispose()


def test_three_attempts_of_the_default_contestants_differ():
    config = parse_config(yaml.safe_load((REPO / "configs/default.yaml").read_text(encoding="utf-8")))
    for c in config.contestants:
        assert c.preset == "contrastive" and c.vary_attempts, c.name
        plan = plan_attempts(c.preset, c.params, [(v.preset, v.params) for v in c.vary_attempts], 3, cap=512)
        assert [p.params.strategy for p in plan] == ["contrastive", "sample", "sample"]
        assert [p.params.seed for p in plan] == [1, 2, 3]
        assert identical_groups({p.attempt: p.params.as_dict() for p in plan}) == []
        # nothing of the contrastive settings leaks into the sampled attempts
        assert plan[1].params.top_k == 0 and plan[1].params.penalty_alpha == 0.0 and plan[1].params.top_p == 0.9


@pytest.mark.parametrize("preset", ["greedy", "beam", "contrastive"])
def test_a_deterministic_preset_with_several_attempts_and_no_variation_is_refused(preset):
    with pytest.raises(EsllmError, match=r"Los intentos 1 = 2 = 3 darían la misma respuesta.*--vary top-p"):
        plan_attempts(preset, {}, [], 3, cap=64)
    assert len(plan_attempts(preset, {}, [], 1, cap=64)) == 1  # one attempt is fine
    with pytest.raises(EsllmError, match="Los intentos 2 = 3"):  # a deterministic variation repeats itself
        plan_attempts("greedy", {}, [("beam", {})], 3, cap=64)
    assert len(plan_attempts("greedy", {}, [("beam", {}), ("top-k", {})], 3, cap=64)) == 3


def test_batch_refuses_before_writing_anything_and_a_variation_makes_it_run(Session):
    eng = FakeEngine(NAMES, preset="contrastive")
    with pytest.raises(EsllmError, match="x: Los intentos 1 = 2 darían la misma respuesta"):
        generate_answers(Session, eng, "mini", NAMES, attempts=2)
    assert eng.calls == []
    rep = generate_answers(Session, eng, "mini", NAMES, attempts=2, vary=parse_vary("top-p:temperature=0.8"))
    assert rep.generated == 24 and not rep.errors
    second = [c for c in eng.calls if c[3]["seed"] == 2]
    assert {c[2] for c in second} == {"top-p"} and all(c[3]["temperature"] == 0.8 for c in second)
    assert {c[2] for c in eng.calls if c[3]["seed"] == 1} == {None}, "attempt 1 = the contestant's own settings"


def test_parse_vary_and_cli_refusal(cli, tmp_path):
    assert parse_vary("top-p; beam top-k:temperature=0.7,top_k=20") == [
        ("top-p", {}), ("beam", {}), ("top-k", {"temperature": 0.7, "top_k": 20})]
    assert parse_vary("") == []
    for bad, msg in (("nada", "Preset desconocido 'nada'"), ("top-k:temperature", "clave=valor"),
                     ("top-k:temperature=alta", "debe ser un número")):
        with pytest.raises(EsllmError, match=msg):
            parse_vary(bad)
    r = cli("generate", "--set", "mini", "--vary", "nada", db_url=f"sqlite:///{tmp_path / 'c.sqlite3'}")
    assert r.returncode == 2 and "Preset desconocido 'nada'" in r.stderr + r.stdout


def test_contestant_params_and_vary_attempts_are_validated_at_config_load():
    def config(**extra):
        return {"models": {"m": {"source": "bundled:gemma-3-270m"}},
                "contestants": [{"name": "c", "model": "m", "preset": "contrastive", **extra}]}

    ok = parse_config(config(params={"temperature": 0.7, "top_k": 4, "penalty_alpha": 0.6, "max_new_tokens": 256,
                                     "repetition_penalty": 1.1}, vary_attempts=[{"preset": "top-p"}]))
    assert ok.contestants[0].params["repetition_penalty"] == 1.1
    for extra, msg in (({"params": {"temperatura": 0.7}}, "contestants.0: params: Parámetro desconocido 'temperatura'"),
                       ({"params": {"repetition_penalty": 3}}, "repetition_penalty debe estar entre 1.0 y 2.0"),
                       ({"params": {"penalty_alpha": 0}}, "contrastiva necesita top_k ≥ 2 y penalty_alpha > 0"),
                       ({"params": {"top_k": "4"}}, "top_k debe ser un número"),
                       ({"vary_attempts": [{"preset": "nada"}]}, "vary_attempts.0: unknown preset 'nada'"),
                       ({"vary_attempts": [{"preset": "top-p", "params": {"top_p": 2}}]}, "top_p debe estar entre"),
                       ({"vary_attempts": [{"preset": "top-p", "semilla": 1}]}, "unknown key")):
        with pytest.raises(ConfigError) as e:
            parse_config(config(**extra))
        assert msg in str(e.value), str(e.value)


def test_snapshot_stores_the_contestants_own_params(Session):
    eng = FakeEngine(["x"], preset="contrastive", params={"penalty_alpha": 0.4, "top_k": 6})
    generate_answers(Session, eng, "mini", ["x"], attempts=1)
    with Session() as s:
        snap = s.scalars(select(ContestantSnapshot)).one()
        assert snap.params == {"strategy": "contrastive", "penalty_alpha": 0.4, "top_k": 6}


def test_identical_attempts_are_shown(Session):
    same = FakeEngine(["x"], reply=lambda name, msgs: "siempre igual")
    generate_answers(Session, same, "mini", ["x"], attempts=3)
    with Session() as s:
        pid = s.scalars(select(Prompt.id).where(Prompt.external_id == "p1")).one()
        cid = s.scalars(select(ContestantSnapshot.id)).one()
        marks = admin.identical_to(admin.attempts(s, pid, cid))
        assert marks == {1: "= 2, 3 (mismo texto)", 2: "= 1, 3 (mismo texto)", 3: "= 1, 2 (mismo texto)"}
        assert admin.coverage(s, "mini")[0][4] == 4  # all four prompts have identical attempts
        a = s.scalars(select(Answer).where(Answer.prompt_id == pid, Answer.attempt == 2)).one()
        a.params = {**a.params, "strategy": "greedy", "seed": 1, "preset": "greedy"}
        b = s.scalars(select(Answer).where(Answer.prompt_id == pid, Answer.attempt == 3)).one()
        b.params = {**a.params, "seed": 3}
        s.flush()
        assert "= 3 (mismos parámetros)" in admin.identical_to(admin.attempts(s, pid, cid))[2]


def test_a_series_must_follow_one_history(Session):
    generate_answers(Session, FakeEngine(NAMES), "mini", NAMES, attempts=2)
    with Session() as s:
        c1, c2 = (s.scalars(select(Prompt.id).where(Prompt.external_id == e)).one() for e in ("c1", "c2"))
        cid = s.scalars(select(ContestantSnapshot.id).where(ContestantSnapshot.name == "x")).one()
        set_id = s.get(Prompt, c1).set_id
        assert admin.series_problems(s, set_id, cid) == []
        select_attempt(s, c1, cid, 2)  # turn 2 (attempt 1) was written after turn 1 of attempt 1
        problems = admin.prompt_series_problems(s, c1, cid)
        assert len(problems) == 1 and "turno 2: el intento 1 elegido" in problems[0] and "turno 1: intento 2" in problems[0]
        with pytest.raises(EsllmError, match="no siguen una misma historia"):
            admin.create_named_session(s, name="s1", set_name="mini", contestants=NAMES, raters=["ana", "beto"], k=1)
        select_attempt(s, c2, cid, 2)  # the same history again
        assert admin.series_problems(s, set_id, cid) == []
        admin.create_named_session(s, name="s1", set_name="mini", contestants=NAMES, raters=["ana", "beto"], k=1)
