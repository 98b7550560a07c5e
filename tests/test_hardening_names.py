"""Issue 25, findings 6 and 7: names from the UI that become paths stay in their folder (`esllm.paths.inside`),
and new names of sessions and prompt sets that look like another, or like nothing, are refused
(`esllm.store.names`). The handlers are called as the UI calls them (tests/test_ui_handlers.py does the same),
and once over HTTP on the served «Administrar» tab."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import gradio as gr
import pytest
from sqlalchemy import func, select

from esllm import EsllmError
from esllm.paths import ROOT, inside
from esllm.store import users
from esllm.store.models import Assignment, PromptSet, RatingSession
from esllm.store.names import look_alike, normalize, refusal, skeleton
from esllm.study.results import find_session
from esllm.train.recipe import load_recipe
from esllm.ui import administrar, entrenar
from esllm.ui.context import AppContext
from tests.helpers import ROWS, FakeEngine, login, new_store, serve

PW = "contraseña-de-prueba"
NAMES = ("modelo-uno", "modelo-dos", "modelo-tres")
ADMIN = SimpleNamespace(username="jefa", session_hash="t")
OUTSIDE = "../../../../../tmp/x"  # the finding's parent adapter


@pytest.fixture()
def ctx(tmp_path, monkeypatch):
    """A fake engine whose adapters/ holds «a1» (and a symlink «fuga» to a folder outside it); a store with the
    set «mini», one answer per prompt and contestant, and the sessions «piloto» and «mi sesión»."""
    store = new_store(tmp_path / "t.sqlite3", accounts={"jefa": "admin", "ana": "rater", "beto": "rater"},
                      password=PW, prompt_sets={"mini": ROWS})
    engine = FakeEngine(NAMES)
    adapters = tmp_path / "adapters"
    (adapters / "a1").mkdir(parents=True)
    (tmp_path / "fuera").mkdir()
    os.symlink(tmp_path / "fuera", adapters / "fuga")
    monkeypatch.setattr(engine.registry, "adapters_dir", adapters)
    monkeypatch.setenv("ESLLM_JOBS_DIR", str(tmp_path / "trabajos"))
    c = AppContext(config=engine.config, engine=engine, sessionmaker=store.Session, local_mode=False)
    administrar.generate(c, "mini", list(NAMES), 1, 0, ADMIN)
    for name in ("piloto", "mi sesión"):
        administrar.create(c, name, "mini", list(NAMES), ["ana", "beto"], 1, "general", ADMIN)
    yield c
    store.dispose()


@pytest.fixture()
def launched(monkeypatch):
    """Jobs `entrenar.start` would launch (none is), with the session «piloto: marzo» of set «mini»."""
    jobs: list[dict] = []
    monkeypatch.setattr(entrenar, "_launch", lambda ctx, job, resume: jobs.append(job) or job)
    monkeypatch.setattr(entrenar, "session_and_set", lambda ctx, name: ("piloto: marzo", "mini"))
    return jobs


def count(ctx, model) -> int:
    with ctx.sessionmaker() as s:
        return s.scalar(select(func.count()).select_from(model))


# ----------------------------------------------------------------------------- finding 6: paths
@pytest.mark.parametrize("kind", ["dpo", "sft"])
@pytest.mark.parametrize("parent, msg", [
    (OUTSIDE, "El adaptador de partida '../../../../../tmp/x' no es un nombre dentro de"),
    ("/tmp/x", "no es un nombre dentro de"),
    ("a1/../../fuera", "no es un nombre dentro de"),
    ("fuga", "no es un nombre dentro de"),  # a symlink out of adapters/
    ("no-existe", "No existe el adaptador de partida 'no-existe'"),
])
def test_a_parent_adapter_outside_adapters_is_refused_and_nothing_is_launched(ctx, launched, kind, parent, msg):
    with pytest.raises(gr.Error, match=msg):
        entrenar.start(ctx, kind, entrenar.recipes()[0], "piloto", parent, "nuevo", None, ADMIN)
    assert launched == [] and not (ctx.engine.registry.adapters_dir / "nuevo").exists()


def test_a_parent_inside_adapters_starts_the_job_and_names_stay_strings(ctx, launched, monkeypatch):
    monkeypatch.setattr(entrenar, "status", lambda ctx, request: ("ok", None))
    entrenar.start(ctx, "dpo", None, "piloto", " a1 ", "desde-a1", None, ADMIN)
    job, = launched
    adapters = ctx.engine.registry.adapters_dir.resolve()
    assert job["parent"] == "a1" and job["out_dir"] == str(adapters / "desde-a1")
    r = load_recipe(ROOT / job["recipe"], job["overrides"])
    assert r.preference.start_from == str(adapters / "a1")
    assert r.data.session == "piloto: marzo", "a session name is a string in the override, not YAML"
    assert r.output.dir == str(adapters / "desde-a1")


@pytest.mark.parametrize("recipe", ["../../../etc/passwd", "/etc/passwd", "configs/recipes/gemma-270m-cpu-dpo.yaml",
                                    "gemma-270m-cpu-dpo.yaml", None, ["x"]])
def test_a_recipe_must_be_one_of_the_sft_recipes(ctx, launched, recipe):
    with pytest.raises(gr.Error, match="Elija una receta de configs/recipes/"):
        entrenar.start(ctx, "sft", recipe, None, "", "nuevo", None, ADMIN)
    assert launched == []


def test_inside_keeps_a_name_in_its_folder(tmp_path):
    (tmp_path / "a").mkdir()
    os.symlink("/tmp", tmp_path / "t")
    assert inside(tmp_path, "a", "X") == (tmp_path / "a").resolve()
    assert inside(tmp_path, " a/b/../c ", "X") == (tmp_path / "a" / "c").resolve()
    for bad in ("", " ", ".", "a/..", "..", "../x", "/etc", "t", "t/x", "a\0", None, 3, ["a"]):
        with pytest.raises(EsllmError, match="no es un nombre dentro de"):
            inside(tmp_path, bad, "X")


# ----------------------------------------------------------------------------- finding 7: names
@pytest.mark.parametrize("name, msg", [
    ("рilоtо", "llamada 'piloto' y 'рilоtо' se confunde con ella"),  # Cyrillic р and о
    ("ΡΙLΟΤΟ", "llamada 'piloto' y 'ΡΙLΟΤΟ' se confunde"),  # Greek capitals
    ("PILOTO", "llamada 'piloto' y 'PILOTO' se confunde"),
    ("piloto\ufe0f", "llamada 'piloto' y 'piloto\ufe0f' se confunde"),  # an invisible variation selector
    ("ｐｉｌｏｔｏ", r"Ya existe una sesión llamada 'piloto'\."),  # fullwidth: NFKC
    ("𝐩𝐢𝐥𝐨𝐭𝐨", r"Ya existe una sesión llamada 'piloto'\."),  # mathematical bold: NFKC
    ("mi sesio\u0301n", r"Ya existe una sesión llamada 'mi sesión'\."),  # a combining accent
    ("mi\u00a0sesión", r"Ya existe una sesión llamada 'mi sesión'\."),  # NBSP
    ("mi  sesión", r"Ya existe una sesión llamada 'mi sesión'\."),
    ("\u3164\u3164\u3164", r"invisibles \(tiene U\+3164\)"),  # Hangul filler only
    ("\u2800\u2800", r"invisibles \(tiene U\+2800\)"),  # blank Braille only
    ("\u115f\u1160", r"invisibles \(tiene U\+115F\)"),
    ("\uffa0", r"invisibles \(tiene U\+FFA0\)"),
    ("pilo\u3164to", r"invisibles \(tiene U\+3164\)"),
    ("\u0301", "no puede empezar por un acento"),
    ("\u0301\u0302 \u0303", "no puede empezar por un acento"),
    ("pilo\u200bto", "invisibles"),
    ("\u00a0\u3000\u2003", "La sesión necesita un nombre"),
])
def test_a_look_alike_or_invisible_session_name_is_refused_and_writes_nothing(ctx, name, msg):
    before = count(ctx, RatingSession), count(ctx, Assignment)
    with pytest.raises(gr.Error, match=msg):
        administrar.create(ctx, name, "mini", list(NAMES), ["ana"], 1, "general", ADMIN)
    assert (count(ctx, RatingSession), count(ctx, Assignment)) == before


def test_names_are_stored_normalised_accents_count_and_stored_names_still_read(ctx):
    for typed, stored in (("ｍａｒｚｏ", "marzo"), ("pilotó", "pilotó"), ("sesión ❤️", "sesión ❤️"),
                          ("  abril \u00a0 2025 ", "abril 2025")):
        msg, *_ = administrar.create(ctx, typed, "mini", list(NAMES), ["ana"], 1, "general", ADMIN)
        assert msg == f"Sesión **{stored}** creada."
    with ctx.transaction() as s:  # a name stored before this rule, as it was typed
        s.add(RatingSession(name="ｌｅｇａｄｏ", prompt_set_id=find_session(s, "piloto").prompt_set_id,
                            rubric_mode="general", overlap_k=1, status="open"))
    with ctx.sessionmaker() as s:
        assert find_session(s, "ｌｅｇａｄｏ").name == "ｌｅｇａｄｏ"
    with pytest.raises(gr.Error, match="Ya existe una sesión llamada 'ｌｅｇａｄｏ' y 'Legado' se confunde con ella"):
        administrar.create(ctx, "Legado", "mini", list(NAMES), ["ana"], 1, "general", ADMIN)


def test_a_prompt_set_differing_only_in_case_is_refused_and_the_same_name_imports(ctx, tmp_path):
    f = tmp_path / "mas.jsonl"
    f.write_text(json.dumps({"id": "p9", "category": "basicas", "text": "¿Qué es el ITF?"}) + "\n", encoding="utf-8")
    msg, *dropdowns = administrar.import_prompts(ctx, str(f), "MINI", ADMIN)  # shown inline, as a bad file is
    assert msg.startswith("Ya existe el conjunto 'mini' y 'MINI' se confunde con él") and count(ctx, PromptSet) == 1
    msg, *_ = administrar.import_prompts(ctx, str(f), "mini", ADMIN)
    assert "1 nuevos" in msg


def test_account_names_are_ascii_and_case_insensitive(ctx):
    with ctx.transaction() as s:
        for name in ("ANA", "аna", "ａｎａ"):  # upper case, Cyrillic а, fullwidth
            with pytest.raises(EsllmError, match="Ya existe un usuario llamado 'ana'|Nombre de usuario no válido"):
                users.add_user(s, name, PW, "rater")


def test_the_skeleton_and_the_refusals():
    assert normalize(" 𝐏𝐢𝐥𝐨𝐭𝐨\u00a0\u2003uno ") == "Piloto uno"
    assert {skeleton(n) for n in ("piloto", "рilоtо", "ΡΙLΟΤΟ", "PILOTO", "pi\u200blo\u00adto", "ｐｉｌｏｔｏ")} == {"piloto"}
    assert skeleton("pilotó") != skeleton("piloto") and skeleton("ёж") == skeleton("ëж")
    assert look_alike("Piloto", ["otra", "piloto"]) == "piloto" and look_alike("nueva", ["piloto"]) is None
    assert refusal("piloto") is None and refusal("sesión ❤️") is None and refusal("") is None
    assert "U+202E" in refusal("piloto\u202e") and "U+0000" in refusal("a\x00") and "U+000A" in refusal("a\nb")


# ----------------------------------------------------------------------------- over HTTP
def test_over_http_an_outside_parent_and_a_look_alike_session_are_refused(ctx, launched):
    with gr.Blocks() as demo:
        administrar.build_administrar(ctx)
    demo.queue()
    url = serve(demo, ctx)
    try:
        c = login(url, "jefa", PW)
        with pytest.raises(Exception, match="El adaptador de partida"):
            c.predict("dpo", None, "piloto", OUTSIDE, "nuevo", 0, api_name="/entrenar_iniciar")
        with pytest.raises(Exception, match="se confunde con ella"):
            c.predict("рilоtо", "mini", list(NAMES), ["ana"], 1, "general", api_name="/sesion_crear")
        with pytest.raises(Exception, match="invisibles"):
            c.predict("\u3164\u3164", "mini", list(NAMES), ["ana"], 1, "general", api_name="/sesion_crear")
    finally:
        demo.close()
    assert launched == [] and count(ctx, RatingSession) == 2
