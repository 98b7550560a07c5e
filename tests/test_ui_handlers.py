"""The UI's handlers called directly, without a server: the one permission and error path (`@handler`), the
transaction helper, `bind` (what Gradio injects), and one or two real handlers per tab.

Each test gets a fresh SQLite store (tests.helpers.new_store) with an admin «jefa» and the raters «ana» and
«beto»; the engine is the shared fake (tests.helpers.FakeEngine: no model, every contestant answers
"<name> dice: <last message>"). End-to-end behaviour over HTTP and in a browser is in test_app.py,
test_administrar.py, test_comparar.py, test_evaluar.py, test_resultados.py and test_browser*.py.
"""

from __future__ import annotations

import inspect
import json
from types import SimpleNamespace

import gradio as gr
import pytest
from gradio.utils import get_type_hints
from sqlalchemy import func, select

from esllm import EsllmError
from esllm.store import users
from esllm.store.models import Answer, RatingSession, Score, User, Vote
from esllm.ui import administrar, comparar, conversar, evaluar, resultados, resultados_juez, resultados_tareas
from esllm.ui.context import AppContext, Caller, bind, handler
from esllm.ui.verbatim import verbatim_text
from tests.helpers import ROWS, FakeEngine, new_store

PW = "contraseña-de-prueba"
NAMES = ("modelo-uno", "modelo-dos", "modelo-tres")
# the standalone prompts (p1, p2) of the shared set «mini»
BASICAS = "\n".join(line for line in ROWS.splitlines() if json.loads(line)["category"] == "basicas")


def says(name, messages):
    """Every contestant answers "<name> dice: <last message>"."""
    return f"{name} dice: {messages[-1]['content']}"


def failing(error: Exception):
    """A reply that raises `error` (the engine has already recorded the request)."""
    def reply(name, messages):
        raise error
    return reply


def req(name):
    return SimpleNamespace(username=name, session_hash="t")


ADMIN, ANA, BETO, NOBODY = req("jefa"), req("ana"), req("beto"), req(None)


@pytest.fixture()
def ctx(tmp_path):
    store = new_store(tmp_path / "t.sqlite3", accounts={"jefa": "admin", "ana": "rater", "beto": "rater"}, password=PW)
    engine = FakeEngine(NAMES, says)
    yield AppContext(config=engine.config, engine=engine, sessionmaker=store.Session, local_mode=False)
    store.dispose()


def count(ctx, model, *where) -> int:
    with ctx.sessionmaker() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


@pytest.fixture()
def study(ctx, tmp_path):
    """A prompt set «mini» (imported through the handler), one answer per prompt and contestant (generated
    through the handler) and a session «piloto» with raters ana and beto, created through the handler."""
    f = tmp_path / "mini.jsonl"
    f.write_text(BASICAS + "\n", encoding="utf-8")
    msg, *sets = administrar.import_prompts(ctx, str(f), "mini", ADMIN)
    assert msg.startswith("Conjunto **mini** importado") and "2 nuevos" in msg and "mini" in sets[0]["choices"]
    summary, coverage = administrar.generate(ctx, "mini", list(NAMES), 1, 0, ADMIN)
    assert summary.startswith("**6 generadas, 0 ya estaban, 0 errores**") and len(coverage) == 3
    msg, table, opened = administrar.create(ctx, "piloto", "mini", list(NAMES), ["ana", "beto"], 2, "general", ADMIN)
    assert msg == "Sesión **piloto** creada." and [r[0] for r in table] == ["piloto"]
    assert opened["value"] == "piloto"
    with ctx.sessionmaker() as s:
        return s.scalars(select(RatingSession.id).where(RatingSession.name == "piloto")).one()


# ------------------------------------------------------------------------- the one error and permission path
@handler("admin")
def _admin_only(ctx: AppContext, value, request: gr.Request, *, caller: Caller | None = None):
    _admin_only.calls.append((value, caller))
    if value == "mal":
        raise EsllmError("Valor «mal» no válido.")
    return f"hecho: {value}"


_admin_only.calls = []


@handler(idle=lambda: "nada")
def _any_role_idle(ctx: AppContext, value, request: gr.Request):
    _any_role_idle.calls.append(value)
    return f"visto: {value}"


_any_role_idle.calls = []


@handler("admin")
def _streaming(ctx: AppContext, n, request: gr.Request):
    for i in range(n):
        yield i
    raise EsllmError("Se cortó el flujo.")


def test_rater_gets_no_permission_and_anonymous_must_log_in(ctx):
    _admin_only.calls.clear()
    with pytest.raises(gr.Error, match="No tiene permiso para esta acción") as e:
        _admin_only(ctx, "x", ANA)
    assert e.value.print_exception is False
    for nobody in (NOBODY, None, req("desconocido")):
        with pytest.raises(gr.Error, match="Inicie sesión para usar esta función"):
            _admin_only(ctx, "x", nobody)
    assert _admin_only.calls == [], "refused before the handler runs"
    assert _admin_only(ctx, "x", ADMIN) == "hecho: x"
    [(value, caller)] = _admin_only.calls
    assert value == "x" and isinstance(caller, Caller) and (caller.name, caller.role) == ("jefa", "admin")
    # and real handlers of every admin tab refuse the same way, whatever they would do
    for call in (lambda r: administrar.list_sessions(ctx, r), lambda r: resultados.bradley_terry(ctx, r),
                 lambda r: resultados_juez.table_handler(ctx, r), lambda r: resultados_tareas.pictos_tabla(ctx, r),
                 lambda r: conversar.rate_up(ctx, {"x": 1}, r)):
        with pytest.raises(gr.Error, match="No tiene permiso"):
            call(ANA)
        with pytest.raises(gr.Error, match="Inicie sesión"):
            call(NOBODY)


def test_a_deactivated_admin_is_refused_at_once(ctx):
    with ctx.sessionmaker() as s:
        s.scalars(select(User).where(User.name == "jefa")).one().active = False
        s.commit()
    with pytest.raises(gr.Error, match="Inicie sesión"):
        administrar.list_sessions(ctx, ADMIN)


def test_esllm_error_becomes_gr_error_with_the_same_message(ctx):
    with pytest.raises(gr.Error) as e:
        _admin_only(ctx, "mal", ADMIN)
    assert e.value.message == "Valor «mal» no válido." and e.value.print_exception is False
    assert not isinstance(e.value, EsllmError)


def test_generator_handler_errors_become_gr_error(ctx):
    gen = _streaming(ctx, 2, ADMIN)
    assert inspect.isgenerator(gen)
    assert next(gen) == 0 and next(gen) == 1
    with pytest.raises(gr.Error) as e:
        next(gen)
    assert e.value.message == "Se cortó el flujo."
    with pytest.raises(gr.Error, match="No tiene permiso"):
        next(_streaming(ctx, 2, ANA))


def test_idle_returns_at_once_for_an_empty_first_input_even_for_a_non_admin(ctx):
    _any_role_idle.calls.clear()
    for empty in (None, "", []):
        assert _any_role_idle(ctx, empty, NOBODY) == "nada"
    assert _any_role_idle.calls == [], "not called"
    with pytest.raises(gr.Error, match="Inicie sesión"):
        _any_role_idle(ctx, "algo", NOBODY)
    assert _any_role_idle(ctx, "algo", ANA) == "visto: algo" and _any_role_idle.calls == ["algo"]
    # the real change events a rater's page fires with its empty lists: no error toast
    who, prompts, rows = administrar.attempt_set(ctx, None, ANA)
    assert who["choices"] == [] and prompts["choices"] == [] and rows == []
    assert administrar.attempts_table(ctx, None, None, ANA) == []
    assert administrar.session_contestants(ctx, "", ANA)["choices"] == []
    assert conversar.describe(ctx, "", ANA)[2:5] == ({}, None, "")
    with pytest.raises(gr.Error, match="No tiene permiso"):
        administrar.session_contestants(ctx, "mini", ANA)


def test_transaction_commits_on_success_and_rolls_back_on_error(ctx):
    with pytest.raises(EsllmError, match="falla a mitad"):
        with ctx.transaction() as s:
            users.add_user(s, "carla", PW, "rater")
            s.flush()
            assert s.scalar(select(func.count()).select_from(User).where(User.name == "carla")) == 1
            raise EsllmError("falla a mitad")
    assert count(ctx, User, User.name == "carla") == 0, "rolled back: nothing written"
    with pytest.raises(KeyboardInterrupt):
        with ctx.transaction() as s:
            users.add_user(s, "carla", PW, "rater")
            raise KeyboardInterrupt
    assert count(ctx, User, User.name == "carla") == 0
    with ctx.transaction() as s:
        users.add_user(s, "carla", PW, "rater")
    assert count(ctx, User, User.name == "carla") == 1, "committed"
    with pytest.raises(EsllmError, match="No hay base de datos"):
        with AppContext(config=None, engine=None, sessionmaker=None).transaction():
            pass


def test_a_locked_database_is_a_spanish_error_and_nothing_is_written(ctx):
    import sqlite3

    from sqlalchemy.exc import OperationalError

    with pytest.raises(EsllmError, match="base de datos está ocupada"):
        with ctx.transaction() as s:
            users.add_user(s, "dora", PW, "rater")
            s.flush()
            raise OperationalError("UPDATE assignment SET started_at=?", {}, sqlite3.OperationalError("database is locked"))
    assert count(ctx, User, User.name == "dora") == 0, "rolled back"
    with pytest.raises(OperationalError, match="no such table"):  # other database errors are not dressed up
        with ctx.transaction():
            raise OperationalError("SELECT 1", {}, sqlite3.OperationalError("no such table: x"))


def test_bind_keeps_what_gradio_injects(ctx):
    bound = bind(ctx, administrar.generate)
    params = list(inspect.signature(bound).parameters)
    assert params == ["set_name", "names", "attempts", "max_tokens", "request", "progress", "vary"]
    assert get_type_hints(bound)["request"] is gr.Request
    assert isinstance(inspect.signature(bound).parameters["progress"].default, gr.Progress)
    assert not inspect.isgeneratorfunction(bound)
    created = bind(ctx, administrar.create)
    assert "caller" not in inspect.signature(created).parameters, "the checked caller is not a Gradio input"
    streamed = bind(ctx, conversar.respond)
    assert inspect.isgeneratorfunction(streamed) and get_type_hints(streamed)["request"] is gr.Request
    preset = bind(ctx, comparar.vote_button, comparar.Arena(), "A")
    assert list(inspect.signature(preset).parameters) == ["token", "request"]
    with pytest.raises(gr.Error, match="No tiene permiso para usar «Comparar»"):
        preset("sin-token", ANA)


def test_every_event_of_the_app_gets_its_request_and_progress(ctx):
    """Gradio injects `request` by the annotation it reads with typing.get_type_hints: an annotation that does
    not resolve in its module makes it inject nothing, silently. So check every registered function."""
    from esllm.ui import build_app

    demo = build_app(ctx)
    checked = 0
    for block_fn in demo.fns.values():
        fn = block_fn.fn
        if fn is None:
            continue
        params = inspect.signature(fn).parameters
        if "request" in params:
            assert get_type_hints(fn).get("request") is gr.Request, fn.__name__
            checked += 1
        if "progress" in params:
            assert isinstance(params["progress"].default, gr.Progress), fn.__name__
        assert "caller" not in params and "ctx" not in params, fn.__name__
    assert checked >= 30
    apis = {f.api_name for f in demo.fns.values()}
    assert {"conversar", "regenerar", "detener", "pulgar_arriba", "describir", "comparar", "comparar_votar",
            "evaluar_abrir", "evaluar_guardar", "lote_generar", "intentos_conjunto", "sesion_crear",
            "sesiones_listar", "sesion_cerrar", "prompts_importar", "resultados_calcular", "resultados_descargar",
            "resultados_bradley_terry", "belebele_evaluar", "juez_calificar", "pictos_tabla"} <= apis



def test_no_event_paints_its_outputs_on_an_error(ctx):
    """Every event reports its status on the hidden status block (a failure is the toast, its outputs are left as
    they were), except the long tasks with a progress bar, which use their summary line (their first output),
    and those that hide it (the training timer)."""
    from esllm.ui import build_app

    demo = build_app(ctx)
    status = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "estado-eventos")
    own, progress = 0, []
    for f in demo.fns.values():
        if f.fn is None or f.show_progress == "hidden":
            continue
        if "progress" in inspect.signature(f.fn).parameters:
            assert f.show_progress_on == [f.outputs[0]], f.name
            progress.append(f.api_name)
        else:
            assert f.show_progress_on == [status], f.name
            own += 1
    assert own >= 30 and {"lote_generar", "belebele_evaluar", "juez_calificar", "pictos_evaluar"} <= set(progress)

# ------------------------------------------------------------------------- «Conversar»
def test_conversar_streams_for_admins_only_and_engine_errors_are_toasts(ctx):
    adv = (32, 1.0, 0, 1.0, 1, 0.0, 1.0, None)
    out = list(conversar.respond(ctx, "Hola", [], "modelo-uno", "greedy", "", *adv, ADMIN))
    chat, _, last, rated = out[-1]
    assert conversar.text_of(chat[-1]["content"]) == "modelo-uno dice: Hola" and chat[0]["content"] == "Hola"
    assert last["contestant"] == "modelo-uno" and rated["answer"] == "modelo-uno dice: Hola"
    with pytest.raises(gr.Error, match="No tiene permiso"):
        list(conversar.respond(ctx, "Hola", [], "modelo-uno", "greedy", "", *adv, ANA))
    with pytest.raises(gr.Error, match="el mensaje está vacío"):
        list(conversar.respond(ctx, "  ", [], "modelo-uno", "greedy", "", *adv, ADMIN))
    with pytest.raises(gr.Error, match="No existe el concursante 'otro'"):
        list(conversar.respond(ctx, "Hola", [], "otro", "greedy", "", *adv, ADMIN))
    calls = len(ctx.engine.calls)
    ctx.engine.reply = failing(EsllmError("El modelo se quedó sin memoria."))
    with pytest.raises(gr.Error, match="sin memoria"):
        list(conversar.respond(ctx, "Hola", [], "modelo-uno", "greedy", "", *adv, ADMIN))
    assert len(ctx.engine.calls) == calls + 1
    # 👍 stores the answer once; 👎 on the same answer updates that row
    from esllm.store.models import ChatFeedback

    rated, note = conversar.rate_up(ctx, rated, ADMIN)
    assert note == "Valoración guardada: «buena» para la última respuesta." and rated["feedback_id"]
    rated, _ = conversar.rate_down(ctx, rated, ADMIN)
    assert count(ctx, ChatFeedback) == 1
    with pytest.raises(gr.Error, match="ninguna respuesta terminada"):
        conversar.rate_up(ctx, None, ADMIN)
    # the page load names contestants for admins only
    assert conversar.load_conversar(ctx, ANA)[0]["choices"] == []
    assert conversar.load_conversar(ctx, ADMIN)[0]["choices"] == list(NAMES)


# ------------------------------------------------------------------------- «Comparar»
def test_comparar_refuses_raters_with_its_own_message_and_hides_names_in_engine_errors(ctx):
    arena = comparar.Arena()
    with pytest.raises(gr.Error) as e:
        next(comparar.compare(ctx, arena, "Hola", list(NAMES), ANA))
    assert e.value.message == comparar.DENIED and "«Comparar»" in e.value.message
    with pytest.raises(gr.Error, match="Inicie sesión"):
        comparar.vote(ctx, arena, "x", "A", NOBODY)
    out = list(comparar.compare(ctx, arena, "Hola", list(NAMES), ADMIN))
    token = out[0][0]
    assert out[-1][-1].startswith("¿Qué respuesta es mejor?")
    assert sorted(verbatim_text(html) for html in out[-1][1:4]) == sorted(f"{n} dice: Hola" for n in NAMES)
    reveal = comparar.vote(ctx, arena, token, "B", ADMIN)
    assert reveal.startswith("**Voto guardado") and all(n in reveal for n in NAMES)
    assert count(ctx, Vote) == 1
    with pytest.raises(gr.Error):  # one vote per comparison
        comparar.vote(ctx, arena, token, "A", ADMIN)
    assert count(ctx, Vote) == 1
    ctx.engine.reply = failing(EsllmError("modelo-uno: CUDA sin memoria"))
    with pytest.raises(gr.Error) as e:
        list(comparar.compare(ctx, arena, "Hola", list(NAMES), ADMIN))
    assert "Modelo A" in e.value.message and not any(n in e.value.message for n in NAMES)
    assert comparar.load_comparar(ctx, ANA)[0]["choices"] == []


# ------------------------------------------------------------------------- «Administrar»
def test_administrar_creates_a_session_and_a_bad_one_writes_nothing(ctx, study):
    with ctx.sessionmaker() as s:
        rs = s.get(RatingSession, study)
        assert rs.created_by == s.scalars(select(User.id).where(User.name == "jefa")).one(), "the checked caller"
    assert set(administrar.session_contestants(ctx, "mini", ADMIN)["choices"]) == set(NAMES)
    before = count(ctx, RatingSession)
    with pytest.raises(gr.Error, match="Elija k"):
        administrar.create(ctx, "otra", "mini", list(NAMES), ["ana"], "dos", "general", ADMIN)
    with pytest.raises(gr.Error, match="piloto"):  # the name is taken
        administrar.create(ctx, "piloto", "mini", list(NAMES), ["ana"], 1, "general", ADMIN)
    with pytest.raises(gr.Error, match="No tiene permiso"):
        administrar.create(ctx, "otra", "mini", list(NAMES), ["ana"], 1, "general", ANA)
    assert count(ctx, RatingSession) == before
    msg, table, opened = administrar.close(ctx, "piloto", ADMIN)
    assert msg == "Sesión **piloto** cerrada." and opened["choices"] == []
    # picking an attempt: one selected answer per prompt and contestant, the table shows the choice
    who, prompts, _ = administrar.attempt_set(ctx, "mini", ADMIN)
    cid, pid = who["value"], prompts["value"]
    rows = administrar.choose_attempt(ctx, cid, pid, 1, ADMIN)
    assert [r[:2] for r in rows] == [[1, "sí"]]
    with pytest.raises(gr.Error, match="Elija un intento"):
        administrar.choose_attempt(ctx, cid, pid, None, ADMIN)
    assert count(ctx, Answer, Answer.selected) == 6


def test_administrar_import_shows_a_bad_file_inline_and_writes_nothing(ctx, tmp_path):
    bad = tmp_path / "malo.jsonl"
    bad.write_text('{"id": "a", "category": "x", "text": ""}\n{no es json\n', encoding="utf-8")
    msg, *dropdowns = administrar.import_prompts(ctx, str(bad), "malo", ADMIN)
    assert msg.startswith("Archivo rechazado") and "línea 1" in msg and "línea 2" in msg
    assert dropdowns == [gr.skip()] * 3, "the set dropdowns stay as they are"
    from esllm.store.models import PromptSet

    assert count(ctx, PromptSet, PromptSet.name == "malo") == 0
    with pytest.raises(gr.Error, match="Suba un archivo"):
        administrar.import_prompts(ctx, None, "malo", ADMIN)


def test_administrar_refuses_a_10000_character_name_and_an_admin_as_rater_writing_nothing(ctx, study):
    from esllm.store.models import Assignment

    before = count(ctx, RatingSession), count(ctx, Assignment)
    with pytest.raises(gr.Error, match="tiene 10000 caracteres; el máximo es 100"):
        administrar.create(ctx, "x" * 10_000, "mini", list(NAMES), ["ana", "beto"], 2, "general", ADMIN)
    with pytest.raises(gr.Error, match="La cuenta 'jefa' es de rol «admin», no evaluador"):
        administrar.create(ctx, "con-jefa", "mini", list(NAMES), ["ana", "jefa"], 2, "general", ADMIN)
    with pytest.raises(gr.Error, match="Máx. tokens nuevos"):
        administrar.generate(ctx, "mini", list(NAMES), 1, -5, ADMIN)
    assert (count(ctx, RatingSession), count(ctx, Assignment)) == before


def test_administrar_import_over_the_caps_is_shown_inline_and_writes_nothing(ctx, tmp_path):
    from esllm.store.models import Prompt, PromptSet
    from esllm.study.prompts import MAX_FILE_BYTES, MAX_ROWS

    line = json.dumps({"id": "p0", "category": "basicas", "text": "hola"}) + "\n"
    many, heavy = tmp_path / "muchas.jsonl", tmp_path / "pesado.csv"
    many.write_text("".join(line.replace('"p0"', f'"p{i}"') for i in range(MAX_ROWS + 1)), encoding="utf-8")
    heavy.write_text("id,category,text\n" + "p1,basicas,hola\n" * (MAX_FILE_BYTES // 16 + 1), encoding="utf-8")
    for path, expected in ((many, f"más de {MAX_ROWS} prompts"), (heavy, "el máximo es 2.097.152 bytes")):
        msg, *dropdowns = administrar.import_prompts(ctx, str(path), "grande", ADMIN)
        assert msg.startswith("Archivo rechazado, no se importó nada") and expected in msg, msg
        assert dropdowns == [gr.skip()] * 3
    assert count(ctx, PromptSet) == count(ctx, Prompt) == 0


def test_no_component_answers_in_gradio_english_and_name_boxes_stop_at_the_caps(ctx):
    """Gradio refuses a Number outside minimum/maximum and a File of another type with its own English message
    before a handler runs: the app's Numbers and Files carry none (the handlers check in Spanish). The name
    boxes of «Administrar» stop typing at the server's caps."""
    from esllm.study.admin import SET_NAME_MAX
    from esllm.study.sessions import SESSION_NAME_MAX
    from esllm.ui import build_app

    demo = build_app(ctx)
    blocks = list(demo.blocks.values())
    numbers = [b for b in blocks if isinstance(b, gr.Number)]
    assert numbers and all(b.minimum is None and b.maximum is None for b in numbers), [b.label for b in numbers]
    assert all(not b.file_types for b in blocks if isinstance(b, gr.File) and b.interactive is not False)
    boxes = {b.label: b for b in blocks if isinstance(b, gr.Textbox)}
    assert boxes["Nombre de la nueva sesión"].max_length == SESSION_NAME_MAX == 100
    assert boxes["Nombre del conjunto"].max_length == SET_NAME_MAX == 64


def test_administrar_page_load_names_nothing_for_a_rater(ctx, study):
    rater = json.dumps(administrar.load_administrar(ctx, ANA), default=str, ensure_ascii=False)
    boss = json.dumps(administrar.load_administrar(ctx, ADMIN), default=str, ensure_ascii=False)
    assert "solo para administradores" in rater and not any(n in rater for n in NAMES + ('"ana"', '"mini"'))
    assert all(n in boss for n in NAMES + ('"ana"', '"beto"', '"mini"', '"piloto"'))


# ------------------------------------------------------------------------- «Evaluar»
def _scores(general=("4", "3", "5")):
    return (*general, *[None] * 12)


def test_evaluar_save_refuses_a_bad_score_and_writes_nothing(ctx, study):
    item = evaluar.start(ctx, study, ANA)
    state = item[0]
    assert state[0] == study and item[1].startswith("**Ítem 1 / 2**")
    with pytest.raises(gr.Error, match="Puntuación inválida"):
        evaluar.save(ctx, state, "", *_scores(("4", "9", "5")), ANA)
    # a missing score: answered in the message area and under column B, every other output left as it is
    out = evaluar.save(ctx, state, "", *_scores(("4", None, "5")), ANA)
    assert "respuesta B" in out[evaluar.N_ITEM] and out[evaluar.N_ITEM + 2] == "Falta: nota general."
    assert out[evaluar.N_ITEM + 1] == out[evaluar.N_ITEM + 3] == ""
    assert all(isinstance(v, type(gr.skip())) for v in out[:evaluar.N_ITEM])
    assert count(ctx, Score) == 0
    with pytest.raises(gr.Error, match="no existe o no es suyo"):  # beto cannot save ana's item
        evaluar.save(ctx, state, "", *_scores(), BETO)
    with pytest.raises(gr.Error, match="No tiene permiso"):  # an admin does not rate
        evaluar.save(ctx, state, "", *_scores(), ADMIN)
    assert count(ctx, Score) == 0
    nxt = evaluar.save(ctx, state, "bien", *_scores(), ANA)
    assert count(ctx, Score) == 3 and nxt[1].startswith("**Ítem 2 / 2**") and nxt[0][1] != state[1]
    with pytest.raises(gr.Error, match="Elija una sesión"):
        evaluar.start(ctx, None, ANA)
    with pytest.raises(gr.Error, match="No participa"):
        evaluar.start(ctx, study + 99, ANA)
    loaded = evaluar.load_evaluar(ctx, ANA)  # (who, item view…, session list): the page opens on the item
    who, sessions = loaded[0], loaded[-1]
    assert sessions["choices"] == [("piloto · 1/2 hechos", study)] and sessions["value"] == study
    assert "**ana**" in who and loaded[2].startswith("**Ítem 2 / 2**")
    assert evaluar.load_evaluar(ctx, ADMIN)[-1]["choices"] == []


# ------------------------------------------------------------------------- «Resultados» and its sections
def test_resultados_compute_refuses_a_rater_and_computes_for_an_admin(ctx, study):
    with pytest.raises(gr.Error, match="No tiene permiso"):
        resultados.compute_handler(ctx, resultados.SCOPES[0], "piloto", ANA)
    with pytest.raises(gr.Error, match="Inicie sesión"):
        resultados.download(ctx, resultados.SCOPES[0], "piloto", NOBODY)
    md, *rest = resultados.compute_handler(ctx, resultados.SCOPES[0], "piloto", ADMIN)
    assert "Aún no hay puntuaciones" in md and rest[0] is None
    with pytest.raises(gr.Error, match="No existe"):
        resultados.compute_handler(ctx, resultados.SCOPES[0], "no-hay", ADMIN)
    with pytest.raises(gr.Error, match="Aún no hay votos"):
        resultados.bradley_terry(ctx, ADMIN)
    assert resultados.scope_choices(ctx, resultados.SCOPES[1], ANA) == gr.update()
    sets = resultados.scope_choices(ctx, resultados.SCOPES[1], ADMIN)
    assert "mini" in [value for _, value in sets["choices"]]


def test_resultados_page_load_fills_every_section_for_admins_only(ctx, study):
    with gr.Blocks():
        load, outputs = resultados.build_resultados(ctx)
    rater, boss = load(ANA), load(ADMIN)
    assert len(rater) == len(boss) == len(outputs)
    text = json.dumps(rater, default=str, ensure_ascii=False)
    assert "solo para administradores" in text and not any(n in text for n in NAMES + ('"piloto"',))
    assert "piloto" in json.dumps(boss, default=str, ensure_ascii=False)
    assert all(n in json.dumps(boss, default=str, ensure_ascii=False) for n in NAMES)


def test_juez_and_tareas_check_their_values_after_the_role(ctx, study):
    with pytest.raises(gr.Error, match="No tiene permiso"):
        resultados_juez.grade_handler(ctx, "piloto", "modelo-uno", "general", ANA)
    off = ctx.engine.registry.contestants["modelo-tres"]
    off.available, off.reason = False, "apagado"
    with pytest.raises(gr.Error, match="concursante disponible"):
        resultados_juez.grade_handler(ctx, "piloto", "modelo-tres", "general", ADMIN)
    with pytest.raises(gr.Error, match="Elija una sesión"):
        resultados_juez.grade_handler(ctx, " ", "modelo-uno", "general", ADMIN)
    with pytest.raises(gr.Error, match="concursante disponible"):
        resultados_tareas.preguntas_generar(ctx, "Lucía fue al lago con su abuelo el sábado por la mañana.", 1, 1,
                                            "modelo-tres", ADMIN)
    with pytest.raises(gr.Error, match="No tiene permiso"):
        resultados_tareas.pictos_evaluar(ctx, "muestra-es.jsonl", ["modelo-uno"], 1, ANA)
    assert resultados_tareas.pictos_tabla(ctx, ADMIN) == []
    assert len(ctx.engine.calls) == 6, "only the study fixture's answers: no refused call reached the engine"


def test_the_sliders_start_on_the_contestants_own_settings(ctx):
    """A contestant's config `params:` fill «Parámetros avanzados» for its own preset (the chat sends the sliders,
    so otherwise a chat answer would not use the settings the contestant is rated with); another preset: its own."""
    c = ctx.engine.registry.contestants["modelo-uno"]
    c.preset, c.overrides = "top-p", {"top_p": 0.8, "repetition_penalty": 1.15, "max_new_tokens": 64}
    got = [u["value"] for u in conversar.contestant_values(ctx, "modelo-uno", "top-p", ADMIN)]
    assert got == [64, 1.0, 0, 0.8, 1, 0.0, 1.15]
    other = conversar.contestant_values(ctx, "modelo-uno", "greedy", ADMIN)
    assert other[0] is not None and [u["value"] for u in other[1:]] == [1.0, 0, 1.0, 1, 0.0, 1.0]
    assert conversar.contestant_values(ctx, "", "top-p", ANA) == (gr.skip(),) * 7  # a rater's empty list: no toast
    with pytest.raises(gr.Error, match="No tiene permiso"):
        conversar.contestant_values(ctx, "modelo-uno", "top-p", ANA)
