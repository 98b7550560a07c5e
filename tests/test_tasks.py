"""Task evaluations: reading-comprehension question checks, pictograms → sentence with
BLEU/chrF equal to sacrebleu's own numbers, eval_run rows, the CLI commands, and the admin-only UI
handlers over HTTP with accounts (a rater and an anonymous caller are refused).

    .venv/bin/python -m pytest tests/test_tasks.py
"""

from __future__ import annotations

import argparse
import re
from types import SimpleNamespace

import httpx
import pytest
import sacrebleu
from sqlalchemy import select

from esllm import EsllmError
from esllm.cli.evals import register
from esllm.evals import pictos, question_checks, questions
from esllm.evals.base import run_contestants
from esllm.evals.question_checks import EXAMPLE_TEXT, check_questions, parse_questions
from esllm.evals.questions import check_request
from esllm.paths import PICTOS_DIR, file_sha256
from esllm.store.models import EvalRun
from tests.helpers import FakeEngine, serve

CLEAN = """1. [abierta] ¿Con quién fue Lucía al lago?
2. [abierta] ¿Qué llevaron para los patos?
3. [abierta] Según el texto, ¿qué pedía el cartel?
4. [V/F] Lucía y su abuelo fueron al lago en autobús.
5. [V/F] Volvieron a casa antes de que empezara a llover."""


def clean(name, messages):
    """A FakeEngine reply (tests.helpers): the clean questions, whoever is asked."""
    return CLEAN


@pytest.fixture()
def Session(store, monkeypatch):
    monkeypatch.setenv("ESLLM_DATABASE_URL", store.url)
    return store.Session


# ---------------------------------------------------------------- questions: parsing and checks

def test_clean_output_has_no_violation():
    qs = parse_questions(CLEAN)
    assert [q.kind for q in qs] == ["abierta"] * 3 + ["vf"] * 2
    assert check_questions(qs, 3, 2, text=EXAMPLE_TEXT) == []
    assert check_questions(parse_questions(question_checks.EXAMPLE_OUTPUT), 2, 2, text=EXAMPLE_TEXT) == []


@pytest.mark.parametrize("line, kind, text", [
    ("1. [abierta] ¿Dónde vive Ana?", "abierta", "¿Dónde vive Ana?"),
    ("2) (Abierta) ¿Dónde vive Ana?", "abierta", "¿Dónde vive Ana?"),
    ("3.- [respuesta corta] ¿Dónde vive Ana?", "abierta", "¿Dónde vive Ana?"),
    ("(4) [ABIERTA]: ¿Dónde vive Ana?", "abierta", "¿Dónde vive Ana?"),
    ("- **5.** [abierta] **¿Dónde vive Ana?**", "abierta", "¿Dónde vive Ana?"),
    ("• Pregunta 6: [abierta] ¿Dónde vive Ana?", "abierta", "¿Dónde vive Ana?"),
    ("Abierta: ¿Dónde vive Ana?", "abierta", "¿Dónde vive Ana?"),
    ("7. [V/F] Ana vive en Quito.", "vf", "Ana vive en Quito."),
    ("* [VF] Ana vive en Quito.", "vf", "Ana vive en Quito."),
    ("8) [V o F] Ana vive en Quito.", "vf", "Ana vive en Quito."),
    ("9. (verdadero/falso) Ana vive en Quito.", "vf", "Ana vive en Quito."),
    ("10. Verdadero o falso: Ana vive en Quito.", "vf", "Ana vive en Quito."),
    ("1. ¿Dónde vive Ana?", "otra", "1. ¿Dónde vive Ana?"),
    ("Preguntas:", "otra", "Preguntas:"),
])
def test_parsing_variants(line, kind, text):
    (q,) = parse_questions("\n\n" + line + "\n---\n")
    assert (q.kind, q.text, q.line, q.raw) == (kind, text, 3, line)


def kinds_at(output: str, n: int, m: int, **kw) -> set[tuple[str, object]]:
    return {(v.kind, v.line) for v in check_questions(parse_questions(output), n, m, text=EXAMPLE_TEXT, **kw)}


@pytest.mark.parametrize("bad_line, kind", [
    ("[abierta] ¿Con quién fue Lucía? Respuesta: con su abuelo", "respuesta"),
    ("[abierta] ¿Con quién fue Lucía? Con su abuelo.", "respuesta"),
    ("[abierta] ¿Con quién fue Lucía al lago? R: con su abuelo", "respuesta"),
    ("[V/F] Lucía fue al lago en bicicleta. (Verdadero)", "respuesta"),
    ("[V/F] Lucía fue al lago en bicicleta — Falso", "respuesta"),
    ("[V/F] Lucía fue al lago en bicicleta: V", "respuesta"),
    ("[V/F] Falso: Lucía fue al lago en autobús.", "respuesta"),
    ("[V/F] (Falso) Lucía fue al lago en autobús.", "respuesta"),
    ("Verdadero", "respuesta"),
    ("Solución: el cartel pedía no dar de comer a los patos", "respuesta"),
    ("[abierta] Con quién fue Lucía al lago", "mal_formada"),
    ("[abierta] Con quién fue Lucía al lago?", "mal_formada"),
    ("[abierta] ¿Con quién fue Lucía al lago", "mal_formada"),
    ("[abierta] ¿Quién?", "mal_formada"),
    ("[abierta]", "mal_formada"),
    ("[V/F] ¿Lucía fue al lago en bicicleta?", "mal_formada"),
    ("[V/F] Lucía nadó.", "mal_formada"),
    ("¿Qué hizo Lucía en el lago?", "ilegible"),
    ("Aquí tienes las preguntas que pediste", "ilegible"),
    ("Llevaron pan para los patos, pero un cartel pedía no darles de comer.", "ilegible"),
    ("[abierta] ¿Con quién fue Lucía al lago?", "duplicada"),
    ("[abierta] ¿con quien fue Lucia al lago ?", "duplicada"),
    ("[V/F] Lucía y su abuelo fueron al lago en autobús", "duplicada"),
])
def test_each_violation_kind_is_caught_on_its_line(bad_line, kind):
    lines = CLEAN.splitlines()
    got = kinds_at("\n".join(lines + [bad_line]), 3, 2)
    assert (kind, 6) in got, got
    assert all(line == 6 or k == "cantidad" for k, line in got), got  # the clean lines stay clean


MARTA = ("Marta vive en Cuenca con su madre y su hermano pequeño. Cada mañana toma el autobús de las siete para ir "
         "al colegio. Los jueves tiene clase de música y toca la flauta.")


def test_questions_about_the_worked_example_are_caught():
    # gemma-3-270m's real output on MARTA (lines 1-2); lines 3-4 are about MARTA and stay clean
    out = ("1. [abierta] ¿Comerieron los patos en el lago?\n"
           "2. [V/F] Marta y su abuelo fueron al lago en autobús.\n"
           "3. [abierta] ¿Qué instrumento toca Marta?\n"
           "4. [V/F] Marta va al colegio en bicicleta.")
    vs = check_questions(parse_questions(out), 2, 2, text=MARTA)
    assert [(v.kind, v.line) for v in vs] == [("ejemplo", 1), ("ejemplo", 2)]
    assert "abuelo, lago" in vs[1].message
    # the same questions about the example text itself are fine
    assert check_questions(parse_questions(out.replace("Marta", "Lucía")), 2, 2, text=EXAMPLE_TEXT) == []


def test_copied_text_line_says_so():
    out = CLEAN + "\nLlevaron pan para los patos, pero un cartel pedía no darles de comer."
    (v,) = check_questions(parse_questions(out), 3, 2, text=EXAMPLE_TEXT)
    assert v.kind == "ilegible" and "copia el texto" in v.message


def test_counts_per_kind():
    vs = check_questions(parse_questions(CLEAN), 2, 4, text=EXAMPLE_TEXT)
    assert [(v.kind, v.line) for v in vs] == [("cantidad", None), ("cantidad", None)]
    assert "Se pidieron 2 preguntas abiertas y hay 3" in vs[0].message
    assert "Se pidieron 4 afirmaciones de verdadero o falso y hay 2" in vs[1].message
    assert [v.kind for v in check_questions([], 1, 0, text=EXAMPLE_TEXT)] == ["cantidad"]


def test_similarity_threshold():
    out = "1. [abierta] ¿Con quién fue Lucía al lago?\n2. [abierta] ¿Con quién fue Lucía al parque?"
    assert question_checks.similarity_ratio("¿Con quién fue Lucía al lago?", "¿Con quién fue Lucía al parque?") \
        == pytest.approx(0.85, abs=0.01)
    assert ("duplicada", 2) in kinds_at(out, 2, 0)
    assert ("duplicada", 2) not in kinds_at(out, 2, 0, similarity=0.9)


@pytest.mark.parametrize("text, n, m, match", [
    ("", 3, 2, "vacío"),
    ("   \n ", 3, 2, "vacío"),
    (None, 3, 2, "vacío"),
    ("x" * (questions.MAX_TEXT_CHARS + 1), 3, 2, "demasiado largo"),
    ("Hola.", 3, 2, "demasiado corto"),
    (EXAMPLE_TEXT, 11, 2, "entre 0 y 10"),
    (EXAMPLE_TEXT, -1, 2, "entre 0 y 10"),
    (EXAMPLE_TEXT, 2, 2.5, "entre 0 y 10"),
    (EXAMPLE_TEXT, "3", 2, "entre 0 y 10"),
    (EXAMPLE_TEXT, 0, 0, "al menos una"),
])
def test_request_checks(text, n, m, match):
    with pytest.raises(EsllmError, match=match):
        check_request(text, n, m)


def test_generate_questions_prompt_and_result():
    eng = FakeEngine(reply=clean)
    qs, vs, raw = questions.generate_questions(eng, "modelo-a", EXAMPLE_TEXT, 3, 2)
    assert raw == CLEAN and vs == [] and len(qs) == 5
    (name, msgs, preset, ov), = eng.calls
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert "3 preguntas abiertas" in msgs[-1]["content"] and "2 afirmaciones" in msgs[-1]["content"]
    assert EXAMPLE_TEXT in msgs[-1]["content"] and preset is None and ov["max_new_tokens"] == 48 * 5 + 32
    with pytest.raises(EsllmError, match="vacío"):
        questions.generate_questions(eng, "modelo-a", "", 3, 2)
    assert len(eng.calls) == 1


def test_questions_run_is_stored_with_hashes(Session):
    eng = FakeEngine(reply=lambda n, m: CLEAN + "\nRespuesta: con su abuelo")
    [stored] = run_contestants(questions.Questions(EXAMPLE_TEXT, 3, 2), Session, eng, ["modelo-b"])
    r = questions.questions_result(stored)
    assert len(r.questions) == 5 and len(r.violations) == 1
    with Session() as s:
        run = s.get(EvalRun, r.run_id)
        assert (run.kind, run.contestant, run.status) == ("questions", "modelo-b", "done")
        assert run.hashes == eng.hashes("modelo-b")
        assert run.config["text_chars"] == len(EXAMPLE_TEXT) and len(run.config["text_sha256"]) == 64
        assert (run.config["n_open"], run.config["n_tf"], run.config["similarity"]) == (3, 2, 0.8)
        assert run.config["prompt_version"] == questions.PROMPT_VERSION
        assert run.metrics["violations"] == 1 and run.metrics["violations_by_kind"]["respuesta"] == 1
        assert (run.metrics["n_open"], run.metrics["n_tf"]) == (3, 2)
        recs = [d["record"] for d in run.details]
        assert recs.count("question") == 5 and recs.count("violation") == 1 and recs[-1] == "output"
        assert run.finished_at is not None


def test_failed_generation_leaves_a_failed_run(Session):
    def boom(name, msgs):
        raise EsllmError("La generación falló: prueba")

    ev = questions.Questions(EXAMPLE_TEXT, 1, 1)
    with Session() as s, pytest.raises(EsllmError, match="prueba"):
        ev.run_one(s, FakeEngine(reply=boom), "modelo-a", ev.load())
    with Session() as s:
        run = s.scalars(select(EvalRun)).one()
        assert run.status == "failed" and "prueba" in run.error


# ---------------------------------------------------------------- pictograms

def test_bundled_sample_loads():
    items = pictos.load_pictos(pictos.SAMPLE)
    assert len(items) >= 40 and len({i.id for i in items}) == len(items)
    assert {i.id.split("-")[0] for i in items} >= {"comida", "escuela", "sentir", "salud", "juego", "familia",
                                                   "transporte"}
    assert all(i.keywords and i.reference.endswith((".", "?", "!")) for i in items)
    assert pictos.SAMPLE.name in [p.name for p in pictos.list_files()]
    assert (PICTOS_DIR / "LEEME.md").is_file()


def test_malformed_rows_are_rejected_with_line_numbers(tmp_path):
    rows = [
        '{"id": "a", "keywords": ["yo", "comer"], "reference": "Yo como."}',
        '{"id": "b", "keywords": [], "reference": "Nada."}',
        "",
        '{"id": "c", "keywords": ["yo"]}',
        "esto no es JSON",
        '{"id": "a", "keywords": ["yo"], "reference": "Otra vez a."}',
        '{"id": "d", "keywords": ["yo", 3], "reference": "Número."}',
        '{"id": "e", "keywords": ["yo"], "reference": "Extra.", "nota": "x"}',
        '["lista"]',
    ]
    f = tmp_path / "malo.jsonl"
    f.write_text("\n".join(rows), encoding="utf-8")
    with pytest.raises(EsllmError) as e:
        pictos.load_pictos(f)
    msg = str(e.value)
    assert "7 fila(s) no válida(s)" in msg
    for n, what in ((2, "keywords"), (4, "faltan campos: reference"), (5, "JSON inválido"), (6, "repetido"),
                    (7, "keywords"), (8, "campos desconocidos: nota"), (9, "objeto JSON")):
        assert re.search(rf"^línea {n}: .*{re.escape(what)}", msg, re.M), (n, msg)
    assert "línea 1:" not in msg and "línea 3:" not in msg
    with pytest.raises(EsllmError, match="ningún ítem"):
        pictos.parse_pictos("\n\n")


@pytest.mark.parametrize("output, sentence", [
    ("Quiero comer una manzana.", "Quiero comer una manzana."),
    ("  Quiero comer una manzana. Y después pan.\nOtra", "Quiero comer una manzana."),
    ("\n\n- Oración: «Tengo hambre»\nmás", "Tengo hambre"),
    ("¿Juegas conmigo? Sí.", "¿Juegas conmigo?"),
    ("Son las 3.30 de la tarde", "Son las 3.30 de la tarde"),
    ("", ""),
])
def test_first_sentence(output, sentence):
    assert pictos.first_sentence(output) == sentence


def drop_one_word(sentence: str) -> str:
    words = sentence.split()
    return " ".join(words[:1] + words[2:]) if len(words) > 2 else words[0]


def test_bleu_and_chrf_equal_sacrebleu_on_the_sample(Session):
    items = pictos.load_pictos(pictos.SAMPLE)
    hyp_of = {", ".join(i.keywords): drop_one_word(i.reference) for i in items}
    eng = FakeEngine(reply=lambda name, msgs: hyp_of[msgs[-1]["content"].removeprefix("Pictogramas: ")]
                     + "\nY luego otra oración que no cuenta.")
    seen = []
    [r] = run_contestants(pictos.Pictos(pictos.SAMPLE), Session, eng, ["modelo-a"], items,
                          lambda d, t, m: seen.append((d, t)))
    hyps, refs = [drop_one_word(i.reference) for i in items], [i.reference for i in items]
    assert [d["hypothesis"] for d in r.details] == hyps
    bleu, chrf = r.metrics["bleu"], r.metrics["chrf"]
    assert bleu == sacrebleu.corpus_bleu(hyps, [refs]).score
    assert chrf == sacrebleu.corpus_chrf(hyps, [refs]).score
    assert 10 < bleu < 90 and 30 < chrf < 99  # one word dropped: far from 0 and from 100
    assert seen[-1] == (len(items), len(items))
    assert pictos.score(refs, refs)["bleu"] == pytest.approx(100.0)
    with Session() as s:
        run = s.get(EvalRun, r.id)
        assert (run.kind, run.status, run.contestant) == ("pictos", "done", "modelo-a")
        assert run.metrics == {"bleu": bleu, "chrf": chrf, "n": len(items)}
        assert run.config["file"] == "data/pictos/muestra-es.jsonl"
        assert run.config["file_sha256"] == file_sha256(pictos.SAMPLE)
        assert run.config["sacrebleu_version"] == sacrebleu.__version__
        assert "tok:13a" in run.config["bleu_signature"] and "nc:6" in run.config["chrf_signature"]
        assert run.hashes["base_sha256"] == "b" * 64
        assert run.details[0] == {"id": items[0].id, "keywords": list(items[0].keywords), "hypothesis": hyps[0],
                                  "reference": refs[0], "output": eng.reply("x", [{"content": "Pictogramas: "
                                                                                   + ", ".join(items[0].keywords)}])}
        assert pictos.latest_table(s)[0][:5] == ["modelo-a", "data/pictos/muestra-es.jsonl", round(bleu, 2),
                                                 round(chrf, 2), len(items)]


def test_resolve_file_stays_under_data_pictos():
    assert pictos.resolve_file("muestra-es.jsonl") == pictos.SAMPLE.resolve()
    assert pictos.resolve_file("data/pictos/muestra-es.jsonl") == pictos.SAMPLE.resolve()
    for bad in ("../prompts/general.jsonl", "data/prompts/general.jsonl", "/etc/passwd", "LEEME.md",
                "no-existe.jsonl", "", str(PICTOS_DIR / ".." / "prompts" / "general.jsonl")):
        with pytest.raises(EsllmError):
            pictos.resolve_file(bad)


# ---------------------------------------------------------------- CLI

def parse(argv):
    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="cmd", required=True))
    return p.parse_args(argv)


def test_cli_questions(Session, monkeypatch, capsys, tmp_path):
    from esllm.cli import evals as cli
    from esllm.cli import main

    eng = FakeEngine(reply=lambda n, m: CLEAN.replace("4. [V/F] Lucía y su", "4. [V/F] (Falso) Lucía y su"))
    monkeypatch.setattr(cli, "start_engine", lambda config: eng)
    f = tmp_path / "texto.txt"
    f.write_text(EXAMPLE_TEXT, encoding="utf-8")
    args = parse(["questions", "--text-file", str(f), "--n", "3", "--m", "2", "--contestant", "modelo-b"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "¿Con quién fue Lucía al lago?" in out and "Problemas: 1" in out and "respuesta incluida" in out
    with Session() as s:
        run = s.scalars(select(EvalRun)).one()
        assert (run.kind, run.contestant, run.metrics["violations"]) == ("questions", "modelo-b", 1)
    monkeypatch.setattr(cli, "start_engine", lambda config: pytest.fail("no model for a bad request"))
    args = parse(["questions", "--text", EXAMPLE_TEXT, "--n", "11"])
    with pytest.raises(EsllmError, match="entre 0 y 10"):
        args.func(args)
    assert main(["questions", "--text", EXAMPLE_TEXT, "--n", "11"]) == 2
    assert "entre 0 y 10" in capsys.readouterr().err


def test_cli_pictos_on_a_tiny_model(Session, tiny, tmp_path, monkeypatch, capsys):
    import yaml

    t = tiny("llama")
    cfg = t.config(limits={"max_prompt_tokens": 900, "max_prompt_chars": 4000, "max_new_tokens": 8})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    args = parse(["pictos", "--config", str(tmp_path / "c.yaml"), "--limit", "2", "--contestants",
                  "llama-base", "llama-a1", "--max-new-tokens", "8"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    rows = [ln.split() for ln in out.splitlines() if ln.startswith("llama-")]
    assert [r[0] for r in rows] == ["llama-base", "llama-a1"] and all(r[3] == "2" for r in rows)
    assert "version:2.6.0" in out
    with Session() as s:
        runs = s.scalars(select(EvalRun).order_by(EvalRun.id)).all()
        assert [(r.kind, r.contestant, r.status, r.metrics["n"]) for r in runs] == [
            ("pictos", "llama-base", "done", 2), ("pictos", "llama-a1", "done", 2)]
        assert runs[1].hashes["adapter"] == "a1" and len(runs[1].hashes["adapter_sha256"]) == 64
        assert runs[0].config["params"]["max_new_tokens"] == 8
        for r in runs:  # the stored numbers are sacrebleu's on the stored sentences
            hyps, refs = [d["hypothesis"] for d in r.details], [d["reference"] for d in r.details]
            assert r.metrics["bleu"] == sacrebleu.corpus_bleu(hyps, [refs]).score
    bad = tmp_path / "malo.jsonl"
    bad.write_text('{"id": "a"}\n', encoding="utf-8")
    args = parse(["pictos", "--file", str(bad)])
    with pytest.raises(EsllmError, match="línea 1: faltan campos: keywords, reference"):
        args.func(args)
    from esllm.cli import main

    assert main(["pictos", "--file", str(bad)]) == 2
    assert "línea 1: faltan campos: keywords, reference" in capsys.readouterr().err


# ---------------------------------------------------------------- UI over HTTP, with accounts

PW = "contraseña-de-prueba"


@pytest.fixture()
def tareas_app(Session):
    import gradio as gr

    from esllm.store import users
    from esllm.ui.context import AppContext
    from esllm.ui.resultados_tareas import build_tareas

    with Session() as s:
        users.add_user(s, "jefa", PW, "admin")
        users.add_user(s, "ana", PW, "rater")
        s.commit()
    hyp = {", ".join(i.keywords): i.reference for i in pictos.load_pictos(pictos.SAMPLE)}

    def reply(name, msgs):
        last = msgs[-1]["content"]
        return hyp[last.removeprefix("Pictogramas: ")] if last.startswith("Pictogramas: ") else CLEAN

    ctx = AppContext(config=None, engine=FakeEngine(reply=reply), sessionmaker=Session, local_mode=False)
    with gr.Blocks() as demo:
        load_fn, outputs = build_tareas(ctx)
        demo.load(load_fn, None, outputs, api_name=False)
    demo.queue()
    yield serve(demo, ctx), Session
    demo.close()


def test_ui_admin_runs_rater_and_anonymous_are_refused(tareas_app):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    url, Session = tareas_app
    admin = Client(url, auth=("jefa", PW), verbose=False)
    qs_md, problems_md = admin.predict(EXAMPLE_TEXT, 3, 2, "modelo-a", api_name="/preguntas_generar")
    assert "¿Con quién fue Lucía al lago?" in qs_md and "Problemas: 0" in problems_md
    summary, table = admin.predict("muestra-es.jsonl", ["modelo-a", "modelo-b"], 3, api_name="/pictos_evaluar")
    assert "3 ítems × 2 concursante(s)" in summary and "BLEU 100.00" in summary
    assert sorted(r[0] for r in table["data"]) == ["modelo-a", "modelo-b"]
    assert admin.predict(api_name="/pictos_tabla")["data"] == table["data"]
    for bad_file in ("../prompts/general.jsonl", "/etc/passwd"):
        with pytest.raises(AppError, match="Archivo no válido"):
            admin.predict(bad_file, ["modelo-a"], 1, api_name="/pictos_evaluar")
    with pytest.raises(AppError, match="concursante disponible"):
        admin.predict(EXAMPLE_TEXT, 1, 1, "otro", api_name="/preguntas_generar")
    with pytest.raises(AppError, match="maximum value 10|entre 0 y 10"):
        admin.predict(EXAMPLE_TEXT, 12, 1, "modelo-a", api_name="/preguntas_generar")
    with pytest.raises(AppError, match="al menos una"):
        admin.predict(EXAMPLE_TEXT, 0, 0, "modelo-a", api_name="/preguntas_generar")
    with pytest.raises(AppError, match="vacío"):
        admin.predict("", 1, 1, "modelo-a", api_name="/preguntas_generar")
    with Session() as s:
        before = s.scalars(select(EvalRun)).all()
    assert [r.kind for r in before] == ["questions", "pictos", "pictos"]

    rater = Client(url, auth=("ana", PW), verbose=False)
    for api, args in (("/preguntas_generar", (EXAMPLE_TEXT, 1, 1, "modelo-a")),
                      ("/pictos_evaluar", ("muestra-es.jsonl", ["modelo-a"], 1)), ("/pictos_tabla", ())):
        with pytest.raises(AppError, match="permiso"):
            rater.predict(*args, api_name=api)
    for api, data in (("preguntas_generar", [EXAMPLE_TEXT, 1, 1, "modelo-a"]), ("pictos_tabla", [])):
        r = httpx.post(f"{url}gradio_api/call/{api}", json={"data": data}, timeout=30)
        assert r.status_code in (401, 403)
    with Session() as s:
        assert len(s.scalars(select(EvalRun)).all()) == len(before)


def test_handlers_refuse_before_doing_anything(Session):
    import gradio as gr

    from esllm.ui import resultados_tareas
    from esllm.ui.context import AppContext

    eng = FakeEngine()
    ctx = AppContext(config=None, engine=eng, sessionmaker=Session, local_mode=False)
    for request, match in ((SimpleNamespace(username=None), "Inicie sesión"), (None, "Inicie sesión"),
                           (SimpleNamespace(username="nadie"), "Inicie sesión")):
        with pytest.raises(gr.Error, match=match):
            resultados_tareas.preguntas_generar(ctx, EXAMPLE_TEXT, 1, 1, "modelo-a", request)
        with pytest.raises(gr.Error, match=match):
            resultados_tareas.pictos_evaluar(ctx, "muestra-es.jsonl", ["modelo-a"], 1, request)
        with pytest.raises(gr.Error, match=match):
            resultados_tareas.pictos_tabla(ctx, request)
    assert eng.calls == []
    with Session() as s:
        assert s.scalars(select(EvalRun)).all() == []
