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

import re

from sqlalchemy import select

from tests.helpers import ARTIFACTS, NAVEGADOR, WAIT_MS, browser_login, new_browser_page, open_tab, watch_queue

PW, SESSION = NAVEGADOR.password, NAVEGADOR.session
N_ITEMS = 5  # two raters, k=2: each rates every prompt
WAIT = WAIT_MS  # ms, for anything the server answers (the machine may be busy); expect() alone waits 5 s


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
    """Log in through Gradio's form, open «Evaluar» and wait until its load event has filled the rater's
    session list."""
    from playwright.sync_api import expect

    browser_login(page, url, name, PW)
    open_tab(page, "Evaluar")
    expect(page.locator("#evaluador")).to_contain_text(name, timeout=WAIT)
    expect(page.locator("#sesion input")).to_have_value(re.compile(f"^{SESSION} · "), timeout=WAIT)


def test_rater_logs_in_rates_logs_out_and_resumes(rater_app):
    from playwright.sync_api import expect, sync_playwright

    url, Session, sid, secrets = rater_app
    ARTIFACTS.mkdir(exist_ok=True)
    seen: list[str] = []  # every page (and /config) the rater's browser was served

    with sync_playwright() as p:
        browser, page = new_browser_page(p)

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
    from playwright.sync_api import expect, sync_playwright

    url = rater_app[0]
    with sync_playwright() as p:
        browser, page = new_browser_page(p)
        queue = watch_queue(page)
        log_in(page, url)
        # Until the load events and what they trigger (a .change) have all answered: an error among them
        # shows its toast by then.
        queue.wait_idle(quiet_s=1.5)
        expect(page.locator(".toast-body")).to_have_count(0, timeout=1)
        browser.close()


# An answer a Markdown rendering would change: leading blank lines and spaces, indented code, tabs, Markdown and
# HTML-looking text, a JavaScript template expression, trailing spaces and newline. Nothing in it may run.
TRICKY = ("\n\n  Sangría inicial y dos líneas en blanco antes.\n\n    def f(x):\n        if x:\n\t\treturn '<b>x</b>'\n\n"
          "**no es negrita** · # no es título · <b>x</b> · <script>window.__xss = 1</script> · "
          "<img src=x onerror=\"window.__xss = 2\"> · ${window.__xss = 3} · `código` · &amp; &lt;\n   \n")


def test_rater_sees_every_answer_and_earlier_turn_exactly_as_stored(rater_app):
    """beto's five items after every selected answer of the session was stored as TRICKY (+ its id): the text of
    each column, and of each earlier turn of the contextual item, is the stored text, character for character
    (Chromium's innerText and textContent, not normalised), under the label the assignment's permutation gives
    it; no script in them ran. Screenshot: artifacts/evaluar-fiel.png (the contextual item)."""
    from playwright.sync_api import expect, sync_playwright

    from esllm.store.models import Answer, Assignment, Prompt, User

    url, Session, sid, secrets = rater_app
    ARTIFACTS.mkdir(exist_ok=True)
    with Session() as s:
        beto = s.scalars(select(User.id).where(User.name == "beto")).one()
        original = {}
        for ans in s.scalars(select(Answer).where(Answer.selected)):
            original[ans.id] = ans.text
            ans.text = f"{TRICKY}    [{ans.id}]\n"
        s.commit()

    def expected() -> tuple[list[str], dict[str, str]]:
        """(earlier turns as shown: user prompt, answers A, B, C; answers A, B, C) of beto's current item."""
        with Session() as s:
            a = s.scalars(select(Assignment).where(Assignment.session_id == sid, Assignment.rater_id == beto,
                                                   Assignment.finished_at.is_(None))
                          .order_by(Assignment.order_index).limit(1)).one()
            p = s.get(Prompt, a.prompt_id)

            def text(prompt_id: int, label: str) -> str:
                return s.scalars(select(Answer.text).where(Answer.prompt_id == prompt_id, Answer.selected,
                                                           Answer.contestant_id == a.permutation[label])).one()

            context: list[str] = []
            if p.series is not None:
                for e in s.scalars(select(Prompt).where(Prompt.set_id == p.set_id, Prompt.series == p.series,
                                                        Prompt.turn < p.turn).order_by(Prompt.turn)):
                    context += [e.text, *(text(e.id, label) for label in "ABC")]
            return context, {label: text(p.id, label) for label in "ABC"}

    try:
        with sync_playwright() as p:
            browser, page = new_browser_page(p)
            log_in(page, url, "beto")
            page.locator("#comenzar").click()
            seen_context, pages = False, []
            for n in range(1, N_ITEMS + 1):
                expect(page.locator("#progreso")).to_contain_text(f"Ítem {n} / {N_ITEMS}", timeout=WAIT)
                context, answers = expected()
                for label in "ABC":
                    box = page.locator(f"#respuesta-{label} .esllm-verbatim")
                    expect(box).to_contain_text(answers[label].split("[")[-1], timeout=WAIT)  # this item's
                    assert box.inner_text() == answers[label], (n, label)
                    assert box.text_content() == answers[label], (n, label)
                    expect(page.locator(f"#titulo-{label}")).to_contain_text(f"Respuesta {label}")  # the heading
                turns = page.locator("#contexto .esllm-verbatim")
                expect(turns).to_have_count(len(context))
                assert turns.all_inner_texts() == context, n
                assert turns.all_text_contents() == context, n
                if context:
                    seen_context = True
                    page.screenshot(path=str(ARTIFACTS / "evaluar-fiel.png"), full_page=True)
                pages.append(page.content())
                page.locator("#progreso").click()  # focus away from any control, then the shortcuts
                for key in ("a", "3", "b", "4", "c", "5"):
                    page.keyboard.press(key)
                expect(page.locator("#nota-C input[value='5']")).to_be_checked()
                page.keyboard.press("Control+Enter")
            expect(page.locator("#progreso")).to_contain_text("Sesión terminada", timeout=WAIT)
            assert page.evaluate("typeof window.__xss") == "undefined", "a script in an answer ran"
            browser.close()
    finally:
        with Session() as s:
            for ans in s.scalars(select(Answer).where(Answer.id.in_(original))):
                ans.text = original[ans.id]
            s.commit()
    assert seen_context, "the contextual turn 2 came"
    assert (ARTIFACTS / "evaluar-fiel.png").stat().st_size > 10_000
    blob = "\n".join(pages)
    for secret in secrets:
        assert secret not in blob, f"{secret!r} reached the rater's browser"
