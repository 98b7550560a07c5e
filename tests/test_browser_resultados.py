"""An admin in Debian's Chromium (Playwright): log in, open «Resultados», compute the table of a finished
session, see the table and the chart, download the long-format CSV. Screenshot: artifacts/resultados.png.

Uses the browser tests' app (the `rater_app` fixture: accounts, tiny Llama); both raters' scores are saved first
through the service layer, so this test does not depend on the rater test having run.
Needs /usr/bin/chromium (`scripts/test.sh` installs it).
"""

from __future__ import annotations

import csv
import io
import random

from sqlalchemy import select

from tests.helpers import ARTIFACTS, NAVEGADOR, WAIT_MS, browser_login, new_browser_page, open_tab

PW, SESSION, WAIT = NAVEGADOR.password, NAVEGADOR.session, WAIT_MS


def finish(Session, sid: int) -> int:
    """Both raters finish every item (random scores); returns the number of score rows of the session."""
    from esllm.store.models import Assignment, Score, User
    from esllm.study.sessions import next_item, submit

    rng = random.Random(7)
    with Session() as s:
        for name in ("ana", "beto"):
            uid = s.scalars(select(User.id).where(User.name == name)).one()
            while (item := next_item(s, sid, uid)) is not None:
                submit(s, rater_id=uid, assignment_id=item.assignment_id,
                       scores={lb: {"general": rng.randint(1, 5)} for lb in "ABC"})
            s.commit()
        return len(s.scalars(select(Score).join(Assignment, Score.assignment_id == Assignment.id)
                             .where(Assignment.session_id == sid)).all())


def test_admin_reads_results_and_downloads_csv(rater_app):
    from playwright.sync_api import expect, sync_playwright

    url, Session, sid, _ = rater_app
    n_scores = finish(Session, sid)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser, page = new_browser_page(p)
        try:
            browser_login(page, url, "jefa", PW)
            open_tab(page, "Resultados")
            expect(page.locator("#resultados-cual input")).to_have_value(f"{SESSION} (abierta)", timeout=WAIT)
            page.locator("#resultados-calcular").click()
            expect(page.locator("#resultados-resumen")).to_contain_text(f"{n_scores} puntuaciones", timeout=WAIT)
            expect(page.locator("#resultados-tabla")).to_contain_text("Promedio", timeout=WAIT)
            # rows named as people read them (esllm.study.prompts.CATEGORY_LABELS), never the set's raw keys
            for label in ("Básicas", "Complejas", "Contextual"):
                expect(page.locator("#resultados-tabla")).to_contain_text(label)
            for key in ("basicas", "complejas", "contextual"):
                expect(page.locator("#resultados-tabla")).not_to_contain_text(key)
            expect(page.locator("#resultados-grafico img, #resultados-grafico svg").first).to_be_visible(timeout=WAIT)
            page.locator("#resultados-descargar").click()
            # one row per file: the name in a cell, the link (text = size) beside it
            link = page.locator("#resultados-archivos tr").filter(has_text="puntuaciones").locator("a")
            link.wait_for()
            page.screenshot(path=str(ARTIFACTS / "resultados.png"), full_page=True)
            with page.expect_download() as info:
                link.click()
            path = info.value.path()
            rows = list(csv.DictReader(io.StringIO(open(path, encoding="utf-8-sig").read())))
        finally:
            browser.close()
    assert len(rows) == n_scores
    assert {r["sesion"] for r in rows} == {SESSION}
    assert {r["evaluador"] for r in rows} == {"evaluador-01", "evaluador-02"}  # pseudonyms, not account names
