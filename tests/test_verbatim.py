"""Stored answers reach the page exactly as stored («Evaluar», «Comparar»), without a server or a browser.

What the page receives is the handler's output after its component's `postprocess` (gr.Markdown's runs
`inspect.cleandoc` and its text is then read as Markdown, so it used to change them): here that is parsed with
Python's HTML parser, as a browser parses `innerHTML`, and the text of each verbatim element must equal the
stored text. The texts carry indented code, leading blank lines and spaces, tabs, Markdown and HTML-looking
characters. tests/test_browser_rater.py checks what Chromium shows.
"""

from __future__ import annotations

from html.parser import HTMLParser
from types import SimpleNamespace

import gradio as gr
import pytest
from sqlalchemy import select

from esllm.store.models import Answer, Assignment, ContestantSnapshot, Prompt
from esllm.study.answers import generate_answers
from esllm.study.sessions import create_session
from esllm.ui import comparar, evaluar
from esllm.ui.context import AppContext
from esllm.ui.verbatim import CLASS, verbatim_html, verbatim_text, verbatim_texts
from tests.helpers import ROWS, FakeEngine, new_store

NAMES = ("modelo-uno", "modelo-dos", "modelo-tres")
TRICKY = ("\n\n  Respuesta con sangría:\n\n    def f(x):\n        return x  # código\n\n\tcon tabulador\n"
          "**no es negrita** # tampoco título\n<b>x</b> <script>window.__xss = 1</script> &amp; &lt; \"'`${x}\n\n")
SAMPLES = [TRICKY, "", " ", "\n", "a\r\nb\rc", "<img src=x onerror=alert(1)>", "    solo código\n", "&#13; &nbsp;"]


class Texts(HTMLParser):
    """Text content of `markup` as an HTML parser builds it: all of it, and each verbatim element's."""

    def __init__(self, markup: str):
        super().__init__(convert_charrefs=True)
        self.all, self.verbatim, self.depth = [], [], 0
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag, attrs):
        if self.depth:
            self.depth += 1
        elif CLASS in (dict(attrs).get("class") or "").split():
            self.depth = 1
            self.verbatim.append("")

    def handle_endtag(self, tag):
        if self.depth:
            self.depth -= 1

    def handle_data(self, data):
        self.all.append(data)
        if self.depth:
            self.verbatim[-1] += data


def shown(component, value) -> Texts:
    """What the browser gets for `value` in `component`, parsed."""
    return Texts(component.postprocess(value) or "")


@pytest.mark.parametrize("text", SAMPLES)
def test_verbatim_html_parses_back_to_the_text_and_carries_no_markup(text):
    markup = verbatim_html(text)
    assert Texts(markup).verbatim == [text] and verbatim_text(markup) == text
    assert "<script" not in markup and "<b>" not in markup and "<img" not in markup
    assert markup.count("<") == 2, "one element, nothing else"
    assert verbatim_html(None) == "" and verbatim_texts(markup * 2) == [text, text]


def tricky_reply(name, messages):
    """A different tricky text per contestant and prompt, identifiable."""
    return f"{TRICKY}    [{name} / {messages[-1]['content']}]\n"


@pytest.fixture()
def ctx(tmp_path):
    store = new_store(tmp_path / "v.sqlite3", accounts={"jefa": "admin", "ana": "rater"}, password="clave-segura",
                      prompt_sets={"mini": ROWS})
    engine = FakeEngine(NAMES, tricky_reply)
    yield AppContext(config=engine.config, engine=engine, sessionmaker=store.Session, local_mode=False)
    store.dispose()


def components(build, ctx) -> dict[str, gr.components.Component]:
    with gr.Blocks() as demo:
        build(ctx)
    return {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}


def stored(s, a: Assignment, prompt_id: int, label: str) -> str:
    """The selected answer to `prompt_id` of the contestant that `a` shows under `label`."""
    return s.scalars(select(Answer.text).where(Answer.prompt_id == prompt_id, Answer.selected,
                                               Answer.contestant_id == a.permutation[label])).one()


def test_evaluar_shows_answers_and_earlier_turns_exactly_as_stored(ctx):
    generate_answers(ctx.sessionmaker, ctx.engine, "mini", NAMES, attempts=1)
    with ctx.sessionmaker() as s:
        ids = list(s.scalars(select(ContestantSnapshot.id).order_by(ContestantSnapshot.id)))
        sid = create_session(s, name="fiel", prompt_set="mini", contestant_ids=ids, raters=["ana"], k=1).id
        s.commit()
    comp = components(evaluar.build_evaluar, ctx)
    ana = SimpleNamespace(username="ana", session_hash="t")
    out = evaluar.start(ctx, sid, ana)
    seen_context = False
    while out[0] is not None:
        state, context_html, answers = out[0], out[2], out[5:8]
        with ctx.sessionmaker() as s:
            a = s.get(Assignment, state[1])
            p = s.get(Prompt, a.prompt_id)

            for label, value in zip("ABC", answers):
                text = stored(s, a, p.id, label)
                assert text.startswith("\n\n  Respuesta con sangría:\n\n    def f(x):"), "the test's tricky text"
                page = shown(comp[f"respuesta-{label}"], value)
                assert "".join(page.all) == text, label  # the column's whole text: the answer, nothing else
                assert page.verbatim == [text], label
            if p.turn == 2:
                first = s.scalars(select(Prompt).where(Prompt.series == p.series, Prompt.turn == 1)).one()
                assert shown(comp["contexto"], context_html).verbatim == [
                    first.text, *(stored(s, a, first.id, label) for label in "ABC")]
                seen_context = True
        out = evaluar.save(ctx, state, "", "3", "3", "3", *[None] * 12, ana)
    assert seen_context, "the contextual turn 2 came"


def test_comparar_shows_the_answers_exactly_as_generated(ctx):
    comp = components(comparar.build_comparar, ctx)
    admin = SimpleNamespace(username="jefa", session_hash="t")
    *_, last = comparar.compare(ctx, comparar.Arena(), "¿Qué es el IVA?", list(NAMES), admin)
    got = sorted("".join(shown(comp[f"comparar-{label}"], value).all) for label, value in zip("ABC", last[1:4]))
    assert got == sorted(tricky_reply(n, [{"content": "¿Qué es el IVA?"}]) for n in NAMES)
