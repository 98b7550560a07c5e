"""Contestants on an OpenAI-compatible server, against a real one: llama-cpp-python's server on 127.0.0.1 serving a
tiny Llama GGUF without and with two LoRA adapters (converted by esllm/engine/gguf_lora.py).

Two layers. The `test_runner_*` tests drive esllm/engine/remote.py's RemoteModel and RemoteRunner straight, as the
engine's registry calls them: chat streams, the adapter changes the answer, stop closes the stream, an unknown
served model, a server absent at open or killed mid-answer, a wrong key, a batch with concurrency > 1. What a real
server rarely does (429/5xx/404 statuses, cut streams, error events, slow answers) and the exact request bodies run
on tests/openai_server.py's CannedServer, through the real `openai` client. The tests that take an `Engine`
(`engine_for`) are the end-to-end ones: the study flow (rate, judge, export) with the API key found nowhere, and a
batch job storing every answer once and never a cut one."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from esllm import EsllmError
from esllm.engine import remote
from esllm.engine.config import ConfigError, Limits, ModelSpec, parse_config
from esllm.engine.core import Engine
from esllm.engine.presets import GenParams
from esllm.engine.remote import RemoteModel, RemoteRunner
from esllm.engine.remote_errors import RemoteError
from esllm.engine.templates import get_template
from esllm.engine.types import LoadedContestant
from esllm.store.models import Answer, Assignment, ContestantSnapshot, User
from esllm.study.answers import generate_answers
from esllm.study.sessions import create_session, next_item, submit
from esllm.ui.conversar_ficha import contestant_info
from tests import tiny_gguf
from tests.helpers import LIMITS, PROMPT, ROWS, free_port, new_store, wait_until
from tests.openai_server import CannedServer, LlamaServer, sse

llama_cpp = pytest.importorskip("llama_cpp")
pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] extras (requirements-dev.txt)")

KEY = "sk-esllm-prueba-NO-DEBE-APARECER-7f3a9"
ENV = "ESLLM_TEST_SERVER_KEY"
ALIASES = ("tiny-base", "tiny-a1", "tiny-a2")


@pytest.fixture(scope="module")
def files(tiny, tmp_path_factory):
    """{alias: model entry} for the server: the tiny Llama as GGUF, alone and with adapters a1 and a2."""
    from esllm.engine.adapters import inspect_adapter
    from esllm.engine.gguf_lora import convert_adapter

    t = tiny("llama")
    folder = tmp_path_factory.mktemp("served")
    gguf = tiny_gguf.to_gguf(t.model_dir, folder / "tiny.gguf")
    meta = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False).metadata
    entries = {"tiny-base": {"model_alias": "tiny-base", "model": str(gguf)}}
    for name in ("a1", "a2"):
        lora = convert_adapter(inspect_adapter(t.adapters_dir / name), gguf, meta)
        entries[f"tiny-{name}"] = {"model_alias": f"tiny-{name}", "model": str(gguf), "lora_path": str(lora)}
    return entries


@pytest.fixture(scope="module")
def server(files, tmp_path_factory):
    srv = LlamaServer(list(files.values()), api_key=KEY, folder=tmp_path_factory.mktemp("srv")).start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv(ENV, KEY)


def config(url: str, *, api: str = "chat", concurrency: int = 4, contestants=None, models=None, **limits) -> dict:
    return {
        "models": {"srv": {"source": f"openai:{url}", "api_key_env": ENV, "api": api, "concurrency": concurrency,
                           "timeout_s": 30, "template": "llama-2"}, **(models or {})},
        "contestants": contestants or [
            {"name": "srv-base", "model": "srv", "served_model": "tiny-base", "preset": "greedy"},
            {"name": "srv-a1", "model": "srv", "served_model": "tiny-a1", "preset": "greedy"},
            {"name": "srv-a2", "model": "srv", "served_model": "tiny-a2", "preset": "top-p"},
        ],
        "limits": dict(LIMITS, **limits),
    }


def spy_in_flight(monkeypatch) -> list[int]:
    """[peak]: the most requests any RemoteRunner had open at once, from now on."""
    real = RemoteRunner._pieces
    inflight, peak, lock = [0], [0], threading.Lock()

    def counting(self, request, reply, stop):
        with lock:
            inflight[0] += 1
            peak[0] = max(peak[0], inflight[0])
        try:
            yield from real(self, request, reply, stop)
        finally:
            with lock:
                inflight[0] -= 1

    monkeypatch.setattr(RemoteRunner, "_pieces", counting)
    return peak


def engine_for(cfg: dict, root: Path):
    e = Engine(parse_config(cfg), root=root)
    e.start()
    return e


# ------------------------------------------------------------------------------------------------ chat
def test_chat_streams_and_the_adapter_changes_the_answer(server, tmp_path):
    e = engine_for(config(server.url), tmp_path)
    assert e.available() == ["srv-base", "srv-a1", "srv-a2"]
    events = list(e.stream("srv-a1", PROMPT, overrides={"max_new_tokens": 12}))
    assert len(events) >= 3 and events[-1].result is not None
    texts = [ev.text for ev in events[:-1]]
    assert all(texts[i + 1].startswith(texts[i].strip()) for i in range(len(texts) - 1)), "the text only grows"
    res = events[-1].result
    assert res.finish_reason in ("eos", "length") and res.complete and res.backend == "openai"
    assert res.params["served_model"] == "tiny-a1" and res.params["host"] == f"127.0.0.1:{server.port}"
    base = e.generate("srv-base", PROMPT, overrides={"max_new_tokens": 12})
    again = e.generate("srv-a1", PROMPT, overrides={"max_new_tokens": 12})
    assert again.text == res.text, "greedy on the server is reproducible"
    assert base.text != res.text, "the adapter the server applies changes the answer"
    r = e.record("srv-a1")
    assert r.backend == "openai" and r.served_model == "tiny-a1" and r.template == "server"
    d = contestant_info(r)  # the card
    assert d["motor"] == "servidor OpenAI-compatible" and d["modelo_servido"] == "tiny-a1"


def test_completions_api_through_the_engine(server, tmp_path):
    """api: completions renders esllm's template (the format adapters are trained on); the server tokenizes and
    decodes it. (Its greedy tokens match the in-process llama.cpp backend's for the first few only: on a random
    tiny model near-ties flip with the server's thread count.)"""
    e = engine_for(config(server.url, api="completions"), tmp_path)
    res = e.generate("srv-a1", PROMPT, overrides={"max_new_tokens": 10})
    assert res.complete and res.template == "llama-2" and res.text
    assert res.text != e.generate("srv-base", PROMPT, overrides={"max_new_tokens": 10}).text


def test_stop_closes_the_stream(server, tmp_path):
    e = engine_for(config(server.url, max_new_tokens=400), tmp_path)
    stop = threading.Event()
    seen = []
    t0 = time.perf_counter()
    for ev in e.stream("srv-base", PROMPT, overrides={"max_new_tokens": 400}, stop_event=stop):
        seen.append(ev)
        if len(seen) == 3:
            stop.set()
    res = seen[-1].result
    assert res is not None and res.finish_reason == "stopped" and not res.complete
    assert res.new_tokens < 50 and time.perf_counter() - t0 < 20
    wait_until(lambda: "Disconnected from client" in server.log_text(), timeout=60)  # the server saw it close (slow on a busy machine)
    assert e.active == 0
    # a browser that goes away: the iterator is closed, the HTTP stream with it
    it = e.stream("srv-base", PROMPT, overrides={"max_new_tokens": 400})
    next(it), next(it)
    it.close()
    assert e.active == 0


def test_an_unknown_served_model_is_unavailable_with_the_reason(server, tmp_path):
    cfg = config(server.url, contestants=[{"name": "srv-base", "model": "srv", "served_model": "tiny-base"},
                                          {"name": "fantasma", "model": "srv", "served_model": "no-existe"}])
    e = engine_for(cfg, tmp_path)
    assert e.available() == ["srv-base"]
    reason = e.registry.contestants["fantasma"].reason
    assert "no sirve «no-existe»" in reason and "tiny-a1" in reason and f"127.0.0.1:{server.port}" in reason
    with pytest.raises(EsllmError, match="no está disponible"):
        list(e.stream("fantasma", PROMPT))


def test_a_server_absent_at_start_leaves_the_rest_working_and_refresh_finds_it(files, tiny, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    t = tiny("llama")
    cfg = config(url, contestants=[{"name": "srv-a1", "model": "srv", "served_model": "tiny-a1"},
                                   {"name": "local", "model": "llama"}],
                 models={"llama": {"source": str(t.model_dir), "quantization": "none", "device": "cpu",
                                   "template": t.template}})
    cfg["adapters_dir"] = str(t.adapters_dir)
    e = engine_for(cfg, tmp_path)
    assert "local" in e.available() and "srv-a1" not in e.available()
    assert "No se puede conectar con el servidor 127.0.0.1:%d" % port in e.registry.contestants["srv-a1"].reason
    assert e.generate("local", PROMPT).text is not None  # the rest of the app works
    srv = LlamaServer([files["tiny-a1"]], api_key=KEY, folder=tmp_path / "srv", port=port).start()
    try:
        e.refresh()  # «Actualizar adaptadores» asks the server again
        assert "srv-a1" in e.available()
        assert e.generate("srv-a1", PROMPT).complete
    finally:
        srv.stop()
    e.refresh()
    assert "srv-a1" not in e.available() and "No se puede conectar" in e.registry.contestants["srv-a1"].reason


def test_a_wrong_key_is_a_clear_error_without_the_key(server, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, "sk-equivocada-123")
    e = engine_for(config(server.url), tmp_path)
    reason = e.registry.contestants["srv-a1"].reason
    assert "rechazó la clave de API (401)" in reason and ENV in reason and "sk-equivocada" not in reason
    monkeypatch.delenv(ENV)
    e = engine_for(config(server.url), tmp_path)
    assert f"La variable de entorno {ENV}" in e.registry.contestants["srv-a1"].reason


def test_a_server_killed_mid_answer_keeps_the_text_marked_cut(files, tmp_path):
    srv = LlamaServer([files["tiny-base"]], api_key=KEY, folder=tmp_path / "srv").start()
    try:
        e = engine_for(config(srv.url, max_new_tokens=400), tmp_path)
        events = []
        for ev in e.stream("srv-base", PROMPT, overrides={"max_new_tokens": 400}):
            events.append(ev)
            if len(events) == 3:
                srv.kill()
        res = events[-1].result
        assert res is not None and res.finish_reason == "cut" and not res.complete
        assert res.text and res.text.startswith(events[2].text.strip()[:5]), "what was received is kept"
        assert "127.0.0.1" in res.error
        with pytest.raises(EsllmError, match="No se puede conectar"):  # the next request: the server is gone
            e.generate("srv-base", PROMPT)
    finally:
        srv.stop()


def test_a_cut_answer_is_never_stored_by_a_batch_job(files, tmp_path):
    srv = LlamaServer([files["tiny-base"]], api_key=KEY, folder=tmp_path / "srv").start()
    store = new_store(tmp_path / "t.sqlite3", prompt_sets={"mini": ROWS})
    try:
        cfg = config(srv.url, contestants=[{"name": "srv-base", "model": "srv", "served_model": "tiny-base"}],
                     max_new_tokens=400)
        cfg["models"]["srv"]["retries"] = 0
        e = engine_for(cfg, tmp_path)
        killer = threading.Thread(target=lambda: (wait_until(lambda: e.active, timeout=30), time.sleep(0.3), srv.kill()))
        killer.start()
        rep = generate_answers(store.Session, e, "mini", ["srv-base"], attempts=1, max_new_tokens=400)
        killer.join()
        with store.Session() as s:
            stored = s.scalar(select(func.count()).select_from(Answer))
        assert rep.generated == stored and rep.errors and stored < 4
        assert all("127.0.0.1" in x for x in rep.errors)
    finally:
        srv.stop()
        store.dispose()


# ------------------------------------------------------------------------------------------------ batch + study
def test_a_batch_job_runs_concurrently_and_stores_every_answer_once(server, tmp_path, monkeypatch):
    store = new_store(tmp_path / "t.sqlite3", prompt_sets={"mini": ROWS})
    e = engine_for(config(server.url, concurrency=4), tmp_path)
    peak = spy_in_flight(monkeypatch)
    rep = generate_answers(store.Session, e, "mini", ["srv-base", "srv-a1", "srv-a2"], attempts=2, max_new_tokens=8,
                           vary=[("top-p", {})])
    assert (rep.generated, rep.errors) == (4 * 3 * 2, [])
    assert peak[0] > 1, "requests of a wave are sent together"
    with store.Session() as s:
        rows = s.execute(select(Answer.prompt_id, Answer.contestant_id, Answer.attempt)).all()
        assert len(rows) == 24 and len(set(rows)) == 24
        a = s.scalars(select(Answer)).first()
        assert a.params["backend"] == "openai" and a.params["host"] == f"127.0.0.1:{server.port}"
        assert a.params["served_model"] in ALIASES
        snap = s.get(ContestantSnapshot, a.contestant_id)
        assert snap.base == f"openai:{server.url}" and snap.params["served_model"] in ALIASES
    again = generate_answers(store.Session, e, "mini", ["srv-base", "srv-a1", "srv-a2"], attempts=2, max_new_tokens=8,
                           vary=[("top-p", {})])
    assert (again.generated, again.skipped) == (0, 24)
    store.dispose()


def test_rated_judged_and_exported_like_a_local_contestant_and_the_key_is_nowhere(server, tmp_path, caplog):
    from esllm.evals.judge import Judge
    from esllm.store import users
    from esllm.study import export as ex

    caplog.set_level(logging.DEBUG)
    store = new_store(tmp_path / "t.sqlite3", prompt_sets={"mini": ROWS})
    e = engine_for(config(server.url), tmp_path)
    names = ["srv-base", "srv-a1", "srv-a2"]
    assert generate_answers(store.Session, e, "mini", names, attempts=1, max_new_tokens=8).generated == 12
    with store.Session() as s:
        users.add_user(s, "ana", "contraseña-segura", "rater")
        ids = [c.id for c in s.scalars(select(ContestantSnapshot).order_by(ContestantSnapshot.id))]
        sid = create_session(s, name="servidor", prompt_set="mini", contestant_ids=ids, raters=["ana"], k=1,
                             rng=random.Random(1)).id
        s.commit()
        rid = s.scalar(select(User.id).where(User.name == "ana"))
        n = 0
        while (item := next_item(s, sid, rid)) is not None:
            perm = s.get(Assignment, item.assignment_id).permutation
            submit(s, rater_id=rid, assignment_id=item.assignment_id,
                   scores={lb: {"general": 1 + (n + i) % 5} for i, lb in enumerate(perm)})
            s.commit()
            n += 1
        assert n == 4  # the 4 prompts of «mini»
    rep = Judge(sid, retries=0).grade(store.Session, e, "srv-base")  # the judge on the server
    # every answer asked of the judge on the server, none refused (a random tiny judge rarely writes a grade)
    assert rep.total == 12 and rep.errors == 0 and rep.graded + rep.unparsable == 12 and not rep.stopped
    with store.Session() as s:
        paths = ex.write_exports(s, sid, tmp_path / "out")
    haystack = [p.read_text(encoding="utf-8", errors="replace") for p in map(Path, paths) if Path(p).is_file()]
    import sqlite3

    con = sqlite3.connect(tmp_path / "t.sqlite3")
    haystack.append("\n".join(con.iterdump()))
    con.close()
    haystack.append(caplog.text)
    haystack.append(json.dumps([contestant_info(e.record(n)) for n in names], ensure_ascii=False))
    haystack.append(json.dumps(e.hashes("srv-a1")))
    haystack.append(repr(e.registry.bases["srv"]))
    assert all(KEY not in h for h in haystack)
    assert any(f"127.0.0.1:{server.port}" in h for h in haystack[:-4]), "answers trace the server"
    store.dispose()


def test_scoring_evaluations_say_why_they_cannot_run_on_a_server(server, tmp_path):
    e = engine_for(config(server.url), tmp_path)
    with pytest.raises(EsllmError, match="probabilidades de cada token"):
        e.next_token_logprobs("srv-a1", ["¿A o B?"])
    with pytest.raises(EsllmError, match="probabilidades de cada token"):
        e.loglikelihood("srv-a1", [("P: x\nA:", " A")])


# ------------------------------------------------------------------------------------------------ RemoteRunner
# The runner straight, as the registry will call it: RemoteModel.open, .runner(c, limits), .stream(msgs, params, stop).
def open_model(url: str, *, api: str = "chat", concurrency: int = 4, retries: int = 2, **spec) -> RemoteModel:
    return RemoteModel.open("srv", ModelSpec(source=f"openai:{url}", api_key_env=ENV, api=api, concurrency=concurrency,
                                             retries=retries, timeout_s=spec.pop("timeout_s", 30),
                                             template="llama-2", **spec))


def runner_for(model: RemoteModel, served: str = "tiny-base", *, lora=(), overrides=None) -> RemoteRunner:
    c = LoadedContestant(f"srv-{served}", "srv", None, None, "greedy", available=True, served_model=served,
                         lora=[dict(x) for x in lora], overrides=dict(overrides or {}))
    return model.runner(c, Limits(**LIMITS))


def params(preset: str = "greedy", **overrides) -> GenParams:
    return GenParams.build(preset, overrides, max_new_tokens_cap=400)


def answer(r: RemoteRunner, p: GenParams, messages=PROMPT):
    events = list(r.stream(messages, p, threading.Event()))
    assert events[-1].result is not None and all(ev.result is None for ev in events[:-1])
    return events


def test_runner_streams_chat_and_the_adapter_changes_the_answer(server):
    m = open_model(server.url)
    assert sorted(m.served) == sorted(ALIASES) and m.host == f"127.0.0.1:{server.port}" and m.adapters == {}
    assert all(m.unavailable_reason(runner_for(m, a).contestant) is None for a in ALIASES)
    r = runner_for(m, "tiny-a1")
    events = answer(r, params(max_new_tokens=12))
    texts = [ev.text for ev in events[:-1]]
    assert len(texts) >= 2 and all(texts[i + 1].startswith(texts[i].strip()) for i in range(len(texts) - 1))
    res = events[-1].result
    assert res.finish_reason in ("eos", "length") and res.complete and res.backend == "openai" and not res.error
    assert res.params["served_model"] == "tiny-a1" and res.params["host"] == m.host and res.template == "servidor"
    assert 0 < res.new_tokens <= 12 and res.first_token_s is not None  # this server sends no usage: the chunks
    assert answer(r, params(max_new_tokens=12))[-1].result.text == res.text, "greedy on the server is reproducible"
    base = answer(runner_for(m, "tiny-base"), params(max_new_tokens=12))[-1].result
    assert base.text != res.text, "the adapter the server applies changes the answer"
    assert r.active == 0
    m.close()


def test_runner_on_the_completions_api_renders_esllms_template(server):
    m = open_model(server.url, api="completions")
    a1 = runner_for(m, "tiny-a1").generate_many([PROMPT], params(max_new_tokens=10), threading.Event())[0]
    assert a1.complete and a1.template == "llama-2" and a1.text
    base = runner_for(m, "tiny-base").generate_many([PROMPT], params(max_new_tokens=10), threading.Event())[0]
    assert base.text != a1.text


def test_runner_stop_closes_the_stream(server):
    r = runner_for(open_model(server.url))
    stop, seen, t0 = threading.Event(), [], time.perf_counter()
    before = server.log_text().count("Disconnected from client")
    for ev in r.stream(PROMPT, params(max_new_tokens=400), stop):
        seen.append(ev)
        if len(seen) == 3:
            stop.set()
    res = seen[-1].result
    assert res is not None and res.finish_reason == "stopped" and not res.complete
    assert res.new_tokens < 50 and time.perf_counter() - t0 < 20 and r.active == 0
    wait_until(lambda: server.log_text().count("Disconnected from client") > before, timeout=60)
    # a browser that goes away: the consumer closes the iterator, the HTTP stream with it
    it = r.stream(PROMPT, params(max_new_tokens=400), threading.Event())
    next(it), next(it)
    assert r.active == 1
    it.close()
    assert r.active == 0
    wait_until(lambda: server.log_text().count("Disconnected from client") > before + 1, timeout=60)


def test_runner_an_unknown_served_model_has_the_reason(server):
    m = open_model(server.url)
    reason = m.unavailable_reason(runner_for(m, "no-existe").contestant)
    assert "no sirve «no-existe»" in reason and "tiny-a1" in reason and m.host in reason
    assert m.unavailable_reason(runner_for(m, "tiny-a2").contestant) is None


def test_runner_a_wrong_or_missing_key_is_a_clear_error_without_the_key(server, monkeypatch):
    monkeypatch.setenv(ENV, "sk-equivocada-123")
    with pytest.raises(RemoteError, match="rechazó la clave de API \\(401\\)") as err:
        open_model(server.url)
    assert ENV in str(err.value) and "sk-equivocada" not in str(err.value) and str(server.port) in str(err.value)
    monkeypatch.delenv(ENV)
    with pytest.raises(EsllmError, match=f"La variable de entorno {ENV}"):
        open_model(server.url)


def test_runner_a_server_down_at_open_and_one_killed_mid_answer(files, tmp_path):
    port = free_port()
    with pytest.raises(RemoteError, match=f"No se puede conectar con el servidor 127.0.0.1:{port}"):
        open_model(f"http://127.0.0.1:{port}/v1")
    srv = LlamaServer([files["tiny-base"]], api_key=KEY, folder=tmp_path / "srv", port=port).start()
    try:
        m = open_model(srv.url)
        r = runner_for(m)
        events = []
        for ev in r.stream(PROMPT, params(max_new_tokens=400), threading.Event()):
            events.append(ev)
            if len(events) == 3:
                srv.kill()
        res = events[-1].result
        assert res is not None and res.finish_reason == "cut" and not res.complete and r.active == 0
        assert res.text and res.text.startswith(events[2].text.strip()[:5]), "what was received is kept"
        assert "cortó la conexión" in res.error and m.host in res.error
        with pytest.raises(RemoteError, match="No se puede conectar"):  # the next request: the server is gone
            answer(r, params())
        with pytest.raises(RemoteError, match="No se puede conectar"):
            m.refresh()
    finally:
        srv.stop()


def test_runner_batch_keeps_concurrency_requests_in_flight_in_order(server, monkeypatch):
    r = runner_for(open_model(server.url, concurrency=3))
    peak = spy_in_flight(monkeypatch)
    convs = [[{"role": "user", "content": f"Pregunta número {i}: ¿qué es el RUC?"}] for i in range(6)]
    results = r.generate_many(convs, params(max_new_tokens=6), threading.Event())
    assert len(results) == 6 and all(x.complete for x in results) and r.active == 0
    assert peak[0] == 3, "three requests at once, never more"
    assert [answer(r, params(max_new_tokens=6), convs[i])[-1].result.text for i in (0, 5)] == \
        [results[0].text, results[5].text], "results come back in the order of the conversations"


# ------------------------------------------------------------------------------------------------ canned server
@pytest.fixture
def canned():
    servers = []

    def start(reply, **kw) -> CannedServer:
        servers.append(CannedServer(reply, **kw).start())
        return servers[-1]

    yield start
    for srv in servers:
        srv.stop()


def test_the_request_body_carries_the_params_extras_and_lora(canned):
    srv = canned(lambda n, req: (200, sse("Hola")))
    m = open_model(srv.url, sampling_extras=True)
    runner_for(m, "m", lora=[{"id": 0, "scale": 0.5}]).generate_many([PROMPT], params(seed=7), threading.Event())
    runner_for(m, "m").generate_many([PROMPT], params("top-p", temperature=0.8), threading.Event())
    greedy, top_p = (x["body"] for x in srv.requests)
    assert srv.requests[0]["path"] == "/v1/chat/completions" and greedy["messages"] == PROMPT
    assert greedy["stream"] is True and greedy["stream_options"] == {"include_usage": True}
    assert (greedy["model"], greedy["temperature"], greedy["seed"], greedy["max_tokens"]) == ("m", 0.0, 7, 256)
    assert (greedy["top_k"], greedy["min_p"], greedy["repetition_penalty"], greedy["repeat_penalty"]) == (1, 0.0, 1.0, 1.0)
    assert greedy["lora"] == [{"id": 0, "scale": 0.5}] and "top_p" not in greedy and "lora" not in top_p
    assert (top_p["temperature"], top_p["top_p"], top_p["top_k"]) == (0.8, 0.9, 0) and "seed" not in top_p
    assert srv.requests[0]["headers"]["authorization"] == f"Bearer {KEY}"  # the key travels only in the header
    plain = open_model(srv.url, sampling_extras=False)
    runner_for(plain, "m").generate_many([PROMPT], params(), threading.Event())
    assert not {"top_k", "min_p", "repetition_penalty", "repeat_penalty"} & set(srv.requests[-1]["body"])


def test_the_completions_api_sends_the_template_without_bos_and_its_stop_strings(canned):
    srv = canned(lambda n, req: (200, sse("Hola", chat=False)))
    res = runner_for(open_model(srv.url, api="completions"), "m").generate_many(
        [PROMPT], params(max_new_tokens=10), threading.Event())[0]
    body, tpl = srv.requests[0]["body"], get_template("llama-2")
    assert srv.requests[0]["path"] == "/v1/completions" and "messages" not in body
    assert body["prompt"] == tpl.render(PROMPT, bos_token="", eos_token="") and not body["prompt"].startswith("<s>")
    assert body["stop"] == list(tpl.stop_strings)[:4] and body["temperature"] == 0.0
    assert (res.text, res.finish_reason, res.template) == ("Hola", "eos", "llama-2")


def test_without_a_key_variable_no_key_is_sent_not_even_openais(canned, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-de-openai-no-debe-salir")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-no-debe-salir")
    srv = canned(lambda n, req: (200, sse("Hola")))
    m = RemoteModel.open("srv", ModelSpec(source=f"openai:{srv.url}"))
    assert runner_for(m, "m").generate_many([PROMPT], params(), threading.Event())[0].text == "Hola"
    headers = srv.requests[0]["headers"]
    assert "authorization" not in headers and "openai-organization" not in headers


@pytest.mark.parametrize("status, msg, retry", [
    (429, "saturado (429", True), (500, "falló (500). detalle", True), (503, "falló (503)", True),
    (404, "no sirve el modelo «m» (404). detalle", False), (401, "rechazó la clave de API (401)", False),
    (403, "rechazó la clave de API (403)", False), (400, "rechazó la petición (400). detalle", False),
])
def test_status_codes_become_spanish_errors_sent_once(canned, status, msg, retry):
    srv = canned(lambda n, req: (status, json.dumps({"error": {"message": "detalle"}}).encode()))
    m = open_model(srv.url)
    with pytest.raises(RemoteError, match=msg.replace("(", r"\(").replace(")", r"\)")) as err:
        answer(runner_for(m, "m"), params())
    assert err.value.retry is retry and KEY not in str(err.value) and m.host in str(err.value)
    assert len(srv.requests) == 1, "a chat answer is never retried (nor by the openai client)"


def test_a_slow_server_is_a_timeout(canned):
    release = threading.Event()
    srv = canned(lambda n, req: (release.wait(10), (200, sse("tarde")))[1])
    with pytest.raises(RemoteError, match="no respondió en 0.5 s") as err:
        answer(runner_for(open_model(srv.url, timeout_s=0.5), "m"), params())
    assert err.value.retry
    release.set()


def test_a_batch_retries_a_429_then_gets_the_answer(canned, monkeypatch):
    monkeypatch.setattr(remote, "BACKOFF_S", 0.01)
    srv = canned(lambda n, req: (429, b"{}") if n < 2 else (200, sse("Ho", "la")))
    res = runner_for(open_model(srv.url, retries=2), "m").generate_many([PROMPT], params(), threading.Event())[0]
    assert (res.text, res.finish_reason, len(srv.requests)) == ("Hola", "eos", 3)


def test_a_batch_retries_a_cut_stream_and_gives_up_after_its_retries(canned, monkeypatch):
    monkeypatch.setattr(remote, "BACKOFF_S", 0.01)
    srv = canned(lambda n, req: (200, sse("Ho", "la", finish=None, done=False)) if n < 1 else (200, sse("Hola")))
    res = runner_for(open_model(srv.url, retries=1), "m").generate_many([PROMPT], params(), threading.Event())[0]
    assert (res.text, res.finish_reason, len(srv.requests)) == ("Hola", "eos", 2)
    always_cut = canned(lambda n, req: (200, sse("Ho", "la ", finish=None, done=False)))
    res = runner_for(open_model(always_cut.url, retries=2), "m").generate_many([PROMPT], params(), threading.Event())[0]
    assert (res.text, res.finish_reason, len(always_cut.requests)) == ("Hola ", "cut", 3) and not res.complete
    assert "cerró la respuesta sin terminarla" in res.error and "127.0.0.1" in res.error
    missing = canned(lambda n, req: (404, b"{}"))
    res = runner_for(open_model(missing.url, retries=3), "m").generate_many([PROMPT], params(), threading.Event())[0]
    assert (res.finish_reason, len(missing.requests)) == ("error", 1) and "(404)" in res.error, "a 404 is not retried"


def test_a_chat_stream_without_its_end_is_cut_and_not_retried(canned):
    srv = canned(lambda n, req: (200, sse("Ho", "la ", finish=None, done=False)))
    res = answer(runner_for(open_model(srv.url), "m"), params())[-1].result
    assert (res.text, res.finish_reason, len(srv.requests)) == ("Hola ", "cut", 1) and not res.complete
    assert "127.0.0.1" in res.error


def test_an_error_event_cuts_the_answer_after_text_and_fails_it_before(canned):
    error = b'data: {"error": {"message": "sin memoria"}}\n\n'
    after = canned(lambda n, req: (200, sse("Ho", "la", finish=None, done=False) + [error]))
    res = answer(runner_for(open_model(after.url), "m"), params())[-1].result
    assert (res.text, res.finish_reason) == ("Hola", "cut") and "informó un error: sin memoria" in res.error
    before = canned(lambda n, req: (200, [error]))
    with pytest.raises(RemoteError, match="informó un error con «m»: sin memoria") as err:
        answer(runner_for(open_model(before.url), "m"), params())
    assert err.value.retry


def test_tokens_come_from_usage_else_from_the_chunks(canned):
    usage = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    srv = canned(lambda n, req: (200, sse("Ho", "la", usage=usage) if n == 0 else sse("Ho", "la", "!")))
    r = runner_for(open_model(srv.url), "m")
    with_usage, without = (answer(r, params())[-1].result for _ in range(2))
    assert (with_usage.prompt_tokens, with_usage.new_tokens) == (11, 3)
    assert (without.prompt_tokens, without.new_tokens, without.text) == (0, 3, "Hola!")


def test_strategies_a_server_cannot_run_are_refused_before_sending(canned):
    srv = canned(lambda n, req: (200, sse("Hola")))
    r = runner_for(open_model(srv.url), "m")
    assert r.capabilities.strategies == {"greedy", "sample"} and r.capabilities.max_batch == 4
    for preset, what in (("contrastive", "búsqueda contrastiva"), ("beam", "búsqueda en haz")):
        with pytest.raises(EsllmError, match=what):
            answer(r, params(preset))
        with pytest.raises(EsllmError, match=what):
            r.generate_many([PROMPT], params(preset), threading.Event())
    assert srv.requests == []


def test_a_stopped_batch_sends_nothing_more(canned):
    srv = canned(lambda n, req: (200, sse("Hola")))
    stop = threading.Event()
    stop.set()
    results = runner_for(open_model(srv.url), "m").generate_many([PROMPT] * 3, params(), stop)
    assert [x.finish_reason for x in results] == ["stopped"] * 3 and srv.requests == []


def test_the_record_scoring_refusals_and_no_key_in_repr(canned):
    srv = canned(lambda n, req: (200, sse("Hola")), models=("m", "otro"))
    chat = runner_for(open_model(srv.url, concurrency=5), "m", lora=[{"id": 1, "scale": 1.0}],
                      overrides={"temperature": 0.7})
    rec = chat.record()
    assert (rec.name, rec.base, rec.base_source, rec.backend, rec.quantization, rec.dtype) == \
        ("srv-m", "srv", f"openai:{srv.url}", "openai", "server", "")
    host = srv.url.split("/")[2]
    assert (rec.device, rec.host, rec.served_model, rec.template, rec.template_sha256) == (host, host, "m", "server", None)
    assert rec.available and rec.lora == [{"id": 1, "scale": 1.0}] and rec.params == {"temperature": 0.7}
    assert rec.details == {"api": "chat", "served_models": ["m", "otro"], "concurrency": 5}
    assert rec.provenance()["served_model"] == "m" and rec.preset == "greedy"
    completions = runner_for(open_model(srv.url, api="completions"), "m").record()
    assert (completions.template, completions.template_sha256) == ("llama-2", get_template("llama-2").sha256)
    assert len(get_template("llama-2").sha256) == 64 and get_template("llama-2").sha256 != get_template("mistral").sha256
    assert not chat.capabilities.scores_tokens
    for call in (lambda: chat.loglikelihood([("P:", " A")]), lambda: chat.next_token_logprobs(["¿A o B?"]),
                 lambda: chat.encode("hola")):
        with pytest.raises(EsllmError, match="probabilidades de cada token"):
            call()
    with pytest.raises(EsllmError, match="adaptadores se cargan allí"):
        chat.model.load_adapter(None)
    assert KEY not in repr(chat.model) and KEY not in repr(vars(chat.model))


# ------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("contestant, msg", [
    ({"name": "x", "model": "srv", "served_model": "m", "preset": "contrastive"}, "cannot run on an OpenAI"),
    ({"name": "x", "model": "srv", "served_model": "m", "vary_attempts": [{"preset": "beam"}]}, "cannot run"),
    ({"name": "x", "model": "srv", "adapter": "a1"}, "served_model: (and lora: for llama-server)"),
    ({"name": "x", "model": "srv"}, "served_model: is required"),
])
def test_config_refuses_what_a_server_cannot_do(contestant, msg):
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        parse_config(config("http://127.0.0.1:9/v1", contestants=[contestant]))


def test_config_wants_the_name_of_the_key_variable_never_the_key():
    cfg = config("http://127.0.0.1:9/v1")
    cfg["models"]["srv"]["api_key_env"] = "sk-abc123-def"
    with pytest.raises(ConfigError, match="NAME of an environment variable"):
        parse_config(cfg)


def test_the_chat_marks_a_cut_answer_and_does_not_offer_it_for_rating():
    from esllm.engine.types import GenerationResult
    from esllm.ui.conversar import metrics_line, note_message

    res = GenerationResult(text="Hola, el RU", contestant="srv-a1", base="srv", adapter=None, template="servidor",
                           params={"served_model": "tiny-a1"}, prompt_tokens=0, new_tokens=4, latency_s=1.0,
                           first_token_s=0.2, finish_reason="cut", backend="openai",
                           error="el servidor 127.0.0.1:8080 cortó la conexión a mitad de la respuesta (RemoteProtocolError)")
    line = metrics_line(res)
    assert "CORTE: respuesta incompleta" in line and "cortó la conexión" in line
    assert "CORTE" in note_message("srv-a1", res)["metadata"]["title"] and not res.complete
