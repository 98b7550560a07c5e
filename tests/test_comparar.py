"""«Comparar» and the chat's 👍/👎: the services (random A/B/C order, one vote per comparison, reveal only
after the vote is stored, feedback rows) and the real app over HTTP with logins on a tiny Llama.

The app's contestants, adapters and model key have distinctive names; the blindness test reads the raw
server-sent events of the compare endpoint (not only what gradio_client keeps) and the page config, and
searches them for every one of those names.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections import Counter

import httpx
import pytest
from sqlalchemy import func, select

from esllm import EsllmError
from esllm.store.models import LABELS
from esllm.study.arena import Comparisons, check_prompt, choose_contestants, draw_order
from tests import tiny as tm
from tests.helpers import disguised_config, login, new_store, running_app, wait_until

PW = "contraseña-segura"
CONTESTANTS = ["concursante-ornitorrinco", "concursante-pangolin", "concursante-quetzal", "concursante-rorcual"]
ADAPTERS = ["adaptador-furtivo-uno", "adaptador-furtivo-dos"]
MODEL_KEY = "modelo-furtivo"
SECRETS = CONTESTANTS + ADAPTERS + [MODEL_KEY]
CHAT_ARGS = ("", "greedy", "", 8, 1.0, 0, 1.0, 1, 0.0, 1.0, None)  # /conversar after message, history, contestant


# ----------------------------------------------------------------------------- services
@pytest.fixture(scope="module")
def Session(tmp_path_factory):
    store = new_store(tmp_path_factory.mktemp("comparar-db") / "c.sqlite3", accounts={"admin": "admin"}, password=PW)
    yield store.Session
    store.dispose()


def votes(Session, session_hash=None) -> list:
    from esllm.store.models import Vote

    with Session() as s:
        q = select(Vote) if session_hash is None else select(Vote).where(Vote.session_hash == session_hash)
        return list(s.scalars(q.order_by(Vote.id)))


def open_comparison(book, names=("m1", "m2", "m3"), session_hash=None, seed=0, ready=True):
    session_hash = session_hash or uuid.uuid4().hex
    cmp = book.start(prompt="¿Qué es el IVA?", available=list(names), requested=[], rng=random.Random(seed),
                     session_hash=session_hash, user_id=None, max_prompt_chars=100)
    if ready:
        book.mark_ready(cmp.token)
    return cmp


def test_order_is_a_uniform_random_permutation():
    names = ["m1", "m2", "m3"]
    rng = random.Random(7)
    draws = [draw_order(names, rng) for _ in range(600)]
    assert all(sorted(d) == names for d in draws)
    orders = Counter(draws)
    assert len(orders) == 6 and min(orders.values()) > 60  # each of the 3! orders near 100 times
    for i, label in enumerate(LABELS):
        seen = Counter(d[i] for d in draws)
        assert set(seen) == set(names) and min(seen.values()) > 150, (label, seen)


def test_start_checks_prompt_and_contestants():
    assert choose_contestants(["a", "b", "c", "d"], []) == ["a", "b", "c"]
    assert choose_contestants(["a", "b", "c", "d"], ["d", "a", "c"]) == ["d", "a", "c"]
    for bad, msg in ((["a", "b"], "tres"), (["a", "a", "b"], "distintos"), (["a", "b", "x"], "no disponible: x"),
                     (["a", "b", "c", "d"], "tres"), ("abc", "nombre")):
        with pytest.raises(EsllmError, match=msg):
            choose_contestants(["a", "b", "c", "d"], bad)
    with pytest.raises(EsllmError, match="hay 2"):
        choose_contestants(["a", "b"], None)
    for bad in ("", "   ", None, 5):
        with pytest.raises(EsllmError, match="vacío"):
            check_prompt(bad, 10)
    with pytest.raises(EsllmError, match="11 caracteres .máximo 10"):
        check_prompt("x" * 11, 10)


def test_vote_stores_shown_order_and_choice_then_reveals(Session):
    book = Comparisons()
    cmp = open_comparison(book, ready=False)
    with Session() as s, pytest.raises(EsllmError, match="tres respuestas"):
        book.vote(s, cmp.token, "B", session_hash=cmp.session_hash, user_id=None)  # answers not all there yet
    book.mark_ready(cmp.token)
    with Session() as s:
        reveal = book.vote(s, cmp.token, "B", session_hash=cmp.session_hash, user_id=1)
    assert reveal == dict(zip(LABELS, cmp.shown))
    [row] = votes(Session, cmp.session_hash)
    assert row.shown == list(cmp.shown) and row.choice == "B" and row.user_id == 1
    assert row.prompt == "¿Qué es el IVA?" and row.created_at.tzinfo is not None


def test_second_vote_is_refused_and_leaves_one_row(Session):
    book = Comparisons()
    cmp = open_comparison(book)
    with Session() as s:
        book.vote(s, cmp.token, "tie", session_hash=cmp.session_hash, user_id=None)
    for choice in ("tie", "A", "all_bad"):
        with Session() as s, pytest.raises(EsllmError, match="ninguna comparación pendiente"):
            book.vote(s, cmp.token, choice, session_hash=cmp.session_hash, user_id=None)
    assert [v.choice for v in votes(Session, cmp.session_hash)] == ["tie"]


def test_concurrent_votes_on_one_comparison_store_one_row(Session):
    book = Comparisons()
    cmp = open_comparison(book)
    ok, refused = [], []
    barrier = threading.Barrier(8)

    def vote(choice):
        barrier.wait()
        try:
            with Session() as s:
                ok.append(book.vote(s, cmp.token, choice, session_hash=cmp.session_hash, user_id=None))
        except EsllmError:
            refused.append(choice)

    threads = [threading.Thread(target=vote, args=(c,)) for c in ("A", "B", "C", "tie") * 2]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    assert len(ok) == 1 and len(refused) == 7
    assert len(votes(Session, cmp.session_hash)) == 1


def test_vote_from_another_browser_session_or_unknown_token_is_refused(Session):
    book = Comparisons()
    cmp = open_comparison(book)
    for token, session_hash in ((cmp.token, "otra-sesion"), ("inventado", cmp.session_hash), (None, cmp.session_hash)):
        with Session() as s, pytest.raises(EsllmError, match="ninguna comparación pendiente"):
            book.vote(s, token, "A", session_hash=session_hash, user_id=None)
    assert votes(Session, cmp.session_hash) == [] and votes(Session, "otra-sesion") == []
    with Session() as s:  # still votable by its own session
        assert book.vote(s, cmp.token, "A", session_hash=cmp.session_hash, user_id=None)


@pytest.mark.parametrize("bad", ["D", "", None, "a", "empate", 1])
def test_invalid_choice_is_refused_and_writes_nothing(Session, bad):
    book = Comparisons()
    cmp = open_comparison(book)
    with Session() as s, pytest.raises(EsllmError, match="Voto no válido"):
        book.vote(s, cmp.token, bad, session_hash=cmp.session_hash, user_id=None)
    assert votes(Session, cmp.session_hash) == []
    assert book.is_open(cmp.token)


def test_no_reveal_when_the_vote_cannot_be_stored(Session):
    """The reveal comes only after the row is committed: a failed write reveals nothing and keeps it votable."""
    from sqlalchemy.exc import IntegrityError

    book = Comparisons()
    cmp = open_comparison(book)
    with Session() as s, pytest.raises(IntegrityError):
        book.vote(s, cmp.token, "A", session_hash=cmp.session_hash, user_id=999_999)  # no such user: FK refuses
    assert votes(Session, cmp.session_hash) == [] and book.is_open(cmp.token)
    with Session() as s:
        assert book.vote(s, cmp.token, "A", session_hash=cmp.session_hash, user_id=None) == cmp.reveal()


def test_a_new_prompt_replaces_the_open_comparison_of_that_browser_session():
    book = Comparisons(max_open=3)
    first = open_comparison(book, session_hash="s1")
    second = open_comparison(book, session_hash="s1")
    assert not book.is_open(first.token) and book.is_open(second.token)
    others = [open_comparison(book, session_hash=f"o{i}") for i in range(3)]
    assert not book.is_open(second.token) and all(book.is_open(c.token) for c in others)  # capped, oldest out


def test_feedback_insert_then_change_of_mind_updates_the_row(Session):
    from esllm.store.models import ChatFeedback
    from esllm.study.feedback import save_feedback

    kw = dict(contestant="m1", prompt="Hola", answer="¡Hola! ¿En qué le ayudo?", params={"preset": "greedy"})
    with Session() as s:
        fid = save_feedback(s, thumbs="up", **kw).id
        s.commit()
    with Session() as s:
        assert save_feedback(s, thumbs="down", feedback_id=fid, **kw).id == fid
        s.commit()
        for bad in ("meh", "", None):
            with pytest.raises(EsllmError, match="no válida"):
                save_feedback(s, thumbs=bad, **kw)
        with pytest.raises(EsllmError, match="ninguna respuesta"):
            save_feedback(s, thumbs="up", **dict(kw, answer=""))
        rows = s.scalars(select(ChatFeedback).where(ChatFeedback.prompt == "Hola")).all()
        assert [(r.thumbs, r.params) for r in rows] == [("down", {"preset": "greedy"})]


# ----------------------------------------------------------------------------- the app over HTTP
@pytest.fixture(scope="module")
def cmp_app(tiny, tmp_path_factory):
    t = tiny("llama")
    tmp = tmp_path_factory.mktemp("comparar")
    cfg = disguised_config(t, tmp, MODEL_KEY, list(zip(CONTESTANTS, (None, ADAPTERS[0], ADAPTERS[1], ADAPTERS[0]))),
                           {ADAPTERS[0]: "a1", ADAPTERS[1]: "a2"}, {"max_new_tokens": 12, "max_prompt_chars": 200})
    with running_app(cfg, tmp, accounts={"admin": "admin", "ana": "rater"}, password=PW) as a:
        yield a.ctx, a.url, a.Session, t.model_dir


def client(url, name):
    return login(url, name, PW)


def parse_reveal(md: str) -> dict[str, str]:
    out = {}
    for line in md.splitlines():
        if line.startswith("- **Modelo "):
            label, name = line[len("- **Modelo "):].split("**: ")
            out[label] = name.strip()
    return out


def user_id(Session, name):
    from esllm.store.models import User

    with Session() as s:
        return s.scalars(select(User.id).where(User.name == name)).one()


def count(Session, model) -> int:
    with Session() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_admin_compares_votes_and_gets_the_names(cmp_app):
    from esllm.ui.verbatim import verbatim_text

    ctx, url, Session, _ = cmp_app
    c = client(url, "admin")
    prompt = "¿Qué es el impuesto a la renta?"
    job = c.submit(prompt, [], api_name="/comparar")  # no choice: the first three available
    updates = list(job)
    *answers, status = job.outputs()[-1]
    assert len(updates) >= 3 and "Vote" in status
    reveal_md = c.predict("B", api_name="/comparar_votar")
    reveal = parse_reveal(reveal_md)
    assert sorted(reveal) == list(LABELS) and sorted(reveal.values()) == sorted(CONTESTANTS[:3])
    assert "B es mejor" in reveal_md
    # each label's answer is the greedy answer of the contestant revealed under it
    for label, text in zip(LABELS, answers):
        ref = ctx.engine.generate(reveal[label], [{"role": "user", "content": prompt}])
        assert verbatim_text(text) == ref.text, label  # exactly: the page shows the text as generated
    from esllm.store.models import Vote

    with Session() as s:
        row = s.scalars(select(Vote).where(Vote.prompt == prompt)).one()
        assert row.shown == [reveal[x] for x in LABELS] and row.choice == "B"
        assert row.user_id == user_id(Session, "admin") and row.session_hash


def test_double_vote_over_http_is_refused_and_stores_one_row(cmp_app):
    from gradio_client.exceptions import AppError

    from esllm.store.models import Vote

    ctx, url, Session, _ = cmp_app
    c = client(url, "admin")
    prompt = "Dime un refrán ecuatoriano."
    c.submit(prompt, [], api_name="/comparar").result()
    c.predict("all_bad", api_name="/comparar_votar")
    for choice in ("all_bad", "A"):
        with pytest.raises(AppError, match="ninguna comparación pendiente"):
            c.predict(choice, api_name="/comparar_votar")
    with Session() as s:
        assert [v.choice for v in s.scalars(select(Vote).where(Vote.prompt == prompt))] == ["all_bad"]


def test_admin_chooses_three_of_four_contestants(cmp_app):
    from gradio_client.exceptions import AppError

    _, url, _, _ = cmp_app
    c = client(url, "admin")
    chosen = [CONTESTANTS[3], CONTESTANTS[0], CONTESTANTS[2]]
    c.submit("Hola", chosen, api_name="/comparar").result()
    assert sorted(parse_reveal(c.predict("tie", api_name="/comparar_votar")).values()) == sorted(chosen)
    for bad, msg in ((chosen[:2], "tres"), ([chosen[0]] * 3, "distintos"), (chosen[:2] + ["nadie"], "no disponible")):
        with pytest.raises(AppError, match=msg):
            c.submit("Hola", bad, api_name="/comparar").result()


@pytest.mark.parametrize("prompt, msg", [("", "vacío"), ("   ", "vacío"), ("x" * 201, "demasiado largo")])
def test_empty_or_oversized_prompt_is_refused(cmp_app, prompt, msg):
    from gradio_client.exceptions import AppError

    c = client(cmp_app[1], "admin")
    with pytest.raises(AppError, match=msg):
        c.submit(prompt, [], api_name="/comparar").result()


def test_invalid_choices_over_http_are_refused_and_write_nothing(cmp_app):
    from gradio_client.exceptions import AppError

    from esllm.store.models import Vote

    _, url, Session, _ = cmp_app
    c = client(url, "admin")
    c.submit("¿Cuál es la capital del Ecuador?", [], api_name="/comparar").result()
    before = count(Session, Vote)
    for bad in ("D", None, "", "empate"):
        with pytest.raises(AppError, match="Voto no válido"):
            c.predict(bad, api_name="/comparar_votar")
    assert count(Session, Vote) == before
    assert parse_reveal(c.predict("C", api_name="/comparar_votar"))  # the comparison was open all along
    assert count(Session, Vote) == before + 1


# ---- blindness: everything a client receives before the vote, read from the wire
def sse_call(url: str, cookies, config: dict, api_name: str, data: list, session_hash: str) -> list[str]:
    """Run an endpoint through Gradio's queue like the browser does; return every server-sent event's text."""
    fn = next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name)
    events = []
    with httpx.Client(cookies=cookies, timeout=60) as h:
        r = h.post(url + "gradio_api/queue/join", json={"data": data, "fn_index": fn, "session_hash": session_hash,
                                                          "event_data": None, "trigger_id": None})
        events.append(r.text)
        r.raise_for_status()
        with h.stream("GET", url + "gradio_api/queue/data", params={"session_hash": session_hash}) as s:
            for line in s.iter_lines():
                if not line.startswith("data:"):
                    continue
                events.append(line)
                msg = json.loads(line[5:])
                if msg.get("msg") == "process_completed":
                    break
    return events


def test_blindness_nothing_before_the_vote_names_a_contestant(cmp_app):
    ctx, url, Session, model_dir = cmp_app
    c = client(url, "admin")
    received = [json.dumps(c.config, ensure_ascii=False)]
    for path in ("", "config", "gradio_api/info"):
        received.append(httpx.get(url + path, cookies=c.cookies, timeout=30).text)
    session_hash = uuid.uuid4().hex
    config = json.loads(httpx.get(url + "config", cookies=c.cookies, timeout=30).text)
    streamed = sse_call(url, c.cookies, config, "comparar", ["Explica qué es el SRI.", []], session_hash)
    received += streamed
    blob = "\n".join(received)
    assert "process_completed" in blob and "Vote" in blob, "the comparison ran and its events were read"
    assert sum("process_generating" in e for e in streamed) >= 3, "the answers streamed"
    for secret in SECRETS + [str(model_dir)]:
        assert secret not in blob, f"{secret!r} reached the client before the vote"
    after = "\n".join(sse_call(url, c.cookies, config, "comparar_votar", [None, "A"], session_hash))
    assert sum(name in after for name in CONTESTANTS[:3]) == 3, "the same wire does carry the names after the vote"


def test_engine_error_is_replaced_by_a_neutral_message(cmp_app, monkeypatch):
    from gradio_client.exceptions import AppError

    ctx, url, Session, model_dir = cmp_app
    real = ctx.engine.stream

    def failing(name, messages, **kw):
        if name == CONTESTANTS[1]:
            raise EsllmError(f"El adaptador {ADAPTERS[0]} de {MODEL_KEY} ({model_dir}) ya no está cargado")
        return real(name, messages, **kw)

    monkeypatch.setattr(ctx.engine, "stream", failing)
    c = client(url, "admin")
    with pytest.raises(AppError) as err:
        c.submit("Hola", [], api_name="/comparar").result()
    text = str(err.value)
    assert "no pudo responder" in text and any(f"Modelo {x}" in text for x in LABELS)
    for secret in SECRETS + [str(model_dir)]:
        assert secret not in text
    with pytest.raises(AppError, match="ninguna comparación pendiente"):
        c.predict("A", api_name="/comparar_votar")  # a failed comparison is not votable


def test_stop_ends_the_comparison_and_it_cannot_be_voted(cmp_app):
    from gradio_client.exceptions import AppError

    ctx, url, *_ = cmp_app
    m = ctx.engine.registry.bases[MODEL_KEY].model
    raw = m.get_base_model() if hasattr(m, "get_base_model") else m
    c = client(url, "admin")
    with tm.slowed(raw, 0.1) as calls:
        job = c.submit("Hola", [], api_name="/comparar")
        wait_until(lambda: calls["n"] >= 3, 30, message="the generation never started")
        c.predict(api_name="/comparar_detener")
        t0 = calls["n"]
        try:
            wait_until(lambda: not ctx.engine.active, 5, interval=0.05)
        except AssertionError:
            pass  # asserted below, with the number of forwards
        n = calls["n"]
    assert ctx.engine.active == 0 and n - t0 <= 2, f"decoding went on for {n - t0} forwards after «Detener»"
    assert n < 12, "the other two answers never started"
    job.cancel()
    with pytest.raises(AppError, match="pendiente|Espere"):
        c.predict("A", api_name="/comparar_votar")


# ---- who may use it
def test_rater_is_refused_everywhere_in_comparar(cmp_app):
    from gradio_client.exceptions import AppError

    from esllm.store.models import ChatFeedback, Vote

    _, url, Session, _ = cmp_app
    before = count(Session, Vote), count(Session, ChatFeedback)
    c = client(url, "ana")
    with pytest.raises(AppError, match="solo para administradores"):
        c.submit("Hola", [], api_name="/comparar").result()
    for api, args in (("/comparar_votar", ("A",)), ("/comparar_detener", ()), ("/pulgar_arriba", ()),
                      ("/pulgar_abajo", ())):
        with pytest.raises(AppError, match="permiso"):
            c.predict(*args, api_name=api)
    assert (count(Session, Vote), count(Session, ChatFeedback)) == before


def test_unauthenticated_caller_is_refused(cmp_app):
    from gradio_client import Client

    _, url, *_ = cmp_app
    with pytest.raises(Exception):
        Client(url, verbose=False).predict("Hola", [], api_name="/comparar")
    for api, data in (("comparar", ["Hola", []]), ("comparar_votar", ["A"]), ("pulgar_arriba", [])):
        r = httpx.post(url + f"gradio_api/run/{api}", json={"data": data}, timeout=30)
        assert r.status_code in (401, 403, 404), (api, r.status_code)


# ---- thumbs on «Conversar»
def test_thumbs_on_a_chat_answer_store_one_row(cmp_app):
    from gradio_client.exceptions import AppError

    from esllm.store.models import ChatFeedback
    from esllm.ui.conversar import text_of

    _, url, Session, _ = cmp_app
    c = client(url, "admin")
    with pytest.raises(AppError, match="ninguna respuesta"):
        c.predict(api_name="/pulgar_arriba")  # nothing answered yet in this browser session
    before = count(Session, ChatFeedback)
    job = c.submit("¿Qué es el RUC?", [], CONTESTANTS[2], *CHAT_ARGS[1:], api_name="/conversar")
    job.result()
    history, _, meta = job.outputs()[-1]
    note = c.predict(api_name="/pulgar_arriba")
    assert "«buena»" in note
    with Session() as s:
        rows = s.scalars(select(ChatFeedback).order_by(ChatFeedback.id)).all()[before:]
        assert len(rows) == 1
        row = rows[0]
        assert (row.contestant, row.prompt, row.thumbs) == (CONTESTANTS[2], "¿Qué es el RUC?", "up")
        assert row.answer == text_of(history[-1]["content"]) and row.params == meta["params"]
    assert "«mala»" in c.predict(api_name="/pulgar_abajo")  # change of mind: same row
    with Session() as s:
        assert count(Session, ChatFeedback) == before + 1
        assert s.get(ChatFeedback, row.id).thumbs == "down"
