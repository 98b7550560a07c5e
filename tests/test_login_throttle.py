"""Login throttling (esllm/ui/throttle.py): the counters with a fake clock, the middleware on raw ASGI
requests from chosen client addresses, and the launched app over HTTP (Gradio's real /login route, other
addresses through X-Forwarded-For, believed from loopback because the app is launched with
ESLLM_TRUSTED_PROXIES=127.0.0.1, as behind a proxy on the same host).

    .venv/bin/python -m pytest tests/test_login_throttle.py
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import threading
import time
from types import SimpleNamespace
from urllib.parse import parse_qs

import httpx
import pytest

from esllm.ui.login_guard import LoginGuard
from esllm.ui.throttle import ADDRESS, PAIR, USER, Limit, LoginThrottle
from tests.helpers import FakeEngine, new_store, serve

PW = "contraseña-segura"
REFUSED = re.compile(r"^Demasiados intentos fallidos\. Espere (\d+) s y vuelva a intentarlo\.$")


class Clock:
    """A fake monotonic clock: time moves only when the test says so."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def attempt(th: LoginThrottle, name: str, address: str, ok: bool = False):
    """One login attempt: the refusal, or None after recording the outcome `ok`."""
    refusal = th.begin(name, address)
    if refusal is None:
        th.end(name, address, ok)
    return refusal


def fail_when_allowed(th: LoginThrottle, clock: Clock, name: str, address: str) -> int:
    """An attacker as fast as allowed: wait as told, then fail once; the seconds waited."""
    waited = 0
    while (r := th.begin(name, address)) is not None:
        waited += r.wait_s
        clock.advance(r.wait_s)
    th.end(name, address, False)
    return waited


def fail_n(th: LoginThrottle, n: int, name: str, address: str) -> None:
    for i in range(n):
        assert attempt(th, name, address) is None, f"attempt {i + 1} of {n} was refused"


# ----------------------------------------------------------------------------- the counters
def test_five_free_failures_then_waits_that_double_up_to_the_cap():
    assert (PAIR.free, PAIR.base, PAIR.cap) == (5, 2.0, 300.0)  # the limits the module docstring and README give
    assert (ADDRESS.free, ADDRESS.cap) == (20, 300.0)
    assert (USER.free, USER.cap) == (10, 60.0) and USER.cap < PAIR.cap, "the per-user limit is the gentle one"
    assert [PAIR.delay(n) for n in (0, 4, 5, 6, 7, 12, 13, 100, 10**6)] == [0, 0, 2, 4, 8, 256, 300, 300, 300]
    clock = Clock()
    th = LoginThrottle(clock=clock)
    fail_n(th, 5, "Ana", "10.0.0.1")
    r = th.begin(" ana ", "10.0.0.1")  # the name as the store normalises it
    assert r is not None and r.wait_s == 2 and REFUSED.match(r.message) and REFUSED.match(r.message)[1] == "2"
    clock.advance(1.0)
    assert th.begin("ana", "10.0.0.1").wait_s == 1, "the wait counts down"
    waits = []
    for _ in range(12):  # each failure after the wait doubles it: 2, 4, 8 … then the cap
        r = th.begin("ana", "10.0.0.1")
        clock.advance(r.wait_s - 0.5)
        assert th.begin("ana", "10.0.0.1") is not None, "not a moment before the wait is over"
        clock.advance(0.5)
        assert attempt(th, "ana", "10.0.0.1") is None
        waits.append(r.wait_s)
    assert waits == [1, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300, 300]


def test_success_resets_the_counters():
    clock = Clock()
    th = LoginThrottle(clock=clock)
    fail_n(th, 5, "ana", "10.0.0.1")
    assert th.begin("ana", "10.0.0.1") is not None
    clock.advance(2)
    assert attempt(th, "ana", "10.0.0.1", ok=True) is None
    fail_n(th, 5, "ana", "10.0.0.1")  # five free failures again
    assert th.begin("ana", "10.0.0.1") is not None


def test_failures_are_forgotten_after_a_quiet_window():
    clock = Clock()
    th = LoginThrottle(clock=clock, window=900)
    fail_n(th, 5, "ana", "10.0.0.1")
    clock.advance(899)
    assert attempt(th, "ana", "10.0.0.1") is None  # the 6th failure, after the wait
    assert th.begin("ana", "10.0.0.1").wait_s == 4, "14 minutes later, the failures still count"
    clock.advance(900)
    fail_n(th, 5, "ana", "10.0.0.1")  # 15 quiet minutes: free again
    assert th.begin("ana", "10.0.0.1").wait_s == 2


def test_one_address_trying_many_names_is_slowed_down():
    clock = Clock()
    th = LoginThrottle(clock=clock)
    for i in range(20):
        assert attempt(th, f"nombre{i}", "10.0.0.9") is None
    r = th.begin("otro-nombre", "10.0.0.9")
    assert r is not None and r.wait_s == 2 and REFUSED.match(r.message)
    assert th.begin("otro-nombre", "10.0.0.8") is None, "another address is not affected"


def test_logging_into_ones_own_account_does_not_buy_more_guesses():
    """A success takes off the address counter only that user's failures, not those against other names."""
    clock = Clock()
    th = LoginThrottle(clock=clock)
    for i in range(15):
        assert attempt(th, f"victima{i}", "10.0.0.9") is None
    fail_n(th, 3, "beto", "10.0.0.9")  # its own typos
    assert attempt(th, "beto", "10.0.0.9", ok=True) is None
    for i in range(5):  # 15 + 5 = 20 failures against others
        assert attempt(th, f"otra{i}", "10.0.0.9") is None
    assert th.begin("otra-mas", "10.0.0.9") is not None


def test_failures_from_other_addresses_only_slow_a_user_down_up_to_a_gentle_cap():
    clock = Clock()
    th = LoginThrottle(clock=clock)
    for a in range(2):  # 10 failures from two addresses: the user's free ones
        fail_n(th, 5, "ana", f"10.0.1.{a}")
    r = th.begin("ana", "192.168.0.5")
    assert r is not None and r.wait_s == 2, "the per-user counter applies across addresses"
    worst = 0
    for a in range(2, 200):  # the attacker keeps going from ever new addresses, as fast as allowed
        worst = max(worst, fail_when_allowed(th, clock, "ana", f"10.0.1.{a}"))
        waits = th.begin("ana", "192.168.0.5")
        assert waits is not None and waits.wait_s <= USER.cap, "never more than the cap"
    assert worst == USER.cap
    clock.advance(USER.cap)
    assert attempt(th, "ana", "192.168.0.5", ok=True) is None, "the user gets in after at most the cap"


def test_an_address_the_user_logged_in_from_is_not_slowed_by_others():
    clock = Clock()
    th = LoginThrottle(clock=clock)
    assert attempt(th, "ana", "192.168.0.5", ok=True) is None
    for a in range(30):  # the attacker, from ever new addresses, as fast as allowed
        fail_when_allowed(th, clock, "ana", f"10.0.2.{a}")
    assert th.begin("ana", "10.0.2.99") is not None
    assert attempt(th, "ana", "192.168.0.5", ok=True) is None


def test_attempts_in_flight_count_so_parallel_clients_gain_nothing():
    clock = Clock()
    th = LoginThrottle(clock=clock)
    started = [th.begin("ana", "10.0.0.1") for _ in range(5)]
    assert started == [None] * 5
    r = th.begin("ana", "10.0.0.1")
    assert r is not None and r.message.startswith("Demasiados intentos de inicio de sesión a la vez")
    for _ in range(5):
        th.end("ana", "10.0.0.1", False)
    clock.advance(2)
    assert th.begin("ana", "10.0.0.1") is None
    assert th.begin("ana", "10.0.0.1") is not None, "at the limit, one attempt at a time"
    th.end("ana", "10.0.0.1", None)  # neither (a malformed form): releases without counting
    assert th.begin("ana", "10.0.0.1") is None


def test_memory_is_bounded_under_a_flood_of_names_and_addresses():
    th = LoginThrottle(clock=Clock(), max_entries=50)
    for i in range(2000):
        attempt(th, f"nombre-{i}", f"10.{i // 256}.{i % 256}.1", ok=i % 3 == 0)
    sizes = [len(th.pairs.entries), len(th.users.entries), len(th.addresses.entries)]
    assert all(45 <= n <= 50 for n in sizes) and len(th.known) == 50, sizes  # a full table drops a sixteenth
    fail_n(th, 4, "nombre-1999", "10.7.207.1")  # the most recent counters are kept
    assert th.begin("nombre-1999", "10.7.207.1") is not None


# ----------------------------------------------------------------------------- the middleware, raw ASGI
class FakeLogin:
    """Gradio's login route in miniature: 200 for the password PW, 400 otherwise; the names it checked."""

    def __init__(self) -> None:
        self.checked: list[str] = []

    async def __call__(self, scope, receive, send) -> None:
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        self.checked.append(form["username"])
        status = 200 if form.get("password") == PW else 400
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def asgi_login(guard: LoginGuard, name: str, password: str, address: str):
    """POST /login from `address`: (status, headers, body)."""
    body = f"username={name}&password={password}".encode()
    scope = {"type": "http", "method": "POST", "path": "/login", "client": (address, 5555), "query_string": b"",
             "headers": [(b"content-type", b"application/x-www-form-urlencoded"),
                         (b"content-length", str(len(body)).encode())]}
    chunks = [{"type": "http.request", "body": body[:7], "more_body": True},
              {"type": "http.request", "body": body[7:], "more_body": False}]
    sent = []

    async def receive():
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    start = sent[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def test_middleware_refuses_the_sixth_failure_per_address_without_reaching_the_check():
    clock = Clock()
    inner = FakeLogin()
    guard = LoginGuard(inner, SimpleNamespace(login_throttle=LoginThrottle(clock=clock)))
    assert [asgi_login(guard, "ana", "mala", "10.0.0.1")[0] for _ in range(5)] == [400] * 5
    status, headers, body = asgi_login(guard, "ana", PW, "10.0.0.1")
    assert status == 429 and headers[b"retry-after"] == b"2"
    assert REFUSED.match(json.loads(body)["detail"])
    assert inner.checked == ["ana"] * 5, "the refused attempt never reached the password check"
    assert asgi_login(guard, "ana", PW, "10.0.0.2")[0] == 200, "another address gets in"
    clock.advance(2)
    assert asgi_login(guard, "ana", PW, "10.0.0.1")[0] == 200, "after the wait, the right password works"


# ----------------------------------------------------------------------------- the launched app over HTTP
@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """A small app with accounts, launched exactly as app.main() does (tests.helpers.serve), behind a trusted
    proxy on loopback (so each test picks its client address with X-Forwarded-For)."""
    import gradio as gr

    from esllm.ui.context import AppContext

    store = new_store(tmp_path_factory.mktemp("throttle") / "app.sqlite3", accounts={"ana": "admin", "beto": "rater"},
                      password=PW)
    ctx = AppContext(config=None, engine=FakeEngine(), sessionmaker=store.Session, local_mode=False)
    with gr.Blocks() as demo:
        gr.Button().click(lambda: "hola", None, gr.Textbox(), api_name="saludo")
    demo.queue()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ESLLM_TRUSTED_PROXIES", "127.0.0.1")
        url = serve(demo, ctx)
    yield SimpleNamespace(url=url, ctx=ctx)
    demo.close()
    store.dispose()


@pytest.fixture
def app(app_url, monkeypatch):
    """The app with fresh counters on a fake clock, and every call of ctx.check_login recorded."""
    ctx = app_url.ctx
    clock = Clock()
    monkeypatch.setattr(ctx, "login_throttle", LoginThrottle(clock=clock))
    checked: list[str] = []
    real = ctx.check_login

    def counted(name, password):
        checked.append(name)
        return real(name, password)

    monkeypatch.setattr(ctx, "check_login", counted)
    return SimpleNamespace(url=app_url.url, ctx=ctx, clock=clock, checked=checked)


def post_login(url, name, password, address=None, multipart=False):
    headers = {"X-Forwarded-For": address} if address else {}
    if multipart:  # the login page sends FormData
        return httpx.post(url + "login", files={"username": (None, name), "password": (None, password)},
                          headers=headers, timeout=30)
    return httpx.post(url + "login", data={"username": name, "password": password}, headers=headers, timeout=30)


def test_sixth_wrong_password_is_refused_in_spanish_without_a_check_then_the_wait_passes(app):
    for _ in range(5):
        r = post_login(app.url, "ana", "mala-clave")
        assert r.status_code == 400, r.text
    r = post_login(app.url, "ana", "otra-mala")
    assert r.status_code == 429 and r.headers["retry-after"] == "2", (r.status_code, r.text)
    assert REFUSED.match(r.json()["detail"]), r.json()
    assert post_login(app.url, "ana", PW).status_code == 429, "the right password must wait too"
    assert app.checked == ["ana"] * 5, "refused attempts never reach check_login (no scrypt)"
    app.clock.advance(2)
    ok = post_login(app.url, "ana", PW)
    assert ok.status_code == 200, ok.text
    call = app.url + "gradio_api/call/saludo"
    assert httpx.post(call, json={"data": []}, timeout=30).status_code == 401
    r = httpx.post(call, json={"data": []}, cookies=ok.cookies, timeout=30)
    assert r.status_code == 200, "the login cookie works"


def test_a_success_resets_the_counter(app):
    for _ in range(4):
        assert post_login(app.url, "Ana ", "mala-clave").status_code == 400
    assert post_login(app.url, "ana", PW).status_code == 200
    for _ in range(5):  # five free failures again (the page's FormData shape too)
        assert post_login(app.url, "ana", "mala-clave", multipart=True).status_code == 400
    r = post_login(app.url, "ANA", "mala-clave", multipart=True)
    assert r.status_code == 429 and REFUSED.match(r.json()["detail"])
    assert len(app.checked) == 10


def test_another_address_is_not_blocked_and_the_per_user_wait_is_capped(app):
    attacker = [f"203.0.113.{i}" for i in range(1, 6)]
    for a in attacker[:2]:
        for _ in range(5):
            assert post_login(app.url, "beto", "adivina", a).status_code == 400
        assert post_login(app.url, "beto", "adivina", a).status_code == 429, "the attacker's address waits"
    ok = post_login(app.url, "beto", PW, "198.51.100.7")
    assert ok.status_code == 429 and int(ok.headers["retry-after"]) <= USER.cap, \
        "past 10 failures across addresses, a new address waits a little"
    for _ in range(6):  # the attacker keeps on from ever new addresses, as fast as allowed
        for a in attacker[2:]:
            r = post_login(app.url, "beto", "adivina", a)
            if r.status_code == 429:
                app.clock.advance(int(r.headers["retry-after"]))
                r = post_login(app.url, "beto", "adivina", a)
            assert r.status_code == 400
        r = post_login(app.url, "beto", PW, "198.51.100.7")
        assert r.status_code == 429 and int(r.headers["retry-after"]) <= USER.cap, "never more than the cap"
    app.clock.advance(USER.cap)
    assert post_login(app.url, "beto", PW, "198.51.100.7").status_code == 200, "the user gets in"


def test_the_password_check_runs_off_the_event_loop(app, monkeypatch):
    """While a login's check runs (held here), the server still answers other requests."""
    import app as app_module

    assert inspect.iscoroutinefunction(app_module.launch_kwargs(app.ctx, "127.0.0.1")["auth"])
    release, entered = threading.Event(), threading.Event()
    counted = app.ctx.check_login

    def slow(name, password):
        entered.set()
        release.wait(30)
        return counted(name, password)

    monkeypatch.setattr(app.ctx, "check_login", slow)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", post_login(app.url, "ana", PW)))
    t.start()
    try:
        assert entered.wait(30)
        t0 = time.perf_counter()
        page = httpx.get(app.url, timeout=10)
        assert page.status_code == 200 and time.perf_counter() - t0 < 10
    finally:
        release.set()
        t.join(30)
    assert result["r"].status_code == 200


def test_limit_parameters_are_injectable():
    th = LoginThrottle(pair=Limit(free=1, base=0.5, cap=1, burst=1), clock=Clock())
    assert attempt(th, "ana", "10.0.0.1") is None
    assert th.begin("ana", "10.0.0.1").wait_s == 1
