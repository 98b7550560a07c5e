"""Issue 25, findings 1, 2, 3 and 8, over HTTP on the launched app: the client address (the TCP peer unless
ESLLM_TRUSTED_PROXIES names a proxy), the throttle's memory and eviction, logins behind a shared address
(known address, signed device cookie), uploads (admins only, one file, an hourly total, the cache swept), and
Gradio's queue and monitoring routes (the owning login only; admins only).

    .venv/bin/python -m pytest tests/test_hardening_web.py
"""

from __future__ import annotations

import random
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from esllm.ui.throttle import ADDRESS, LoginThrottle
from esllm.ui.uploads import CACHE_SWEEP, UploadBudget, discard_upload
from tests.helpers import FakeEngine, new_store, serve, wait_until

PW = "contraseña-segura"
ACCOUNTS = {"ana": "admin", "beto": "rater", "carla": "rater"}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


def _launch(tmp, proxies: str | None):
    import gradio as gr

    from esllm.ui.context import AppContext

    store = new_store(tmp / "app.sqlite3", accounts=ACCOUNTS, password=PW)
    ctx = AppContext(config=None, engine=FakeEngine(), sessionmaker=store.Session, local_mode=False)

    def eco(text):
        for i in range(40):  # slow enough for another client to try to read it
            time.sleep(0.05)
            yield f"{text}-{i}"

    with gr.Blocks() as demo:
        box = gr.Textbox()
        gr.Button().click(eco, box, gr.Textbox(), api_name="eco")
        gr.File(type="filepath")
    demo.queue()
    with pytest.MonkeyPatch.context() as mp:
        if proxies is None:
            mp.delenv("ESLLM_TRUSTED_PROXIES", raising=False)
        else:
            mp.setenv("ESLLM_TRUSTED_PROXIES", proxies)
        url = serve(demo, ctx)
    return SimpleNamespace(url=url, ctx=ctx, demo=demo, store=store)


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    """Two apps: `plain` (no proxy named: the client is the TCP peer, 127.0.0.1 for every test request, like
    everyone coming through one ssh tunnel or NAT) and `proxied` (ESLLM_TRUSTED_PROXIES=127.0.0.1)."""
    plain = _launch(tmp_path_factory.mktemp("plain"), None)
    proxied = _launch(tmp_path_factory.mktemp("proxied"), "127.0.0.1")
    yield SimpleNamespace(plain=plain, proxied=proxied)
    for a in (plain, proxied):
        a.demo.close()
        a.store.dispose()


@pytest.fixture
def clock(apps, monkeypatch):
    c = Clock()
    for a in (apps.plain, apps.proxied):
        monkeypatch.setattr(a.ctx, "login_throttle", LoginThrottle(clock=c))
    return c


def post_login(url, name, password, address=None, cookies=None):
    headers = {"X-Forwarded-For": address} if address else {}
    return httpx.post(url + "login", data={"username": name, "password": password}, headers=headers,
                      cookies=cookies, timeout=30)


def logged_in(url, name) -> httpx.Cookies:
    r = post_login(url, name, PW)
    assert r.status_code == 200, r.text
    return r.cookies


# ----------------------------------------------------------------------------- 1: the client address
def test_made_up_forwarded_addresses_get_no_fresh_budget_without_a_named_proxy(apps, clock):
    """From loopback (an ssh tunnel), each X-Forwarded-For used to be a new address: 5 more guesses each."""
    for i in range(5):
        assert post_login(apps.plain.url, "ana", "adivina", f"203.0.113.{i}").status_code == 400
    r = post_login(apps.plain.url, "ana", "adivina", "198.51.100.77")
    assert r.status_code == 429, (r.status_code, r.text)  # before the fix: 400, a fresh budget
    assert r.json()["detail"].startswith("Demasiados intentos fallidos")


@pytest.mark.parametrize("forwarded", ["x" * 100_000, "no-es-una-ip", "1.2.3.4, " + "9" * 300])
def test_a_malformed_or_over_long_forwarded_address_is_refused_in_spanish(apps, clock, forwarded):
    r = post_login(apps.proxied.url, "beto", PW, forwarded)
    assert r.status_code == 400, (r.status_code, r.text[:200])  # before the fix: 200, the address a key
    assert "X-Forwarded-For" in r.json()["detail"] and r.json()["detail"].startswith("No se pudo determinar")
    assert post_login(apps.proxied.url, "beto", PW, "192.0.2.10").status_code == 200, "a real address works"


def attempts_per_hour(th: LoginThrottle, clock: Clock, name: str, address: str) -> int:
    """Failures an attacker as fast as allowed makes against `name` from `address` in one hour."""
    end, n = clock.t + 3600, 0
    while True:
        r = th.begin(name, address)
        if r is not None:
            clock.advance(r.wait_s)
            continue
        if clock.t >= end:
            th.end(name, address, None)
            return n
        th.end(name, address, False)
        n += 1


def test_an_attacker_on_one_address_makes_at_most_23_guesses_an_hour_per_account():
    clock = Clock()
    th = LoginThrottle(clock=clock)
    assert attempts_per_hour(th, clock, "ana", "127.0.0.1") == 23
    # the next hour, against another account: the address counter (23 failures already) doubles up to 5 minutes
    assert attempts_per_hour(th, clock, "beto", "127.0.0.1") == 15
    assert attempts_per_hour(th, clock, "carla", "127.0.0.1") == 12, "then one guess per 5 minutes in all"


def test_the_tables_are_bounded_in_bytes_under_a_flood_of_long_names():
    th = LoginThrottle(clock=Clock(), max_bytes=2**20)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(20_000):  # the longest names kept (128 characters of 4 bytes), each from a new address
        name = f"{i:05d}" + "𝔞" * 200
        assert th.begin(name, f"10.{i // 65536}.{i // 256 % 256}.{i % 256}") is None
        th.end(name, f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", False)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    for t in (th.pairs, th.users, th.addresses):
        assert 0 < t.bytes <= 2**20, (t.name, t.bytes)
    assert grown < 3 * 2**20 * 1.5, f"{grown / 2**20:.1f} MiB for three tables of 1 MiB"


def test_junk_failures_do_not_evict_an_accounts_counter():
    clock = Clock()
    th = LoginThrottle(clock=clock)
    for a in range(2):
        for _ in range(5):
            assert th.begin("ana", f"192.0.2.{a}") is None
            th.end("ana", f"192.0.2.{a}", False)
    for i in range(10_000):  # junk: one failure each under a new name from a new address
        name, address = f"basura{i}", f"10.1.{i // 256}.{i % 256}"
        assert th.begin(name, address) is None
        th.end(name, address, False)
    r = th.begin("ana", "198.51.100.1")
    assert r is not None and r.wait_s == 2, "the account's 10 failures still count"  # before: evicted


# ----------------------------------------------------------------------------- 2: a shared address
def test_a_rater_who_logged_in_before_gets_in_through_a_flooded_shared_address(apps, clock):
    logged_in(apps.plain.url, "beto")
    for i in range(ADDRESS.free + 1):  # someone behind the same address (127.0.0.1) tries other names
        r = post_login(apps.plain.url, f"otro{i}", "adivina")
        assert r.status_code in (400, 429)
    assert post_login(apps.plain.url, "carla", PW).status_code == 429, "a new name waits: the address is flooded"
    r = post_login(apps.plain.url, "beto", PW)
    assert r.status_code == 200, (r.status_code, r.text)  # before the fix: 429


def test_a_signed_cookie_from_an_earlier_login_lets_a_rater_in_from_a_flooded_address(apps, clock):
    first = post_login(apps.proxied.url, "carla", PW, "198.51.100.20")
    assert first.status_code == 200
    device = {k: v for k, v in first.cookies.items() if k.startswith("esllm-disp-")}
    assert len(device) == 1 and "carla" not in next(iter(device))  # before the fix: no such cookie
    nat = "203.0.113.50"
    for i in range(ADDRESS.free + 1):
        post_login(apps.proxied.url, f"otro{i}", "adivina", nat)
    assert post_login(apps.proxied.url, "carla", PW, nat).status_code == 429, "without the cookie: waits"
    forged = {next(iter(device)): "%d.%s" % (time.time(), "0" * 64)}
    assert post_login(apps.proxied.url, "carla", PW, nat, cookies=forged).status_code == 429, "a forged one: no"
    assert post_login(apps.proxied.url, "beto", PW, nat, cookies=device).status_code == 429, "not beto's"
    assert post_login(apps.proxied.url, "carla", PW, nat, cookies=device).status_code == 200


def class_behind_a_nat(device: bool, seed: int = 0) -> tuple[int, int, int]:
    """40 raters who logged in from the NAT before (`device`: and carry the signed cookie), an attacker on the
    same NAT failing as fast as allowed for an hour, guessing at the raters' names and at made-up ones, two
    raters logging in each second: (refusals of a correct password, the longest wait told, the guesses)."""
    clock = Clock()
    th = LoginThrottle(clock=clock)
    nat, rng = "203.0.113.7", random.Random(seed)
    raters = [f"evaluador{i}" for i in range(40)]
    for r in raters:
        assert th.begin(r, nat) is None
        th.end(r, nat, True)
    refused = longest = guesses = 0
    end = clock.t + 3600
    while clock.t < end:
        name = rng.choice([*raters, f"inventado{guesses}"])
        if th.begin(name, nat) is None:
            th.end(name, nat, False)
            guesses += 1
        for r in rng.sample(raters, 2):
            refusal = th.begin(r, nat, device=device)
            if refusal is not None:
                refused, longest = refused + 1, max(longest, refusal.wait_s)
            else:
                th.end(r, nat, True, device)
        clock.advance(1)
    return refused, longest, guesses


def test_forty_raters_behind_one_nat_while_someone_guesses_there():
    refused, longest, guesses = class_behind_a_nat(device=True)
    assert refused == 0, "with the cookie, a correct password is never refused"
    assert guesses <= 40 * 23 + 12, guesses
    refused, longest, _ = class_behind_a_nat(device=False)
    assert longest <= 300, "known address, no cookie: the attacker shares the rater's pair counter, capped"


# ----------------------------------------------------------------------------- 3: uploads
def upload(url, files, cookies):
    return httpx.post(url + "gradio_api/upload", files=files, cookies=cookies, timeout=60)


def test_a_rater_cannot_upload_and_an_admin_uploads_one_file_at_a_time(apps, clock):
    a = apps.plain
    rater, admin = logged_in(a.url, "beto"), logged_in(a.url, "ana")
    r = upload(a.url, {"files": ("x.jsonl", b"{}")}, rater)
    assert r.status_code == 403 and r.json()["detail"] == "Solo los administradores pueden subir archivos."
    many = [("files", (f"f{i}.jsonl", b"x" * 1000)) for i in range(3)]
    r = upload(a.url, many, admin)
    assert r.status_code == 400 and "un solo archivo" in r.json()["detail"], (r.status_code, r.text)
    r = upload(a.url, {"files": ("uno.jsonl", b"{}")}, admin)
    assert r.status_code == 200 and r.json()[0].endswith("uno.jsonl")


def test_an_admins_uploads_have_an_hourly_total(apps, clock, monkeypatch):
    a = apps.plain
    monkeypatch.setattr(a.ctx, "upload_budget", UploadBudget(hourly=100_000))
    admin = logged_in(a.url, "ana")
    assert [upload(a.url, {"files": ("a.jsonl", b"x" * 40_000)}, admin).status_code for _ in range(2)] == [200] * 2
    r = upload(a.url, {"files": ("a.jsonl", b"x" * 40_000)}, admin)
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert r.json()["detail"].startswith("Ha subido demasiados datos en la última hora")


def test_the_upload_cache_is_swept_and_an_imported_file_discarded(apps, clock, tmp_path):
    import inspect

    from esllm.ui import build_app

    assert CACHE_SWEEP == (3600, 3600) and "delete_cache=CACHE_SWEEP" in inspect.getsource(build_app)
    admin = logged_in(apps.plain.url, "ana")
    path = Path(upload(apps.plain.url, {"files": ("b.jsonl", b"{}")}, admin).json()[0])
    assert path.is_file()
    discard_upload(str(path))
    assert not path.exists()
    outside = tmp_path / "keep.txt"
    outside.write_text("x")
    discard_upload(str(outside))
    assert outside.exists(), "nothing outside Gradio's upload folder is deleted"


# ----------------------------------------------------------------------------- 8: queue and monitoring
def test_monitoring_is_for_admins_only(apps, clock):
    a = apps.plain
    r = httpx.get(a.url + "monitoring/summary", cookies=logged_in(a.url, "beto"), timeout=30)
    assert r.status_code == 403 and "administradores" in r.json()["detail"]  # before the fix: 200
    assert httpx.get(a.url + "monitoring/summary", cookies=logged_in(a.url, "ana"), timeout=30).status_code == 200


def test_anonymous_cancel_and_reset_are_refused(apps, clock):
    a = apps.plain
    r = httpx.post(a.url + "gradio_api/cancel", json={"session_hash": "abc", "fn_index": 0, "event_id": "e"},
                   timeout=30)
    assert r.status_code == 401 and r.json()["detail"].startswith("Inicie sesión")  # before the fix: 200
    assert httpx.post(a.url + "gradio_api/reset", json={"event_id": "e"}, timeout=30).status_code == 401


def test_another_login_cannot_read_or_cancel_a_sessions_stream(apps, clock):
    a = apps.plain
    beto, carla = logged_in(a.url, "beto"), logged_in(a.url, "carla")
    fn = next(i for i, f in a.demo.fns.items() if f.api_name == "eco")
    h = "sesion-de-beto-1"
    join = httpx.post(a.url + "gradio_api/queue/join", cookies=beto, timeout=30,
                      json={"data": ["hola"], "fn_index": fn, "session_hash": h})
    assert join.status_code == 200, join.text
    event = join.json()["event_id"]
    spy = httpx.get(a.url + "gradio_api/queue/data", params={"session_hash": h}, cookies=carla, timeout=30)
    assert spy.status_code == 403 and spy.json()["detail"] == "Esa sesión de la página pertenece a otro usuario."
    r = httpx.post(a.url + "gradio_api/cancel", cookies=carla, timeout=30,
                   json={"session_hash": h, "fn_index": fn, "event_id": event})
    assert r.status_code == 403
    r = httpx.post(a.url + "gradio_api/queue/join", cookies=carla, timeout=30,
                   json={"data": ["x"], "fn_index": fn, "session_hash": h})
    assert r.status_code == 403, "nor join it"
    seen = []
    with httpx.stream("GET", a.url + "gradio_api/queue/data", params={"session_hash": h}, cookies=beto,
                      timeout=30) as own:
        assert own.status_code == 200
        for line in own.iter_lines():
            seen.append(line)
            if "process_completed" in line:
                break
    assert any("hola-39" in line for line in seen), "the owner reads their own stream to the end"
    wait_until(lambda: True)
