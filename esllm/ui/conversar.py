"""Tab «Conversar»: multi-turn streaming chat with one contestant (admins only, and local mode).

Handlers are module-level functions `fn(ctx, *inputs, request)` declared with `@handler("admin")` (chatting
reveals which model answers what: with accounts only admins may, raters rate blind); they turn widget values
into engine calls (esllm/engine/core.py), and `handler` turns engine errors into `gr.Error`, whose message the
browser shows. `build_conversar` only lays out the tab and wires the events. A stop flag per browser session
backs the «Detener» button; a generator closed by Gradio (browser gone, event cancelled) also stops the engine.
«Buena respuesta» / «Mala respuesta» rate the last answer: what it answered (contestant, prompt, text, params)
is kept in server-side state when it ends, and esllm/study/feedback.py stores it in `chat_feedback`.

Each answer is preceded in the chat by a small note (a message with Gradio `metadata`, which the engine never
sees: `to_engine_messages` skips it) that names the contestant that wrote it and, once it ends, «N tokens ·
X tok/s · Y s · terminó en EOS/límite»; unfolded, it lists the generation parameters. The contestant the chat
starts with is the config's `chat_default` (an instruction-following one), else the first available.
The contestant's card and the «Modelos y adaptadores» table are formatted in esllm/ui/conversar_ficha.py.
"""

from __future__ import annotations

import time
from typing import Any, Iterator, Optional

import gradio as gr

from esllm import EsllmError
from esllm.engine.presets import PRESETS, preset_choices
from esllm.study.feedback import save_feedback
from esllm.ui.context import AppContext, bind, handler
from esllm.ui.conversar_ficha import adapter_card, card_markdown, contestant_info, status_markdown

ADVANCED = ("max_new_tokens", "temperature", "top_k", "top_p", "num_beams", "penalty_alpha", "repetition_penalty", "seed")


def text_of(content: Any) -> str:
    """Gradio 6 gives message content as a list of blocks; keep the text."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("content") or "")
    if isinstance(content, (list, tuple)):
        return "".join(text_of(c) for c in content)
    return ""


def is_note(m: Any) -> bool:
    """A chat message that is our note about an answer (contestant, tokens), not part of the conversation."""
    return isinstance(m, dict) and isinstance(m.get("metadata"), dict) and bool(m["metadata"].get("title"))


def to_engine_messages(history: list[dict], system: str) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system.strip()}] if system and system.strip() else []
    for m in history or []:
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant") or is_note(m):
            continue
        msgs.append({"role": m["role"], "content": text_of(m.get("content"))})
    return msgs


FINISH = {"eos": "EOS", "stop_string": "texto de parada", "length": "límite", "stopped": "detenida",
          "cut": "CORTE: respuesta incompleta", "error": "error"}


def _num(x: float, digits: int = 1) -> str:
    return f"{x:.{digits}f}".replace(".", ",")


def metrics_line(result: Any) -> str:
    """«N tokens · X tok/s · Y s · terminó en EOS/límite» for a GenerationResult."""
    rate = result.new_tokens / result.latency_s if result.latency_s else 0.0
    return (f"{result.new_tokens} tokens · {_num(rate)} tok/s · {_num(result.latency_s)} s · "
            f"terminó en {FINISH.get(result.finish_reason, result.finish_reason)}"
            + (f" ({result.error})" if getattr(result, "error", "") else ""))


def note_message(name: str, result: Any = None) -> dict:
    """The note shown above an answer: who writes it, then (`result`) its metrics; unfolded, the parameters."""
    if result is None:
        return {"role": "assistant", "content": "", "metadata": {"title": f"{name} · escribiendo…", "status": "pending"}}
    params = ", ".join(f"{k}={v}" for k, v in result.params.items() if v is not None)
    body = (f"Parámetros: {params}\n\nTokens del prompt: {result.prompt_tokens}"
            + (f" · primer token en {_num(result.first_token_s, 2)} s" if result.first_token_s else "")
            + (f" · turnos antiguos quitados: {result.dropped_turns}" if result.dropped_turns else ""))
    return {"role": "assistant", "content": body,
            "metadata": {"title": f"{result.contestant} · {metrics_line(result)}", "status": "done"}}


def details(result: Any) -> dict:
    """«Detalles de la última respuesta»: everything but the text (already in the chat), metrics first."""
    d = result.as_dict()
    d.pop("text", None)
    rate = result.new_tokens / result.latency_s if result.latency_s else 0.0
    return {"contestant": d.pop("contestant"), "tokens_per_s": round(rate, 2), **d}


def _overrides(values: tuple) -> dict[str, Any]:
    out = dict(zip(ADVANCED, values))
    if out.get("seed") in (None, "", -1):
        out["seed"] = None
    return out


# ---------------------------------------------------------------------------------------------- handlers
# Redraw the growing answer at most this often. Each redraw costs Gradio's server a diff, JSON and an SSE event;
# one per token took enough CPU from llama.cpp's threads on 2 cores to cut the chat from ~21 to ~9 tokens/s.
REDRAW_S = 0.1


def _answer(ctx: AppContext, messages: list[dict], shown: list[dict], name: str, preset_name: str, values: tuple,
            request: Any) -> Iterator[tuple]:
    """Stream one answer into the chat: (chatbot, msg, last, answered) updates."""
    if not name:  # the list is filled when the page loads: a click before that has no contestant yet
        raise EsllmError("Elija un concursante antes de enviar (la lista se llena al cargar la página).")
    stop_ev = ctx.new_stop(request.session_hash or "anon")
    stream = ctx.engine.stream(name, messages, preset=preset_name, overrides=_overrides(values), stop_event=stop_ev)
    note = note_message(name)
    try:
        ev = next(stream)
        answer = {"role": "assistant", "content": ev.text}
        yield shown + [note, answer], "", gr.skip(), None
        last = time.monotonic()
        for ev in stream:
            answer["content"] = ev.text
            if ev.result is None and time.monotonic() - last < REDRAW_S:
                continue  # the text keeps growing in `answer`; the page is redrawn at most every REDRAW_S
            last = time.monotonic()
            yield shown + [note, answer], gr.skip(), gr.skip(), gr.skip()
    finally:
        stream.close()
    result = ev.result
    if result is None:
        yield shown + [note, answer], gr.skip(), gr.skip(), gr.skip()
        return
    rated = {"contestant": result.contestant, "prompt": messages[-1]["content"], "answer": result.text,
             "params": result.params, "feedback_id": None} if result.finish_reason not in ("cut", "error") else None
    yield shown + [note_message(name, result), answer], gr.skip(), details(result), rated


@handler("admin")
def respond(ctx: AppContext, message: str, history: list[dict], name: str, preset_name: str, system_prompt: str,
            max_new_tokens, temperature, top_k, top_p, num_beams, penalty_alpha, repetition_penalty, seed,
            request: gr.Request):
    """«Enviar» (/conversar): the user's message, then the streamed answer."""
    # Explicit parameters: Gradio injects `request` only into a named, annotated parameter.
    values = (max_new_tokens, temperature, top_k, top_p, num_beams, penalty_alpha, repetition_penalty, seed)
    if not isinstance(message, str) or not message.strip():
        raise EsllmError("Escriba un mensaje antes de enviar: el mensaje está vacío.")
    history = list(history or [])
    user = {"role": "user", "content": message}
    msgs = to_engine_messages(history, system_prompt) + [{"role": "user", "content": message}]
    yield from _answer(ctx, msgs, history + [user], name, preset_name, values, request)


@handler("admin")
def regenerate(ctx: AppContext, history: list[dict], name: str, preset_name: str, system_prompt: str,
               max_new_tokens, temperature, top_k, top_p, num_beams, penalty_alpha, repetition_penalty, seed,
               request: gr.Request):
    """«Regenerar» (/regenerar): the last answer again, from the same history."""
    values = (max_new_tokens, temperature, top_k, top_p, num_beams, penalty_alpha, repetition_penalty, seed)
    history = list(history or [])
    while history and history[-1].get("role") == "assistant":
        history.pop()
    if not history:
        raise EsllmError("No hay ningún mensaje que regenerar.")
    msgs = to_engine_messages(history, system_prompt)
    yield from _answer(ctx, msgs, history, name, preset_name, values, request)


@handler(login=False)  # stops only this browser session's own generation
def stop_conversar(ctx: AppContext, request: gr.Request) -> None:
    ctx.stop(request.session_hash or "anon")


def _rate(ctx: AppContext, thumbs: str, rated: Any) -> tuple[dict, str]:
    if not rated:
        raise EsllmError("Todavía no hay ninguna respuesta terminada que valorar.")
    if ctx.sessionmaker is None:
        raise EsllmError("No hay base de datos configurada: la valoración no se puede guardar.")
    with ctx.transaction() as s:
        row = save_feedback(s, contestant=rated["contestant"], prompt=rated["prompt"], answer=rated["answer"],
                            thumbs=thumbs, params=rated["params"], feedback_id=rated["feedback_id"])
        row_id = row.id  # flushed: the id is known before the commit
    mark = "buena" if thumbs == "up" else "mala"
    return {**rated, "feedback_id": row_id}, f"Valoración guardada: «{mark}» para la última respuesta."


@handler("admin")
def rate_up(ctx: AppContext, rated: Any, request: gr.Request) -> tuple[dict, str]:
    return _rate(ctx, "up", rated)


@handler("admin")
def rate_down(ctx: AppContext, rated: Any, request: gr.Request) -> tuple[dict, str]:
    return _rate(ctx, "down", rated)


@handler("admin", idle=lambda: (gr.skip(), gr.skip(), {}, None, "", *(gr.skip(),) * 7))  # a non-admin's page: empty list
def describe(ctx: AppContext, name: str, request: gr.Request):
    """The chosen contestant: (info, its preset, adapter card, loss plot, the card as text, the 7 sliders of
    «Parámetros avanzados» on its own settings: see `contestant_values`)."""
    d = contestant_info(ctx.engine.record(name))
    c = ctx.engine.registry.contestants[name]
    meta, img = adapter_card(ctx, name)
    return (d, c.preset, meta, gr.update(value=img, visible=img is not None), card_markdown(d, meta),
            *preset_values(c.preset, c.overrides))


def preset_values(preset_name: str, own: Optional[dict] = None):
    """The sliders a preset sets (max_new_tokens, temperature, top_k, top_p, num_beams, penalty_alpha,
    repetition_penalty), with `own` (a contestant's `params:`) over them; no data, no check."""
    if preset_name not in PRESETS:
        raise gr.Error(f"Preset desconocido: {preset_name}", print_exception=False)
    v = {**PRESETS[preset_name][1], **(own or {})}
    return (gr.update(value=v["max_new_tokens"]) if "max_new_tokens" in v else gr.skip(),
            gr.update(value=v.get("temperature", 1.0)), gr.update(value=v.get("top_k", 0)),
            gr.update(value=v.get("top_p", 1.0)), gr.update(value=v.get("num_beams", 1)),
            gr.update(value=v.get("penalty_alpha", 0.0)), gr.update(value=v.get("repetition_penalty", 1.0)))


@handler("admin", idle=lambda: (gr.skip(),) * 7)
def contestant_values(ctx: AppContext, name: str, preset_name: str, request: gr.Request):
    """The sliders for `preset_name`: the contestant's own values (its config `params:`) when it is its preset,
    so a chat answer uses the settings the contestant is rated with unless the user changes them."""
    c = ctx.engine.registry.contestants.get(name) if name else None
    return preset_values(preset_name, c.overrides if c is not None and c.preset == preset_name else None)


@handler("admin")
def refresh_adapters(ctx: AppContext, current: str, request: gr.Request):
    """«Actualizar adaptadores»: rescan the adapters folder; (contestant list, status table)."""
    rep = ctx.engine.refresh()
    names = ctx.engine.available()
    value = current if current in names else (names[0] if names else None)
    parts = []
    if rep.added:
        parts.append("nuevos: " + ", ".join(rep.added))
    if rep.removed:
        parts.append("quitados: " + ", ".join(rep.removed))
    if rep.errors:
        parts.append(f"{len(rep.errors)} con problemas (vea «Modelos y adaptadores»)")
    gr.Info("Adaptadores actualizados" + (": " + "; ".join(parts) if parts else ": sin cambios"))
    return gr.update(choices=names, value=value), status_markdown(ctx)


def load_conversar(ctx: AppContext, request: gr.Request):
    """Page load: the contestant list and panels, for admins only (never raises)."""
    c = ctx.caller(request)
    if c is None or c.role != "admin":
        return (gr.update(choices=[], value=None), {"aviso": "«Conversar» es solo para administradores."},
                gr.skip(), "")
    names = ctx.engine.available()
    default = getattr(ctx.config, "chat_default", None)
    first = default if default in names else (names[0] if names else None)
    return (gr.update(choices=names, value=first), contestant_info(ctx.engine.record(first)) if first else {},
            ctx.engine.registry.contestants[first].preset if first else gr.skip(), status_markdown(ctx))


# ---------------------------------------------------------------------------------------------- layout
def build_conversar(ctx: AppContext):
    """Build the tab; returns (load function, outputs) to run when a page opens.

    Nothing that names a contestant is in the page's initial config: the contestant list and panels
    are filled on load, and only for admins (in local mode, the local user is admin).
    """
    cap = ctx.config.limits.max_new_tokens
    first_preset = "greedy"
    pv = PRESETS[first_preset][1]

    with gr.Tab("Conversar", id="conversar"):
        with gr.Row():
            # Filled on load (admins only); the engine validates the name, so no choices are baked into /config.
            contestant = gr.Dropdown([], value=None, label="Concursante", elem_id="concursante", scale=2,
                                     allow_custom_value=True)
            preset = gr.Dropdown(preset_choices(), value=first_preset, label="Preset de generación", elem_id="preset", scale=2)
            refresh = gr.Button("Actualizar adaptadores", elem_id="actualizar", scale=1)
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Conversación", height=440, elem_id="chat", placeholder="Escriba un mensaje para empezar.")
                # lines=1: Enter sends (Gradio submits a one-line box on Enter), Shift+Enter adds a line; the
                # box grows up to max_lines as the text does.
                msg = gr.Textbox(label="Mensaje", lines=1, max_lines=8, elem_id="mensaje",
                                 placeholder="Escriba su mensaje en español. Enter envía; Mayús+Enter, nueva línea.")
                with gr.Row():
                    send = gr.Button("Enviar", variant="primary", elem_id="enviar")
                    stop = gr.Button("Detener", variant="stop", elem_id="detener")
                    regen = gr.Button("Regenerar", elem_id="regenerar")
                    clear = gr.Button("Borrar", elem_id="borrar")
                with gr.Row():
                    thumbs_up = gr.Button("Buena respuesta", size="sm", elem_id="pulgar-arriba")
                    thumbs_down = gr.Button("Mala respuesta", size="sm", elem_id="pulgar-abajo")
                    thumbs_note = gr.Markdown("", elem_id="valoracion")
                # server-side: the last finished answer {contestant, prompt, answer, params, feedback_id}
                answered = gr.State(None)
            with gr.Column(scale=2):
                # The card as text (filled by `describe`); the same data as JSON for API clients stays hidden.
                card_md = gr.Markdown("", elem_id="tarjeta")
                plot = gr.Image(value=None, label="Curva de pérdida del adaptador", type="pil", elem_id="perdida",
                                interactive=False, buttons=[], visible=False)
                info = gr.JSON(value={}, label="Concursante elegido", elem_id="info", visible=False)
                card = gr.JSON(value={}, label="Metadatos del entrenamiento", elem_id="ficha", visible=False)
                with gr.Accordion("Detalles de la última respuesta", open=False):
                    last = gr.JSON(value={}, label="Parámetros, tokens, latencia y final", elem_id="ultima")
        with gr.Accordion("Parámetros avanzados", open=False):
            system = gr.Textbox(label="Mensaje de sistema", lines=2, placeholder="Opcional: instrucciones para el modelo")
            with gr.Row():
                adv = [
                    gr.Slider(1, cap, value=min(256, cap), step=1, label="Máx. tokens nuevos"),
                    gr.Slider(0.01, 2.0, value=pv.get("temperature", 1.0), step=0.01, label="Temperatura"),
                    gr.Slider(0, 200, value=pv.get("top_k", 0), step=1, label="top-k (0 = sin límite)"),
                    gr.Slider(0.01, 1.0, value=pv.get("top_p", 1.0), step=0.01, label="top-p"),
                ]
            with gr.Row():
                adv += [
                    gr.Slider(1, 8, value=pv.get("num_beams", 1), step=1, label="Haces (búsqueda en haz)"),
                    gr.Slider(0.0, 1.0, value=pv.get("penalty_alpha", 0.0), step=0.05, label="Penalización α (búsqueda contrastiva)"),
                    gr.Slider(1.0, 2.0, value=1.0, step=0.05, label="Penalización por repetición"),
                    gr.Number(value=None, precision=0, label="Semilla (vacía = aleatoria)"),
                ]
        with gr.Accordion("Modelos y adaptadores", open=False):
            status = gr.Markdown("", elem_id="estado")

        inputs = [msg, chatbot, contestant, preset, system, *adv]
        outputs = [chatbot, msg, last, answered]  # as an API client sees them: chatbot, msg, last (State stays here)
        ev_send = send.click(bind(ctx, respond), inputs, outputs, api_name="conversar", concurrency_limit=None)
        ev_enter = msg.submit(bind(ctx, respond), inputs, outputs, api_name=False, concurrency_limit=None)
        ev_regen = regen.click(bind(ctx, regenerate), [chatbot, contestant, preset, system, *adv], outputs,
                               api_name="regenerar", concurrency_limit=None)
        for trigger in (send.click, msg.submit, regen.click):  # a new answer: the note was about the previous one
            trigger(lambda: "", None, thumbs_note, api_name=False, queue=False)
        stop.click(bind(ctx, stop_conversar), None, None, cancels=[ev_send, ev_enter, ev_regen], api_name="detener",
                   queue=False)
        clear.click(lambda: ([], "", {}, None, ""), None, [chatbot, msg, last, answered, thumbs_note], api_name="borrar",
                    queue=False)
        # One at a time (a short write): two quick clicks on one answer update its row, never add a second.
        thumbs_up.click(bind(ctx, rate_up), answered, [answered, thumbs_note], api_name="pulgar_arriba",
                        concurrency_id="pulgar", concurrency_limit=1)
        thumbs_down.click(bind(ctx, rate_down), answered, [answered, thumbs_note], api_name="pulgar_abajo",
                          concurrency_id="pulgar", concurrency_limit=1)
        contestant.change(bind(ctx, describe), contestant, [info, preset, card, plot, card_md, *adv[:7]],
                          api_name="describir")
        preset.change(bind(ctx, contestant_values), [contestant, preset], adv[:7], api_name=False)
        refresh.click(bind(ctx, refresh_adapters), contestant, [contestant, status], api_name="actualizar_adaptadores")

    return bind(ctx, load_conversar), [contestant, info, preset, status]
