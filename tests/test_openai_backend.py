"""Contestants on an OpenAI-compatible server, against a real one: llama-cpp-python's server on 127.0.0.1 serving a
tiny Llama GGUF without and with two LoRA adapters (converted by esllm/engine/gguf_lora.py). Chat streams, the
adapter changes the answer, stop closes the stream, an unknown served model, a server absent at start or killed
mid-answer, a wrong key, a batch job with concurrency > 1 storing every answer once, and the study flow (rate,
judge, export) with the API key found nowhere. Only the HTTP status mapping of 429/5xx/404 (which this server
never answers) runs on httpx's in-process transport."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from esllm import EsllmError
from esllm.engine.config import ConfigError, parse_config
from esllm.engine.core import Engine
from esllm.engine.openai_backend import OpenAIBackend, RemoteError, Reply
from esllm.engine.presets import GenParams
from esllm.store.models import Answer, Assignment, ContestantSnapshot, User
from esllm.study.answers import generate_answers
from esllm.study.sessions import create_session, next_item, submit
from tests import tiny_gguf
from tests.helpers import LIMITS, PROMPT, ROWS, free_port, new_store, wait_until
from tests.openai_server import LlamaServer

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


def engine_for(cfg: dict, root: Path) -> Engine:
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
    d = e.describe("srv-a1")
    assert d["motor"] == "servidor OpenAI-compatible" and d["modelo_servido"] == "tiny-a1"


def test_completions_api_sends_esllms_own_template_and_its_stop_strings(server, tmp_path):
    """api: completions renders esllm's template (the format adapters are trained on) and sends its stop strings;
    the server tokenizes and decodes it. (Its greedy tokens match the in-process llama.cpp backend's for the first
    few only: on a random tiny model near-ties flip with the server's thread count.)"""
    from esllm.engine import remote
    from esllm.engine.templates import get_template

    e = engine_for(config(server.url, api="completions"), tmp_path)
    c, base = e.contestant("srv-a1"), e.bases["srv"]
    body, params, template = remote.request(e, c, base, PROMPT, None, {"max_new_tokens": 10})
    tpl = get_template("llama-2")
    assert body["prompt"] == tpl.render(PROMPT, bos_token="", eos_token="") and "messages" not in body
    assert body["stop"] == list(tpl.stop_strings)[:4] and body["temperature"] == 0.0 and template == "llama-2"
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
    reason = e.contestants["fantasma"].reason
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
    assert "No se puede conectar con el servidor 127.0.0.1:%d" % port in e.contestants["srv-a1"].reason
    assert e.generate("local", PROMPT).text is not None  # the rest of the app works
    srv = LlamaServer([files["tiny-a1"]], api_key=KEY, folder=tmp_path / "srv", port=port).start()
    try:
        e.refresh()  # «Actualizar adaptadores» asks the server again
        assert "srv-a1" in e.available()
        assert e.generate("srv-a1", PROMPT).complete
    finally:
        srv.stop()
    e.refresh()
    assert "srv-a1" not in e.available() and "No se puede conectar" in e.contestants["srv-a1"].reason


def test_a_wrong_key_is_a_clear_error_without_the_key(server, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, "sk-equivocada-123")
    e = engine_for(config(server.url), tmp_path)
    reason = e.contestants["srv-a1"].reason
    assert "rechazó la clave de API (401)" in reason and ENV in reason and "sk-equivocada" not in reason
    monkeypatch.delenv(ENV)
    e = engine_for(config(server.url), tmp_path)
    assert f"La variable de entorno {ENV}" in e.contestants["srv-a1"].reason


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
def test_a_batch_job_runs_concurrently_and_stores_every_answer_once(server, tmp_path):
    store = new_store(tmp_path / "t.sqlite3", prompt_sets={"mini": ROWS})
    e = engine_for(config(server.url, concurrency=4), tmp_path)
    base = e.bases["srv"]
    inflight, peak, lock = [0], [0], threading.Lock()
    real = base.stream

    def counting(body, reply, should_stop):  # a spy on the real requests: how many are open at once
        with lock:
            inflight[0] += 1
            peak[0] = max(peak[0], inflight[0])
        try:
            yield from real(body, reply, should_stop)
        finally:
            with lock:
                inflight[0] -= 1

    base.stream = counting
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
    haystack.append(json.dumps([e.describe(n) for n in names], ensure_ascii=False))
    haystack.append(json.dumps(e.hashes("srv-a1")))
    haystack.append(repr(e.bases["srv"]))
    assert all(KEY not in h for h in haystack)
    assert any(f"127.0.0.1:{server.port}" in h for h in haystack[:-4]), "answers trace the server"
    store.dispose()


def test_scoring_evaluations_say_why_they_cannot_run_on_a_server(server, tmp_path):
    e = engine_for(config(server.url), tmp_path)
    with pytest.raises(EsllmError, match="probabilidades de cada token"):
        e.next_token_logprobs("srv-a1", ["¿A o B?"])
    with pytest.raises(EsllmError, match="probabilidades de cada token"):
        e.loglikelihood("srv-a1", [("P: x\nA:", " A")])


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


# ------------------------------------------------------------------------------------------------ HTTP statuses
def _backend(handler, **spec) -> OpenAIBackend:
    """The backend over httpx's in-process transport (statuses the real test server never answers)."""
    from esllm.engine.config import ModelSpec

    b = OpenAIBackend(key="srv", spec=ModelSpec(source="openai:http://gpu.example:8000/v1", api_key_env=ENV,
                                                retries=2, **spec),
                      base_url="http://gpu.example:8000/v1", api_key=KEY, served=["m"],
                      client=httpx.Client(transport=httpx.MockTransport(handler)))
    return b


def _sse(*texts: str, done: bool = True) -> bytes:
    chunks = [{"choices": [{"delta": {"content": t}, "finish_reason": None}]} for t in texts]
    chunks.append({"choices": [{"delta": {}, "finish_reason": "stop"}]})
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + (b"data: [DONE]\n\n" if done else b"")


@pytest.mark.parametrize("status, msg, retry", [
    (429, "saturado (429", True), (500, "falló (500)", True), (503, "falló (503)", True),
    (404, "no sirve el modelo «m» (404)", False), (401, "rechazó la clave de API (401)", False),
])
def test_status_codes_become_spanish_errors(status, msg, retry):
    b = _backend(lambda req: httpx.Response(status, json={"error": {"message": "detalle"}}))
    body = b.body("m", GenParams.build("greedy", max_new_tokens_cap=16), messages=PROMPT)
    with pytest.raises(RemoteError, match=msg.replace("(", r"\(").replace(")", r"\)")) as err:
        list(b.stream(body, Reply(), lambda: False))
    assert err.value.retry is retry and KEY not in str(err.value) and "gpu.example:8000" in str(err.value)


def test_a_batch_retries_a_429_then_gets_the_answer(tmp_path):
    from esllm.engine import remote
    from esllm.engine.types import LoadedContestant

    calls = []

    def handler(req):
        calls.append(req.headers.get("authorization"))
        return httpx.Response(429) if len(calls) < 3 else httpx.Response(200, content=_sse("Ho", "la"))

    b = _backend(handler)
    c = LoadedContestant("x", "srv", None, None, "greedy", available=True, served_model="m")
    remote.BACKOFF_S = 0.01
    res = remote._one(b, c, b.body("m", GenParams.build("greedy", max_new_tokens_cap=16), messages=PROMPT), "servidor",
                      GenParams.build("greedy", max_new_tokens_cap=16), threading.Event())
    assert (res.text, res.finish_reason, len(calls)) == ("Hola", "eos", 3)
    assert calls[0] == f"Bearer {KEY}"  # the key travels only in the header


def test_a_stream_without_its_end_is_cut():
    b = _backend(lambda req: httpx.Response(200, content=_sse("Ho", "la", done=False).rsplit(b"data:", 1)[0]))
    reply = Reply()
    body = b.body("m", GenParams.build("greedy", max_new_tokens_cap=16), messages=PROMPT)
    assert "".join(b.stream(body, reply, lambda: False)) == "Hola"
    assert reply.finish_reason == "cut" and "gpu.example:8000" in reply.error


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
