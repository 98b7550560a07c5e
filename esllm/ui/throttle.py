"""Login throttling: growing waits after failed logins, per user and per client address, never a lockout.

Gradio's login route (`POST /login`, also `/login/`) checks a name and password with the app's `auth`
function and answers 200 (with the login cookies) or 400 («Incorrect credentials.»). It has no limit of its
own. `LoginGuard`, an ASGI middleware installed through `launch(app_kwargs=…)` when the app has accounts,
reads the login form (and replays it to Gradio), asks `LoginThrottle` whether the attempt may go ahead, and
records the outcome from the status Gradio answers. A refused attempt gets 429 with `Retry-After` and a
JSON body `{"detail": "Demasiados intentos fallidos. Espere N s y vuelva a intentarlo."}`; it never reaches
the password check (no scrypt cost).

Three counters of failed attempts, each with its own `Limit` (free failures, then a wait that starts at
`base` seconds and doubles with each further failure up to `cap`):

- the pair (user name, client address): 5 free, then 2, 4, 8 … s, at most 5 minutes;
- the client address, across all names (someone trying many names): 20 free, same growth and cap;
- the user name, across all addresses (guesses spread over many addresses): 10 free, then at most 1 minute.
  This one is gentle and capped because anyone can feed it: a third party can only slow an account down
  (one attempt a minute at worst), never lock it. An address the user has logged in from before (in the
  last 30 days, while the server runs) is not subject to it at all.

A counter forgets its failures after `window` (15 minutes) without a new one. A successful login clears
the pair and the user counters and takes that pair's failures off the address counter (failures the
address made against other names stay: logging into one's own account does not buy more guesses).
Attempts in flight count too: while a counter is at its limit only one attempt at a time goes ahead, so
parallel clients gain nothing. Counters live in memory (a restart clears them), each table bounded
(`max_entries`, the least recently used dropped first) so a flood of made-up names cannot exhaust memory.

The client address is what uvicorn puts in the ASGI scope: the peer address, or the `X-Forwarded-For`
address when the peer is a trusted proxy (uvicorn trusts 127.0.0.1 and ::1 by default; set
`FORWARDED_ALLOW_IPS` for a proxy on another host).

`threaded_login(ctx)` is the `auth` function to give Gradio: a coroutine that runs `ctx.check_login` (a
~40 ms scrypt) in a worker thread, so a login no longer stalls the server's event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Hashable, NamedTuple, Optional

from starlette.middleware import Middleware
from starlette.requests import Request

from esllm.store.users import normalize_name

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # a login form is a few hundred bytes
MAX_NAME = 128  # characters of a user name kept as a key


@dataclass(frozen=True)
class Limit:
    """`free` failures without a wait; then `base` seconds after the last failure, doubled with each further
    failure, at most `cap`. `burst`: how many attempts (failures + in flight) may go ahead at once while the
    counter is under `free`."""

    free: int
    base: float
    cap: float
    burst: int

    def delay(self, failures: int) -> float:
        if failures < self.free:
            return 0.0
        return min(self.cap, self.base * 2.0 ** min(failures - self.free, 64))


PAIR = Limit(free=5, base=2.0, cap=300.0, burst=5)
ADDRESS = Limit(free=20, base=2.0, cap=300.0, burst=40)
USER = Limit(free=10, base=2.0, cap=60.0, burst=10)
WINDOW = 15 * 60.0  # seconds without a failure after which a counter starts again from zero
KNOWN_FOR = 30 * 24 * 3600.0  # how long an address a user logged in from exempts them from the user counter


class Refusal(NamedTuple):
    wait_s: int  # whole seconds, at least 1
    message: str  # Spanish, for the user


@dataclass
class _Entry:
    failures: int = 0
    last: float = 0.0  # when the last failure happened
    inflight: int = 0


class _Table:
    """One counter per key, the least recently used dropped beyond `max_entries`."""

    def __init__(self, name: str, limit: Limit, window: float, max_entries: int) -> None:
        self.name, self.limit, self.window, self.max_entries = name, limit, window, max_entries
        self.entries: OrderedDict[Hashable, _Entry] = OrderedDict()

    def get(self, key: Hashable, now: float) -> Optional[_Entry]:
        e = self.entries.get(key)
        if e is not None and e.failures and now - e.last >= self.window:
            e.failures = 0  # forgotten after a quiet window
        return e

    def entry(self, key: Hashable, now: float) -> _Entry:
        e = self.get(key, now)
        if e is None:
            e = self.entries[key] = _Entry()
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)
        else:
            self.entries.move_to_end(key)
        return e

    def wait(self, key: Hashable, now: float) -> tuple[float, bool]:
        """(seconds before the next attempt may go ahead, whether because of failures)."""
        e = self.get(key, now)
        if e is None:
            return 0.0, False
        lim = self.limit
        if e.failures >= lim.free:
            if e.inflight:  # one attempt at a time once at the limit
                return lim.base, True
            return max(0.0, e.last + lim.delay(e.failures) - now), True
        if e.failures + e.inflight >= lim.burst:
            return lim.base, False
        return 0.0, False

    def start(self, key: Hashable, now: float) -> None:
        self.entry(key, now).inflight += 1

    def fail(self, key: Hashable, now: float) -> None:
        e = self.entry(key, now)
        e.inflight = max(0, e.inflight - 1)
        e.failures += 1
        e.last = now
        if e.failures == self.limit.free:
            log.warning("login: %d intentos fallidos seguidos (%s %r): se exige esperar", e.failures, self.name, key)

    def release(self, key: Hashable, now: float, clear: bool = False) -> int:
        """An attempt ended without a failure; `clear` also forgets the failures. The failures forgotten."""
        e = self.get(key, now)
        if e is None:
            return 0
        e.inflight = max(0, e.inflight - 1)
        cleared = e.failures if clear else 0
        e.failures -= cleared
        if not e.failures and not e.inflight:
            del self.entries[key]
        return cleared


class LoginThrottle:
    """The counters of failed logins (see the module docstring). `begin` before an attempt, `end` after it.

    Thread-safe. `clock` (seconds, monotonic) and the limits are parameters so tests need not wait."""

    def __init__(self, *, pair: Limit = PAIR, address: Limit = ADDRESS, user: Limit = USER,
                 window: float = WINDOW, known_for: float = KNOWN_FOR, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pairs = _Table("usuario y dirección", pair, window, max_entries)
        self.addresses = _Table("dirección", address, window, max_entries)
        self.users = _Table("usuario", user, window, max_entries)
        self.known: OrderedDict[tuple[str, str], float] = OrderedDict()  # (user, address) -> last success
        self.known_for, self.max_entries, self.clock = known_for, max_entries, clock
        self.lock = threading.Lock()

    @staticmethod
    def key(name: str) -> str:
        return normalize_name(name)[:MAX_NAME]

    def _known(self, user: str, address: str, now: float) -> bool:
        t = self.known.get((user, address))
        return t is not None and now - t < self.known_for

    def begin(self, name: str, address: str) -> Optional[Refusal]:
        """None: the attempt may go ahead (it counts as in flight until `end`); else why not and for how long."""
        user = self.key(name)
        with self.lock:
            now = self.clock()
            waits = [self.pairs.wait((user, address), now), self.addresses.wait(address, now)]
            if not self._known(user, address, now):
                waits.append(self.users.wait(user, now))
            wait = max(w for w, _ in waits)
            if wait > 0:
                s = max(1, math.ceil(wait))
                if any(failed and w > 0 for w, failed in waits):
                    return Refusal(s, f"Demasiados intentos fallidos. Espere {s} s y vuelva a intentarlo.")
                return Refusal(s, f"Demasiados intentos de inicio de sesión a la vez. Espere {s} s y vuelva a "
                                  "intentarlo.")
            self.pairs.start((user, address), now)
            self.addresses.start(address, now)
            self.users.start(user, now)
            return None

    def end(self, name: str, address: str, ok: Optional[bool]) -> None:
        """After an attempt that `begin` let through: `ok` True (logged in), False (refused) or None (neither,
        e.g. a malformed form)."""
        user = self.key(name)
        with self.lock:
            now = self.clock()
            if ok is False:
                self.pairs.fail((user, address), now)
                self.addresses.fail(address, now)
                self.users.fail(user, now)
                return
            cleared = self.pairs.release((user, address), now, clear=bool(ok))
            self.users.release(user, now, clear=bool(ok))
            self.addresses.release(address, now)
            if ok:
                e = self.addresses.get(address, now)
                if e is not None:
                    e.failures = max(0, e.failures - cleared)
                    if not e.failures and not e.inflight:
                        del self.addresses.entries[address]
                self.known[(user, address)] = now
                self.known.move_to_end((user, address))
                while len(self.known) > self.max_entries:
                    self.known.popitem(last=False)


# ----------------------------------------------------------------------------- the middleware
def is_login_path(path: str) -> bool:
    """Gradio's login route: /login or /login/ (under whatever prefix the app is mounted at)."""
    return path.rstrip("/").endswith("/login")


def client_address(scope: dict) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "desconocida"


async def _read_body(receive: Any) -> Optional[bytes]:
    """The whole request body; None if the client went away; _TooLarge beyond MAX_BODY."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class _TooLarge(Exception):
    pass


async def _form_username(scope: dict, body: bytes) -> str:
    """The `username` field of the login form, parsed as FastAPI parses it for Gradio ("" if none)."""
    async def once() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        async with Request(scope, once).form() as form:
            value = form.get("username")
            return value if isinstance(value, str) else ""
    except Exception:  # a malformed form: Gradio refuses it too (422)
        return ""


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_json(send: Any, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}, ensure_ascii=False).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class LoginGuard:
    """ASGI middleware: `ctx.login_throttle` in front of Gradio's login route (see the module docstring)."""

    def __init__(self, app: Any, ctx: Any) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if not (scope.get("type") == "http" and scope.get("method") == "POST"
                and is_login_path(scope.get("path", ""))):
            await self.app(scope, receive, send)
            return
        throttle: LoginThrottle = self.ctx.login_throttle
        try:
            body = await _read_body(receive)
        except _TooLarge:
            await _send_json(send, 413, "Solicitud de inicio de sesión demasiado grande.")
            return
        if body is None:
            return
        name, address = await _form_username(scope, body), client_address(scope)
        refusal = throttle.begin(name, address)
        if refusal is not None:
            await _send_json(send, 429, refusal.message, [(b"retry-after", str(refusal.wait_s).encode())])
            return
        status: Optional[int] = None

        async def watch(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, _replay(body, receive), watch)
        finally:
            # 200: logged in; 400: wrong name or password; no answer at all (an error, a cancelled request)
            # counts as a failure so that nothing escapes the count; anything else (422: no form) is neither.
            throttle.end(name, address, True if status == 200 else False if status in (400, None) else None)


def threaded_login(ctx: Any) -> Callable[[str, str], Any]:
    """Gradio's `auth`: a coroutine (Gradio awaits it) running `ctx.check_login` in a worker thread, so the
    scrypt check does not stall the event loop. Looked up at each call (tests may wrap it)."""
    async def auth(username: str, password: str) -> bool:
        return await asyncio.to_thread(ctx.check_login, username, password)

    return auth


def login_middleware(ctx: Any) -> list[Middleware]:
    """For `demo.launch(app_kwargs={"middleware": [*…, *login_middleware(ctx)]})` when the app has accounts."""
    return [Middleware(LoginGuard, ctx=ctx)]
