"""«Administrar» › «Entrenar un adaptador» (esllm/ui/entrenar.py), handlers called directly with a real tiny
engine and a real background process: start, live progress, one job at a time, the engine still answers,
stop (a checkpoint), resume, and the finished adapter becomes a contestant without a restart."""

from __future__ import annotations

import json
from types import SimpleNamespace

import gradio as gr
import pytest
import yaml

from esllm.paths import ROOT
from esllm.ui import entrenar
from esllm.ui.context import AppContext
from tests.helpers import make_engine, new_store, wait_until

ADMIN = SimpleNamespace(username="jefa", session_hash="t")
RATER = SimpleNamespace(username="ana", session_hash="t")


@pytest.fixture()
def setup(tiny, tmp_path, monkeypatch):
    t = tiny("llama")
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"instruction": f"Pregunta {i}", "output": f"Respuesta número {i}."} for i in range(16)]))
    (tmp_path / "recetas").mkdir()
    recipe = tmp_path / "recetas" / "receta.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"source": str(t.model_dir), "quantization": "none", "device": "cpu"},
        "data": {"path": str(data), "eval_fraction": 0.25},
        "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "training": {"max_steps": 400, "batch_size": 2, "eval_every": 50, "save_every": 1000, "threads": 1},
        "output": {"dir": "adapters/x", "template": "alpaca-es"},
    }))
    monkeypatch.setattr(entrenar, "RECIPES_DIR", recipe.parent)  # the handler takes names of files in it
    monkeypatch.setenv("ESLLM_JOBS_DIR", str(tmp_path / "trabajos"))
    store = new_store(tmp_path / "t.sqlite3", accounts={"jefa": "admin", "ana": "rater"}, password="contraseña-de-prueba")
    engine = make_engine(t.config(adapters_dir=adapters, contestants=[{"name": "base", "model": "llama", "preset": "greedy"}]),
                         tmp_path)
    ctx = AppContext(config=engine.config, engine=engine, sessionmaker=store.Session, local_mode=False)
    yield ctx, recipe.name, adapters
    job = entrenar.read_job(ctx)
    if job and entrenar.alive(job.get("pid")):
        import os
        import signal
        os.killpg(job["pid"], signal.SIGKILL)
    store.dispose()


def logged_steps(out) -> int:
    p = out / "train_log.jsonl"
    return len(p.read_text().splitlines()) if p.is_file() else 0


def test_job_start_progress_stop_resume_and_new_contestant(setup):
    ctx, recipe, adapters = setup
    out = adapters / "nuevo"
    with pytest.raises(gr.Error):
        entrenar.start(ctx, "sft", recipe, None, "", "nuevo", None, RATER)  # admins only
    with pytest.raises(gr.Error, match="Nombre del adaptador"):
        entrenar.start(ctx, "sft", recipe, None, "", "../fuera", None, ADMIN)
    msg, _ = entrenar.start(ctx, "sft", recipe, None, "", "nuevo", None, ADMIN)
    assert "nuevo" in msg
    job = entrenar.read_job(ctx)
    assert entrenar.alive(job["pid"])
    with pytest.raises(gr.Error, match="Ya hay un entrenamiento"):
        entrenar.start(ctx, "sft", recipe, None, "", "otro", None, ADMIN)
    wait_until(lambda: logged_steps(out) >= 3, timeout=120)
    msg, curve = entrenar.status(ctx, ADMIN)
    assert "en curso" in msg and len(curve) >= 3 and set(curve["serie"]) >= {"entrenamiento"}
    assert ctx.engine.generate("base", [{"role": "user", "content": "Hola"}]).text is not None  # the app still answers

    entrenar.stop(ctx, ADMIN)
    wait_until(lambda: not entrenar.alive(job["pid"]), timeout=120)
    assert (out / "checkpoints").is_dir()
    assert "detenido" in entrenar.status(ctx, ADMIN)[0]
    stopped_at = logged_steps(out)

    entrenar.resume(ctx, ADMIN)
    job = entrenar.read_job(ctx)
    wait_until(lambda: not entrenar.alive(job["pid"]), timeout=300)
    assert logged_steps(out) >= stopped_at
    msg, _ = entrenar.status(ctx, ADMIN)
    assert "terminado" in msg, msg + open(job["log"]).read()[-2000:]
    new = [c for c in ctx.engine.registry.contestants.values() if c.adapter == "nuevo"]
    assert new and new[0].available, "the finished adapter is a contestant without a restart"
    assert ctx.engine.generate(new[0].name, [{"role": "user", "content": "Hola"}]).text is not None


def test_the_accordion_builds_and_stop_without_job_is_a_spanish_error(setup):
    ctx, _, _ = setup
    with gr.Blocks():
        entrenar.build_entrenar(ctx)
    with pytest.raises(gr.Error, match="No hay ningún entrenamiento"):
        entrenar.stop(ctx, ADMIN)
    with pytest.raises(gr.Error, match="Elija la sesión"):
        entrenar.start(ctx, "dpo", None, None, "", "pref", None, ADMIN)
    with pytest.raises(gr.Error, match="Épocas: 0"):
        entrenar.start(ctx, "dpo", None, "piloto", "", "pref", -1, ADMIN)


def test_dpo_job_reads_the_session_and_starts_from_the_base_or_an_adapter(setup, monkeypatch):
    from esllm.train.recipe import load_recipe
    from esllm.ui import entrenar as E

    ctx, _, adapters = setup
    (adapters / "a1").mkdir()  # a parent adapter must be one of adapters/'s folders
    launched = []
    monkeypatch.setattr(E, "_launch", lambda ctx, job, resume: launched.append(job) or job)
    monkeypatch.setattr(E, "session_and_set", lambda ctx, name: (name, "mini"))
    monkeypatch.setattr(E, "status", lambda ctx, request: ("ok", None))
    E.start(ctx, "dpo", None, "piloto", "", "desde-base", None, ADMIN)
    E.start(ctx, "dpo", None, "piloto", "a1", "desde-a1", 2, ADMIN)
    base_job, child_job = launched
    assert base_job["set"] == "mini" and base_job["session"] == "piloto"
    r = load_recipe(ROOT / base_job["recipe"], base_job["overrides"])
    assert (r.method, r.data.path, r.data.session, r.preference.start_from) == ("dpo", None, "piloto", "")
    assert r.output.dir == str(adapters / "desde-base")
    # the card says what it learned from (not the recipe's words about its bundled demo pairs)
    assert r.output.description == ("Afinado con DPO desde el modelo base con las puntuaciones de la sesión «piloto» "
                                    "(conjunto «mini»): pares de respuestas cuyas medias difieren en 1 punto o más.")
    r = load_recipe(ROOT / child_job["recipe"], child_job["overrides"])
    assert r.preference.start_from == str(adapters / "a1") and r.training.epochs == 2
