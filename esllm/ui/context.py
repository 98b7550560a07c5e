"""The objects every tab needs, passed around in one dataclass (no module globals), and who is calling.

Accounts: with no user in the database the app runs in single-user local mode (bound to 127.0.0.1
only; app.py refuses anything else) and every caller is that local admin. With accounts, Gradio's
login protects every page and API call, and `caller(request)` maps the logged-in name to a role.
Handlers ask `require(request, role)`: the UI hiding a button is never the check.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from esllm import EsllmError
from esllm.config import AppConfig
from esllm.engine import Engine


@dataclass(frozen=True)
class Caller:
    id: Optional[int]  # None for the local admin of local mode
    name: str
    role: str  # "admin" | "rater"


LOCAL_ADMIN = Caller(None, "local", "admin")


@dataclass
class AppContext:
    config: AppConfig
    engine: Engine
    sessionmaker: Optional[Callable[[], Any]] = None  # SQLAlchemy sessions of the rating store
    local_mode: bool = True
    # Browser session -> stop flag of the generation it is running (the «Detener» button).
    stops: dict[str, threading.Event] = field(default_factory=dict)
    stops_lock: threading.Lock = field(default_factory=threading.Lock)

    def new_stop(self, session: str) -> threading.Event:
        ev = threading.Event()
        with self.stops_lock:
            old = self.stops.get(session)
            if old is not None:
                old.set()  # a new request from the same tab ends its previous one
            self.stops[session] = ev
        return ev

    def stop(self, session: str) -> bool:
        with self.stops_lock:
            ev = self.stops.get(session)
        if ev is None:
            return False
        ev.set()
        return True

    # ------------------------------------------------------------ accounts
    def check_login(self, name: str, password: str) -> bool:
        from esllm.store.users import authenticate

        with self.sessionmaker() as s:
            return authenticate(s, name or "", password or "") is not None

    def caller(self, request: Any) -> Optional[Caller]:
        if self.local_mode:
            return LOCAL_ADMIN
        name = getattr(request, "username", None) if request is not None else None
        if not name or self.sessionmaker is None:
            return None
        from sqlalchemy import select

        from esllm.store.models import User

        # Asked on every call (a deactivated user is refused at once); three columns, no ORM object to build.
        with self.sessionmaker() as s:
            row = s.execute(select(User.id, User.name, User.role).where(User.name == str(name).lower(),
                                                                       User.active)).first()
            return Caller(*row) if row else None

    def require(self, request: Any, *roles: str) -> Caller:
        """The caller, if logged in with one of `roles` (any role when none given); else EsllmError."""
        c = self.caller(request)
        if c is None:
            raise EsllmError("Inicie sesión para usar esta función.")
        if roles and c.role not in roles:
            raise EsllmError("No tiene permiso para esta acción.")
        return c
