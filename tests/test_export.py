"""Exports of a rating session (esllm/study/export.py, esllm/study/results.py): raw scores, tables, answers, DPO/KTO,
CSV injection, atomic writes and the `python -m esllm export` command, over a real SQLite file and a real PostgreSQL
database (the `module_backend` fixture)."""

from __future__ import annotations

import csv
import errno
import itertools
import json
import os
import random
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from statistics import mean

import krippendorff
import numpy as np
import pytest
from sqlalchemy import select, update

from esllm import EsllmError
from esllm.store.models import Answer, Assignment, ChatFeedback, ContestantSnapshot, Prompt, Score, User
from esllm.study import export as ex
from esllm.study import files
from esllm.study.answers import generate_answers
from esllm.study.results import find_session, progress_by_rater, prompt_set_scores_frame, session_scores_frame
from esllm.study.sessions import create_session, criteria, next_item, submit
from esllm.study.stats import PROMEDIO, study_table
from tests.helpers import FakeEngine, new_store, store_at

# Names, prompts, answers and comments that a spreadsheet would run as formulas.
NAMES = ["=uno", "+dos", "@tres"]
ROWS = "\n".join(json.dumps(r, ensure_ascii=False) for r in [
    {"id": "p1", "category": "basicas", "text": "=1+1 ¿cuánto es?"},
    {"id": "c2", "category": "contextual", "series": "s1", "turn": 2, "text": "-¿Y el segundo?"},
    {"id": "c1", "category": "contextual", "series": "s1", "turn": 1, "text": "@Dame dos ideas."},
    {"id": "p2", "category": "basicas", "text": "+¿Qué es el IVA?"},
    {"id": "p3", "category": "complejas", "text": "Explique el RUC."},
])
COMMENTS = {"ana": "=HYPERLINK(\"http://x\")", "beto": "-2+3", "carla": "@SUM(1)"}
BIAS = {"=uno": (4, 5), "+dos": (2, 4), "@tres": (1, 3)}  # each contestant's score range
DANGER = ("=", "+", "-", "@", "\t", "\r")


def formula_engine(names) -> FakeEngine:
    """A FakeEngine whose answers start with = + - @ in turn (each one different)."""
    n = itertools.count(1)

    def reply(name, messages):
        i = next(n)
        return f"{'=+-@'[i % 4]}{name} responde #{i}"

    return FakeEngine(names, reply)


def rate_everything(S, sid: int, seed: int = 11) -> dict:
    """Every rater scores every item; returns {(rater, item, contestant, criterion): value}."""
    rng = random.Random(seed)
    expected = {}
    with S() as s:
        raters = {n: s.scalar(select(User.id).where(User.name == n)) for n in ("ana", "beto", "carla")}
        cname = {c.id: c.name for c in s.scalars(select(ContestantSnapshot))}
        for name, rid in raters.items():
            while (item := next_item(s, sid, rid)) is not None:
                a = s.get(Assignment, item.assignment_id)
                ext = s.get(Prompt, a.prompt_id).external_id
                scores = {}
                for label in "ABC":
                    con = cname[a.permutation[label]]
                    scores[label] = {c: rng.randint(*BIAS[con]) for c in item.criteria}
                    for c, v in scores[label].items():
                        expected[(name, ext, con, c)] = v
                submit(s, rater_id=rid, assignment_id=item.assignment_id, scores=scores, comment=COMMENTS[name],
                       seconds_spent=12.5)
                s.commit()
    return expected


@pytest.fixture(scope="module")
def study_file(module_backend):
    """A rated session in a SQLite file or a PostgreSQL database, built once; each test gets a copy (see `study`)."""
    path = module_backend.new_url(at_head=True)
    store = new_store(path, accounts=dict.fromkeys(("ana", "beto", "carla"), "rater"), prompt_sets={"mini": ROWS})
    S = store.Session
    generate_answers(S, formula_engine(NAMES), "mini", NAMES, attempts=2)
    with S() as s:  # the parser refuses such a category; the export must not trust that
        s.execute(update(Prompt).where(Prompt.external_id == "p3").values(category="=cmd|' /C calc'!A0"))
        ids = [c.id for c in s.scalars(select(ContestantSnapshot).order_by(ContestantSnapshot.id))]
        sid = create_session(s, name="=estudio", prompt_set="mini", contestant_ids=ids,
                             raters=["ana", "beto", "carla"], k=2, rng=random.Random(3)).id
        s.commit()
    expected = rate_everything(S, sid)
    store.dispose()  # the last connection closed: the WAL is folded into the file (PostgreSQL: a template may be copied)
    return path, sid, expected


@pytest.fixture()
def study(study_file, module_backend):
    """(sessionmaker, url, session id, {(rater, item, contestant, criterion): value}) over a fresh copy."""
    src, sid, expected = study_file
    copy = store_at(module_backend.copy(src))
    yield copy.Session, copy.url, sid, expected
    copy.dispose()


def read_csv(path: Path) -> list[dict]:
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # utf-8-sig: Excel reads the accents right
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def unescape(v: str) -> str:
    return v[1:] if v.startswith("'") and v[1:].startswith(DANGER) else v


@pytest.mark.parametrize("value,out", [
    ("=SUM(A1)", "'=SUM(A1)"), ("+1", "'+1"), ("-2", "'-2"), ("@x", "'@x"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("hola", "hola"), ("", ""), ("a=b", "a=b"), (" =x", " =x"), ("'=x", "'=x"), (3, 3), (-2.5, -2.5), (None, None),
])
def test_escape_cell(value, out):
    assert files.escape_cell(value) == out


def test_scores_csv_equals_the_stored_scores(study, tmp_path):
    S, _, sid, expected = study
    with S() as s:
        paths = ex.write_exports(s, sid, tmp_path / "out")
        assert set(paths) == {"puntuaciones.csv", "tabla.csv", "acuerdo.csv", "respuestas.csv", "dpo.jsonl",
                              "kto.jsonl"} | {f"tabla_estudio{v}.{e}" for v in ("", "_ic") for e in ("csv", "md", "tex")}
        db_rows = s.execute(select(User.name, Prompt.external_id, ContestantSnapshot.name, Score.criterion, Score.value,
                                   Score.label, Assignment.permutation, ContestantSnapshot.id)
                            .join(Assignment, Score.assignment_id == Assignment.id)
                            .join(User, Assignment.rater_id == User.id).join(Prompt, Assignment.prompt_id == Prompt.id)
                            .join(Answer, Score.answer_id == Answer.id)
                            .join(ContestantSnapshot, Answer.contestant_id == ContestantSnapshot.id)
                            .where(Assignment.session_id == sid)).all()
    rows = read_csv(paths["puntuaciones.csv"])
    assert list(rows[0]) == ["sesion", "evaluador", "item", "categoria", "categoria_nombre", "serie", "turno",
                             "etiqueta", "concursante", "criterio", "criterio_nombre", "puntuacion", "comentario",
                             "segundos_item", "fecha_utc"]
    # ids in their own column, the names people read beside them
    assert {(r["categoria"], r["categoria_nombre"]) for r in rows if r["categoria"] == "basicas"} == {("basicas", "Básicas")}
    assert {r["criterio_nombre"] for r in rows} == {"General"}
    assert len(rows) == len(db_rows) == len(expected) == 5 * 2 * 3  # items × k × contestants
    pseudo = {"ana": "evaluador-01", "beto": "evaluador-02", "carla": "evaluador-03"}  # by user id
    from_db = {(pseudo[u], item, con, crit, v, label) for u, item, con, crit, v, label, _, _ in db_rows}
    from_csv = {(r["evaluador"], r["item"], unescape(r["concursante"]), r["criterio"], int(r["puntuacion"]),
                 r["etiqueta"]) for r in rows}
    assert from_csv == from_db
    # the contestant behind each shown label is the one the rater's permutation put there
    perm = {(pseudo[u], item): p for u, item, _, _, _, _, p, _ in db_rows}
    cid = {name: i for _, _, name, _, _, _, _, i in db_rows}
    for r in rows:
        assert perm[(r["evaluador"], r["item"])][r["etiqueta"]] == cid[unescape(r["concursante"])]
    assert {(pseudo[k[0]], *k[1:], v) for k, v in expected.items()} == {x[:5] for x in from_csv}
    for r in rows:
        assert r["sesion"] == "'=estudio"
        assert unescape(r["comentario"]) in COMMENTS.values() and "ana" not in r["evaluador"]
        assert float(r["segundos_item"]) == 12.5
        assert datetime.fromisoformat(r["fecha_utc"]).utcoffset().total_seconds() == 0
        assert (r["serie"], r["turno"]) == (("s1", r["item"][1]) if r["item"].startswith("c") else ("", ""))
    # rows come in prompt-set order: standalone items by id, then the series by turn
    assert list(dict.fromkeys(r["item"] for r in rows)) == ["p1", "p2", "p3", "c1", "c2"]


def test_table_csv_equals_a_hand_computation_from_the_scores_csv(study, tmp_path):
    S, _, sid, _ = study
    with S() as s:
        paths = ex.write_exports(s, sid, tmp_path)
    scores = read_csv(paths["puntuaciones.csv"])
    by_item = defaultdict(list)
    for r in scores:
        by_item[(r["categoria"], r["concursante"], r["item"])].append(int(r["puntuacion"]))
    by_cat = defaultdict(list)
    for (cat, con, _), vals in by_item.items():
        by_cat[(cat, con)].append(mean(vals))
    table = {(r["categoria"], r["concursante"]): r for r in read_csv(paths["tabla.csv"])}
    assert {(r["criterio"], r["criterio_nombre"]) for r in table.values()} == {("general", "General")}
    cats = sorted({cat for cat, _ in by_cat})
    assert len(cats) == 3 and "'=cmd|' /C calc'!A0" in cats
    for (cat, con), items in by_cat.items():
        row = table[(cat, con)]
        assert float(row["media"]) == pytest.approx(mean(items), abs=1e-4)
        assert int(row["n"]) == len(items) and int(row["n_puntuaciones"]) == 2 * len(items)
        assert float(row["ic95_inf"]) <= float(row["media"]) <= float(row["ic95_sup"])
    for con in {con for _, con in by_cat}:
        prom = table[(PROMEDIO, con)]
        assert float(prom["media"]) == pytest.approx(mean(mean(by_cat[(c, con)]) for c in cats), abs=1e-4)
        assert int(prom["n"]) == 5
    assert len(table) == 3 * 3 + 3
    # agreement: alpha over (item, contestant) units, same as the krippendorff package on the CSV's data
    (agree,) = read_csv(paths["acuerdo.csv"])
    units = sorted({(r["item"], r["concursante"]) for r in scores})
    raters = sorted({r["evaluador"] for r in scores})
    data = np.full((len(raters), len(units)), np.nan)
    for r in scores:
        data[raters.index(r["evaluador"]), units.index((r["item"], r["concursante"]))] = int(r["puntuacion"])
    ref = krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal")
    assert agree["criterio"] == "general" and agree["criterio_nombre"] == "General"
    assert float(agree["alfa_krippendorff_ordinal"]) == pytest.approx(ref, abs=1e-4)
    assert int(agree["unidades_con_2_o_mas"]) == 15 and int(agree["puntuaciones"]) == 30


def test_every_csv_cell_is_escaped(study, tmp_path):
    S, _, sid, _ = study
    with S() as s:
        paths = ex.write_exports(s, sid, tmp_path)
    seen = defaultdict(set)
    for name, path in paths.items():
        if name.endswith(".csv"):
            with open(path, encoding="utf-8-sig", newline="") as f:
                for row in csv.DictReader(f):
                    for col, v in row.items():
                        assert not v.startswith(DANGER), (name, col, v)
                        seen[col].add(v)
    assert {"'=uno", "'+dos", "'@tres"} <= seen["concursante"]
    assert {"'=1+1 ¿cuánto es?", "'-¿Y el segundo?", "'@Dame dos ideas.", "'+¿Qué es el IVA?"} <= seen["prompt"]
    assert {t[:2] for t in seen["texto"]} == {"'=", "'+", "'-", "'@"}
    assert set(seen["comentario"]) == {"'" + c for c in COMMENTS.values()}
    assert "'=cmd|' /C calc'!A0" in seen["categoria"] and seen["sesion"] == {"'=estudio"}


def test_answers_csv_lists_every_attempt(study, tmp_path):
    S, _, sid, _ = study
    with S() as s:
        paths = ex.write_exports(s, sid, tmp_path)
        scored = set(s.scalars(select(Score.answer_id)))
    rows = read_csv(paths["respuestas.csv"])
    assert len(rows) == 5 * 3 * 2  # items × contestants × attempts
    assert sum(int(r["seleccionada"]) for r in rows) == 15
    assert {int(r["respuesta_id"]) for r in rows if r["calificada"] == "1"} == scored
    for r in rows:
        params = json.loads(r["parametros"])
        assert params["seed"] == int(r["intento"]) and r["motivo_fin"] == "eos" and r["fin_por_eos"] == "1"
        assert int(r["tokens_nuevos"]) == 3 and float(r["latencia_s"]) == 0.1


def test_dpo_pairs_come_from_score_differences(study, tmp_path):
    S, _, sid, expected = study
    item_means = defaultdict(list)
    for (_, item, con, crit), v in expected.items():
        if crit == "general":
            item_means[(item, con)].append(v)
    want = set()
    for (item, a), va in item_means.items():
        for (item_b, b), vb in item_means.items():
            if item_b == item and mean(va) - mean(vb) >= 1.0:
                want.add((item, a, b, round(mean(va), 4), round(mean(vb), 4)))
    assert want  # the biases make some pairs
    with S() as s:
        paths = ex.write_exports(s, sid, tmp_path)
        pairs = [json.loads(x) for x in paths["dpo.jsonl"].read_text(encoding="utf-8").splitlines()]
        got = {(p["item"], p["contestant_chosen"], p["contestant_rejected"], p["score_chosen"], p["score_rejected"])
               for p in pairs}
        assert got == want and len(pairs) == len(want)

        def selected(ext, con):
            return s.scalar(select(Answer.text).join(Prompt, Answer.prompt_id == Prompt.id)
                            .join(ContestantSnapshot, Answer.contestant_id == ContestantSnapshot.id)
                            .where(Prompt.external_id == ext, ContestantSnapshot.name == con, Answer.selected))

        for p in pairs:
            assert p["chosen"] == [{"role": "assistant", "content": selected(p["item"], p["contestant_chosen"])}]
            assert p["rejected"] == [{"role": "assistant", "content": selected(p["item"], p["contestant_rejected"])}]
            assert p["chosen"][0]["content"][0] in "=+-@"  # JSONL is training data: not escaped
            if p["item"] == "c2":  # the earlier turn, with the chosen contestant's own answer
                assert p["prompt"] == [{"role": "user", "content": "@Dame dos ideas."},
                                       {"role": "assistant", "content": selected("c1", p["contestant_chosen"])},
                                       {"role": "user", "content": "-¿Y el segundo?"}]
            else:
                assert p["prompt"] == [{"role": "user", "content": s.scalar(
                    select(Prompt.text).where(Prompt.external_id == p["item"]))}]
        df = session_scores_frame(s, sid)
        assert len(ex.dpo_pairs(s, df, threshold=10)) == 0
        assert len(ex.dpo_pairs(s, df, threshold=0.5)) >= len(pairs)
        with pytest.raises(EsllmError):
            ex.dpo_pairs(s, df, threshold=0)


def test_kto_export_is_written_even_when_empty(study, tmp_path):
    S, _, sid, _ = study
    with S() as s:
        assert ex.write_exports(s, sid, tmp_path / "a")["kto.jsonl"].read_text() == ""
        s.add_all([ChatFeedback(contestant="=uno", prompt="=¿Hola?", answer="Hola.", thumbs="up", params={}),
                   ChatFeedback(contestant="+dos", prompt="¿Qué tal?", answer="-Mal.", thumbs="down", params={})])
        s.commit()
        path = ex.write_exports(s, sid, tmp_path / "b")["kto.jsonl"]
    got = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert got == [{"prompt": "=¿Hola?", "completion": "Hola.", "label": True, "contestant": "=uno"},
                   {"prompt": "¿Qué tal?", "completion": "-Mal.", "label": False, "contestant": "+dos"}]


def test_full_mode_gets_one_block_per_aspect(study, tmp_path):
    S, _, _, _ = study
    with S() as s:
        ids = [c.id for c in s.scalars(select(ContestantSnapshot).order_by(ContestantSnapshot.id))]
        sid = create_session(s, name="completa", prompt_set="mini", contestant_ids=ids, raters=["ana", "beto"],
                             k=1, rubric_mode="full", rng=random.Random(1)).id
        s.commit()
    rate_everything(S, sid, seed=5)
    with S() as s:
        paths = ex.write_exports(s, "completa", tmp_path)
        prog = progress_by_rater(s, sid)  # k = 1: the 5 items split 3/2 (a series stays whole)
        assert [p[:2] for p in prog] == [("evaluador-01", "ana"), ("evaluador-02", "beto")]
        assert sorted(p[3] for p in prog) == [2, 3] and all(p[2] == p[3] for p in prog)
        both = prompt_set_scores_frame(s, "mini")
        assert set(both["session"]) == {"=estudio", "completa"} and len(both) == 30 + 5 * 3 * 5
    table = read_csv(paths["tabla.csv"])
    assert [r["criterio"] for r in table][::12] == list(criteria("full"))
    assert len(table) == 5 * (3 * 3 + 3)
    assert [r["criterio"] for r in read_csv(paths["acuerdo.csv"])] == list(criteria("full"))
    # k = 1: no unit has two ratings, so alpha is undefined (empty cell), not a made-up number
    assert {r["alfa_krippendorff_ordinal"] for r in read_csv(paths["acuerdo.csv"])} == {""}


def test_report_takes_the_session_frame(study):
    S, _, sid, _ = study
    with S() as s:
        df = session_scores_frame(s, sid)
        assert find_session(s, "=estudio").id == find_session(s, sid).id == find_session(s, str(sid)).id
        with pytest.raises(EsllmError, match="No existe la sesión"):
            find_session(s, "otra")
    t = study_table(df, seed=0, n_boot=100)
    assert t.contestants == NAMES and t.categories == ["basicas", "=cmd|' /C calc'!A0", "contextual"]


def test_unwritable_folder_and_full_disk_raise_a_clear_error(study, tmp_path, monkeypatch):
    S, _, sid, _ = study
    blocker = tmp_path / "archivo"
    blocker.write_text("x")
    with S() as s:
        with pytest.raises(EsllmError, match="No se pudo crear la carpeta"):
            ex.write_exports(s, sid, blocker / "sub")
        out = tmp_path / "out"
        ex.write_exports(s, sid, out)
        before = (out / "tabla.csv").read_bytes()

        def full(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(files.os, "fsync", full)
        with pytest.raises(EsllmError, match="espacio en el disco"):
            ex.write_exports(s, sid, out)
    assert (out / "tabla.csv").read_bytes() == before  # the old file is intact
    assert sorted(p.name for p in out.iterdir()) == sorted(["puntuaciones.csv", "tabla.csv", "acuerdo.csv",
                                                            "respuestas.csv", "dpo.jsonl", "kto.jsonl"]
                                                           + [f"tabla_estudio{v}.{e}" for v in ("", "_ic")
                                                              for e in ("csv", "md", "tex")])


def test_cli_export(study, tmp_path, cli):
    S, url, sid, _ = study
    out = tmp_path / "cli"
    done = cli("export", "=estudio", "--out", out, db_url=url)
    assert done.returncode == 0, done.stderr
    assert str(out / "puntuaciones.csv") in done.stdout and str(out / "kto.jsonl") in done.stdout
    assert len(read_csv(out / "puntuaciones.csv")) == 30
    missing = cli("export", "no-existe", "--out", tmp_path / "x")
    assert missing.returncode == 2
    assert "No existe la sesión 'no-existe'" in missing.stderr and not (tmp_path / "x").exists()
    assert cli("export", sid, "--out", tmp_path / "y", "--dpo-threshold", "100").returncode == 0
    assert (tmp_path / "y" / "dpo.jsonl").read_text() == ""
