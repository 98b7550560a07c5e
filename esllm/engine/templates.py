"""Chat templates: turn a list of messages into the exact prompt string a model family expects.

Built-in Jinja templates for Llama-2 (`[INST]`), Mistral, Falcon (`User:/Falcon:`), Gemma and a
Spanish Alpaca-style format (`### Instrucción / ### Respuesta`) for base models and adapters
trained on it. An adapter may carry its own `chat_template.jinja`; it is rendered in Jinja's
sandbox because it comes from a folder, not from our code.

The rendered string already contains the BOS token where the family uses one, so the engine
tokenizes it with `add_special_tokens=False`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Sequence

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from esllm import EsllmError

ALPACA_ES_SYSTEM = (
    "A continuación hay una instrucción que describe una tarea. "
    "Escribe una respuesta en español que complete adecuadamente lo que se pide."
)

_LLAMA2 = (
    "{% set ns = namespace(system=system_message) %}"
    "{% for m in messages %}"
    "{% if m.role == 'user' %}"
    "{{ bos_token }}[INST] "
    "{% if ns.system %}<<SYS>>\n{{ ns.system }}\n<</SYS>>\n\n{% set ns.system = '' %}{% endif %}"
    "{{ m.content | trim }} [/INST]"
    "{% elif m.role == 'assistant' %}"
    " {{ m.content | trim }} {{ eos_token }}"
    "{% endif %}"
    "{% endfor %}"
)

_MISTRAL = (
    "{{ bos_token }}"
    "{% set ns = namespace(system=system_message) %}"
    "{% for m in messages %}"
    "{% if m.role == 'user' %}"
    "[INST] {% if ns.system %}{{ ns.system }}\n\n{% set ns.system = '' %}{% endif %}{{ m.content | trim }} [/INST]"
    "{% elif m.role == 'assistant' %}"
    "{{ m.content | trim }}{{ eos_token }}"
    "{% endif %}"
    "{% endfor %}"
)

_FALCON = (
    "{% if system_message %}{{ system_message }}\n{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'user' %}"
    "User: {{ m.content | trim }}\n"
    "{% elif m.role == 'assistant' %}"
    "Falcon: {{ m.content | trim }}\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Falcon:{% endif %}"
)

_GEMMA = (
    "{{ bos_token }}"
    "{% set ns = namespace(system=system_message) %}"
    "{% for m in messages %}"
    "{% if m.role == 'user' %}"
    "<start_of_turn>user\n{% if ns.system %}{{ ns.system }}\n\n{% set ns.system = '' %}{% endif %}"
    "{{ m.content | trim }}<end_of_turn>\n"
    "{% elif m.role == 'assistant' %}"
    "<start_of_turn>model\n{{ m.content | trim }}<end_of_turn>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

_ALPACA_ES = (
    "{{ bos_token }}{{ system_message or default_system }}\n\n"
    "{% for m in messages %}"
    "{% if m.role == 'user' %}"
    "### Instrucción:\n{{ m.content | trim }}\n\n"
    "{% elif m.role == 'assistant' %}"
    "### Respuesta:\n{{ m.content | trim }}{{ eos_token }}\n\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Respuesta:\n{% endif %}"
)


@dataclass(frozen=True)
class ChatTemplate:
    """A named Jinja chat template plus what ends an answer besides EOS."""

    name: str
    source: str
    # Text that, once generated, ends the answer (it is cut off and not shown).
    stop_strings: tuple[str, ...] = ()
    # Special tokens (besides the tokenizer's EOS) that end a turn, e.g. Gemma's <end_of_turn>.
    end_tokens: tuple[str, ...] = ()
    default_system: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def sha256(self) -> str:
        """sha256 of what shapes a prompt and ends an answer: the Jinja source, stop strings, end tokens and
        default system prompt (a result traces the exact template it ran with, not only its name)."""
        definition = [self.source, list(self.stop_strings), list(self.end_tokens), self.default_system]
        return hashlib.sha256(json.dumps(definition, ensure_ascii=False).encode("utf-8")).hexdigest()

    def render(
        self,
        messages: Sequence[dict],
        *,
        bos_token: str = "",
        eos_token: str = "",
        add_generation_prompt: bool = True,
    ) -> str:
        system = ""
        turns = []
        for m in messages:
            role = m.get("role")
            if role == "system":
                system = (system + "\n" + str(m["content"])).strip()
            elif role in ("user", "assistant"):
                turns.append({"role": role, "content": str(m["content"])})
            else:
                raise EsllmError(f"Rol de mensaje desconocido: {role!r} (use system, user o assistant)")
        if not turns or turns[-1]["role"] != "user":
            if add_generation_prompt:
                raise EsllmError("La conversación debe terminar con un mensaje del usuario.")
        try:
            tpl = _ENV.from_string(self.source)
            return tpl.render(
                messages=turns,
                system_message=system,
                default_system=self.default_system,
                bos_token=bos_token or "",
                eos_token=eos_token or "",
                add_generation_prompt=add_generation_prompt,
            )
        except TemplateError as e:
            raise EsllmError(f"La plantilla {self.name!r} no se pudo aplicar: {e}") from None


_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)

TEMPLATES: dict[str, ChatTemplate] = {
    t.name: t
    for t in (
        ChatTemplate("llama-2", _LLAMA2, stop_strings=("[INST]",)),
        ChatTemplate("mistral", _MISTRAL, stop_strings=("[INST]",)),
        ChatTemplate("falcon", _FALCON, stop_strings=("\nUser:",)),
        ChatTemplate("gemma", _GEMMA, stop_strings=("<start_of_turn>",), end_tokens=("<end_of_turn>",)),
        ChatTemplate(
            "alpaca-es",
            _ALPACA_ES,
            stop_strings=("### Instrucción:", "### Respuesta:"),
            default_system=ALPACA_ES_SYSTEM,
        ),
    )
}


def template_from_jinja(name: str, source: str, stop_strings: Sequence[str] = (), end_tokens: Sequence[str] = ()) -> ChatTemplate:
    """A template read from an adapter folder; checked to compile now, so a bad file is reported early."""
    try:
        _ENV.from_string(source)
    except TemplateError as e:
        raise EsllmError(f"chat_template.jinja no es una plantilla Jinja válida: {e}") from None
    return ChatTemplate(name, source, tuple(stop_strings), tuple(end_tokens))


def get_template(name: str) -> ChatTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise EsllmError(f"Plantilla desconocida {name!r}; use una de {sorted(TEMPLATES)}") from None
