"""«Evaluar» over HTTP with logins: three raters rate concurrently, blindness, refusals, resume.

The app runs with accounts (so Gradio's login guards every call) on a tiny Llama whose three
contestants and adapters have distinctive names; the blindness test collects everything a rater's
client receives and searches it for every contestant name, adapter name and model id.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter

import httpx
import pytest
from sqlalchemy import select

from tests.helpers import EVALUAR, login, open_session, save

PW, CONTESTANTS, ADAPTERS, MODEL_KEY = EVALUAR.password, EVALUAR.contestants, EVALUAR.adapters, EVALUAR.model_key


def client(url, name):
    return login(url, name, PW)


def test_blindness_nothing_a_rater_receives_names_a_contestant(rated_app):
    ctx, url, Session, sid, model_dir = rated_app
    c = client(url, "dora")  # a rater without items in this session, then one with items
    received = []
    for name in ("dora", "carla"):
        c = client(url, name)
        received.append(json.dumps(c.config, ensure_ascii=False))
        cookies = c.cookies
        for path in ("", "config", "gradio_api/info", "gradio_api/startup-events"):
            r = httpx.get(url + path, cookies=cookies, timeout=30)
            received.append(r.text)
        for api, args in (("/evaluar_abrir", (sid,)),
                          ("/conversar", ("Hola", [], CONTESTANTS[0], "greedy", "", 8, 1.0, 0, 1.0, 1, 0.0, 1.0, None)),
                          ("/describir", (CONTESTANTS[1],)), ("/actualizar_adaptadores", (CONTESTANTS[0],)),
                          ("/evaluar_guardar", ("", "7", "1", "1", *[None] * 12))):
            try:
                received.append(json.dumps(c.predict(*args, api_name=api), ensure_ascii=False, default=str))
            except Exception as e:  # the error text reaches the client too
                received.append(str(e))
    blob = "\n".join(received)
    assert "Ítem" in blob or "Terminó" in blob, "the rater did get an item view"
    for secret in CONTESTANTS + ADAPTERS + [MODEL_KEY, str(model_dir)]:
        assert secret not in blob, f"{secret!r} leaked to a rater"


def test_rater_cannot_call_admin_or_chat_actions(rated_app):
    ctx, url, *_ = rated_app
    from gradio_client.exceptions import AppError

    c = client(url, "ana")
    with pytest.raises(AppError, match="permiso"):
        c.predict("Hola", [], CONTESTANTS[0], "greedy", "", 8, 1.0, 0, 1.0, 1, 0.0, 1.0, None, api_name="/conversar")
    with pytest.raises(AppError, match="permiso"):
        c.predict(CONTESTANTS[0], api_name="/actualizar_adaptadores")
    admin = client(url, "admin")
    with pytest.raises(AppError, match="permiso"):
        admin.predict(1, api_name="/evaluar_abrir")  # admins do not rate


def test_unauthenticated_caller_is_refused(rated_app):
    _, url, *_ = rated_app
    from gradio_client import Client

    with pytest.raises(Exception):
        Client(url, verbose=False).predict(1, api_name="/evaluar_abrir")
    assert httpx.post(url + "gradio_api/run/evaluar_abrir", json={"data": [1]}, timeout=30).status_code in (401, 403, 404)
    with pytest.raises(Exception):
        client_bad = __import__("gradio_client").Client(url, auth=("ana", "mala-clave"), verbose=False)
        client_bad.predict(1, api_name="/evaluar_abrir")


@pytest.mark.parametrize("bad", ["0", "6", "5.5", None])
def test_invalid_scores_over_http_write_nothing(rated_app, bad):
    from gradio_client.exceptions import AppError

    from esllm.store.models import Score

    ctx, url, Session, sid, _ = rated_app
    with Session() as s:
        before = len(s.scalars(select(Score)).all())
    c = client(url, "ana")
    open_session(c, sid)
    if bad is None:  # a missing score: said in the message area (the last outputs), nothing else changes
        out = c.predict("", "3", bad, "3", *[None] * 12, api_name="/evaluar_guardar")
        assert "falta calificar la respuesta B" in out[22] and out[24] == "Falta: nota general."
    else:
        with pytest.raises(AppError, match="list of choices|1 a 5"):  # Gradio's radio check, then ours
            c.predict("", "3", bad, "3", *[None] * 12, api_name="/evaluar_guardar")
    with Session() as s:
        assert len(s.scalars(select(Score)).all()) == before


def test_three_raters_concurrently_every_score_once_with_right_contestant(rated_app):
    from esllm.store.models import Answer, Assignment, Prompt, Score

    ctx, url, Session, sid, _ = rated_app
    submitted: dict[str, Counter] = {}
    errors = []

    def work(name: str, seed: int) -> None:
        try:
            rng = random.Random(seed)
            c = client(url, name)
            out = open_session(c, sid)
            mine = Counter()
            # outputs as an API client sees them (server-side state is not sent): progress, context, prompt, …
            while out[2]:  # the prompt markdown is empty when the rater is done
                vals = [str(rng.randint(1, 5)) for _ in range(3)]
                prompt = out[2].split("\n\n", 1)[1]
                for label, v in zip("ABC", vals):
                    mine[(prompt, label, int(v))] += 1
                out = save(c, vals)
                if out[2] and out[2].split("\n\n", 1)[1] == prompt and "Ítem" in out[0]:
                    errors.append(f"{name}: the same item came back after saving")
            submitted[name] = mine
        except Exception as e:  # reported below
            errors.append(f"{name}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=work, args=(n, i)) for i, n in enumerate(("ana", "beto", "carla"))]
    [t.start() for t in threads]
    [t.join(300) for t in threads]
    assert not errors, errors
    with Session() as s:
        rows = s.execute(select(Score, Assignment, Prompt, Answer).join(Assignment, Score.assignment_id == Assignment.id)
                         .join(Prompt, Assignment.prompt_id == Prompt.id).join(Answer, Score.answer_id == Answer.id)
                         .where(Assignment.session_id == sid)).all()
        n_assign = len(s.scalars(select(Assignment).where(Assignment.session_id == sid)).all())
        names = {a.id: a for a in s.scalars(select(Assignment))}
        assert len(rows) == n_assign * 3, "one general score per answer per assignment, no duplicates"
        keys = Counter((sc.assignment_id, sc.answer_id, sc.criterion) for sc, *_ in rows)
        assert set(keys.values()) == {1}
        for sc, a, _p, ans in rows:
            assert ans.contestant_id == a.permutation[sc.label], "the label must hide the right contestant"
            assert a.finished_at is not None and names[a.id].seconds_spent is not None
        from esllm.store.models import User

        by_rater = {}
        for sc, a, p, _ans in rows:
            rater = s.get(User, a.rater_id).name
            by_rater.setdefault(rater, Counter())[(p.text, sc.label, sc.value)] += 1
    # Each (prompt, label, value) the client sent is stored.
    for name, sent in submitted.items():
        assert set(by_rater[name]) == set(sent), name


def test_full_rubric_over_http_stores_aspects_and_clears_the_form_for_the_next_item(rated_app):
    """«full» mode: a save stores general + 4 aspects per answer, and the next item comes with all 15
    radios and the comment empty (after a save the radios get plain values, not gr.update)."""
    from esllm.store.models import Assignment, ContestantSnapshot, Score
    from esllm.study.sessions import create_session

    ctx, url, Session, _, _ = rated_app
    with Session() as s:
        ids = [s.scalars(select(ContestantSnapshot.id).where(ContestantSnapshot.name == n)).one() for n in CONTESTANTS]
        fid = create_session(s, name="estudio-completo", prompt_set="mini", contestant_ids=ids, raters=["dora"],
                             k=1, rubric_mode="full", rng=random.Random(4)).id
        s.commit()
    c = client(url, "dora")
    out = open_session(c, fid)
    assert "Ítem 1 / 4" in out[0]
    gen, asp = ["1", "2", "3"], [str(1 + i % 5) for i in range(12)]
    out = c.predict("muy bien", *gen, *asp, api_name="/evaluar_guardar")
    assert "Ítem 2 / 4" in out[0] and out[3] == ""
    assert all(v is None for v in out[7:22]), out[7:22]
    with Session() as s:
        a = s.scalars(select(Assignment).where(Assignment.session_id == fid, Assignment.order_index == 0)).one()
        rows = s.scalars(select(Score).where(Score.assignment_id == a.id)).all()
    got = {(r.label, r.criterion): r.value for r in rows}
    aspects = ("exactitud", "relevancia", "coherencia", "comprension")
    want = {(lb, "general"): int(gen[i]) for i, lb in enumerate("ABC")}
    want.update({(lb, name): int(asp[i * 4 + j]) for i, lb in enumerate("ABC") for j, name in enumerate(aspects)})
    assert got == want and {r.comment for r in rows} == {"muy bien"}
