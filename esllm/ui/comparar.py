"""Tab «Comparar»: one prompt, three contestants answering side by side as Modelo A/B/C in random order;
a vote (best, tie, all bad), then the names are revealed.

Blind until the vote: the A/B/C mapping lives in esllm/study/arena.py's server-side registry (a `Comparisons`
book per built tab, carried with its random draw in an `Arena` that `build_comparar` binds to the handlers),
the page only holds its token in a server-side gr.State, and an engine error is replaced by a neutral message
that names the label only. Admins only (and local mode): a rater could send a session prompt here, see the
names after voting and match them to the deterministic answers of their blind session; so every handler is
declared `@handler("admin", denied=DENIED)`. The answers stream one after the other (contestants on one base
share that base's lock anyway). The answers are shown exactly as generated, never through Markdown
(esllm/ui/verbatim.py). Handlers are module-level; `build_comparar` only lays out and wires.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

import gradio as gr

from esllm import EsllmError
from esllm.store.models import LABELS
from esllm.study.arena import CHOICE_NAMES, Comparisons, public_error
from esllm.ui.context import AppContext, Caller, bind, handler
from esllm.ui.verbatim import verbatim_html

log = logging.getLogger(__name__)

INTRO = ("Escriba un mensaje: tres concursantes responden como **Modelo A**, **Modelo B** y **Modelo C** en un "
         "orden sorteado. Vote la mejor respuesta; los nombres se revelan después del voto.")
DENIED = ("No tiene permiso para usar «Comparar»: es solo para administradores (revelaría qué modelo dio cada "
          "respuesta, y quien califica a ciegas no debe saberlo).")


@dataclass
class Arena:
    """One built tab's open comparisons and its A/B/C draw (which must not be predictable)."""

    book: Comparisons = field(default_factory=Comparisons)
    rng: random.Random = field(default_factory=random.SystemRandom)


class _Linked(threading.Event):
    """One answer's stop flag, also set while the comparison's «Detener» flag is: the engine sets the flag it
    is given when an answer ends, so each answer needs its own, under the one the button sets."""

    def __init__(self, parent: threading.Event):
        super().__init__()
        self.parent = parent

    def is_set(self) -> bool:
        return super().is_set() or self.parent.is_set()


def reveal_markdown(reveal: dict[str, str], choice: str) -> str:
    lines = [f"**Voto guardado: {CHOICE_NAMES[choice]}.** Los modelos eran:", ""]
    lines += [f"- **Modelo {label}**: {reveal[label]}" for label in LABELS]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- handlers
@handler("admin", denied=DENIED)
def compare(ctx: AppContext, arena: Arena, text: str, names: list, request: gr.Request, *,
            caller: Optional[Caller] = None):
    """«Comparar» (/comparar): (token, answer A, B, C, note), the answers streamed one after the other, each as
    esllm/ui/verbatim.py's HTML of its text."""
    session = request.session_hash or "anon"
    cmp = arena.book.start(prompt=text, available=ctx.engine.available(), requested=names or [], rng=arena.rng,
                           session_hash=session, user_id=caller.id,
                           max_prompt_chars=ctx.config.limits.max_prompt_chars)
    user_stop = ctx.new_stop(f"{session}/comparar")
    texts = dict.fromkeys(LABELS, "")
    yield cmp.token, "", "", "", "Generando las tres respuestas…"
    messages = [{"role": "user", "content": cmp.prompt}]
    for label, name in zip(LABELS, cmp.shown):
        if user_stop.is_set():
            break
        stream = None
        try:
            stream = ctx.engine.stream(name, messages, stop_event=_Linked(user_stop))
            for ev in stream:
                texts[label] = verbatim_html(ev.text)
                yield gr.skip(), *texts.values(), gr.skip()
                if ev.result is not None and ev.result.finish_reason == "cut":  # incomplete: never voted on
                    arena.book.discard(cmp.token)
                    yield (gr.skip(), *texts.values(), f"La respuesta del Modelo {label} se cortó (el servidor cerró "
                           "la conexión): esta comparación no se vota. Envíe el mensaje de nuevo.")
                    return
        except Exception as e:  # the engine's message may name the contestant: log it, show the label
            log.warning("Comparar: %s (Modelo %s) failed: %s", name, label, e)
            arena.book.discard(cmp.token)
            raise gr.Error(public_error(label, e), print_exception=False) from None
        finally:
            if stream is not None:
                stream.close()
    if user_stop.is_set():
        arena.book.discard(cmp.token)
        yield gr.skip(), *texts.values(), "Generación detenida: esta comparación no se vota. Envíe el mensaje de nuevo."
        return
    arena.book.mark_ready(cmp.token)
    yield gr.skip(), *texts.values(), "¿Qué respuesta es mejor? Vote para ver los nombres de los modelos."


@handler("admin", denied=DENIED)
def vote(ctx: AppContext, arena: Arena, token: Any, choice: Any, request: gr.Request, *,
         caller: Optional[Caller] = None) -> str:
    """/comparar_votar(choice), choice in A, B, C, tie, all_bad: store the vote, reveal the names."""
    if ctx.sessionmaker is None:
        raise EsllmError("No hay base de datos configurada: el voto no se puede guardar.")
    with ctx.sessionmaker() as s:  # `vote` commits (or rolls back) itself, before it forgets the comparison
        shown = arena.book.vote(s, token, choice, session_hash=request.session_hash or "anon", user_id=caller.id)
    return reveal_markdown(shown, choice)


def vote_button(ctx: AppContext, arena: Arena, choice: str, token: Any, request: gr.Request) -> str:
    """One of the five vote buttons: `vote` with its choice fixed (checked there)."""
    return vote(ctx, arena, token, choice, request)


@handler("admin", denied=DENIED)
def stop_comparar(ctx: AppContext, request: gr.Request) -> None:
    ctx.stop(f"{request.session_hash or 'anon'}/comparar")


def load_comparar(ctx: AppContext, request: gr.Request):
    """Page load: the contestant list, for admins only (never raises)."""
    c = ctx.caller(request)
    if c is None or c.role != "admin":
        return gr.update(choices=[], value=[]), "«Comparar» es solo para administradores."
    names = ctx.engine.available()
    return gr.update(choices=names, value=names[:3]), ""


# ---------------------------------------------------------------------------------------------- layout
def build_comparar(ctx: AppContext):
    """Build the tab; returns (load function, outputs). The contestant list is filled on load, for admins."""
    arena = Arena()

    with gr.Tab("Comparar", id="comparar"):
        gr.Markdown(INTRO)
        notice = gr.Markdown("", elem_id="comparar-aviso")
        # Filled on load (admins only); the service checks the names, so nothing is baked into /config.
        chosen = gr.Dropdown([], value=[], multiselect=True, max_choices=3, allow_custom_value=True,
                             label="Concursantes que compiten (tres; el orden A/B/C se sortea en cada mensaje)",
                             elem_id="comparar-concursantes")
        # lines=1: Enter compares, Shift+Enter adds a line (the box grows up to max_lines)
        prompt = gr.Textbox(label="Mensaje", lines=1, max_lines=8, elem_id="comparar-mensaje",
                            placeholder="Escriba su mensaje en español. Enter compara; Mayús+Enter, nueva línea.")
        with gr.Row():
            go = gr.Button("Comparar", variant="primary", elem_id="comparar-enviar")
            stop = gr.Button("Detener", variant="stop", elem_id="comparar-detener")
        state = gr.State(None)  # server-side: the token of this browser session's comparison
        with gr.Row():
            answers = []
            for label in LABELS:
                with gr.Column():
                    # A heading of its own: a gr.HTML's label is not drawn.
                    gr.HTML(f"<h3 class='esllm-titulo'>Modelo {label}</h3>", elem_id=f"comparar-titulo-{label}",
                            js_on_load=None)
                    # gr.HTML, not gr.Markdown: the answer as generated (esllm/ui/verbatim.py)
                    answers.append(gr.HTML("", label=f"Modelo {label}", container=True, padding=True,
                                           js_on_load=None, elem_id=f"comparar-{label}"))
        with gr.Row():
            buttons = {choice: gr.Button(text, elem_id=f"votar-{choice}") for choice, text in CHOICE_NAMES.items()}
        reveal = gr.Markdown("", elem_id="comparar-revelacion")
        # The API form of the five buttons: /comparar_votar(choice) with choice in A, B, C, tie, all_bad.
        choice_in = gr.Textbox(visible=False)
        vote_api = gr.Button(visible=False)

        ev_go = go.click(bind(ctx, compare, arena), [prompt, chosen], [state, *answers, reveal], api_name="comparar",
                         concurrency_limit=None)
        ev_enter = prompt.submit(bind(ctx, compare, arena), [prompt, chosen], [state, *answers, reveal],
                                 api_name=False, concurrency_limit=None)
        stop.click(bind(ctx, stop_comparar), None, None, cancels=[ev_go, ev_enter], api_name="comparar_detener",
                   queue=False)
        for choice, button in buttons.items():
            button.click(bind(ctx, vote_button, arena, choice), state, reveal, api_name=False)
        vote_api.click(bind(ctx, vote, arena), [state, choice_in], reveal, api_name="comparar_votar")

    return bind(ctx, load_comparar), [chosen, notice]
