"""What the tests share, as plain functions and constants (the fixtures are in tests/conftest.py).

    from tests.helpers import ROWS, FakeEngine, new_store, running_app, wait_until

- constants: REPO, LIMITS, PROMPT, ROWS (the four-prompt set «mini»), ARTIFACTS (screenshots);
- `make_engine`: a started Engine over a tiny config;
- `FakeEngine`: an engine without a model, with canned replies, that records every request;
- `new_store`: a fresh SQLite store upgraded to head (accounts and prompt sets added), or one at any URL;
- PostgreSQL: `PostgresCluster` (throwaway databases on the test cluster) and `Backend` (what the `backend`
  fixture hands a test that runs on both SQLite and PostgreSQL);
- `free_port`, `serve`, `launch_app`, `running_app`: the app (or any built Blocks) served on loopback
  exactly as `app.main()` launches it;
- the apps with disguised names (EVALUAR, NAVEGADOR): `disguised_config`, `rate_app`, `login`,
  `open_session`, `save`;
- `wait_until`: poll a condition with a deadline (no test waits a fixed time);
- `compare_choices`: two backends' (kernels', precisions') scores of the same choices, compared within a
  tolerance, and their best choices only where the reference's top two are further apart than a margin;
- Chromium: CHROMIUM, CHROMIUM_ARGS, `new_browser_page`, `browser_login`, `open_tab`, and `watch_queue`
  (wait until every event a page sent, and what they triggered, has answered).

Importing this module imports no torch, gradio or app: each function imports what it needs.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Optional

import yaml

from esllm.engine.core import Engine

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts"

# Small caps so the cap tests are quick; every other test stays within them.
LIMITS = {"max_new_tokens": 16, "max_prompt_chars": 400, "max_prompt_tokens": 128, "max_conversation_chars": 4000}
PROMPT = [{"role": "user", "content": "Hola, ¿cómo estás?"}]

# The prompt set «mini»: two standalone prompts and a contextual series of two turns (listed out of order).
ROWS = "\n".join(json.dumps(r, ensure_ascii=False) for r in [
    {"id": "p1", "category": "basicas", "text": "¿Qué es el RUC?"},
    {"id": "c2", "category": "contextual", "series": "s1", "turn": 2, "text": "¿Y el segundo?"},
    {"id": "c1", "category": "contextual", "series": "s1", "turn": 1, "text": "Dame dos ideas."},
    {"id": "p2", "category": "basicas", "text": "¿Qué es el IVA?"},
])


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.02,
               message: str = "condition not met") -> float:
    """Poll `condition` until it is true; the seconds waited. AssertionError(message) after `timeout`."""
    t0 = time.perf_counter()
    while not condition():
        assert time.perf_counter() - t0 < timeout, f"{message} (after {timeout:g} s)"
        time.sleep(interval)
    return time.perf_counter() - t0


class ChoiceCheck(NamedTuple):
    """What `compare_choices` found."""

    max_delta: float  # the largest |Δ score| over every item and choice
    near_ties: list[int]  # items whose top two (in the reference) are within the margin: best choice not compared
    disagree: list[int]  # the other items, whose best choice differs


def compare_choices(ref: list[dict[str, float]], got: list[dict[str, float]], margin: float) -> ChoiceCheck:
    """Per item, the scores of its choices under two backends, kernels or precisions (`ref`, `got`): every
    score's difference, and the best choice (ties to the earlier key, as the evaluations break them) compared
    only where the reference's top two are more than `margin` apart: closer than that, rounding decides."""
    assert len(ref) == len(got), (len(ref), len(got))
    deltas = [abs(r[k] - g[k]) for r, g in zip(ref, got) for k in r]
    near, disagree = [], []
    for i, (r, g) in enumerate(zip(ref, got)):
        top = sorted(r.values(), reverse=True)
        if len(top) > 1 and top[0] - top[1] <= margin:
            near.append(i)
        elif max(r, key=r.get) != max(g, key=g.get):
            disagree.append(i)
    return ChoiceCheck(max(deltas, default=0.0), near, disagree)


# ----------------------------------------------------------------------------- engines
def make_engine(config: dict, root: Path, **kw):
    """A started Engine over `config` (a dict as Tiny.config() returns it)."""
    from esllm.engine.config import parse_config
    from esllm.engine.core import Engine

    engine = Engine(parse_config(config), root=root, progress=lambda msg: None, **kw)
    engine.start()
    return engine


class FakeModel:
    """A base model without weights, as the registry holds any base (esllm/engine/runner.py's `LoadedModel`): it
    gives each contestant a `FakeRunner`, and says «apagado» for those in `unavailable`."""

    def __init__(self, reply, code: dict, unavailable=()):
        import itertools
        import threading

        self.key, self.adapters, self.lock = "m", {}, threading.RLock()
        self.reply, self.code, self.unavailable, self.counter = reply, code, set(unavailable), itertools.count(1)

    def load_adapter(self, info) -> None:
        from esllm import EsllmError

        raise EsllmError("el modelo falso no carga adaptadores")

    def unload_adapter(self, name: str) -> None:
        pass

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass

    def unavailable_reason(self, c):
        return "apagado" if c.name in self.unavailable else None

    def runner(self, c, limits):
        return FakeRunner(self, c)


class FakeRunner:
    """A contestant with canned replies: the whole `runner.Runner` protocol, no model. The text is
    `model.reply(name, messages)`, else "<code>#<seed>#<n>" (n counts every answer of the engine)."""

    def __init__(self, model: FakeModel, c):
        from esllm.engine.runner import Capabilities

        self.model, self.c = model, c
        self.capabilities = Capabilities(scores_tokens=False, max_batch=1)
        self.active = 0

    def record(self):
        from esllm.engine.runner import ContestantRecord

        return ContestantRecord(name=self.c.name, available=True, base="m", base_source=FakeEngine.BASE,
                                base_sha256="b" * 64, backend="fake", quantization="none", dtype="float32",
                                device="cpu", template="alpaca-es", template_sha256=self.c.template.sha256,
                                preset=self.c.preset, params=dict(self.c.overrides))

    def _answer(self, messages, params):
        from esllm.engine.types import GenerationResult

        n = next(self.model.counter)
        if self.model.reply is not None:
            text = self.model.reply(self.c.name, messages)
        else:
            text = f"{self.model.code[self.c.name]}#{params.seed}#{n}"
        return GenerationResult(text=text, contestant=self.c.name, base=FakeEngine.BASE, adapter=None,
                                template="alpaca-es", params=params.as_dict(), prompt_tokens=5, new_tokens=3,
                                latency_s=0.1, first_token_s=0.05, finish_reason="eos", backend="fake")

    def stream(self, messages, params, stop):
        from esllm.engine.types import StreamEvent

        result = self._answer(messages, params)
        yield StreamEvent(result.text[: len(result.text) // 2])
        yield StreamEvent(result.text, result)

    def generate_many(self, conversations, params, stop):
        return [self._answer(m, params) for m in conversations]

    def _no_scores(self, *a, **kw):
        from esllm import EsllmError

        raise EsllmError(f"{self.c.name} es un concursante falso: no da probabilidades de tokens.")

    loglikelihood = next_token_logprobs = encode = _no_scores


def _fake_config(names, *, preset, params, max_prompt_chars, max_new_tokens, adapters_dir):
    """A loaded configuration as load_config gives it, built without validation: tests use contestant names a
    config file refuses («=uno», to test CSV escaping)."""
    from esllm.engine.config import AppConfig, ContestantSpec, Limits, ModelSpec

    specs = [ContestantSpec.model_construct(name=n, model="m", adapter=None, template=None, preset=preset,
                                            params=dict(params or {}), vary_attempts=[], served_model=None, lora=[])
             for n in names]
    return AppConfig.model_construct(
        models={"m": ModelSpec(source=FakeEngine.BASE, backend="transformers", template="alpaca-es")},
        contestants=specs, limits=Limits(max_prompt_chars=max_prompt_chars, max_new_tokens=max_new_tokens),
        adapters_dir=str(adapters_dir), auto_contestants=False, chat_default=None)


class FakeEngine(Engine):
    """The real Engine over one `FakeModel`: canned replies, no weights. Every request is recorded in `calls` as
    (name, messages, preset, overrides) on its way in; everything else (the registry, message caps, parameters,
    availability) is the engine's own.

    `names`: its contestants, all available except those in `unavailable`. `reply(name, messages) -> text`
    (it may raise, to make a request fail); by default "<code>#<seed>#<n>": the code (r0, r1, … by position)
    stands for the contestant without naming it, the seed is the request's (the attempt, in batch runs), n counts
    every answer. `preset`: every contestant's (a sampling one by default, so batch runs of N attempts are not
    refused as identical); `params`: their config overrides.
    """

    BASE = "bundled:falso"

    def __init__(self, names=("modelo-a", "modelo-b"), reply: Optional[Callable[[str, list], str]] = None, *,
                 unavailable=(), max_prompt_chars: int = 4000, max_new_tokens: int = 256, preset: str = "top-k",
                 params: Optional[dict] = None):
        import tempfile

        self.calls: list = []
        self.model = FakeModel(reply, {n: f"r{i}" for i, n in enumerate(names)}, unavailable)
        config = _fake_config(names, preset=preset, params=params, max_prompt_chars=max_prompt_chars,
                              max_new_tokens=max_new_tokens, adapters_dir=Path(tempfile.gettempdir()) / "esllm-ninguno")
        super().__init__(config, Path("."), opener=lambda *_: self.model, progress=lambda msg: None)
        self.start()

    @property
    def reply(self):
        return self.model.reply

    @reply.setter
    def reply(self, fn) -> None:  # a test makes later requests fail
        self.model.reply = fn

    @property
    def code(self) -> dict:
        return self.model.code

    def stream(self, name, messages, *, preset=None, overrides=None, stop_event=None):
        self.contestant(name)
        self.calls.append((name, messages, preset, overrides))
        yield from super().stream(name, messages, preset=preset, overrides=overrides, stop_event=stop_event)

    def generate_many(self, name, conversations, *, preset=None, overrides=None, stop_event=None):
        self.contestant(name)
        self.calls.extend((name, m, preset, overrides) for m in conversations)
        return super().generate_many(name, conversations, preset=preset, overrides=overrides, stop_event=stop_event)


# ----------------------------------------------------------------------------- the store
class Store(NamedTuple):
    """A store (SQLite, or PostgreSQL in the `backend` runs): its URL and its session factory
    (`url, Session = store`)."""

    url: str
    Session: Any

    def dispose(self) -> None:
        self.Session.kw["bind"].dispose()


def new_store(path: Path | str, *, accounts: Optional[dict[str, str]] = None, password: str = "contraseña-segura",
              prompt_sets: Optional[dict[str, str]] = None) -> Store:
    """The SQLite file `path` (or the database at URL `path`, e.g. a `backend.new_url()`) upgraded to head as the
    app does it (db.open_store), with `accounts` ({name: role}, in that order, all with `password`) and
    `prompt_sets` ({name: JSONL text}) added."""
    from esllm.store import db, users
    from esllm.study.prompts import import_prompt_set, parse_prompts

    url = path if isinstance(path, str) and "://" in path else f"sqlite:///{path}"
    Session = db.open_store(url)
    if accounts or prompt_sets:
        with Session() as s:
            for name, role in (accounts or {}).items():
                users.add_user(s, name, password, role)
            for name, rows in (prompt_sets or {}).items():
                import_prompt_set(s, name, parse_prompts(rows, "jsonl"))
            s.commit()
    return Store(url, Session)


def store_at(path: Path | str) -> Store:
    """A store over an existing SQLite file (or database URL) already at head (a copy of a built one): no upgrade."""
    from esllm.store import db

    url = path if isinstance(path, str) and "://" in path else f"sqlite:///{path}"
    return Store(url, db.make_sessionmaker(db.make_engine(url)))


# ----------------------------------------------------------------------------- PostgreSQL
class PostgresCluster:
    """Throwaway databases on a running PostgreSQL server (the cluster scripts/test.sh starts; `url` names its
    maintenance database and a role allowed to create databases).

    `create()` makes an empty database, or a copy of a template; `drop(url)` removes one, closing what is still
    connected to it. `head_database()` gives an empty database at head: a copy of a template upgraded once per run
    (a copy costs 0.1–1 s, an upgrade more), or one an earlier test gave back with `release(url)`: emptied with
    TRUNCATE … RESTART IDENTITY (milliseconds) and reused while its schema is still exactly head's."""

    def __init__(self, url: str):
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url
        from sqlalchemy.pool import NullPool

        self.url = make_url(url)
        self.admin = create_engine(self.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        self._count = 0
        self._head: Optional[str] = None
        self._head_schema: Optional[str] = None
        self._free: list[str] = []

    def _run(self, sql: str, url: Optional[str] = None) -> Any:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        engine = self.admin if url is None else create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with engine.connect() as conn:
                result = conn.exec_driver_sql(sql)
                return result.scalar() if result.returns_rows else None
        finally:
            if url is not None:
                engine.dispose()

    def create(self, template: Optional[str] = None) -> str:
        """The URL of a new database: empty (from template0), or a copy of the database at URL `template`, which
        must have no open connection (dispose its engines first)."""
        import os

        from sqlalchemy.engine import make_url

        self._count += 1
        name = f"esllm_test_{os.getpid()}_{self._count}"
        source = make_url(template).database if template else "template0"
        if template:  # a backend of a connection just closed may still be exiting: the copy would be refused
            self.disconnect(template)
        self._run(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
        return self.url.set(database=name).render_as_string(hide_password=False)

    def disconnect(self, url: str) -> None:
        """End every connection to the database at `url` and wait until they are gone."""
        from sqlalchemy.engine import make_url

        name = make_url(url).database
        self._run(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{name}'")
        wait_until(lambda: not self._run(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}'"),
                   timeout=10, message=f"connections to {name} did not end")

    def drop(self, url: str) -> None:
        from sqlalchemy.engine import make_url

        self._run(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')

    # what a test may have changed in a database's schema (tables, columns, constraints, indexes, the revision)
    _SCHEMA = """SELECT md5(string_agg(x, ';' ORDER BY x)) FROM (
        SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable
          FROM information_schema.columns WHERE table_schema = 'public'
        UNION ALL SELECT conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
          FROM pg_constraint WHERE connamespace = 'public'::regnamespace
        UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'
        UNION ALL SELECT version_num FROM alembic_version) AS t(x)"""

    def head(self) -> str:
        """The URL of the template at head, upgraded once per test run (never connect to it and leave)."""
        if self._head is None:
            from esllm.store import db

            url = self.create()
            db.upgrade(url)  # disposes its engine: nothing stays connected
            self._head_schema = self._run(self._SCHEMA, url)
            self._head = url
        return self._head

    def head_database(self) -> str:
        """An empty database at head, for one test; give it back with `release`."""
        return self._free.pop() if self._free else self.create(self.head())

    def release(self, url: str) -> None:
        """Close what is still connected to `url`; empty it for the next test if its schema is still head's, else
        drop it."""
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        self.disconnect(url)  # TRUNCATE would wait for a session a test left open
        engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with engine.connect() as conn:
                same = conn.exec_driver_sql(self._SCHEMA).scalar() == self._head_schema
                if same:
                    tables = conn.exec_driver_sql(
                        "SELECT string_agg(quote_ident(tablename), ', ') FROM pg_tables "
                        "WHERE schemaname = 'public' AND tablename <> 'alembic_version'").scalar()
                    conn.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        finally:
            engine.dispose()
        if same:
            self._free.append(url)
        else:
            self.drop(url)

    def close(self) -> None:
        for url in self._free + ([self._head] if self._head else []):
            self.drop(url)
        self.admin.dispose()


@dataclass
class Backend:
    """The database a test runs on (the `backend` fixture): `name` is "sqlite" or "postgresql"; `new_url()` gives
    a new database each call, empty or (`at_head=True`) already upgraded to head; `copy(url)` a new database
    holding a copy of the one at `url` (close its connections first: dispose its engines)."""

    name: str
    new_url: Callable[..., str]
    copy: Callable[[str], str]


# ----------------------------------------------------------------------------- the app on loopback
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def serve(demo, ctx) -> str:
    """Launch a built Blocks as `app.main()` does (CSS and HEAD, and `app.launch_kwargs`: a login when the store
    has accounts, the downloads guard, the upload cap) on a free loopback port, without blocking; returns its URL.
    Close with demo.close()."""
    import app
    from esllm.ui import CSS, HEAD

    for attempt in range(3):  # another process may take the free port before the server binds it
        port = free_port()
        try:
            demo.launch(server_name=HOST, server_port=port, prevent_thread_lock=True, quiet=True, show_error=True,
                        css=CSS, head=HEAD, **app.launch_kwargs(ctx, HOST))
        except OSError:
            if attempt == 2:
                raise
            continue
        return f"http://{HOST}:{port}/"
    raise AssertionError("unreachable")


def write_config(config: dict, folder: Path) -> Path:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def launch_app(config_path: Path | str, db_url: str, *, accounts: bool = False):
    """(ctx, demo, url): `app.create` on the config file and store, then `serve`. `accounts`: whether the
    store has accounts (the app then runs with logins; without, in local mode), checked."""
    import app

    ctx, demo = app.create(str(config_path), progress=lambda m: None, db_url=db_url)
    assert ctx.local_mode is not accounts, "local mode exactly when the store has no accounts"
    return ctx, demo, serve(demo, ctx)


@dataclass
class App:
    ctx: Any
    demo: Any
    url: str
    Session: Any  # the store's session factory
    folder: Path


@contextmanager
def running_app(config: dict | Path, folder: Path, *, accounts: Optional[dict[str, str]] = None,
                password: str = "contraseña-segura", prompt_sets: Optional[dict[str, str]] = None,
                db_url: Optional[str] = None) -> Iterator[App]:
    """The app served until the block ends, over a fresh store in `folder` (see new_store), or on the empty
    database at `db_url` (e.g. a PostgreSQL one).

    `config`: a dict (written to folder/config.yaml) or the path of a config file."""
    store = new_store(db_url or folder / "app.sqlite3", accounts=accounts, password=password, prompt_sets=prompt_sets)
    try:
        path = write_config(config, folder) if isinstance(config, dict) else config
        ctx, demo, url = launch_app(path, store.url, accounts=bool(accounts))
        try:
            yield App(ctx, demo, url, store.Session, folder)
        finally:
            demo.close()
    finally:
        store.dispose()


# ----------------------------------------------------------------------------- apps with disguised names
@dataclass(frozen=True)
class Disguise:
    """Distinctive names for the tiny Llama's model key, adapters (copies of a1, a2) and three contestants
    (base, +first adapter, +second adapter), so a test can search everything a rater receives for them."""

    password: str
    contestants: list[str]
    adapters: list[str]
    model_key: str
    session: str = ""

    def secrets(self, model_dir: Path) -> list[str]:
        return self.contestants + self.adapters + [self.model_key, str(model_dir)]


EVALUAR = Disguise("contraseña-segura", ["concursante-xilofono", "concursante-yunque", "concursante-zafiro"],
                   ["adaptador-oculto-uno", "adaptador-oculto-dos"], "modelo-oculto", session="estudio-piloto")
NAVEGADOR = Disguise("clave-del-navegador",
                     ["participante-quetzal", "participante-ornitorrinco", "participante-mandril"],
                     ["ajuste-secreto-norte", "ajuste-secreto-sur"], "base-confidencial", session="estudio-navegador")

# The browser's prompt set: five items (one series of two turns); two raters with k=2 each rate all five.
NAVEGADOR_ROWS = "\n".join(json.dumps(r, ensure_ascii=False) for r in [
    {"id": "n1", "category": "basicas", "text": "¿Qué es el RUC?"},
    {"id": "n2", "category": "basicas", "text": "¿Qué es el IVA?"},
    {"id": "n3", "category": "complejas", "text": "Explica cómo se declara el impuesto a la renta."},
    {"id": "s1", "category": "contextual", "series": "serie", "turn": 1, "text": "Dame dos ideas."},
    {"id": "s2", "category": "contextual", "series": "serie", "turn": 2, "text": "¿Y la segunda?"},
])


def disguised_config(tiny_model, folder: Path, model_key: str, contestants: list[tuple[str, Optional[str]]],
                     adapters: dict[str, str], limits: dict) -> dict:
    """A config of the tiny model under `model_key`; `adapters` {new name: a1|a2} are copied to
    folder/adapters; `contestants` [(name, adapter or None)], all greedy; no automatic contestants."""
    for dst, src in adapters.items():
        shutil.copytree(tiny_model.adapters_dir / src, folder / "adapters" / dst)
    return {
        "models": {model_key: {"source": str(tiny_model.model_dir), "quantization": "none", "device": "cpu",
                               "template": "llama-2"}},
        "contestants": [{"name": n, "model": model_key, "preset": "greedy", **({"adapter": a} if a else {})}
                        for n, a in contestants],
        "limits": limits,
        "adapters_dir": str(folder / "adapters"),
        "auto_contestants": False,
    }


@contextmanager
def rate_app(tiny_model, folder: Path, cast: Disguise, *, accounts: dict[str, str], prompt_set: str, rows: str,
             raters: list[str], k: int, seed: int, db_url: Optional[str] = None) -> Iterator[tuple[App, int]]:
    """An app with accounts whose contestants wear `cast`'s names, their answers to `rows` generated
    (one attempt, at most 8 new tokens) and an open rating session `cast.session` for `raters`:
    yields (app, session id). `db_url`: its store (see running_app)."""
    import random

    from sqlalchemy import select

    from esllm.store.models import ContestantSnapshot
    from esllm.study.answers import generate_answers
    from esllm.study.sessions import create_session

    a1, a2 = cast.adapters
    config = disguised_config(tiny_model, folder, cast.model_key,
                              list(zip(cast.contestants, (None, a1, a2))), {a1: "a1", a2: "a2"},
                              {"max_new_tokens": 8})
    with running_app(config, folder, accounts=accounts, password=cast.password,
                     prompt_sets={prompt_set: rows}, db_url=db_url) as a:
        generate_answers(a.Session, a.ctx.engine, prompt_set, cast.contestants, attempts=1)
        with a.Session() as s:
            ids = [s.scalars(select(ContestantSnapshot.id).where(ContestantSnapshot.name == n)).one()
                   for n in cast.contestants]
            sid = create_session(s, name=cast.session, prompt_set=prompt_set, contestant_ids=ids, raters=raters,
                                 k=k, rng=random.Random(seed)).id
            s.commit()
        yield a, sid


def login(url: str, name: str, password: str):
    """A gradio_client Client logged in as `name`."""
    from gradio_client import Client

    return Client(url, auth=(name, password), verbose=False)


def open_session(c, sid):
    """«Evaluar»: open (or resume) rating session `sid`; the item view's outputs."""
    return c.predict(sid, api_name="/evaluar_abrir")


def save(c, values, comment=""):
    """«Evaluar»: save the three general scores `values` (and a comment); the next item's outputs."""
    return c.predict(comment, *values, *[None] * 12, api_name="/evaluar_guardar")


# ----------------------------------------------------------------------------- Chromium (Playwright)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"  # Debian's (scripts/test.sh installs it)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT_MS = 30_000  # for anything the server answers (the machine may be busy); expect() alone waits 5 s


def new_browser_page(p, height: int = 1000, timeout_ms: int = WAIT_MS):
    """(browser, page) in Debian's Chromium; the test fails with what to do when it is not installed."""
    import pytest

    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed: run `bash scripts/test.sh` (it installs Debian's chromium)")
    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": height})
    page.set_default_timeout(timeout_ms)
    return browser, page


def browser_login(page, url: str, name: str, password: str) -> None:
    """Fill the login form (esllm/ui/login.py: a text box, a password box, «Entrar»; success reloads the page)."""
    page.goto(url, wait_until="load")  # Gradio pages never reach networkidle: wait for elements instead
    box = page.locator("input[type=password]")
    box.wait_for()
    page.locator("input[type=text], input:not([type])").first.fill(name)
    box.fill(password)
    with page.expect_navigation(wait_until="load"):
        page.locator("button").filter(has_text="Entrar").click()


def open_tab(page, name: str) -> None:
    tab = page.get_by_role("tab", name=name)
    tab.wait_for()
    tab.click()  # Gradio renders a tab's content only once it is selected


class QueueWatch:
    """Follows a page's requests to Gradio's queue (event joins, the stream of their results) from start to end."""

    def __init__(self, page):
        self.page, self.open, self.last = page, set(), time.perf_counter()
        page.on("request", self._start)
        page.on("requestfinished", self._end)
        page.on("requestfailed", self._end)

    def _start(self, request) -> None:
        if "/queue/" in request.url:
            self.open.add(request)
            self.last = time.perf_counter()

    def _end(self, request) -> None:
        if request in self.open:
            self.open.discard(request)
            self.last = time.perf_counter()

    def wait_idle(self, quiet_s: float = 1.0, timeout_ms: int = WAIT_MS) -> None:
        """Until no queue request is open and none started or ended for `quiet_s`: every event the page sent,
        and every event their results triggered (a .change after a .load), has answered. (Gradio closes a
        browser session's stream of results as soon as it has no pending event.)"""
        deadline = time.perf_counter() + timeout_ms / 1000
        while self.open or time.perf_counter() - self.last < quiet_s:
            assert time.perf_counter() < deadline, f"the page's events did not finish ({len(self.open)} open)"
            self.page.wait_for_timeout(50)  # Playwright delivers the request events while it waits


def watch_queue(page) -> QueueWatch:
    """Start following `page`'s queue requests (before the actions whose events are to be waited for)."""
    return QueueWatch(page)
