"""A rater in Debian's Chromium (Playwright): log in, rate two items of «Evaluar», log out, log in, resume.

The app runs with accounts (Gradio's login page in front of everything) on a tiny Llama whose three
contestants, two adapters and model key have distinctive names; a session gives the rater «ana»
five items. The test clicks the score radios, scores one answer with the keyboard shortcuts ("b"
then "4"), saves with the button and with Ctrl+Enter, checks the scores in the database, logs out
through Gradio's GET /logout, logs back in and finds item 3 waiting. Every page it sees (HTML and
the /config it is served) is searched for the contestant, adapter and model names.
Screenshots: artifacts/evaluar-1.png (item 1 rated) and artifacts/evaluar-2.png (item 3 after resume).
Needs /usr/bin/chromium (`scripts/test.sh` installs it).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from tests.test_app import free_port
from tests.test_browser import ARGS, ARTIFACTS, CHROMIUM

PW = "clave-del-navegador"
CONTESTANTS = ["participante-quetzal", "participante-ornitorrinco", "participante-mandril"]
ADAPTERS = ["ajuste-secreto-norte", "ajuste-secreto-sur"]
MODEL_KEY = "base-confidencial"
SESSION = "estudio-navegador"
ROWS = "\n".join(json.dumps(r, ensure_ascii=False) for r in [
    {"id": "n1", "category": "basicas", "text": "¿Qué es el RUC?"},
    {"id": "n2", "category": "basicas", "text": "¿Qué es el IVA?"},
    {"id": "n3", "category": "complejas", "text": "Explica cómo se declara el impuesto a la renta."},
    {"id": "s1", "category": "contextual", "series": "serie", "turn": 1, "text": "Dame dos ideas."},
    {"id": "s2", "category": "contextual", "series": "serie", "turn": 2, "text": "¿Y la segunda?"},
])
N_ITEMS = 5  # two raters, k=2: each rates every prompt
WAIT = 30_000  # ms, for anything the server answers (the machine may be busy); expect() alone waits 5 s


@pytest.fixture(scope="module")
def rater_app(tiny, tmp_path_factory):
    """(url, Session, session id, secrets) of an app with accounts: admin «jefa», raters «ana» and «beto»."""
    import app
    from esllm.store import db, users
    from esllm.store.models import ContestantSnapshot
    from esllm.study.answers import generate_answers
    from esllm.study.prompts import import_prompt_set, parse_prompts
    from esllm.study.sessions import create_session
    from esllm.ui import CSS, HEAD

    t = tiny("llama")
    tmp = tmp_path_factory.mktemp("navegador")
    adapters = tmp / "adapters"
    for src, dst in zip(("a1", "a2"), ADAPTERS):
        shutil.copytree(t.adapters_dir / src, adapters / dst)
    cfg = {
        "models": {MODEL_KEY: {"source": str(t.model_dir), "quantization": "none", "device": "cpu",
                               "template": "llama-2"}},
        "contestants": [{"name": CONTESTANTS[0], "model": MODEL_KEY, "preset": "greedy"},
                        {"name": CONTESTANTS[1], "model": MODEL_KEY, "adapter": ADAPTERS[0], "preset": "greedy"},
                        {"name": CONTESTANTS[2], "model": MODEL_KEY, "adapter": ADAPTERS[1], "preset": "greedy"}],
        "limits": {"max_new_tokens": 8},
        "adapters_dir": str(adapters),
        "auto_contestants": False,
    }
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    url = f"sqlite:///{tmp / 'navegador.sqlite3'}"
    db.upgrade(url)
    Session = db.make_sessionmaker(db.make_engine(url))
    with Session() as s:
        users.add_user(s, "jefa", PW, "admin")
        for n in ("ana", "beto"):
            users.add_user(s, n, PW, "rater")
        import_prompt_set(s, "navegador", parse_prompts(ROWS, "jsonl"))
        s.commit()
    ctx, demo = app.create(str(tmp / "config.yaml"), progress=lambda m: None, db_url=url)
    assert not ctx.local_mode
    generate_answers(Session, ctx.engine, "navegador", CONTESTANTS, attempts=1)
    with Session() as s:
        ids = [s.scalars(select(ContestantSnapshot.id).where(ContestantSnapshot.name == n)).one() for n in CONTESTANTS]
        sid = create_session(s, name=SESSION, prompt_set="navegador", contestant_ids=ids, raters=["ana", "beto"],
                             k=2, rng=random.Random(5)).id
        s.commit()
    port = free_port()
    # As app.main() launches it: the keyboard shortcuts travel in `head`.
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, show_error=True,
                css=CSS, head=HEAD, **app.launch_kwargs(ctx, "127.0.0.1"))
    yield f"http://127.0.0.1:{port}/", Session, sid, CONTESTANTS + ADAPTERS + [MODEL_KEY, str(t.model_dir)]
    demo.close()


def ana_scores(Session, sid: int) -> list[dict[str, int]]:
    """ana's general scores per finished item, in her order: [{"A": 3, "B": 4, "C": 5}, …]."""
    from esllm.store.models import Assignment, Score, User

    with Session() as s:
        ana = s.scalars(select(User.id).where(User.name == "ana")).one()
        out = []
        for a in s.scalars(select(Assignment).where(Assignment.session_id == sid, Assignment.rater_id == ana,
                                                    Assignment.finished_at.is_not(None))
                           .order_by(Assignment.order_index)):
            rows = s.scalars(select(Score).where(Score.assignment_id == a.id)).all()
            assert len(rows) == 3 and {r.criterion for r in rows} == {"general"}
            out.append({r.label: r.value for r in rows})
        return out


def log_in(page, url: str, name: str = "ana") -> None:
    """Fill Gradio's login form (a text box, a password box, a submit button; success reloads the page),
    open «Evaluar» and wait until its load event has filled the rater's session list."""
    from playwright.sync_api import expect

    page.goto(url, wait_until="load")  # Gradio pages never reach networkidle: wait for elements instead
    password = page.locator("input[type=password]")
    password.wait_for()
    page.locator("input[type=text], input:not([type])").first.fill(name)
    password.fill(PW)
    with page.expect_navigation(wait_until="load"):
        page.locator("button").filter(has_text="Login").click()
    tab = page.get_by_role("tab", name="Evaluar")
    tab.wait_for()
    tab.click()  # Gradio renders a tab's content only once it is selected
    expect(page.locator("#evaluador")).to_contain_text(name, timeout=WAIT)
    expect(page.locator("#sesion input")).to_have_value(SESSION, timeout=WAIT)


def browser_page(p):
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed: run `bash scripts/test.sh` (it installs Debian's chromium)")
    browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(WAIT)
    return browser, page


def test_rater_logs_in_rates_logs_out_and_resumes(rater_app):
    from playwright.sync_api import expect, sync_playwright

    url, Session, sid, secrets = rater_app
    ARTIFACTS.mkdir(exist_ok=True)
    seen: list[str] = []  # every page (and /config) the rater's browser was served

    with sync_playwright() as p:
        browser, page = browser_page(p)

        def snapshot() -> None:
            seen.append(page.content())

        def start() -> None:
            page.locator("#comenzar").click()

        def at_item(n: int) -> None:
            expect(page.locator("#progreso")).to_contain_text(f"Ítem {n} / {N_ITEMS}", timeout=WAIT)
            expect(page.locator("#prompt")).to_contain_text("Instrucción")
            for label in "ABC":
                expect(page.locator(f"#respuesta-{label}")).to_be_visible()
                expect(page.locator(f"#nota-{label} input:checked")).to_have_count(0)  # nothing pre-filled
            snapshot()

        def click_score(label: str, value: int) -> None:
            page.locator(f"#nota-{label} label").filter(has=page.locator(f"input[value='{value}']")).click()
            expect(page.locator(f"#nota-{label} input[value='{value}']")).to_be_checked()

        log_in(page, url)
        snapshot()
        start()
        at_item(1)
        click_score("A", 3)
        click_score("C", 5)
        page.locator("#progreso").click()  # focus away from the radios, as a reader would
        page.keyboard.press("b")
        page.keyboard.press("4")
        expect(page.locator("#nota-B input[value='4']")).to_be_checked()
        expect(page.locator("#nota-A input[value='3']")).to_be_checked()  # "4" went to column B only
        page.screenshot(path=str(ARTIFACTS / "evaluar-1.png"), full_page=True)
        page.locator("#guardar").click()
        at_item(2)
        assert ana_scores(Session, sid) == [{"A": 3, "B": 4, "C": 5}]

        click_score("A", 1)
        click_score("B", 2)
        click_score("C", 2)
        page.keyboard.press("Control+Enter")  # the save shortcut
        at_item(3)
        assert ana_scores(Session, sid) == [{"A": 3, "B": 4, "C": 5}, {"A": 1, "B": 2, "C": 2}]
        seen.append(page.request.get(url + "config").text())

        # Log out (Gradio's GET /logout drops the cookie and sends the browser back to the login form).
        page.goto(url + "logout", wait_until="load")
        page.locator("input[type=password]").wait_for()
        snapshot()  # the login page
        expect(page.locator("#comenzar")).to_have_count(0)
        assert page.request.get(url + "config").status in (401, 403)

        log_in(page, url)
        start()
        at_item(3)  # where she left off
        page.screenshot(path=str(ARTIFACTS / "evaluar-2.png"), full_page=True)
        seen.append(page.request.get(url + "config").text())
        browser.close()

    assert len(ana_scores(Session, sid)) == 2, "nothing saved twice or lost across the logout"
    for name in ("evaluar-1.png", "evaluar-2.png"):
        assert (ARTIFACTS / name).stat().st_size > 10_000
    blob = "\n".join(seen)
    assert "Ítem 3" in blob
    for secret in secrets:
        assert secret not in blob, f"{secret!r} reached the rater's browser"


def test_rater_sees_no_error_on_login(rater_app):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright

    url = rater_app[0]
    with sync_playwright() as p:
        browser, page = browser_page(p)
        log_in(page, url)
        toast = page.locator(".toast-body")
        try:  # the load events and what they trigger (a .change) answer well within this, even on a busy machine
            toast.first.wait_for(timeout=15_000)
        except PlaywrightTimeout:
            pass
        expect(toast).to_have_count(0, timeout=1)
        browser.close()
