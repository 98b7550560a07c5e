"""From chat messages to prompt tokens and back to visible text: the server-side checks of what a client
sends (roles, empty or oversized message, conversation size), the chat template rendered and tokenized with
the oldest turns dropped while over the token cap, the ids that end an answer, and the text shown so far
(stop strings cut, EOS removed). Spanish messages: they reach the user as they are."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from esllm import EsllmError
from esllm.engine.config import Limits
from esllm.engine.templates import ChatTemplate


def check_messages(messages: Sequence[Mapping[str, Any]], lim: Limits) -> list[dict[str, str]]:
    """The messages as plain dicts, or EsllmError saying what is wrong with them."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise EsllmError("No hay mensaje que responder.")
    clean = []
    for m in messages:
        if not isinstance(m, Mapping) or m.get("role") not in ("system", "user", "assistant") \
                or not isinstance(m.get("content"), str):
            raise EsllmError("Formato de mensaje inválido: cada mensaje necesita role (system/user/assistant) y content (texto).")
        clean.append({"role": m["role"], "content": m["content"]})
    last = clean[-1]
    if last["role"] != "user" or not last["content"].strip():
        raise EsllmError("Escriba un mensaje antes de enviar: el mensaje está vacío.")
    if len(last["content"]) > lim.max_prompt_chars:
        raise EsllmError(f"El mensaje es demasiado largo: {len(last['content'])} caracteres (máximo {lim.max_prompt_chars}). Acórtelo.")
    total = sum(len(m["content"]) for m in clean)
    if total > lim.max_conversation_chars:
        raise EsllmError(f"La conversación es demasiado larga ({total} caracteres, máximo {lim.max_conversation_chars}). Bórrela y empiece otra.")
    return clean


def prompt_ids(tok, template: ChatTemplate, messages: list[dict[str, str]], cap: int) -> tuple[list[int], int]:
    """Render and tokenize (a backend.Tok); drop the oldest turns while over `cap` tokens.

    Returns (token ids, turns dropped)."""
    system = [m for m in messages if m["role"] == "system"]
    turns = [m for m in messages if m["role"] != "system"]
    dropped = 0
    while True:
        ids = tok.encode(template.render(system + turns, bos_token=tok.bos_token, eos_token=tok.eos_token))
        if len(ids) <= cap:
            return ids, dropped
        if len(turns) <= 1:
            raise EsllmError(f"El mensaje es demasiado largo: {len(ids)} tokens (máximo {cap}). Acórtelo.")
        turns = turns[2:] if len(turns) > 2 else turns[-1:]
        dropped += 1


def eos_token_ids(tok, template: ChatTemplate) -> list[int]:
    """The tokenizer's EOS plus the template's end-of-turn tokens that the vocabulary has."""
    ids = [tok.eos_token_id] if tok.eos_token_id is not None else []
    for t in template.end_tokens:
        tid = tok.token_id(t)
        if tid is not None and tid not in ids:
            ids.append(tid)
    return ids


def visible(tok, ids: list[int], eos_ids: Sequence[int], template: ChatTemplate, final: bool) -> tuple[str, bool]:
    """The text of `ids` as the user sees it (see visible_text)."""
    ids = [t for t in ids if t not in eos_ids]
    return visible_text(tok.decode(ids, skip_special=True), template.stop_strings, final)


def visible_text(text: str, stop_strings: Sequence[str], final: bool) -> tuple[str, bool]:
    """Cut `text` at the first stop string; while streaming, hold back a tail that may become one.

    Returns (text to show, whether a stop string was found).
    """
    cut = min((i for s in stop_strings if (i := text.find(s)) >= 0), default=-1)
    if cut >= 0:
        return text[:cut].rstrip(), True
    if not final:
        hold = 0
        for s in stop_strings:
            for n in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:n]):
                    hold = max(hold, n)
                    break
        text = text[: len(text) - hold] if hold else text
        text = text.rstrip("\ufffd")  # half of a multi-byte character
    return text, False
