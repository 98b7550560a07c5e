"""The page in Debian's Chromium (Playwright): open, chat, switch contestant, chat again, screenshot.

Runs on the tiny Llama app (three contestants: base, +a1, +a2). Needs /usr/bin/chromium
(`scripts/test.sh` installs it); the screenshot lands in artifacts/conversar.png.
"""

from __future__ import annotations

import pytest

from tests.helpers import ARTIFACTS, new_browser_page, running_app


@pytest.fixture(scope="module")
def page_url(tiny, tmp_path_factory):
    t = tiny("llama")
    tmp = tmp_path_factory.mktemp("browser")
    with running_app(t.config(adapters_dir=t.copy_adapters(tmp / "adapters")), tmp) as a:
        yield a.ctx, a.url


def test_chat_switch_contestant_and_screenshot(page_url):
    from playwright.sync_api import expect, sync_playwright

    ctx, url = page_url
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser, page = new_browser_page(p, height=900, timeout_ms=30_000)
        page.goto(url, wait_until="load")
        box = page.locator("#mensaje textarea")
        box.wait_for(timeout=30_000)
        expect(page.get_by_text("Conversar").first).to_be_visible()
        info = page.locator("#tarjeta")  # the chosen contestant's card, as text
        # The contestant list is filled by the page's load event (admins only); a user who clicks
        # before it arrives gets a clear error, so wait for it as a user waits for the page.
        expect(info).to_contain_text("llama-base", timeout=30_000)

        notes = page.locator("#chat").get_by_text("terminó en")  # one per finished answer, above it

        def ask(text: str) -> str:
            before = notes.count()
            box.fill(text)
            page.locator("#enviar").click()
            expect(notes).to_have_count(before + 1, timeout=60_000)  # the answer's metrics arrive as it ends
            page.wait_for_function("() => !document.querySelector('#chat .pending, #chat .generating')", timeout=60_000)
            return page.locator("#chat [data-testid='bot']").last.inner_text()

        first = ask("Hola, ¿cómo estás?")
        assert first.strip()
        expect(info).to_contain_text("llama-base")

        # Switch contestant through the dropdown, as a user would.
        page.locator("#concursante input").click()
        page.get_by_role("option", name="llama-a1").click()
        expect(info).to_contain_text("a1", timeout=15_000)
        second = ask("Hola, ¿cómo estás?")
        assert second.strip() and second != first, "the adapter should change the answer"
        expect(notes.last).to_contain_text("llama-a1")  # the note names the contestant that wrote the answer
        page.screenshot(path=str(ARTIFACTS / "conversar.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "conversar.png").stat().st_size > 10_000
