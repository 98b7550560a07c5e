"""The objects every tab needs, passed around in one dataclass (no module globals), and who is calling.

Accounts: with no user in the database the app runs in single-user local mode (bound to 127.0.0.1
only; app.py refuses anything else) and every caller is that local admin. With accounts, Gradio's
login protects every page and API call (failed logins throttled: `login_throttle`, esllm/ui/throttle.py), and
`caller(request)` maps the logged-in name to a role.
The UI hiding a button is never the check: every handler is declared with `@handler(role, …)`, the
one error and permission path of the UI (role check first, then `EsllmError` -> `gr.Error` with its
Spanish message), and database writes go through `ctx.transaction()` (commit, or roll back on any error).
Handlers are module-level functions `fn(ctx, *inputs, request)`; a tab's builder wires them with
`bind(ctx, fn)`, so they can be called in tests without a server (see tests/test_ui_handlers.py).
"""

from __future__ import annotations

import functools
import inspect
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import gradio as gr
from sqlalchemy import select

from esllm import EsllmError
from esllm.engine.config import AppConfig
from esllm.engine.core import Engine
from esllm.store.models import User
from esllm.store.users import authenticate
from esllm.ui.throttle import LoginThrottle
from esllm.ui.uploads import UploadBudget


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
    # Failed-login counters, read by the login middleware (esllm/ui/throttle.py) at each attempt.
    login_throttle: LoginThrottle = field(default_factory=LoginThrottle)
    # Bytes each admin uploaded in the last hour, read by the upload guard (esllm/ui/uploads.py).
    upload_budget: UploadBudget = field(default_factory=UploadBudget)

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
        with self.sessionmaker() as s:
            return authenticate(s, name or "", password or "") is not None

    def caller(self, request: Any) -> Optional[Caller]:
        if self.local_mode:
            return LOCAL_ADMIN
        name = getattr(request, "username", None) if request is not None else None
        if not name or self.sessionmaker is None:
            return None
        # Asked on every call (a deactivated user is refused at once); three columns, no ORM object to build.
        with self.sessionmaker() as s:
            row = s.execute(select(User.id, User.name, User.role).where(User.name == str(name).lower(),
                                                                       User.active)).first()
            return Caller(*row) if row else None

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One database session for a handler: committed when the block ends, rolled back on any error. SQLite's
        «database is locked» (another writer held the file past the busy timeout: seen with 50 raters saving
        without pause, bench/bench_rating.py --think 0) becomes a Spanish EsllmError: nothing was written."""
        from sqlalchemy.exc import OperationalError

        if self.sessionmaker is None:
            raise EsllmError("No hay base de datos configurada: no se puede guardar.")
        with self.sessionmaker() as s:
            try:
                yield s
                s.commit()
            except OperationalError as e:
                s.rollback()
                if "locked" in str(e.orig).lower() or "busy" in str(e.orig).lower():
                    raise EsllmError("La base de datos está ocupada (muchos guardados a la vez): no se guardó nada de "
                                     "esta acción. Vuelva a intentarlo en unos segundos.") from None
                raise
            except BaseException:
                s.rollback()
                raise

    def is_admin(self, request: Any) -> bool:
        """For page-load functions, which fill admin-only lists and never raise: is the caller an admin?"""
        c = self.caller(request)
        return c is not None and c.role == "admin" and self.sessionmaker is not None

    def require(self, request: Any, *roles: str, denied: Optional[str] = None) -> Caller:
        """The caller, if logged in with one of `roles` (any role when none given); else EsllmError
        («Inicie sesión…», or `denied` / «No tiene permiso…» for a logged-in caller of another role)."""
        c = self.caller(request)
        if c is None:
            raise EsllmError("Inicie sesión para usar esta función.")
        if roles and c.role not in roles:
            raise EsllmError(denied or "No tiene permiso para esta acción.")
        return c


def to_gr_error(e: EsllmError) -> gr.Error:
    """The message a user sees: Spanish, no traceback in the server log (it is not a bug)."""
    return gr.Error(str(e), print_exception=False)


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == ()


def handler(*roles: str, idle: Optional[Callable[[], Any]] = None, login: bool = True,
            denied: Optional[str] = None):
    """Declare a UI handler `fn(ctx, *inputs, request[, progress])`, the one error and permission path.

    - `roles`: who may call it (none given: any logged-in caller); checked on the server before `fn` runs,
      whatever the page shows. `denied`: the refusal for a logged-in caller of another role (default
      «No tiene permiso…»). `login=False` skips the check (for a handler anyone may call, like «Detener»).
    - A handler that needs the checked caller declares a keyword-only parameter `caller` and gets it (no
      second query); `bind` hides that parameter from Gradio.
    - `idle`: when the first input (the first parameter after `ctx`) is empty (the change event of a list that
      a non-admin's page loads empty), return `idle()` without checking or calling: no error toast on a page
      that merely opened.
    - `EsllmError` raised by `fn` (or by the generator it returns) becomes `gr.Error` with its message.
    """
    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        names = list(sig.parameters)
        if names[:1] != ["ctx"] or "request" not in names:
            raise TypeError(f"{fn.__name__}: a handler takes (ctx, …, request)")
        first_input = names[1] if len(names) > 1 and names[1] not in ("request", "progress") else None
        caller_param = sig.parameters.get("caller")
        wants_caller = caller_param is not None and caller_param.kind is inspect.Parameter.KEYWORD_ONLY

        def check(args: tuple, kwargs: dict) -> tuple[bool, Any]:
            """(True, idle value) to answer at once, else (False, None) after the role check; fills `caller`."""
            bound = sig.bind_partial(*args, **kwargs)
            if idle is not None and first_input is not None and _is_empty(bound.arguments.get(first_input)):
                return True, idle()
            ctx, request = bound.arguments["ctx"], bound.arguments.get("request")
            c = ctx.require(request, *roles, denied=denied) if login else None
            if wants_caller and kwargs.get("caller") is None:
                kwargs["caller"] = c if login else ctx.caller(request)
            return False, None

        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                try:
                    done, value = check(args, kwargs)
                    if done:
                        yield value
                        return
                    yield from fn(*args, **kwargs)
                except EsllmError as e:
                    raise to_gr_error(e) from None
        else:
            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                try:
                    done, value = check(args, kwargs)
                    return value if done else fn(*args, **kwargs)
                except EsllmError as e:
                    raise to_gr_error(e) from None
        wrapper.roles = roles
        return wrapper
    return deco


def bind(ctx: "AppContext", fn: Callable, *preset: Any) -> Callable:
    """`fn` with `ctx` (and optionally the next arguments: per-build state) filled in, as Gradio wants an event
    function: the remaining parameters keep their names and annotations, so `request: gr.Request` and
    `progress=gr.Progress()` are still injected (Gradio reads them with `typing.get_type_hints`, so every
    annotation of a handler must resolve in its module). A keyword-only `caller` (see `handler`) is hidden."""
    sig = inspect.signature(fn)
    params = [p for p in list(sig.parameters.values())[1 + len(preset):]
              if not (p.name == "caller" and p.kind is inspect.Parameter.KEYWORD_ONLY)]
    if inspect.isgeneratorfunction(inspect.unwrap(fn)):
        @functools.wraps(fn)
        def bound(*args, **kwargs):
            yield from fn(ctx, *preset, *args, **kwargs)
    else:
        @functools.wraps(fn)
        def bound(*args, **kwargs):
            return fn(ctx, *preset, *args, **kwargs)
    bound.__signature__ = sig.replace(parameters=params)
    return bound
