"""Shared fixtures: tiny random models of every supported family, built once per test session; a fresh
store; the `python -m esllm` command run in-process; the rating apps used by several test files.

`tiny(family)` builds (once) a model folder and an adapters folder with two random LoRA adapters,
`a1` and `a2`; `engine(family)` returns a started Engine over it (once per session) with three
contestants: `<family>-base`, `<family>-a1` and `<family>-a2`. Tests that change adapter folders
build their own engine with `tests.helpers.make_engine`. `reference(family, adapter)` is the greedy answer
computed with plain transformers/peft, which the engine's answers must equal. Plain functions and
constants (the app launcher, FakeEngine, new_store, ROWS, …) are in tests/helpers.py.

A test that takes `backend` (or `any_store`, or `module_backend` for module fixtures) runs twice: on SQLite and
on PostgreSQL, the throwaway cluster of `postgres` (scripts/test.sh starts it and sets ESLLM_TEST_POSTGRES_URL;
without it the PostgreSQL run is skipped, saying why; `-m "not postgres"` leaves it out).

    .venv/bin/python -m pytest                  # everything (the slow tests load the real gemma-3-270m)
    .venv/bin/python -m pytest -m "not slow"    # the quick suite
"""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Optional

import pytest

from tests import tiny as tm
from tests.helpers import (
    EVALUAR,
    LIMITS,
    NAVEGADOR,
    NAVEGADOR_ROWS,
    PROMPT,
    ROWS,
    Backend,
    PostgresCluster,
    make_engine,
    new_store,
    rate_app,
)

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry calls from the test app


def pytest_collection_modifyitems(config, items):
    """Tests marked gpu are skipped, with the reason shown, on a machine without CUDA."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu:
        import torch

        if not torch.cuda.is_available():
            for item in gpu:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture(scope="session", autouse=True)
def _clean_env(tmp_path_factory):
    """A developer's ESLLM_* settings must not change what the tests load; the app's store is a temp DB."""
    saved = {k: os.environ.pop(k) for k in ("ESLLM_ADAPTERS_DIR", "ESLLM_CONFIG", "ESLLM_DATABASE_URL")
             if k in os.environ}
    os.environ["ESLLM_DATABASE_URL"] = f"sqlite:///{tmp_path_factory.mktemp('db') / 'app.sqlite3'}"
    yield
    os.environ.pop("ESLLM_DATABASE_URL", None)
    os.environ.update(saved)


@dataclass(frozen=True)
class Tiny:
    family: str
    model_dir: Path
    adapters_dir: Path  # holds a1 and a2; never modified (copy it to change it)
    template: str

    def config(self, *, adapters_dir: Optional[Path] = None, contestants: Optional[list] = None,
               limits: Optional[dict] = None, quantization: str = "none", **extra: Any) -> dict:
        f = self.family
        return {
            "models": {f: {"source": str(self.model_dir), "quantization": quantization, "device": "cpu",
                           "template": self.template}},
            "contestants": contestants if contestants is not None else [
                {"name": f"{f}-base", "model": f},
                {"name": f"{f}-a1", "model": f, "adapter": "a1"},
                {"name": f"{f}-a2", "model": f, "adapter": "a2"},
            ],
            "limits": dict(LIMITS, **(limits or {})),
            "adapters_dir": str(adapters_dir or self.adapters_dir),
            **extra,
        }

    def copy_adapters(self, dest: Path) -> Path:
        shutil.copytree(self.adapters_dir, dest)
        return dest


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny(tiny_root):
    built: dict[str, Tiny] = {}

    def get(family: str) -> Tiny:
        if family not in built:
            fam = tm.FAMILIES[family]
            seed = list(tm.FAMILIES).index(family)
            model_dir = tm.build_family(family, tiny_root / family / "model", seed=seed)
            adapters = tiny_root / family / "adapters"
            for i, name in enumerate(("a1", "a2")):
                tm.build_adapter(model_dir, fam.target_modules, adapters / name, seed=100 * seed + i + 1)
            built[family] = Tiny(family, model_dir, adapters, fam.template)
        return built[family]

    return get


@pytest.fixture(scope="session")
def engine(tiny, tiny_root):
    """Started engines, one per family, shared by the tests that only generate."""
    engines: dict[str, Any] = {}

    def get(family: str):
        if family not in engines:
            engines[family] = make_engine(tiny(family).config(), tiny_root)
        return engines[family]

    return get


@dataclass(frozen=True)
class Reference:
    """What a contestant must answer, computed without the engine."""

    text: str
    new_tokens: int
    ended_on_eos: bool


@pytest.fixture(scope="session")
def reference(tiny):
    """reference(family, adapter=None, messages=PROMPT) -> Reference for greedy decoding.

    The model is loaded fresh (plain transformers, plus peft for an adapter), never through the engine.
    """

    from esllm.engine.messages import visible
    from esllm.engine.templates import get_template
    from esllm.engine.tokens import HFTok

    models: dict[tuple, Any] = {}
    results: dict[tuple, Reference] = {}

    def get(family: str, adapter: Optional[str] = None, messages: list = PROMPT,
            max_new_tokens: int = LIMITS["max_new_tokens"]) -> Reference:
        t = tiny(family)
        key = (family, adapter, repr(messages), max_new_tokens)
        if key not in results:
            if (family, adapter) not in models:
                models[family, adapter] = (tm.load_with_adapter(t.model_dir, t.adapters_dir / adapter)
                                           if adapter else tm.load_plain(t.model_dir))
            model, tok = models[family, adapter]
            template = get_template(t.template)
            prompt = template.render(messages, bos_token=tok.bos_token, eos_token=tok.eos_token)
            eos_ids = [tok.eos_token_id] + [tok.convert_tokens_to_ids(x) for x in template.end_tokens]
            ids = tm.greedy_ids(model, tok, prompt, max_new_tokens, eos_ids)
            text, _ = visible(HFTok(tok), ids, eos_ids, template, final=True)
            results[key] = Reference(text, len(ids), bool(ids) and ids[-1] in eos_ids)
        return results[key]

    return get


# ----------------------------------------------------------------------------- the store and the CLI
@pytest.fixture
def store(tmp_path):
    """A fresh SQLite store upgraded to head: (url, Session)."""
    st = new_store(tmp_path / "store.sqlite3")
    yield st
    st.dispose()


# ----------------------------------------------------------------------------- PostgreSQL
@pytest.fixture(scope="session")
def postgres():
    """The throwaway PostgreSQL cluster of this run (a `PostgresCluster`): scripts/test.sh starts one and sets
    $ESLLM_TEST_POSTGRES_URL (postgresql+psycopg://USER@127.0.0.1:PORT/postgres). Without it the PostgreSQL runs
    are skipped, saying why; with $ESLLM_REQUIRE_POSTGRES=1 (scripts/test.sh, so CI) they fail instead."""
    url = os.environ.get("ESLLM_TEST_POSTGRES_URL")
    why = None if url else ("ESLLM_TEST_POSTGRES_URL is not set: bash scripts/test.sh starts a throwaway PostgreSQL "
                            "and sets it")
    cluster = None
    if why is None:
        try:
            cluster = PostgresCluster(url)
            cluster._run("SELECT 1")
        except Exception as e:  # psycopg missing, server down, wrong URL: said once, in the skip or failure
            why = f"no PostgreSQL at ESLLM_TEST_POSTGRES_URL ({type(e).__name__}: {e})"
    if why is not None:
        if os.environ.get("ESLLM_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"ESLLM_REQUIRE_POSTGRES=1 but {why}", pytrace=False)
        pytest.skip(why)
    yield cluster
    cluster.close()


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _backend(request, folder: Path) -> Any:
    """A Backend and its cleanup: SQLite files in `folder`, or databases on the PostgreSQL cluster."""
    if request.param == "sqlite":
        count = iter(range(1, 10_000))

        def new_file(at_head: bool = False) -> str:
            return f"sqlite:///{folder / f'db{next(count)}.sqlite3'}"

        def copy_file(url: str) -> str:
            src, dest = url.removeprefix("sqlite:///"), new_file().removeprefix("sqlite:///")
            for suffix in ("", "-wal", "-shm"):
                if Path(f"{src}{suffix}").exists():
                    shutil.copyfile(f"{src}{suffix}", f"{dest}{suffix}")
            return f"sqlite:///{dest}"

        return Backend("sqlite", new_file, copy_file), None
    cluster = request.getfixturevalue("postgres")
    made: list[tuple[str, bool]] = []  # (url, from head_database)

    def new_url(at_head: bool = False) -> str:
        made.append((cluster.head_database() if at_head else cluster.create(), at_head))
        return made[-1][0]

    def copy(url: str) -> str:
        made.append((cluster.create(template=url), False))
        return made[-1][0]

    def cleanup() -> None:
        for url, at_head in reversed(made):
            cluster.release(url) if at_head else cluster.drop(url)

    return Backend("postgresql", new_url, copy), cleanup


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    """Run the test on SQLite and on PostgreSQL: a `Backend` whose `new_url()` gives a fresh database (dropped
    after the test). The PostgreSQL run is marked `postgres`."""
    b, cleanup = _backend(request, tmp_path)
    yield b
    if cleanup:
        cleanup()


@pytest.fixture(scope="module", params=BACKENDS)
def module_backend(request, tmp_path_factory):
    """`backend` for module-scoped fixtures (a database built once per module and backend)."""
    b, cleanup = _backend(request, tmp_path_factory.mktemp("backend"))
    yield b
    if cleanup:
        cleanup()


@pytest.fixture
def any_store(backend):
    """`store` on each backend: a fresh store upgraded to head, (url, Session)."""
    st = new_store(backend.new_url(at_head=True))
    yield st
    st.dispose()


class CliResult(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(monkeypatch, capsys):
    """cli(*args, db_url=None, stdin="") -> (returncode, stdout, stderr): `python -m esllm ARGS` run in this
    process through esllm.cli.main, on the store `db_url` when given (else $ESLLM_DATABASE_URL). argparse's
    refusals (SystemExit) come back as their exit code too."""

    def run(*args, db_url: Optional[str] = None, stdin: str = "") -> CliResult:
        from esllm.cli import main

        if db_url is not None:
            monkeypatch.setenv("ESLLM_DATABASE_URL", db_url)
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        capsys.readouterr()  # only this command's output
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


# ----------------------------------------------------------------------------- rating apps (module-scoped)
@pytest.fixture(scope="module")
def rated_app(tiny, tmp_path_factory):
    """«Evaluar» over HTTP: an app with accounts (admin «admin»; raters ana, beto, carla, dora) on the tiny Llama
    under EVALUAR's names; session «estudio-piloto» over «mini» for ana, beto and carla, k=2.
    (ctx, url, Session, session id, model folder)."""
    t = tiny("llama")
    accounts = {"admin": "admin", **dict.fromkeys(("ana", "beto", "carla", "dora"), "rater")}
    with rate_app(t, tmp_path_factory.mktemp("evaluar"), EVALUAR, accounts=accounts, prompt_set="mini", rows=ROWS,
                  raters=["ana", "beto", "carla"], k=2, seed=3) as (app, sid):
        yield app.ctx, app.url, app.Session, sid, t.model_dir


@pytest.fixture(scope="module")
def rater_app(tiny, tmp_path_factory):
    """The browser tests' app with accounts: admin «jefa», raters «ana» and «beto», NAVEGADOR's names; session
    «estudio-navegador» gives each rater the five items. (url, Session, session id, secrets: every name that
    must never reach a rater's browser)."""
    t = tiny("llama")
    with rate_app(t, tmp_path_factory.mktemp("navegador"), NAVEGADOR,
                  accounts={"jefa": "admin", "ana": "rater", "beto": "rater"}, prompt_set="navegador",
                  rows=NAVEGADOR_ROWS, raters=["ana", "beto"], k=2, seed=5) as (app, sid):
        yield app.url, app.Session, sid, NAVEGADOR.secrets(t.model_dir)
