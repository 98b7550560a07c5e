"""Training recipes: the YAML file that says what to train, on what, and how.

Sections (each commented in the shipped recipes under configs/recipes/): `method` (sft, dpo or kto),
`model` (the base, as in a contestants file), `data` (dataset file and format, held-out share, max length;
for dpo/kto also a rating session or the chat thumbs in the store), `lora`, `preference` (dpo/kto: beta,
the adapter to start from), `training` (optimiser, schedule, epochs, batch, seed, logging, early
stopping), `output` (adapter folder, template).
Unknown keys are refused and every error names the key and what to fix. Overrides from the command
line use dotted keys: `training.epochs=1 lora.r=8`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from esllm import EsllmError
from esllm.engine.config import ModelSpec, format_errors, known_template


class RecipeError(EsllmError):
    """The recipe is invalid; the message lists every problem."""


class _S(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(_S):
    # sft: Alpaca JSON (instruction/input/output) or chat messages JSONL. dpo: JSONL of prompt/chosen/rejected
    # (dpo.jsonl as «Resultados» exports it); kto: JSONL of prompt/completion/label (kto.jsonl).
    path: Optional[str] = None
    session: Optional[str] = Field(None, description="dpo: pairs from this rating session's scores (name or id)")
    feedback: bool = Field(False, description="kto: the chat 👍/👎 stored by «Conversar»")
    min_gap: float = Field(1.0, gt=0, description="dpo from a session: least difference of mean scores for a pair")
    format: Literal["auto", "alpaca", "messages"] = "auto"
    eval_path: Optional[str] = None  # a fixed held-out file; else `eval_fraction` of `path` is held out
    eval_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    max_seq_len: int = Field(384, ge=16)
    system_prompt: str = ""


class LoraSpec(_S):
    r: int = Field(16, ge=1)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]


class PreferenceSpec(_S):
    beta: float = Field(0.1, gt=0, description="strength of the pull towards the reference model (TRL's beta)")
    loss_type: str = Field("", description="TRL loss_type ('' = TRL's default: sigmoid for dpo, kto for kto)")
    start_from: str = Field("", description="adapter folder to continue (its copy is the reference); '' = a new LoRA on the base")
    desirable_weight: float = Field(1.0, gt=0, description="kto: weight of 👍 examples")
    undesirable_weight: float = Field(1.0, gt=0, description="kto: weight of 👎 examples")


class TrainingSpec(_S):
    epochs: float = Field(3, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    optimizer: Literal["paged_adamw_8bit", "adamw"] = "adamw"
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_grad_norm: float = Field(1.0, gt=0)
    gradient_checkpointing: bool = False
    seed: int = 42
    eval_every: int = Field(50, ge=1, description="optimizer steps between held-out evaluations")
    save_every: int = Field(50, ge=1, description="optimizer steps between checkpoints")
    max_steps: Optional[int] = Field(None, ge=1, description="stop early (smoke tests)")
    # Early stopping and the exported weights: every `eval_every` steps the held-out loss is measured;
    # the best weights so far are kept; `patience` evaluations without an improvement larger than
    # `min_delta` end the run; `export: best` writes the best weights, `last` the last step's.
    patience: Optional[int] = Field(None, ge=1, description="evaluations without improvement before stopping (none: never stop early)")
    min_delta: float = Field(0.0, ge=0.0, description="an eval loss must fall by more than this to count as better")
    export: Literal["best", "last"] = Field("best", description="write the weights with the best eval loss, or the last step's")
    # sft: the answer-ending EOS counts this many times in the training loss (the held-out loss stays unweighted).
    eos_weight: float = Field(1.0, ge=1.0, description="weight of the EOS token in the sft training loss")
    threads: Optional[int] = Field(None, ge=1, description="torch CPU threads")
    # Weights of an unquantized base while training: auto = float32 on CPU (bf16 matmuls are emulated, and
    # tens of times slower, on CPUs without AVX512-BF16/AMX), bf16 on CUDA.
    dtype: Literal["auto", "bf16", "fp32"] = "auto"


class OutputSpec(_S):
    dir: str = Field(description="adapter folder to write, e.g. adapters/instrucciones-es")
    template: str = "alpaca-es"
    description: str = ""
    limits: str = ""
    # The base's public name written as base_model_name_or_path (default: the bundled model's Hub id,
    # a hub source as given, or a local folder's config/_name_or_path or folder name; never a path).
    base_model_name: str = ""

    _template = field_validator("template")(known_template)


class Recipe(_S):
    method: Literal["sft", "dpo", "kto"] = "sft"
    model: ModelSpec
    data: DataSpec
    lora: LoraSpec = LoraSpec()
    preference: PreferenceSpec = PreferenceSpec()
    training: TrainingSpec = TrainingSpec()
    output: OutputSpec

    @model_validator(mode="after")
    def _data_source(self):
        d = self.data
        if self.method == "sft" and not d.path:
            raise ValueError("data.path: required for method sft (an Alpaca JSON or messages JSONL file)")
        if self.method == "dpo" and bool(d.path) == bool(d.session):
            raise ValueError("data: method dpo needs exactly one of data.path (dpo.jsonl) or data.session (a rating session)")
        if self.method == "kto" and bool(d.path) == d.feedback:
            raise ValueError("data: method kto needs exactly one of data.path (kto.jsonl) or data.feedback: true (chat 👍/👎)")
        if self.method == "sft" and (d.session or d.feedback):
            raise ValueError("data.session / data.feedback: only for method dpo / kto")
        return self


def _set_dotted(data: dict, key: str, raw: str) -> None:
    parts = key.split(".")
    cur = data
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
        if not isinstance(cur, dict):
            raise RecipeError(f"override {key}: {p} is not a section")
    cur[parts[-1]] = yaml.safe_load(raw)


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"No existe la receta {path}.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"Receta inválida {path}: YAML syntax error: {e}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"Receta inválida {path}: must be a mapping with model, data, lora, training, output")
    for ov in overrides:
        if "=" not in ov:
            raise RecipeError(f"override {ov!r}: use key=value, e.g. training.epochs=1")
        k, v = ov.split("=", 1)
        _set_dotted(data, k.strip(), v)
    return parse_recipe(data, path)


def parse_recipe(data: dict[str, Any], path: Path = Path("<recipe>")) -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(format_errors(f"Receta inválida {path}:", e)) from None
