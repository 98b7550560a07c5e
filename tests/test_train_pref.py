"""Preference training (DPO / KTO through TRL) on a tiny random Llama: a few steps run, the loss falls on a
toy set whose chosen answer is always the same string, the folder loads in plain peft and in the engine,
continuing an adapter works, Ctrl-C leaves a checkpoint and --resume finishes; data from the store: pairs
from a session's scores, a session without usable pairs is a clear error."""

from __future__ import annotations

import json
import random

import pytest

from tests.helpers import make_engine

GOOD = "Con gusto te ayudo."
PROMPTS = ["Hola", "¿Qué hora es?", "Dime un color.", "Cuenta hasta tres.", "¿Cómo estás?", "Saluda.",
           "Di algo amable.", "¿Dónde está Quito?"]
BAD = ["no", "xyz qwe", "...", "nunca jamás", "rrr", "bla bla", "0 0 0", "¿eh?"]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def dpo_file(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": p}], "chosen": [{"role": "assistant", "content": GOOD}],
             "rejected": [{"role": "assistant", "content": b}], "item": f"i{i}"}
            for i, (p, b) in enumerate(zip(PROMPTS, BAD))]
    return write_jsonl(tmp_path / "dpo.jsonl", rows * 2)


@pytest.fixture()
def kto_file(tmp_path):
    rows = [{"prompt": p, "completion": GOOD, "label": True} for p in PROMPTS]
    rows += [{"prompt": p, "completion": b, "label": False} for p, b in zip(PROMPTS, BAD)]
    random.Random(0).shuffle(rows)
    return write_jsonl(tmp_path / "kto.jsonl", rows)


def pref_recipe(tiny_model, method, data, out, **over):
    from esllm.train.recipe import parse_recipe

    d = {
        "method": method,
        "model": {"source": str(tiny_model.model_dir), "quantization": "none", "device": "cpu"},
        "data": {"path": str(data), "eval_fraction": 0.25, "max_seq_len": 128},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        "preference": {"beta": 0.5},
        "training": {"epochs": 3, "learning_rate": 5e-3, "batch_size": 4, "warmup_ratio": 0.0, "eval_every": 2,
                     "seed": 1},
        "output": {"dir": str(out), "template": "alpaca-es"},
    }
    for k, v in over.items():
        d[k] = {**d.get(k, {}), **v}
    return parse_recipe(d)


def trained_log(out):
    return [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_preference_training_lowers_loss_and_loads_in_peft_and_engine(tiny, tmp_path, dpo_file, kto_file, method):
    from peft import PeftModel

    from esllm.train.pref import train_preference
    from tests.tiny import load_plain

    t = tiny("llama")
    out = tmp_path / "adapters" / f"pref-{method}"
    res = train_preference(pref_recipe(t, method, dpo_file if method == "dpo" else kto_file, out),
                           say=lambda m: None, progress=False)
    log = trained_log(out)
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == res.steps >= 4
    assert sum(losses[-2:]) / 2 < losses[0], f"the {method} loss should fall: {losses}"
    meta = json.loads((out / "esllm_adapter.json").read_text())
    assert meta["method"] == method and meta["examples_used"] == 12 and meta["eval_examples"] == 4
    assert meta["exported_step"] in {r["step"] for r in log if "eval_loss" in r}
    if method == "dpo":
        assert meta["final_reward_margin"] is not None and any(r.get("rewards_margins", 0) > 0 for r in log)
    for f in ("adapter_model.safetensors", "adapter_config.json", "loss.png", "README.md", "chat_template.jinja",
              "generation_config.json"):
        assert (out / f).is_file(), f
    assert not (out / "ref").exists() and not (out / "checkpoints").exists()
    model, _ = load_plain(t.model_dir)
    PeftModel.from_pretrained(model, str(out))  # plain peft
    engine = make_engine(t.config(adapters_dir=out.parent, contestants=[
        {"name": "pref", "model": "llama", "adapter": out.name, "preset": "greedy"}]), tmp_path)
    assert engine.registry.contestants["pref"].available, engine.registry.contestants["pref"].reason


def test_dpo_continues_an_adapter_and_resumes_after_ctrl_c(tiny, tmp_path, dpo_file, monkeypatch):
    import shutil

    from esllm.train import output as O
    from esllm.train.pref import train_preference

    t = tiny("llama")
    parent = tmp_path / "adapters" / "padre"
    shutil.copytree(t.adapters_dir / "a1", parent)
    out = tmp_path / "adapters" / "hijo"
    rec = pref_recipe(t, "dpo", dpo_file, out, preference={"start_from": str(parent)}, training={"max_steps": 6})
    real = O.append_log
    stopped = {}

    def stop_at_3(out_dir, record):
        real(out_dir, record)
        if record.get("step") == 3 and "loss" in record and not stopped:
            import signal
            stopped["yes"] = True
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(O, "append_log", stop_at_3)
    first = train_preference(rec, say=lambda m: None, progress=False)
    assert first.interrupted and (out / "checkpoints").is_dir()
    monkeypatch.setattr(O, "append_log", real)
    second = train_preference(rec, resume=True, say=lambda m: None, progress=False)
    assert not second.interrupted and second.steps == 6
    meta = json.loads((out / "esllm_adapter.json").read_text())
    assert meta["parent_adapter"] == "padre" and len(meta["parent_sha256"]) == 64
    assert [r["step"] for r in trained_log(out) if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_preference_file_errors_name_the_line(tmp_path):
    from esllm.train.data import DatasetError
    from esllm.train.pref_data import load_records

    bad = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Hola", "chosen": "Sí", "rejected": "No"},
                                             {"prompt": "Hola", "chosen": "Sí"}])
    with pytest.raises(DatasetError, match="line 2.*rejected"):
        load_records(bad, "dpo")
    only_up = write_jsonl(tmp_path / "k.jsonl", [{"prompt": "Hola", "completion": "Sí", "label": True}])
    with pytest.raises(DatasetError, match="👎"):
        load_records(only_up, "kto")


def test_recipe_needs_one_preference_source(tiny, tmp_path):
    from esllm.train.recipe import RecipeError, parse_recipe

    base = {"model": {"source": "x"}, "output": {"dir": "adapters/x"}}
    with pytest.raises(RecipeError, match="exactly one of data.path"):
        parse_recipe({**base, "method": "dpo", "data": {"path": "a.jsonl", "session": "piloto"}})
    with pytest.raises(RecipeError, match="data.feedback"):
        parse_recipe({**base, "method": "kto", "data": {}})
    assert parse_recipe({**base, "method": "dpo", "data": {"session": "piloto"}}).data.min_gap == 1.0


# ---------------------------------------------------------------------------------------- from the store
SCORE = {0: 5, 1: 4, 2: 2}  # contestant position -> the "general" score every rater gives it


def rated_store(tmp_path):
    from sqlalchemy import select

    from esllm.store.models import Assignment, ContestantSnapshot, User
    from esllm.study.answers import generate_answers
    from esllm.study.sessions import create_session, next_item, submit
    from tests.helpers import ROWS, FakeEngine, new_store

    names = ["uno", "dos", "tres"]
    store = new_store(tmp_path / "p.sqlite3", accounts={"ana": "rater", "beto": "rater"}, prompt_sets={"mini": ROWS})
    S = store.Session
    generate_answers(S, FakeEngine(names, lambda n, m: f"{n} responde a: {m[-1]['content']}"), "mini", names, attempts=1)
    with S() as s:
        ids = [c.id for c in s.scalars(select(ContestantSnapshot).order_by(ContestantSnapshot.id))]
        pos = {cid: i for i, cid in enumerate(ids)}
        sid = create_session(s, name="piloto", prompt_set="mini", contestant_ids=ids, raters=["ana", "beto"], k=2,
                             rng=random.Random(1)).id
        empty = create_session(s, name="vacia", prompt_set="mini", contestant_ids=ids, raters=["ana"], k=1,
                               rng=random.Random(2)).id
        s.commit()
        for rater in ("ana", "beto"):
            rid = s.scalar(select(User.id).where(User.name == rater))
            while (item := next_item(s, sid, rid)) is not None:
                perm = s.get(Assignment, item.assignment_id).permutation
                scores = {lab: {c: SCORE[pos[perm[lab]]] for c in item.criteria} for lab in "ABC"}
                submit(s, rater_id=rid, assignment_id=item.assignment_id, scores=scores, comment="", seconds_spent=3)
                s.commit()
    return store, sid, empty


def test_session_pairs_respect_the_gap_and_carry_history(tmp_path):
    from esllm import EsllmError
    from esllm.study.preferences import session_pairs

    store, sid, empty = rated_store(tmp_path)
    with store.Session() as s:
        pairs, prov = session_pairs(s, "piloto", min_gap=1.0)
        # per item: uno(5) > dos(4) (gap 1), uno > tres (3), dos > tres (2): 3 pairs x 4 items
        assert len(pairs) == 12 and prov["pairs"] == 12 and prov["session"] == "piloto" and prov["raters"] == 2
        wide, _ = session_pairs(s, "piloto", min_gap=2.0)
        assert {(p["contestant_chosen"], p["contestant_rejected"]) for p in wide} == {("uno", "tres"), ("dos", "tres")}
        c2 = next(p for p in pairs if p["item"] == "c2" and p["contestant_chosen"] == "dos")
        assert c2["prompt"][0] == {"role": "user", "content": "Dame dos ideas."}
        assert c2["prompt"][1] == {"role": "assistant", "content": "dos responde a: Dame dos ideas."}
        assert c2["prompt"][-1]["content"] == "¿Y el segundo?"
        with pytest.raises(EsllmError, match="no tiene puntuaciones"):
            session_pairs(s, "vacia")
        with pytest.raises(EsllmError, match="no tiene pares utilizables"):
            session_pairs(s, "piloto", min_gap=3.5)
    store.dispose()


def test_cli_trains_dpo_from_a_session_in_the_store(tiny, tmp_path, cli):
    import yaml

    store, _, _ = rated_store(tmp_path)
    url = str(store.url)
    store.dispose()
    rec = pref_recipe(tiny("llama"), "dpo", "x", tmp_path / "adapters" / "desde-sesion",
                      training={"max_steps": 2}).model_dump(mode="json")
    rec["data"]["path"], rec["data"]["session"] = None, "piloto"
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(rec, allow_unicode=True))
    p = cli("train", tmp_path / "r.yaml", db_url=url)
    assert p.returncode == 0, p.stderr[-2000:]
    out = tmp_path / "adapters" / "desde-sesion"
    meta = json.loads((out / "esllm_adapter.json").read_text())
    assert meta["data"]["session"] == "piloto" and meta["data"]["pairs"] == 12 and len(meta["data"]["answer_ids"]) == 12
    assert (out / "datos_preferencia.jsonl").is_file()
    bad = cli("train", tmp_path / "r.yaml", "data.session=vacia", db_url=url)
    assert bad.returncode == 2 and "no tiene puntuaciones" in bad.stderr
