"""Stored texts shown exactly as stored: answers, prompts and earlier turns in «Evaluar» and «Comparar».

`gr.Markdown` is not faithful: its postprocess runs `inspect.cleandoc` (common indentation, leading and trailing
blank lines go) and Markdown then reinterprets the rest (`**`, `#`, indented code, HTML). A rater must judge the
answer as stored, so these texts go into a `gr.HTML` as one element whose only content is the text, HTML-escaped
(the browser's HTML parser turns the entities back into exactly those characters: nothing in the text is ever
markup, `<script>` included) and laid out with `white-space: pre-wrap` (spaces, tabs and newlines as they are).

In Gradio 6.31 `gr.HTML` sends its value unchanged (postprocess only warns about `<script>`), and the browser
puts it into the default template `${value}` as a JavaScript variable (never compiled as a template) and sets
it as `innerHTML`: no sanitising, no trimming. The HTML parser normalises a carriage return to a newline, so
"\\r" is written as a character reference; U+0000 cannot be kept by any HTML page (it becomes U+FFFD).
The element's `innerText` in Chromium equals the stored text (tests/test_browser_rater.py checks it).
"""

from __future__ import annotations

import html
import re

CLASS = "esllm-verbatim"
# pre-wrap keeps every space, tab and newline and still wraps long lines; the rest only makes it read well.
STYLE = ("white-space: pre-wrap; overflow-wrap: anywhere; tab-size: 4; margin: 0; padding: 0; "
         "font-family: inherit; font-size: var(--text-md); line-height: 1.5;")


def escape(text: str) -> str:
    """`text` as HTML character data that parses back to exactly `text` (U+0000 aside)."""
    return html.escape(text, quote=True).replace("\r", "&#13;")


def verbatim_html(text: str | None) -> str:
    """One element holding `text` exactly (also for ""), or "" for None."""
    if text is None:
        return ""
    return f'<div class="{CLASS}" style="{STYLE}">{escape(text)}</div>'


_ONE = re.compile(rf'<div class="{CLASS}"[^>]*>(.*?)</div>', re.S)


def verbatim_texts(markup: str | None) -> list[str]:
    """The texts of the verbatim elements in `markup`, in order (what a browser shows in them): for tests and
    API clients, which receive these components' values as HTML."""
    return [html.unescape(m.group(1)) for m in _ONE.finditer(markup or "")]


def verbatim_text(markup: str | None) -> str:
    """The text of the one verbatim element in `markup` ("" when there is none)."""
    texts = verbatim_texts(markup)
    if len(texts) > 1:
        raise ValueError(f"{len(texts)} verbatim texts where one was expected")
    return texts[0] if texts else ""
