"""Chat templates render exactly the prompt each model family was trained on."""

from __future__ import annotations

import pytest

from esllm import EsllmError
from esllm.engine.templates import ALPACA_ES_SYSTEM, TEMPLATES, get_template, template_from_jinja

CHAT = [
    {"role": "system", "content": "Eres un asistente."},
    {"role": "user", "content": "Hola"},
    {"role": "assistant", "content": "¡Hola! ¿En qué te ayudo?"},
    {"role": "user", "content": "¿Qué es el IVA?"},
]

# Written by hand from each family's documented format, not produced by the code under test.
EXPECTED = {
    "llama-2": (
        "<s>[INST] <<SYS>>\nEres un asistente.\n<</SYS>>\n\nHola [/INST] ¡Hola! ¿En qué te ayudo? </s>"
        "<s>[INST] ¿Qué es el IVA? [/INST]"
    ),
    "mistral": "<s>[INST] Eres un asistente.\n\nHola [/INST]¡Hola! ¿En qué te ayudo?</s>[INST] ¿Qué es el IVA? [/INST]",
    "falcon": "Eres un asistente.\nUser: Hola\nFalcon: ¡Hola! ¿En qué te ayudo?\nUser: ¿Qué es el IVA?\nFalcon:",
    "gemma": (
        "<s><start_of_turn>user\nEres un asistente.\n\nHola<end_of_turn>\n"
        "<start_of_turn>model\n¡Hola! ¿En qué te ayudo?<end_of_turn>\n"
        "<start_of_turn>user\n¿Qué es el IVA?<end_of_turn>\n"
        "<start_of_turn>model\n"
    ),
    "alpaca-es": (
        "<s>Eres un asistente.\n\n"
        "### Instrucción:\nHola\n\n"
        "### Respuesta:\n¡Hola! ¿En qué te ayudo?</s>\n\n"
        "### Instrucción:\n¿Qué es el IVA?\n\n"
        "### Respuesta:\n"
    ),
}


def test_every_builtin_template_has_an_expected_rendering():
    assert set(EXPECTED) == set(TEMPLATES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_system_and_two_turns_render_exactly(name):
    assert get_template(name).render(CHAT, bos_token="<s>", eos_token="</s>") == EXPECTED[name]


@pytest.mark.parametrize("name, expected", [
    ("llama-2", "<s>[INST] Hola [/INST]"),
    ("mistral", "<s>[INST] Hola [/INST]"),
    ("falcon", "User: Hola\nFalcon:"),
    ("gemma", "<s><start_of_turn>user\nHola<end_of_turn>\n<start_of_turn>model\n"),
    ("alpaca-es", f"<s>{ALPACA_ES_SYSTEM}\n\n### Instrucción:\nHola\n\n### Respuesta:\n"),
])
def test_without_system_prompt(name, expected):
    assert get_template(name).render([{"role": "user", "content": "  Hola \n"}], bos_token="<s>", eos_token="</s>") == expected


def test_alpaca_default_system_is_spanish_and_a_given_one_replaces_it():
    assert ALPACA_ES_SYSTEM.startswith("A continuación hay una instrucción")
    out = get_template("alpaca-es").render(CHAT)
    assert ALPACA_ES_SYSTEM not in out and out.startswith("Eres un asistente.\n\n")


def test_several_system_messages_are_joined():
    msgs = [{"role": "system", "content": "Uno."}, {"role": "system", "content": "Dos."}, {"role": "user", "content": "Hola"}]
    assert get_template("falcon").render(msgs) == "Uno.\nDos.\nUser: Hola\nFalcon:"


def test_history_without_generation_prompt():
    msgs = CHAT[:3]
    assert get_template("falcon").render(msgs, add_generation_prompt=False) == \
        "Eres un asistente.\nUser: Hola\nFalcon: ¡Hola! ¿En qué te ayudo?\n"
    with pytest.raises(EsllmError, match="debe terminar con un mensaje del usuario"):
        get_template("falcon").render(msgs)


def test_unknown_role_and_template_are_refused():
    with pytest.raises(EsllmError, match="Rol de mensaje desconocido: 'tool'"):
        get_template("gemma").render([{"role": "tool", "content": "x"}])
    with pytest.raises(EsllmError, match="Plantilla desconocida 'chatml'"):
        get_template("chatml")


@pytest.mark.parametrize("name, stop, end", [
    ("llama-2", "[INST]", ()), ("mistral", "[INST]", ()), ("falcon", "\nUser:", ()),
    ("gemma", "<start_of_turn>", ("<end_of_turn>",)), ("alpaca-es", "### Instrucción:", ()),
])
def test_each_template_stops_where_the_next_turn_would_start(name, stop, end):
    t = get_template(name)
    assert stop in t.stop_strings and t.end_tokens == end
    # the stop string is what the template itself writes before the next user turn
    assert stop in t.render(CHAT, bos_token="<s>", eos_token="</s>").split("¡Hola! ¿En qué te ayudo?")[1]


def test_adapter_template_renders_like_a_builtin():
    t = template_from_jinja("mio (propia)", "{{ bos_token }}P: {{ messages[-1].content }}\nR:", stop_strings=["\nP:"])
    assert t.render(CHAT, bos_token="<s>") == "<s>P: ¿Qué es el IVA?\nR:"
    assert t.stop_strings == ("\nP:",)


def test_adapter_template_with_bad_syntax_is_reported():
    with pytest.raises(EsllmError, match="no es una plantilla Jinja válida"):
        template_from_jinja("roto", "{% if %}")


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",  # escape attempt: blocked by the sandbox
    "{{ messages.append(1) }}",  # the immutable sandbox refuses to change our data
    "{{ undefined_variable }}",  # StrictUndefined: a typo is an error, not an empty string
])
def test_adapter_template_runs_in_a_sandbox(source):
    t = template_from_jinja("malicioso", source)
    with pytest.raises(EsllmError, match="no se pudo aplicar"):
        t.render(CHAT)
