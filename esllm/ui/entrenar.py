"""«Administrar» › «Entrenar un adaptador»: a training job in a background process, its live progress and loss
curve, and a rating session «new adapter vs its parent vs base» in one click.

The job is `python -m esllm train RECIPE.yaml key=value …` (SFT from a recipe of configs/recipes/, or DPO from a
rating session's scores with configs/recipes/gemma-270m-cpu-dpo.yaml) started in its own process group, so the
app keeps serving; its state lives in a JSON file (`$ESLLM_JOBS_DIR`, default `.cache/trabajos/`), so it
survives a page reload and an app restart. One job at a time. «Detener» sends Ctrl-C (the trainer saves a
checkpoint), «Reanudar» reruns it with `--resume`. When the process ends well the engine rescans `adapters/`
(`Engine.refresh`) and the new folder is a contestant, with no restart. Admins only (`@handler("admin")`); the
poll timer runs only while the accordion is open.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import gradio as gr
import pandas as pd
import yaml

from esllm import EsllmError
from esllm.paths import RECIPES_DIR, ROOT, display_path, inside
from esllm.store.models import PromptSet
from esllm.study import admin
from esllm.study.answers import generate_answers
from esllm.study.results import find_session
from esllm.ui.context import AppContext, bind, handler

JOB_FILE = "entrenamiento.json"
DPO_RECIPE = "configs/recipes/gemma-270m-cpu-dpo.yaml"
NAME_OK = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def jobs_dir(ctx: AppContext) -> Path:
    return Path(os.environ.get("ESLLM_JOBS_DIR") or ctx.engine.root / ".cache" / "trabajos")


def read_job(ctx: AppContext) -> Optional[dict]:
    p = jobs_dir(ctx) / JOB_FILE
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None


def _write_job(ctx: AppContext, job: dict) -> None:
    d = jobs_dir(ctx)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / (JOB_FILE + ".tmp")
    tmp.write_text(json.dumps(job, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(d / JOB_FILE)


def alive(pid: Optional[int]) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a finished child not yet reaped is a zombie: not running
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def recipes() -> list[str]:
    """The SFT recipes an admin may pick: file names in RECIPES_DIR (read when called, so a test can move it)."""
    out = []
    for f in sorted(RECIPES_DIR.glob("*.yaml")):
        data = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        if data.get("method", "sft") == "sft":
            out.append(f.name)
    return out


def _recipe_path(recipe: Any) -> str:
    """The recipe's path (relative to the repository when inside it), if it is one of `recipes()`."""
    if recipe not in recipes():
        raise EsllmError("Elija una receta de configs/recipes/.")
    return display_path(inside(RECIPES_DIR, recipe, "La receta"))


def _quoted(value: str) -> str:
    """A string as an override's YAML value: JSON-quoted (so "a: b", "123" or "yes" stay strings), non-ASCII
    kept as is (PyYAML reads JSON's surrogate-pair escapes of an emoji as two broken characters)."""
    return json.dumps(value, ensure_ascii=False)


def _parent_dir(ctx: AppContext, parent: Any) -> Optional[Path]:
    """The parent adapter's folder, one of adapters/'s own folders (None = start from the base); EsllmError if it
    resolves anywhere else or is not there."""
    if parent is None or parent == "" or isinstance(parent, str) and not parent.strip():
        return None
    folder = ctx.engine.registry.adapters_dir
    path = inside(folder, parent, "El adaptador de partida")
    if path.parent != Path(folder).resolve() or not path.is_dir():
        raise EsllmError(f"No existe el adaptador de partida {parent!r} en {display_path(folder)}/.")
    return path


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not (2 <= len(name) <= 64) or not set(name) <= NAME_OK or name.startswith((".", "_")):
        raise EsllmError("Nombre del adaptador: 2 a 64 letras minúsculas sin acentos, dígitos, '-', '_' o '.'.")
    return name


def _launch(ctx: AppContext, job: dict, resume: bool) -> dict:
    cmd = [sys.executable, "-m", "esllm", "train", job["recipe"], *job["overrides"]] + (["--resume"] if resume else [])
    env = dict(os.environ)
    if ctx.sessionmaker is not None and getattr(ctx.sessionmaker, "kw", {}).get("bind") is not None:
        env["ESLLM_DATABASE_URL"] = ctx.sessionmaker.kw["bind"].url.render_as_string(hide_password=False)
    log = open(job["log"], "a", encoding="utf-8")
    proc = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    job.update(pid=proc.pid, rc=None, refreshed=False, resumed=resume, started=time.time())
    _write_job(ctx, job)

    def reap():  # wait for the child (no zombie) and record how it ended
        rc = proc.wait()
        cur = read_job(ctx)
        if cur and cur.get("pid") == proc.pid:
            cur["rc"] = rc
            _write_job(ctx, cur)

    threading.Thread(target=reap, daemon=True).start()
    return job


def session_and_set(ctx: AppContext, session: str) -> tuple[str, str]:
    """(the session's name, its prompt set's name), or EsllmError for an unknown session."""
    with ctx.sessionmaker() as s:
        rs = find_session(s, session)
        return rs.name, s.get(PromptSet, rs.prompt_set_id).name


@handler("admin")
def start(ctx: AppContext, kind: Any, recipe: Any, session: Any, parent: Any, name: Any, epochs: Any,
          request: gr.Request):
    """«Entrenar» (/entrenar_iniciar): start a job unless one is running."""
    job = read_job(ctx)
    if job and alive(job.get("pid")):
        raise EsllmError(f"Ya hay un entrenamiento en curso ({job['name']}): deténgalo o espere a que termine.")
    name = _check_name(name)
    out_dir = inside(ctx.engine.registry.adapters_dir, name, "El nombre del adaptador")
    if out_dir.exists():
        raise EsllmError(f"Ya existe la carpeta de adaptador {name!r}: elija otro nombre.")
    parent_dir = _parent_dir(ctx, parent)
    parent = parent_dir.name if parent_dir else ""
    overrides = [f"output.dir={_quoted(str(out_dir))}"]
    if epochs not in (None, "", 0):
        if not isinstance(epochs, (int, float)) or not 0 < epochs <= 100:
            raise EsllmError("Épocas: 0 (las de la receta) o un número entre 0 y 100, p. ej. 1 o 0.5.")
        overrides.append(f"training.epochs={float(epochs)}")
    set_name = None
    if kind == "dpo":
        if not session:
            raise EsllmError("Elija la sesión de calificación de la que salen los pares.")
        session, set_name = session_and_set(ctx, session)
        recipe_path = DPO_RECIPE
        start_from = f"el adaptador {parent}" if parent else "el modelo base"
        # the recipe's description is about its bundled demo pairs: this adapter learned from a session
        description = (f"Afinado con DPO desde {start_from} con las puntuaciones de la sesión «{session}» (conjunto "
                       f"«{set_name}»): pares de respuestas cuyas medias difieren en 1 punto o más.")
        overrides += ["data.path=null", f"data.session={_quoted(session)}",
                      f"preference.start_from={_quoted(str(parent_dir or ''))}",  # '' = base
                      f"output.description={_quoted(description)}"]
    else:
        recipe_path = _recipe_path(recipe)
    d = jobs_dir(ctx)
    d.mkdir(parents=True, exist_ok=True)
    job = {"name": name, "kind": kind, "recipe": recipe_path, "overrides": overrides, "out_dir": str(out_dir),
           "parent": parent or None, "session": session if kind == "dpo" else None, "set": set_name,
           "log": str(inside(d, f"{name}.log", "El registro del entrenamiento"))}
    Path(job["log"]).write_text("", encoding="utf-8")
    _launch(ctx, job, resume=False)
    return status(ctx, request)


@handler("admin")
def stop(ctx: AppContext, request: gr.Request):
    """«Detener» (/entrenar_detener): Ctrl-C to the job; the trainer saves a checkpoint and exits."""
    job = read_job(ctx)
    if not job or not alive(job.get("pid")):
        raise EsllmError("No hay ningún entrenamiento en curso.")
    os.killpg(job["pid"], signal.SIGINT)
    return status(ctx, request)


@handler("admin")
def resume(ctx: AppContext, request: gr.Request):
    """«Reanudar» (/entrenar_reanudar): rerun the stopped job with --resume."""
    job = read_job(ctx)
    if not job:
        raise EsllmError("No hay entrenamiento que reanudar.")
    if alive(job.get("pid")):
        raise EsllmError("El entrenamiento sigue en curso.")
    if not (Path(job["out_dir"]) / "checkpoints").is_dir():
        raise EsllmError("No quedan checkpoints de ese entrenamiento: empiece uno nuevo.")
    _launch(ctx, job, resume=True)
    return status(ctx, request)


def _curve(out_dir: Path) -> pd.DataFrame:
    rows = []
    p = out_dir / "train_log.jsonl"
    if p.is_file():
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written
            for key, serie in (("loss", "entrenamiento"), ("eval_loss", "validación"), ("rewards_margins", "margen")):
                if r.get(key) is not None:
                    rows.append({"paso": r["step"], "valor": r[key], "serie": serie})
    return pd.DataFrame(rows, columns=["paso", "valor", "serie"])


def _last_line(log: str) -> str:
    p = Path(log)
    if not p.is_file():
        return ""
    text = p.read_bytes()[-4000:].decode("utf-8", "replace").replace("\r", "\n")
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return lines[-1] if lines else ""


@handler("admin")
def status(ctx: AppContext, request: gr.Request):
    """Poll (/entrenar_estado): (status markdown, loss curve). Refreshes the engine once when a job ends well."""
    job = read_job(ctx)
    if not job:
        return "No hay entrenamientos.", _curve(Path("/nonexistent"))
    out = Path(job["out_dir"])
    running = alive(job.get("pid"))
    done = (out / "esllm_adapter.json").is_file() and not (out / "checkpoints").exists()
    head = f"**{job['name']}** ({job['kind'].upper()}{', desde ' + job['parent'] if job.get('parent') else ''})"
    if running:
        msg = f"{head}: en curso. `{_last_line(job['log'])}`"
    elif done:
        if not job.get("refreshed"):
            report = ctx.engine.refresh()
            job["refreshed"] = True
            _write_job(ctx, job)
            job["refresh_note"] = str(report)
        names = [c.name for c in ctx.engine.registry.contestants.values() if c.adapter == job["name"]]
        meta = json.loads((out / "esllm_adapter.json").read_text(encoding="utf-8"))
        msg = (f"{head}: terminado (paso exportado {meta.get('exported_step')}: {meta.get('export_reason', '')}). "
               f"Concursante: **{names[0] if names else 'no disponible: pulse «Actualizar adaptadores» en «Conversar»'}**.")
    elif (out / "checkpoints").is_dir():
        msg = f"{head}: detenido con un checkpoint; «Reanudar» lo continúa. `{_last_line(job['log'])}`"
    else:
        msg = f"{head}: terminó con error (código {job.get('rc')}). `{_last_line(job['log'])}`"
    return msg, _curve(out)


@handler("admin")
def opened(ctx: AppContext, request: gr.Request):
    """The accordion opened: lists filled, the poll timer on, the current status."""
    with ctx.sessionmaker() as s:
        sessions = [x.name for x in admin.list_sessions(s)]
        sets = admin.set_names(s)
        raters = admin.rater_names(s)
    folders = sorted(c.adapter for c in ctx.engine.registry.contestants.values() if c.adapter)
    msg, curve = status(ctx, request)
    job = read_job(ctx) or {}
    return (gr.update(choices=recipes()), gr.update(choices=sessions), gr.update(choices=[""] + folders),
            gr.update(choices=sets, value=job.get("set") or (sets[0] if sets else None)),
            gr.update(choices=raters), gr.Timer(active=True), msg, curve)


def closed(request: gr.Request):
    return gr.Timer(active=False)


@handler("admin")
def compare_session(ctx: AppContext, ses_name: Any, set_name: Any, raters: Any, k: Any, request: gr.Request,
                    *, caller=None):
    """«Crear sesión nuevo vs padre vs base» (/entrenar_sesion): answers for the three on the set, then the session."""
    job = read_job(ctx)
    if not job or not (Path(job["out_dir"]) / "esllm_adapter.json").is_file() or alive(job.get("pid")):
        raise EsllmError("Primero termine un entrenamiento.")
    cons = list(ctx.engine.registry.contestants.values())
    new = next((c for c in cons if c.adapter == job["name"] and c.available), None)
    if new is None:
        raise EsllmError(f"El adaptador {job['name']} no está disponible como concursante.")
    parent = next((c for c in cons if job.get("parent") and c.adapter == job["parent"] and c.available), None)
    base = next((c for c in cons if c.adapter is None and c.model_key == new.model_key and c.available), None)
    names = [c.name for c in (new, parent, base) if c is not None]
    if len(names) < 3:  # an SFT job has no parent: the next available adapter contestant fills the third place
        names += [c.name for c in cons if c.available and c.name not in names][:3 - len(names)]
    generate_answers(ctx.sessionmaker, ctx.engine, set_name or "", names, attempts=1)
    with ctx.transaction() as s:
        rs = admin.create_named_session(s, name=ses_name or f"{job['name']} vs padre vs base", set_name=set_name or "",
                                        contestants=names, raters=list(raters or []), k=int(k or 2), mode="general",
                                        created_by=caller.id if caller else None)
        return f"Sesión **{rs.name}** creada: {', '.join(names)} (a ciegas, A/B/C al azar)."


def build_entrenar(ctx: AppContext) -> None:
    """The accordion, inside «Administrar»."""
    with gr.Accordion("Entrenar un adaptador", open=False) as acc:
        gr.Markdown("Un entrenamiento a la vez, en un proceso aparte (la aplicación sigue respondiendo). "
                    "DPO aprende de las puntuaciones de una sesión (pares con diferencia ≥ 1 punto).")
        with gr.Row():
            kind = gr.Radio([("SFT (instrucciones, receta)", "sft"), ("DPO (sesión de calificación)", "dpo")],
                            value="dpo", label="Método")
            name = gr.Textbox(label="Nombre del nuevo adaptador (carpeta)", max_lines=1, max_length=64)
            epochs = gr.Number(0, label="Épocas (0 = las de la receta)")
        with gr.Row():
            recipe = gr.Dropdown([], value=None, label="Receta SFT", allow_custom_value=True)
            session = gr.Dropdown([], value=None, label="Sesión (DPO)", allow_custom_value=True)
            parent = gr.Dropdown([], value=None, label="Adaptador de partida (vacío = el modelo base)",
                                 allow_custom_value=True)
        with gr.Row():
            go = gr.Button("Entrenar", variant="primary", elem_id="entrenar-iniciar")
            halt = gr.Button("Detener", variant="stop", elem_id="entrenar-detener")
            again = gr.Button("Reanudar", elem_id="entrenar-reanudar")
        state = gr.Markdown("", elem_id="entrenar-estado")
        curve = gr.LinePlot(pd.DataFrame(columns=["paso", "valor", "serie"]), x="paso", y="valor", color="serie",
                            label="Pérdida y margen por paso")
        with gr.Row():
            ses_name = gr.Textbox(label="Nombre de la sesión de comparación", max_lines=1, max_length=100)
            ses_set = gr.Dropdown([], value=None, label="Conjunto de prompts", allow_custom_value=True)
            ses_raters = gr.Dropdown([], value=[], multiselect=True, label="Evaluadores", allow_custom_value=True)
            ses_k = gr.Number(2, precision=0, label="k")
        ses_go = gr.Button("Crear sesión: nuevo vs padre vs base", elem_id="entrenar-sesion")
        ses_msg = gr.Markdown("")
        timer = gr.Timer(2.0, active=False)

        acc.expand(bind(ctx, opened), None, [recipe, session, parent, ses_set, ses_raters, timer, state, curve],
                   api_name=False)
        acc.collapse(closed, None, timer, api_name=False)
        timer.tick(bind(ctx, status), None, [state, curve], api_name="entrenar_estado", show_progress="hidden")
        go.click(bind(ctx, start), [kind, recipe, session, parent, name, epochs], [state, curve],
                 api_name="entrenar_iniciar", concurrency_limit=1, concurrency_id="entrenar")
        halt.click(bind(ctx, stop), None, [state, curve], api_name="entrenar_detener")
        again.click(bind(ctx, resume), None, [state, curve], api_name="entrenar_reanudar", concurrency_limit=1,
                    concurrency_id="entrenar")
        ses_go.click(bind(ctx, compare_session), [ses_name, ses_set, ses_raters, ses_k], ses_msg,
                     api_name="entrenar_sesion", concurrency_limit=1, concurrency_id="lote")
