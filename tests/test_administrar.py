"""«Administrar» over HTTP with logins, and the `prompts`/`sessions` CLI on a tiny model.

The app runs with accounts on a tiny Llama. An admin imports a set, generates answers, picks
attempts, creates a session and a rater then rates it through «Evaluar»; raters, a wrong password
and anonymous callers are refused on every admin endpoint and change nothing.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from tests.helpers import ROWS, login, running_app

PW = "contraseña-segura"
NAMES = ["concursante-arce", "concursante-boj", "concursante-cedro"]
ENDPOINTS = {  # admin endpoint -> arguments a caller might send
    "/lote_generar": ("mini", NAMES, 1, 4),
    "/lote_detener": (),
    "/intentos_conjunto": ("mini",),
    "/intentos_elegir": (1, 1, 1),
    "/sesion_concursantes": ("mini",),
    "/sesion_crear": ("robada", "mini", NAMES, ["ana", "beto"], 1, "general"),
    "/sesiones_listar": (),
    "/sesion_cerrar": ("piloto",),
    "/prompts_importar": None,  # a file: built in the test
}
BAD_JSONL = '\n'.join([
    json.dumps({"id": "ok1", "category": "basicas", "text": "¿Qué es el RUC?"}),
    json.dumps({"id": "x2", "category": "basicas", "text": "  "}),
    '{"id": "x3", "category": ',
])


def _contestants(adapters=(None, "a1", "a2")):
    # greedy is deterministic: attempts 2..N of a batch sample (top-k, seed = attempt), else they are refused
    return [{"name": n, "model": "llama", "preset": "greedy", "vary_attempts": [{"preset": "top-k"}],
             **({"adapter": a} if a else {})} for n, a in zip(NAMES, adapters)]


@pytest.fixture(scope="module")
def admin_app(tiny, tmp_path_factory):
    t = tiny("llama")
    tmp = tmp_path_factory.mktemp("administrar")
    (tmp / "mini.jsonl").write_text(ROWS, encoding="utf-8")
    (tmp / "malo.jsonl").write_text(BAD_JSONL, encoding="utf-8")
    config = t.config(contestants=_contestants(), auto_contestants=False, limits={"max_new_tokens": 6})
    with running_app(config, tmp, accounts={"admin": "admin", "ana": "rater", "beto": "rater"}, password=PW) as a:
        yield SimpleNamespace(ctx=a.ctx, demo=a.demo, url=a.url, Session=a.Session, tmp=tmp)


def client(url, name, password=PW):
    return login(url, name, password)


def rows(df) -> list[list]:
    return df["data"] if isinstance(df, dict) else df


def counts(Session) -> dict[str, int]:
    from esllm.store.models import Answer, Assignment, Prompt, PromptSet, RatingSession, Score

    with Session() as s:
        out = {m.__name__: s.scalar(select(func.count()).select_from(m))
               for m in (Answer, Assignment, Prompt, PromptSet, RatingSession, Score)}
        out["selected"] = s.scalar(select(func.count()).select_from(Answer).where(Answer.selected))
        out["open"] = s.scalar(select(func.count()).select_from(RatingSession).where(RatingSession.status == "open"))
        out["attempt2_selected"] = s.scalar(select(func.count()).select_from(Answer).where(
            Answer.selected, Answer.attempt == 2))
    return out


def test_admin_generates_selects_creates_and_a_rater_rates(admin_app):
    from gradio_client import handle_file

    from esllm.store.models import Answer, Assignment, ContestantSnapshot, Prompt, RatingSession, Score
    from esllm.ui.verbatim import verbatim_text

    a, S = admin_app, admin_app.Session
    admin = client(a.url, "admin")
    msg, *_ = admin.predict(handle_file(str(a.tmp / "mini.jsonl")), "mini", api_name="/prompts_importar")
    assert "4 prompts en el archivo, 4 nuevos" in msg, msg

    summary, cov = admin.predict("mini", NAMES, 2, 4, api_name="/lote_generar")
    assert "24 generadas, 0 ya estaban, 0 errores" in summary, summary
    assert sorted((r[0].split(" ")[0], r[1], r[2], r[3]) for r in rows(cov)) == [(n, 4, 4, 8) for n in NAMES]
    summary, _ = admin.predict("mini", NAMES, 2, 4, api_name="/lote_generar")
    assert "0 generadas, 24 ya estaban" in summary, "a second run resumes and generates nothing"
    with S() as s:
        ans = s.scalars(select(Answer)).all()
        assert len(ans) == 24 and all(x.new_tokens <= 4 for x in ans)
        cid = s.scalars(select(ContestantSnapshot.id).where(ContestantSnapshot.name == NAMES[1])).one()
        pids = list(s.scalars(select(Prompt.id)))

    who, prompts, table = admin.predict("mini", api_name="/intentos_conjunto")  # dropdown updates
    assert [label.split(" ")[0] for label, _ in who["choices"]] == NAMES and cid in [v for _, v in who["choices"]]
    assert sorted(v for _, v in prompts["choices"]) == sorted(pids) and prompts["value"] in pids
    for pid in pids:  # the second attempt becomes the shown answer of NAMES[1] everywhere
        table = rows(admin.predict(cid, pid, 2, api_name="/intentos_elegir"))
        assert [(r[0], r[1]) for r in table] == [(1, ""), (2, "sí")], table
        assert all(r[4] in ("sí", "no") and r[2] <= 4 for r in table)
    with S() as s:
        sel = s.scalars(select(Answer).where(Answer.contestant_id == cid, Answer.selected)).all()
        assert sorted(x.attempt for x in sel) == [2] * 4

    msg, table, open_name = admin.predict("piloto", "mini", NAMES, ["ana", "beto"], 2, "general",
                                          api_name="/sesion_crear")
    assert "piloto" in msg and open_name["value"] == "piloto"
    assert rows(table) == [["piloto", "mini", "general", 2, "abierta", ", ".join(NAMES), "ana 0/4 · beto 0/4"]]
    with S() as s:
        sid = s.scalars(select(RatingSession.id).where(RatingSession.name == "piloto")).one()

    ana = client(a.url, "ana")
    out = ana.predict(sid, api_name="/evaluar_abrir")
    assert out[0].startswith("**Ítem 1 / 4**"), out[0]
    shown = {label: verbatim_text(html) for label, html in zip("ABC", out[4:7])}  # the text the page shows
    out2 = ana.predict("", "4", "3", "2", *[None] * 12, api_name="/evaluar_guardar")
    assert out2[0].startswith("**Ítem 2 / 4**")
    with S() as s:
        asg = s.scalars(select(Assignment).where(Assignment.session_id == sid, Assignment.finished_at.is_not(None))).one()
        scores = s.scalars(select(Score).where(Score.assignment_id == asg.id)).all()
        by_answer = {sc.answer_id: s.get(Answer, sc.answer_id) for sc in scores}
        assert len(scores) == 3 and all(x.selected for x in by_answer.values())
        assert {sc.label: by_answer[sc.answer_id].text for sc in scores} == shown, \
            "the rater saw the selected answers, exactly, under their labels"
        assert [x.attempt for x in by_answer.values() if x.contestant_id == cid] == [2]

    table, _ = admin.predict(api_name="/sesiones_listar")
    assert rows(table)[0][-1] == "ana 1/4 · beto 0/4"
    msg, table, open_name = admin.predict("piloto", api_name="/sesion_cerrar")
    assert "cerrada" in msg and rows(table)[0][4] == "cerrada" and open_name["choices"] == []
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="cerrada"):
        ana.predict(sid, api_name="/evaluar_abrir")


def test_session_needs_complete_answers_and_says_so(admin_app):
    from gradio_client.exceptions import AppError

    admin = client(admin_app.url, "admin")
    before = counts(admin_app.Session)
    with pytest.raises(AppError, match="concursante-nadie.*generate"):
        admin.predict("otra", "mini", [NAMES[0], NAMES[1], "concursante-nadie"], ["ana"], 1, "general",
                      api_name="/sesion_crear")
    with pytest.raises(AppError, match="k=3"):
        admin.predict("otra", "mini", NAMES, ["ana", "beto"], 3, "general", api_name="/sesion_crear")
    assert counts(admin_app.Session) == before


def test_raters_wrong_passwords_and_anonymous_are_refused_everywhere(admin_app):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    a = admin_app
    before = counts(a.Session)
    ENDPOINTS["/prompts_importar"] = (handle_file(str(a.tmp / "mini.jsonl")), "robado")
    ana = client(a.url, "ana")
    for api, args in ENDPOINTS.items():
        # a rater's file is refused at the upload already (esllm/ui/uploads.py), before Gradio stores it
        with pytest.raises(httpx.HTTPStatusError, match="403") if api == "/prompts_importar" else \
                pytest.raises(AppError, match="permiso"):
            ana.predict(*args, api_name=api)
    # Every endpoint exists (so the refusals below are not 404s), for a logged-in admin.
    admin = client(a.url, "admin")
    info = httpx.get(a.url + "gradio_api/info", cookies=admin.cookies, timeout=30).json()
    assert set(ENDPOINTS) <= set(info["named_endpoints"])
    with pytest.raises(Exception):
        client(a.url, "admin", "mala-clave-123")
    bad = httpx.Client(base_url=a.url, timeout=30)
    assert bad.post("login", data={"username": "admin", "password": "mala-clave-123"}).status_code >= 400
    ok = httpx.post(a.url + "gradio_api/call/sesiones_listar", json={"data": []}, cookies=admin.cookies, timeout=30)
    assert ok.status_code == 200, "the same request with an admin's cookie goes through"
    for api in ENDPOINTS:
        for who in (bad, httpx.Client(base_url=a.url, timeout=30)):
            r = who.post("gradio_api/call" + api, json={"data": []})
            assert r.status_code == 401, (api, r.status_code)
    assert counts(a.Session) == before, "refused calls write nothing"


def test_rater_page_load_names_no_contestant_admin_page_does(admin_app):
    import inspect

    # the page-load function of «Administrar»: registered on the load event, defined in esllm/ui/administrar.py
    loads = [f.fn for f in admin_app.demo.fns.values()
             if f.fn is not None and any(event == "load" for _, event in f.targets)
             and inspect.unwrap(f.fn).__module__ == "esllm.ui.administrar"]
    assert len(loads) == 1
    rater = json.dumps(loads[0](SimpleNamespace(username="ana")), default=str, ensure_ascii=False)
    boss = json.dumps(loads[0](SimpleNamespace(username="admin")), default=str, ensure_ascii=False)
    assert "solo para administradores" in rater and not any(n in rater for n in NAMES + ['"ana"', '"beto"', '"mini"'])
    assert all(n in boss for n in NAMES + ['"ana"', '"beto"', '"mini"', '"tributario-ec"'])
    assert not any(n in json.dumps(client(admin_app.url, "ana").config, ensure_ascii=False) for n in NAMES)


def test_bad_import_file_reports_line_numbers_and_writes_nothing(admin_app):
    from gradio_client import handle_file

    a = admin_app
    admin = client(a.url, "admin")
    before = counts(a.Session)
    msg, *_ = admin.predict(handle_file(str(a.tmp / "malo.jsonl")), "malo", api_name="/prompts_importar")
    assert "no se importó nada" in msg and "línea 2: 'text' está vacío" in msg and "línea 3: JSON inválido" in msg
    (a.tmp / "cambiado.csv").write_text("id,category,text\np1,basicas,¿Qué es el SRI?\n", encoding="utf-8")
    msg, *_ = admin.predict(handle_file(str(a.tmp / "cambiado.csv")), "mini", api_name="/prompts_importar")
    assert "otro contenido" in msg, msg
    msg, *_ = admin.predict(handle_file(str(a.tmp / "mini.jsonl")), "nombre con espacios", api_name="/prompts_importar")
    assert "Nombre de conjunto no válido" in msg
    assert counts(a.Session) == before


def test_an_upload_over_the_cap_is_refused_before_any_handler(admin_app):
    """Gradio's max_file_size (app.MAX_UPLOAD, set by app.launch_kwargs, which tests.helpers.serve uses too):
    a bigger upload gets 413 (Gradio's own message; the page also checks the size before sending); one under it
    is accepted; an anonymous one is refused whatever its size."""
    from gradio.utils import _parse_file_size

    import app

    cap = _parse_file_size(app.MAX_UPLOAD)
    assert admin_app.demo.max_file_size == cap == 5 * 1024 * 1024
    cookies = client(admin_app.url, "admin").cookies
    upload = admin_app.url + "gradio_api/upload"
    big = httpx.post(upload, files={"files": ("grande.jsonl", b"x" * (cap + 1))}, cookies=cookies, timeout=120)
    assert big.status_code == 413 and "maximum allowed size" in big.text, (big.status_code, big.text[:200])
    small = httpx.post(upload, files={"files": ("mini.jsonl", ROWS.encode())}, cookies=cookies, timeout=60)
    assert small.status_code == 200 and small.json()[0].endswith("mini.jsonl")
    assert httpx.post(upload, files={"files": ("mini.jsonl", ROWS.encode())}, timeout=60).status_code == 401


def test_a_name_resolves_to_its_latest_snapshot_with_every_answer_selected(any_store):
    store = any_store  # on SQLite and on PostgreSQL
    from esllm import EsllmError
    from esllm.store.models import Answer, Prompt, get_or_create_contestant
    from esllm.study.admin import resolve_contestants
    from esllm.study.prompts import import_prompt_set, parse_prompts

    with store.Session() as s:
        import_prompt_set(s, "mini", parse_prompts(ROWS, "jsonl"))
        pids = list(s.scalars(select(Prompt.id)))
        snap = lambda sha: get_or_create_contestant(s, name="arce", base="b", template="t", preset="greedy",  # noqa: E731
                                                    params={}, adapter="x", adapter_sha256=sha)
        old, new = snap("1" * 64), snap("2" * 64)

        def answer(c, pid):
            s.add(Answer(prompt_id=pid, contestant_id=c.id, attempt=1, text="t", selected=True, params={},
                         new_tokens=1, latency_s=0.1, ended_on_eos=True, finish_reason="eos"))
            s.flush()

        for pid in pids:
            answer(old, pid)
        for pid in pids[:-1]:
            answer(new, pid)
        assert [c.id for c in resolve_contestants(s, "mini", ["arce"])] == [old.id], "the newer one is incomplete"
        answer(new, pids[-1])
        assert [c.id for c in resolve_contestants(s, "mini", ["arce"])] == [new.id]
        with pytest.raises(EsllmError, match="'boj' no tiene respuestas guardadas"):
            resolve_contestants(s, "mini", ["arce", "boj"])


# ------------------------------------------------------------------------------------------- CLI

def test_cli_import_generate_sessions_create_list_close(tiny, tmp_path, any_store, monkeypatch, cli):
    """`python -m esllm` in-process (the `cli` fixture) on a fresh store, SQLite and PostgreSQL."""
    store = any_store
    from esllm.store import users
    from esllm.store.models import Assignment, RatingSession

    Session = store.Session
    monkeypatch.setenv("ESLLM_DATABASE_URL", store.url)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(tiny("llama").config(contestants=_contestants(), auto_contestants=False)))
    (tmp_path / "malo.jsonl").write_text(BAD_JSONL, encoding="utf-8")
    (tmp_path / "mini.jsonl").write_text(ROWS, encoding="utf-8")

    p = cli("prompts", "import", str(tmp_path / "malo.jsonl"), "--name", "mini")
    assert p.returncode == 2 and "línea 2" in p.stderr and "línea 3" in p.stderr, p.stderr
    p = cli("prompts", "import", str(tmp_path / "mini.jsonl"), "--name", "mini")
    assert p.returncode == 0 and "4 nuevos" in p.stdout, p.stdout + p.stderr
    p = cli("sessions", "create", "piloto", "--set", "mini", "--contestants", *NAMES, "--raters", "ana", "--k", "1")
    assert p.returncode == 2 and "no tiene respuestas guardadas" in p.stderr, p.stderr

    with Session() as s:
        for n in ("ana", "beto", "carla"):
            users.add_user(s, n, PW, "rater")
        users.add_user(s, "admin", PW, "admin")
        s.commit()
    p = cli("generate", "--config", str(cfg), "--set", "mini", "--attempts", "1", "--max-new-tokens", "4")
    assert p.returncode == 0 and "12 generadas" in p.stdout, p.stdout + p.stderr

    p = cli("sessions", "create", "piloto", "--set", "mini", "--contestants", NAMES[0], NAMES[1], "nadie",
            "--raters", "ana", "beto", "carla", "--k", "2")
    assert p.returncode == 2 and "'nadie'" in p.stderr and "generate" in p.stderr, p.stderr
    p = cli("sessions", "create", "piloto", "--set", "mini", "--contestants", *NAMES, "--raters", "admin", "--k", "1")
    assert p.returncode == 2 and "La cuenta 'admin' es de rol «admin», no evaluador" in p.stderr, p.stderr
    p = cli("sessions", "create", "x" * 10_000, "--set", "mini", "--contestants", *NAMES, "--raters", "ana", "--k", "1")
    assert p.returncode == 2 and "el máximo es 100" in p.stderr, p.stderr
    with Session() as s:
        assert s.scalar(select(func.count()).select_from(RatingSession)) == 0
    p = cli("sessions", "create", "piloto", "--set", "mini", "--contestants", *NAMES,
            "--raters", "ana", "beto", "carla", "--k", "2", "--mode", "full", "--seed", "7")
    assert p.returncode == 0 and "creada" in p.stdout, p.stdout + p.stderr
    with Session() as s:
        rs = s.scalars(select(RatingSession)).one()
        assert (rs.name, rs.rubric_mode, rs.overlap_k, rs.status) == ("piloto", "full", 2, "open")
        per = {r: len(s.scalars(select(Assignment).where(Assignment.rater_id == r)).all())
               for r in {a.rater_id for a in s.scalars(select(Assignment))}}
    assert sum(per.values()) == 8, "4 items x k=2"

    p = cli("sessions", "list")
    assert p.returncode == 0, p.stderr
    line = p.stdout.strip()
    assert line.startswith("piloto\tconjunto=mini\tmodo=full\tk=2\tabierta"), line
    got = {part.split()[0]: part.split()[1] for part in line.split("progreso: ")[1].split(" · ")}
    assert set(got) == {"ana", "beto", "carla"}
    assert sorted(int(v.split("/")[1]) for v in got.values()) == sorted(per.values())
    assert all(v.startswith("0/") for v in got.values())

    assert cli("sessions", "close", "piloto").returncode == 0
    assert "\tcerrada\t" in cli("sessions", "list").stdout
    p = cli("sessions", "close", "piloto")
    assert p.returncode == 2 and "ya está cerrada" in p.stderr
