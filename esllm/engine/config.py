"""Contestant configuration: the YAML file that lists base models, contestants and limits.

A *contestant* is a name + base model + optional LoRA adapter + chat template + generation
preset. `load_config(path)` parses and validates the YAML and raises
`ConfigError` with one line per problem, each saying where it is and what to fix.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from esllm import EsllmError
from esllm.engine.presets import PRESETS, check_settings
from esllm.engine.templates import TEMPLATES
from esllm.paths import DEFAULT_CONFIG

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+\- ]{0,63}")  # fullmatch: a trailing newline is refused too


class ConfigError(EsllmError):
    """The configuration file is invalid; the message lists every problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def known_template(v: Optional[str]) -> Optional[str]:
    """Validator shared by every schema that names a chat template."""
    if v is not None and v not in TEMPLATES:
        raise ValueError(f"unknown template {v!r}; choose one of {sorted(TEMPLATES)}")
    return v


class ModelSpec(_Strict):
    """One base model, loaded once per process and shared by its contestants."""

    source: str = Field(description="bundled:gemma-3-270m, a hub id (org/name) or a local folder")
    quantization: Literal["nf4", "int8", "none"] = "nf4"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Weights and activations on transformers (with nf4/int8: the unquantised layers and the 4-bit compute dtype).
    # auto = float32 on CPU for quantization: none (CPUs without AVX512-BF16 emulate bf16 matmuls, slower, and bf16
    # rounding moves Belebele's log-likelihoods by ~0.04 and makes ties), bfloat16 otherwise (the study's GPU path).
    # llama.cpp ignores it: the GGUF file's own types are used.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # Who runs it: auto = llama.cpp for a GGUF source on the CPU (the shipped file as it is, no conversion),
    # transformers + peft otherwise (the study's NF4 path on a GPU). `quantization` applies to transformers only:
    # llama.cpp uses the GGUF file's own quantisation.
    # openai: a server (vLLM, llama-server, a hosted API) at `source: openai:<base_url>` (auto picks it).
    backend: Literal["auto", "llama.cpp", "transformers", "openai"] = "auto"
    template: str = "alpaca-es"
    # Other names an adapter's adapter_config.json may use for this base (base_model_name_or_path).
    aliases: list[str] = []
    # --- OpenAI-compatible servers only (source: openai:<base_url>)
    # The *name* of the environment variable that holds the API key (never the key itself).
    api_key_env: Optional[str] = None
    # chat: /chat/completions, the server applies its own chat template; completions: /completions with the
    # prompt rendered by esllm's `template` (the format the adapters were trained on) and its stop strings.
    api: Literal["chat", "completions"] = "chat"
    concurrency: int = Field(8, ge=1, le=256)  # requests a batch job keeps in flight at once
    timeout_s: float = Field(120.0, gt=0, le=3600)  # longest wait for the server's next bytes
    retries: int = Field(3, ge=0, le=10)  # batch jobs only: attempts again after a 429, 5xx or network error
    # Send top_k, min_p and repetition_penalty (vLLM, llama.cpp read them); false for APIs that refuse them.
    sampling_extras: bool = True

    _template = field_validator("template")(known_template)

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", v):
            raise ValueError("api_key_env is the NAME of an environment variable (e.g. ESLLM_API_KEY), not the key")
        return v

    @model_validator(mode="after")
    def _remote(self) -> "ModelSpec":
        remote = self.source.strip().startswith("openai:")
        if remote and self.backend not in ("auto", "openai"):
            raise ValueError(f"source {self.source!r} is a server: use backend: openai (or auto)")
        if self.backend == "openai" and not remote:
            raise ValueError("backend: openai needs source: openai:http://host:port/v1")
        return self

    @property
    def remote(self) -> bool:
        return self.source.strip().startswith("openai:")


def _checked_settings(preset: str, params: dict[str, Any]) -> None:
    """ValueError (for pydantic's message) if the preset and its overrides are not valid generation settings."""
    try:
        check_settings(preset, params)
    except EsllmError as e:
        raise ValueError(f"params: {e}") from None


class AttemptSetting(_Strict):
    """How one of the attempts 2..N of a batch run is generated: a preset and its overrides."""

    preset: str
    params: dict[str, Any] = {}

    @model_validator(mode="after")
    def _valid(self) -> "AttemptSetting":
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        _checked_settings(self.preset, self.params)
        return self


class LoraRef(_Strict):
    """An adapter a llama-server loaded at start (`--lora FILE`), by its position, with its scale."""

    id: int = Field(ge=0)
    scale: float = Field(1.0, ge=0.0, le=4.0)


class ContestantSpec(_Strict):
    name: str
    model: str = Field(description="key of an entry under `models:`")
    adapter: Optional[str] = Field(None, description="folder name under adapters_dir")
    template: Optional[str] = Field(None, description="default: the adapter's own, else the model's")
    preset: str = "greedy"
    # This contestant's own values over its preset's (temperature, top_k, top_p, num_beams, penalty_alpha,
    # max_new_tokens, repetition_penalty): the study tuned each model's settings. Stored with every answer.
    params: dict[str, Any] = {}
    # Attempts 2..N of a batch run use these settings in turn, with seed = the attempt number (attempt 1 uses
    # preset + params). A deterministic preset gives N identical attempts without them, and is refused.
    vary_attempts: list[AttemptSetting] = []
    # Base on an OpenAI-compatible server: the model name sent (vLLM: the LoRA module name of --lora-modules,
    # or the base's name) and, for llama-server, the adapters to apply to this request.
    served_model: Optional[str] = None
    lora: list[LoraRef] = []

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not NAME_RE.fullmatch(v):
            raise ValueError("name must be 1-64 letters, digits, spaces or . _ + - and start with a letter or digit")
        return v

    @field_validator("adapter")
    @classmethod
    def _adapter_in_folder(cls, v: Optional[str]) -> Optional[str]:
        """Only a folder *name*: the adapter is always `adapters_dir/NAME`, never a path that could leave the
        adapters folder (`../../etc`, `/etc`): everything loaded comes from the one folder the admin manages."""
        if v is None:
            return v
        if not v.strip() or v.strip() in (".", "..") or any(c in v for c in "/\\\0") or Path(v).is_absolute():
            raise ValueError(f"el adaptador {v!r} debe ser el nombre de una carpeta dentro de adapters_dir, sin rutas "
                             "(ni '/', ni '..'): copie allí la carpeta del adaptador y escriba solo su nombre")
        return v

    _template = field_validator("template")(known_template)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        if v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}; choose one of {sorted(PRESETS)}")
        return v

    @model_validator(mode="after")
    def _valid_params(self) -> "ContestantSpec":
        _checked_settings(self.preset, self.params)
        return self


class Limits(_Strict):
    """Server-side caps, applied whatever a client sends."""

    max_prompt_chars: int = Field(4000, ge=1)
    max_prompt_tokens: int = Field(2048, ge=8)
    max_new_tokens: int = Field(512, ge=1)
    # A whole conversation (history + system prompt) is capped too, so a client cannot send a novel.
    max_conversation_chars: int = Field(32000, ge=1)
    # Messages in one request: a long chat is trimmed by tokens, but thousands of empty turns would cost seconds of
    # server CPU to render before the first token (1,000 took 17 s); 400 is ~200 exchanges.
    max_turns: int = Field(400, ge=2)


class AppConfig(_Strict):
    models: dict[str, ModelSpec]
    contestants: list[ContestantSpec]
    limits: Limits = Limits()
    adapters_dir: str = "adapters"
    # Show every adapter folder found under adapters_dir as a contestant of its base, not only those listed.
    auto_contestants: bool = True
    # The contestant «Conversar» starts with (one listed under contestants:); none: the first available.
    chat_default: Optional[str] = None

    @model_validator(mode="after")
    def _cross_checks(self) -> "AppConfig":
        if not self.models:
            raise ValueError("models: list at least one base model")
        if not self.contestants:
            raise ValueError("contestants: list at least one contestant")
        seen: set[str] = set()
        for i, c in enumerate(self.contestants):
            if c.model not in self.models:
                raise ValueError(
                    f"contestants[{i}] ({c.name}): model {c.model!r} is not defined under models: "
                    f"(defined: {sorted(self.models)})"
                )
            spec = self.models[c.model]
            if spec.remote:
                where = f"contestants[{i}] ({c.name})"
                if c.adapter:
                    raise ValueError(f"{where}: model {c.model!r} is a server; its adapters are served there: "
                                     "name the served model with served_model: (and lora: for llama-server), not adapter:")
                if not c.served_model:
                    raise ValueError(f"{where}: model {c.model!r} is a server: served_model: is required (the model "
                                     "name the server lists in GET /v1/models)")
                for p in [c.preset, *(v.preset for v in c.vary_attempts)]:
                    if PRESETS[p][1]["strategy"] in ("contrastive", "beam"):
                        raise ValueError(f"{where}: preset {p!r} cannot run on an OpenAI-compatible server (it needs "
                                         "the model's hidden states); use greedy, top-k, top-p or temperature")
            elif c.served_model or c.lora:
                raise ValueError(f"contestants[{i}] ({c.name}): served_model/lora are for models with "
                                 "source: openai:<url>")
            if c.name in seen:
                raise ValueError(f"contestants[{i}]: the name {c.name!r} is used twice; names must be unique")
            seen.add(c.name)
        if self.chat_default is not None and self.chat_default not in seen:
            raise ValueError(f"chat_default: {self.chat_default!r} is not a contestant; use one of {sorted(seen)}")
        return self

    def resolve_adapters_dir(self, base: Path) -> Path:
        p = Path(os.environ.get("ESLLM_ADAPTERS_DIR", self.adapters_dir))
        return p if p.is_absolute() else (base / p)


def format_errors(title: str, err: ValidationError) -> str:
    """One line per pydantic error: where it is and what to fix."""
    lines = [title]
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(raíz)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling"
        elif e["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


def parse_config(data: object, path: Path = Path("<config>")) -> AppConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"Configuración inválida en {path}: the file must be a YAML mapping with models: and contestants:")
    try:
        return AppConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_errors(f"Configuración inválida en {path}:", e)) from None


def load_config(path: str | Path | None = None) -> AppConfig:
    """Read and validate a contestants YAML file (default: configs/default.yaml)."""
    path = Path(path or os.environ.get("ESLLM_CONFIG") or DEFAULT_CONFIG)
    if not path.is_file():
        raise ConfigError(f"No existe el archivo de configuración {path}. Use --config con una ruta válida.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"Configuración inválida en {path}: YAML syntax error: {e}") from None
    return parse_config(data, path)
