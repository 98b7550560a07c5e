"""What a rater, an admin and a newcomer meet in Debian's Chromium (issue 17), one test per point, each of which
failed on the code before it: Enter sends and Shift+Enter does not; every chat turn names its contestant with
«N tokens · X tok/s · Y s · terminó en …»; the chat starts on the config's `chat_default`; the login page is in
Spanish; a rater's page shows «Evaluar» alone and opens on the current item; a save with a missing score keeps
what was entered, says what is missing next to it and a second try saves; the finished view has no checked radio;
an admin lands on «Conversar» and a session created meanwhile appears in «Resultados» without a reload; no emoji
in any page's text. Screenshots of each state under artifacts/ (ux-*.png).

Needs /usr/bin/chromium (`scripts/test.sh` installs it).
"""

from __future__ import annotations

import re
import unicodedata

import pytest
from sqlalchemy import select

from tests.helpers import ARTIFACTS, NAVEGADOR, WAIT_MS, browser_login, login, new_browser_page, open_tab, running_app

PW, SESSION, WAIT = NAVEGADOR.password, NAVEGADOR.session, WAIT_MS
# Characters drawn as emoji (a box where no emoji font is installed): the pictographic planes, the dingbats and
# miscellaneous symbols blocks (✅ ❌ ⚠ ✓ …) and the emoji variation selector.
EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\uFE0F]")


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"ux-{name}.png"), full_page=True)


def no_emoji(page, where: str) -> None:
    text = page.locator("body").inner_text()
    found = sorted({f"{c} U+{ord(c):04X} {unicodedata.name(c, '?')}" for c in EMOJI.findall(text)})
    assert not found, f"{where}: emoji in the page's text: {found}"


def score(page, label: str, value: int) -> None:
    page.locator(f"#nota-{label} label").filter(has=page.locator(f"input[value='{value}']")).click()


# ----------------------------------------------------------------------------- the chat (local mode)
@pytest.fixture(scope="module")
def chat_url(tiny, tmp_path_factory):
    t = tiny("llama")
    tmp = tmp_path_factory.mktemp("ux-chat")
    with running_app(t.config(adapters_dir=t.copy_adapters(tmp / "adapters"), chat_default="llama-a1"), tmp) as a:
        yield a.url


def open_chat(page, url: str):
    from playwright.sync_api import expect

    page.goto(url, wait_until="load")
    box = page.locator("#mensaje textarea")
    box.wait_for()
    expect(page.locator("#tarjeta")).to_contain_text("llama-a1", timeout=WAIT)  # the config's chat_default
    return box


def test_chat_enter_sends_and_shift_enter_adds_a_line(chat_url):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser, page = new_browser_page(p)
        box = open_chat(page, chat_url)
        users = page.locator("#chat [data-testid='user']")
        box.click()
        page.keyboard.type("Hola")
        page.keyboard.press("Shift+Enter")
        page.keyboard.type("segunda línea")
        expect(box).to_have_value("Hola\nsegunda línea")  # a newline, nothing sent
        page.wait_for_timeout(300)
        expect(users).to_have_count(0)
        page.keyboard.press("Enter")
        expect(users).to_have_count(1, timeout=WAIT)
        expect(users.first).to_contain_text("segunda línea")
        expect(box).to_have_value("", timeout=WAIT)
        browser.close()


def test_chat_turns_name_their_contestant_and_tokens_per_second(chat_url):
    from playwright.sync_api import expect, sync_playwright

    line = re.compile(r"(llama-a1|llama-base) · \d+ tokens · \d+,\d tok/s · \d+,\d s · terminó en (EOS|límite)")
    with sync_playwright() as p:
        browser, page = new_browser_page(p)
        box = open_chat(page, chat_url)
        notes = page.locator("#chat").get_by_text("tok/s")
        box.fill("¿Qué es el IVA?")
        box.press("Enter")
        expect(notes).to_have_count(1, timeout=WAIT)
        expect(notes.first).to_contain_text("llama-a1")
        page.locator("#concursante input").click()
        page.get_by_role("option", name="llama-base").click()
        expect(page.locator("#tarjeta")).to_contain_text("llama-base", timeout=WAIT)
        box.fill("¿Y el RUC?")
        box.press("Enter")
        expect(notes).to_have_count(2, timeout=WAIT)
        texts = notes.all_inner_texts()
        assert all(line.search(t) for t in texts), texts
        assert "llama-a1" in texts[0] and "llama-base" in texts[1], texts
        expect(page.locator("#tarjeta")).to_contain_text("Adaptador")  # the card is text, not JSON
        expect(page.locator("#tarjeta")).not_to_contain_text("{")
        page.wait_for_function("() => !document.querySelector('#chat .pending, #chat .generating')", timeout=WAIT)
        shot(page, "conversar")
        no_emoji(page, "Conversar")
        browser.close()


# ----------------------------------------------------------------------------- accounts: raters and an admin
def tabs(page) -> list[str]:
    return [t.strip() for t in page.get_by_role("tab").all_inner_texts()]


def test_login_page_is_in_spanish(rater_app):
    from playwright.sync_api import expect, sync_playwright

    url = rater_app[0]
    with sync_playwright() as p:
        browser, page = new_browser_page(p)
        page.goto(url, wait_until="load")
        page.locator("input[type=password]").wait_for()
        body = page.locator("body")
        for word in ("Iniciar sesión", "Usuario", "Contraseña", "Entrar"):
            expect(body).to_contain_text(word, ignore_case=True)
        for word in ("Login", "Username", "Password"):
            expect(body).not_to_contain_text(word)
        page.locator("#usuario").fill("ana")
        page.locator("#clave").fill("no-es-la-clave")
        page.locator("#boton-entrar").click()
        expect(page.locator("#error")).to_have_text("Usuario o contraseña incorrectos.", timeout=WAIT)
        shot(page, "login")
        no_emoji(page, "login")
        browser.close()


def test_rater_sees_only_evaluar_and_lands_on_the_current_item(rater_app):
    from playwright.sync_api import expect, sync_playwright

    url = rater_app[0]
    with sync_playwright() as p:
        browser, page = new_browser_page(p)
        browser_login(page, url, "ana", PW)
        # no click on anything: the page opens on her current item
        expect(page.locator("#progreso")).to_contain_text("Ítem 1 / 5", timeout=WAIT)
        assert tabs(page) == ["Evaluar"]
        for label in "ABC":
            expect(page.locator(f"#titulo-{label}")).to_have_text(f"Respuesta {label}")
            expect(page.locator(f"#respuesta-{label} .esllm-verbatim")).to_be_visible()
        # the three score rows line up whatever the answers' lengths
        ys = [page.locator(f"#nota-{label}").bounding_box()["y"] for label in "ABC"]
        assert max(ys) - min(ys) < 2, ys
        expect(page.locator("#sesion input")).to_have_value(re.compile(f"^{SESSION} · 0/5 hechos$"))
        expect(page.locator("#usuario")).to_contain_text("ana")
        shot(page, "evaluar-inicio")
        no_emoji(page, "Evaluar")
        page.locator("#salir").click()  # «Salir»: log out
        page.locator("#boton-entrar").wait_for()
        expect(page.locator("body")).to_contain_text("Contraseña")
        browser.close()


def test_missing_score_keeps_what_was_entered_and_a_second_try_saves(rater_app):
    from playwright.sync_api import expect, sync_playwright

    from esllm.store.models import Assignment, Score, User

    url, Session, sid, _ = rater_app
    with sync_playwright() as p:
        browser, page = new_browser_page(p)
        browser_login(page, url, "ana", PW)
        expect(page.locator("#progreso")).to_contain_text("Ítem 1 / 5", timeout=WAIT)
        score(page, "A", 3)
        score(page, "C", 5)
        page.locator("#comentario textarea").fill("la B no la entiendo")
        page.locator("#guardar").click()
        expect(page.locator("#evaluar-mensaje")).to_contain_text("falta calificar la respuesta B", timeout=WAIT)
        expect(page.locator("#falta-B")).to_contain_text("Falta: nota general")
        expect(page.locator("#falta-A")).to_have_text("")
        # nothing lost, nothing painted over: the scores and the comment are there, no «Error» badge
        expect(page.locator("#nota-A input[value='3']")).to_be_checked()
        expect(page.locator("#nota-C input[value='5']")).to_be_checked()
        expect(page.locator("#comentario textarea")).to_have_value("la B no la entiendo")
        expect(page.locator("#progreso")).to_contain_text("Ítem 1 / 5")
        expect(page.locator(".wrap .error")).to_have_count(0)
        shot(page, "evaluar-falta")
        score(page, "B", 4)  # the radios still respond
        expect(page.locator("#nota-B input[value='4']")).to_be_checked()
        page.locator("#guardar").click()
        expect(page.locator("#progreso")).to_contain_text("Ítem 2 / 5", timeout=WAIT)
        expect(page.locator("#evaluar-mensaje")).to_have_text("")
        expect(page.locator("#falta-B")).to_have_text("")
        browser.close()
    with Session() as s:
        ana = s.scalars(select(User.id).where(User.name == "ana")).one()
        rows = s.scalars(select(Score).join(Assignment, Score.assignment_id == Assignment.id)
                         .where(Assignment.session_id == sid, Assignment.rater_id == ana)).all()
    assert {r.label: r.value for r in rows} == {"A": 3, "B": 4, "C": 5}
    assert {r.comment for r in rows} == {"la B no la entiendo"}


def test_finished_view_has_no_checked_radio(rater_app):
    """beto rates all five items by keyboard; the last save leaves «Sesión terminada» with his count and no radio
    checked (before, one shared update dict cleared only column A)."""
    from playwright.sync_api import expect, sync_playwright

    url = rater_app[0]
    with sync_playwright() as p:
        browser, page = new_browser_page(p)
        browser_login(page, url, "beto", PW)
        for n in range(1, 6):
            expect(page.locator("#progreso")).to_contain_text(f"Ítem {n} / 5", timeout=WAIT)
            page.locator("#progreso").click()  # focus away from any control, then the shortcuts
            for key in ("a", "2", "b", "4", "c", "5"):
                page.keyboard.press(key)
            expect(page.locator("#nota-C input[value='5']")).to_be_checked()
            page.keyboard.press("Control+Enter")
        expect(page.locator("#progreso")).to_contain_text("Sesión terminada", timeout=WAIT)
        expect(page.locator("#progreso")).to_contain_text("5 de 5")
        expect(page.locator("input[type=radio]:checked")).to_have_count(0)
        expect(page.locator("#guardar")).to_be_hidden()
        expect(page.locator("#sesion input")).to_have_value(re.compile("terminada"))
        shot(page, "evaluar-terminada")
        no_emoji(page, "Sesión terminada")
        browser.close()


def test_admin_lands_on_conversar_and_a_new_session_appears_in_resultados_without_reload(rater_app):
    from playwright.sync_api import expect, sync_playwright

    from esllm.store.models import ContestantSnapshot

    url, Session, _, _ = rater_app
    with sync_playwright() as p:
        browser, page = new_browser_page(p)
        browser_login(page, url, "jefa", PW)
        expect(page.locator("#mensaje textarea")).to_be_visible(timeout=WAIT)  # «Conversar» is open
        assert tabs(page) == ["Conversar", "Comparar", "Administrar", "Resultados"]
        expect(page.get_by_role("tab", name="Conversar")).to_have_attribute("aria-selected", "true")
        no_emoji(page, "Conversar (admin)")
        for name in ("Comparar", "Administrar", "Resultados"):
            open_tab(page, name)
            page.wait_for_timeout(500)
            no_emoji(page, name)
        open_tab(page, "Administrar")
        page.get_by_role("button", name="Importar prompts").click()
        expect(page.locator("body")).to_contain_text("Coloque el archivo aquí")  # Gradio's own words, in Spanish
        expect(page.locator("body")).not_to_contain_text("Drop File Here")
        # and what a screen reader reads: Gradio's hard-coded English aria-labels, in Spanish (login.ARIA_ES)
        expect(page.locator('[aria-label="Haga clic para subir un archivo o suéltelo aquí"]').first).to_be_attached()
        expect(page.locator('[aria-label="Click to upload or drop files"]')).to_have_count(0)
        expect(page.locator('[aria-label="File upload"]')).to_have_count(0)
        # a failed action: its message in the one message area (the toast), nothing painted over its outputs
        # (Gradio's red «Error» badge hid the three prompt-set lists), their values kept
        chosen = page.locator("#lote-conjunto input").input_value()
        page.get_by_role("button", name="Importar", exact=True).click()
        expect(page.locator(".toast-body")).to_contain_text("archivo", timeout=WAIT)
        page.wait_for_timeout(300)
        expect(page.locator(".wrap span.error")).to_have_count(0)
        expect(page.locator("#lote-conjunto input")).to_have_value(chosen)
        shot(page, "administrar-error")
        page.locator(".toast-body").first.click()
        shot(page, "administrar")
        open_tab(page, "Resultados")
        expect(page.locator("#resultados-cual input")).to_have_value(f"{SESSION} (abierta)", timeout=WAIT)
        # an empty table says so in Spanish, and one without headers yet shows no «1 2 3»
        empty = page.locator("#resultados-tabla [role=grid]")
        assert empty.evaluate("e => getComputedStyle(e, '::after').content") == '"Sin datos todavía."'
        expect(page.locator("#resultados-tabla thead")).to_be_hidden()
        # meanwhile the admin (another tab of hers, here her API client) creates a session
        with Session() as s:
            names = [s.scalars(select(ContestantSnapshot.name).where(ContestantSnapshot.name == n)).first()
                     for n in NAVEGADOR.contestants]
        admin = login(url, "jefa", PW)
        msg, *_ = admin.predict("ronda-dos", "navegador", names, ["ana", "beto"], 1, "general",
                                api_name="/sesion_crear")
        assert "ronda-dos" in msg
        open_tab(page, "Conversar")
        open_tab(page, "Resultados")  # no reload: opening the tab refreshes its list
        page.locator("#resultados-cual input").click()
        expect(page.get_by_role("option", name="ronda-dos (abierta)")).to_be_visible(timeout=WAIT)
        page.keyboard.press("Escape")
        shot(page, "resultados")
        browser.close()
