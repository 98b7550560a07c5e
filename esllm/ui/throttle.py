"""Login throttling: growing waits after failed logins, per user and per client address, never a lockout.

Gradio's login route (`POST /login`) has no limit of its own; the login guard (esllm/ui/login_guard.py) asks
`LoginThrottle.begin` whether an attempt may go ahead and tells `end` the outcome. A refused attempt never
reaches the password check (no scrypt cost).

Three counters of failed attempts, each with its own `Limit` (free failures, then a wait that starts at
`base` seconds and doubles with each further failure up to `cap`):

- the pair (user name, client address): 5 free, then 2, 4, 8 … s, at most 5 minutes;
- the client address, across all names (someone trying many names): 20 free, same growth and cap;
- the user name, across all addresses (guesses spread over many addresses): 10 free, then at most 1 minute.
  This one is gentle and capped because anyone can feed it: a third party can only slow an account down
  (one attempt a minute at worst), never lock it.

A *known* attempt — from an address the user logged in from before (in the last 30 days, while the server
runs), or from a browser carrying the signed cookie of an earlier login as that user (esllm/ui/device.py) —
is subject to the pair counter only: a shared address (a lab's NAT, an ssh tunnel) flooded with failures
under other names cannot keep a returning user out. With the cookie the pair is (user, address, cookie),
apart from everyone else's: someone guessing that user's password from the same address cannot slow the
cookie's holder either (without the cookie, they share the pair counter: at worst waits up to its cap).

A counter forgets its failures after `window` (15 minutes) without a new one. A successful login clears
the pair and the user counters and takes that pair's failures off the address counter (failures the
address made against other names stay: logging into one's own account does not buy more guesses).
Attempts in flight count too: while a counter is at its limit only one attempt at a time goes ahead, so
parallel clients gain nothing.

Memory: counters live in memory (a restart clears them). Keys are short (a checked IP address,
esllm/ui/addresses.py; a name cut to 128 characters), and each table is bounded in bytes (`max_bytes`,
counting each key's UTF-8 bytes plus `ENTRY_OVERHEAD`) and in entries. When a table is full, expired
counters go first, then the sixteenth with the fewest failures (the oldest among equals): junk failures
cannot evict a counter that holds more failures than each junk one, so wiping an account's counter of f
failures takes a table nearly full (15/16) of counters with f failures or more each, all within one window.
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Hashable, NamedTuple, Optional

from esllm.store.users import normalize_name

log = logging.getLogger(__name__)

MAX_NAME = 128  # characters of a user name kept as a key
ENTRY_OVERHEAD = 400  # bytes an entry holds beyond its key's text (dict slot, key tuple and strings, counter):
#                       measured with tracemalloc (tests/test_hardening_web.py), rounded up
MAX_BYTES = 4 * 2**20  # per table: ~10,000 entries of ordinary names, ~4,000 of the longest


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
    cost: int = 0  # bytes counted for it


def entry_cost(key: Hashable) -> int:
    """The bytes a table counts for an entry under `key`."""
    parts = key if isinstance(key, tuple) else (key,)
    return ENTRY_OVERHEAD + sum(len(str(p).encode("utf-8")) for p in parts)


class _Table:
    """One counter per key, bounded in entries and bytes (see the module docstring for what goes first)."""

    def __init__(self, name: str, limit: Limit, window: float, max_entries: int, max_bytes: int) -> None:
        self.name, self.limit, self.window = name, limit, window
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.entries: dict[Hashable, _Entry] = {}
        self.bytes = 0

    def get(self, key: Hashable, now: float) -> Optional[_Entry]:
        e = self.entries.get(key)
        if e is not None and e.failures and now - e.last >= self.window:
            e.failures = 0  # forgotten after a quiet window
        return e

    def entry(self, key: Hashable, now: float) -> _Entry:
        e = self.get(key, now)
        if e is None:
            cost = entry_cost(key)
            self._make_room(cost, now)
            e = self.entries[key] = _Entry(cost=cost)
            self.bytes += cost
        return e

    def _full(self, cost: int) -> bool:
        return bool(self.entries) and (len(self.entries) >= self.max_entries or self.bytes + cost > self.max_bytes)

    def _make_room(self, cost: int, now: float) -> None:
        if not self._full(cost):
            return
        for k in [k for k, e in self.entries.items() if not e.inflight and (not e.failures or now - e.last >= self.window)]:
            self.drop(k)
        if self._full(cost):  # the 1/16 with the fewest failures (oldest first): one pass per 1/16 of inserts
            victims = heapq.nsmallest(max(1, len(self.entries) // 16), self.entries.items(),
                                      key=lambda kv: (kv[1].failures, kv[1].last))
            for k, _ in victims:
                self.drop(k)
        while self._full(cost):
            self.drop(min(self.entries, key=lambda k: (self.entries[k].failures, self.entries[k].last)))

    def drop(self, key: Hashable) -> None:
        self.bytes -= self.entries.pop(key).cost

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

    def release(self, key: Hashable, now: float, clear: bool = False, forget: int = 0) -> int:
        """An attempt ended without a failure (`forget`: failures to take off); `clear` forgets them all.
        Returns the failures forgotten."""
        e = self.get(key, now)
        if e is None:
            return 0
        e.inflight = max(0, e.inflight - 1)
        cleared = e.failures if clear else min(forget, e.failures)
        e.failures -= cleared
        if not e.failures and not e.inflight:
            self.drop(key)
        return cleared


class LoginThrottle:
    """The counters of failed logins (see the module docstring). `begin` before an attempt, `end` after it.

    Thread-safe. `clock` (seconds, monotonic) and the limits are parameters so tests need not wait."""

    def __init__(self, *, pair: Limit = PAIR, address: Limit = ADDRESS, user: Limit = USER,
                 window: float = WINDOW, known_for: float = KNOWN_FOR, max_entries: int = 10_000,
                 max_bytes: int = MAX_BYTES, clock: Callable[[], float] = time.monotonic) -> None:
        self.pairs = _Table("usuario y dirección", pair, window, max_entries, max_bytes)
        self.addresses = _Table("dirección", address, window, max_entries, max_bytes)
        self.users = _Table("usuario", user, window, max_entries, max_bytes)
        # (user, address) -> when the user last logged in from there; its own bytes in known_bytes
        self.known: dict[tuple[str, str], float] = {}
        self.known_bytes = 0
        self.known_for, self.max_entries, self.max_bytes, self.clock = known_for, max_entries, max_bytes, clock
        self.lock = threading.Lock()

    @staticmethod
    def key(name: str) -> str:
        return normalize_name(name)[:MAX_NAME]

    def _pair(self, name: str, address: str, device: bool) -> tuple[str, ...]:
        return (self.key(name), address, "cookie") if device else (self.key(name), address)

    def _known(self, user: str, address: str, now: float) -> bool:
        t = self.known.get((user, address))
        return t is not None and now - t < self.known_for

    def begin(self, name: str, address: str, device: bool = False) -> Optional[Refusal]:
        """None: the attempt may go ahead (it counts as in flight until `end`); else why not and for how long.
        `device`: the browser carries a valid signed cookie of an earlier login as `name` (esllm/ui/device.py)."""
        user, pair = self.key(name), self._pair(name, address, device)
        with self.lock:
            now = self.clock()
            waits = [self.pairs.wait(pair, now)]
            if not (device or self._known(user, address, now)):
                waits += [self.addresses.wait(address, now), self.users.wait(user, now)]
            wait = max(w for w, _ in waits)
            if wait > 0:
                s = max(1, math.ceil(wait))
                if any(failed and w > 0 for w, failed in waits):
                    return Refusal(s, f"Demasiados intentos fallidos. Espere {s} s y vuelva a intentarlo.")
                return Refusal(s, f"Demasiados intentos de inicio de sesión a la vez. Espere {s} s y vuelva a "
                                  "intentarlo.")
            self.pairs.start(pair, now)
            self.addresses.start(address, now)
            self.users.start(user, now)
            return None

    def end(self, name: str, address: str, ok: Optional[bool], device: bool = False) -> None:
        """After an attempt that `begin` let through (with the same `device`): `ok` True (logged in), False
        (refused) or None (neither, e.g. a malformed form)."""
        user, pair = self.key(name), self._pair(name, address, device)
        with self.lock:
            now = self.clock()
            if ok is False:
                self.pairs.fail(pair, now)
                self.addresses.fail(address, now)
                self.users.fail(user, now)
                return
            cleared = self.pairs.release(pair, now, clear=bool(ok))
            self.users.release(user, now, clear=bool(ok))
            self.addresses.release(address, now, forget=cleared if ok else 0)
            if ok:
                self._remember(user, address, now)

    def _remember(self, user: str, address: str, now: float) -> None:
        """(user, address) logged in now; the least recently remembered dropped beyond the bounds."""
        key = (user, address)
        if key in self.known:
            del self.known[key]
        else:
            self.known_bytes += entry_cost(key)
        self.known[key] = now  # insertion order: the oldest first
        while len(self.known) > self.max_entries or self.known_bytes > self.max_bytes:
            old = next(iter(self.known))
            del self.known[old]
            self.known_bytes -= entry_cost(old)
