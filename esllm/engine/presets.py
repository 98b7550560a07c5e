"""Generation presets and the validated generation parameters sent to the engine.

A preset is data: a name and the keyword arguments of a decoding strategy. The
user may override some values in "Parámetros avanzados"; `GenParams.build` merges preset and
overrides, checks every value and applies the server-side caps, so whatever a client sends over
HTTP, the engine only ever sees valid, capped numbers. Each answer is stored with `as_dict()`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional

from esllm import EsllmError

# name -> (Spanish label, decoding kwargs)
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "greedy": ("Voraz (greedy)", {"strategy": "greedy"}),
    "beam": ("Búsqueda en haz (beam search)", {"strategy": "beam", "num_beams": 4}),
    "top-k": ("Muestreo top-k", {"strategy": "sample", "top_k": 40, "top_p": 1.0, "temperature": 1.0}),
    "top-p": ("Muestreo de núcleo (top-p)", {"strategy": "sample", "top_k": 0, "top_p": 0.9, "temperature": 1.0}),
    "temperature": ("Temperatura", {"strategy": "sample", "top_k": 0, "top_p": 1.0, "temperature": 0.7}),
    # The study found contrastive search best for legal questions; transformers 5 dropped it
    # from generate(), so the engine implements it (esllm/engine/decoding.py on transformers,
    # esllm/engine/llamacpp_search.py on llama.cpp).
    "contrastive": ("Búsqueda contrastiva", {"strategy": "contrastive", "penalty_alpha": 0.6, "top_k": 4}),
}

_OVERRIDABLE = {"max_new_tokens", "temperature", "top_k", "top_p", "num_beams", "penalty_alpha",
                "repetition_penalty", "seed"}


@dataclass(frozen=True)
class GenParams:
    preset: str
    strategy: str
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    num_beams: int = 1
    penalty_alpha: float = 0.0
    repetition_penalty: float = 1.0
    seed: Optional[int] = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def build(cls, preset: str, overrides: Optional[Mapping[str, Any]] = None, *, max_new_tokens_cap: int) -> "GenParams":
        if preset not in PRESETS:
            raise EsllmError(f"Preset desconocido {preset!r}; use uno de {sorted(PRESETS)}")
        values: dict[str, Any] = dict(PRESETS[preset][1])
        for key, value in (overrides or {}).items():
            if value is None or value == "":
                continue
            if key not in _OVERRIDABLE:
                raise EsllmError(f"Parámetro desconocido {key!r}; permitidos: {sorted(_OVERRIDABLE)}")
            values[key] = value
        values.setdefault("max_new_tokens", min(256, max_new_tokens_cap))
        p = cls(preset=preset, **_checked(values, max_new_tokens_cap))
        return p


def _num(name: str, value: Any, kind: type, lo: float, hi: float) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EsllmError(f"{name} debe ser un número (recibido {value!r})")
    if kind is int:
        if float(value) != int(value):
            raise EsllmError(f"{name} debe ser un entero (recibido {value!r})")
        value = int(value)
    else:
        value = float(value)
    if value != value or not lo <= value <= hi:  # NaN check first
        raise EsllmError(f"{name} debe estar entre {lo} y {hi} (recibido {value!r})")
    return value


def _checked(v: dict[str, Any], cap: int) -> dict[str, Any]:
    out: dict[str, Any] = {"strategy": v["strategy"]}
    mnt = _num("max_new_tokens", v["max_new_tokens"], int, 1, 10**9)
    # Caps are applied, not refused: the answer records the value really used.
    out["max_new_tokens"] = min(mnt, cap)
    out["temperature"] = _num("temperature", v.get("temperature", 1.0), float, 0.01, 5.0)
    out["top_k"] = _num("top_k", v.get("top_k", 0), int, 0, 1000)
    out["top_p"] = _num("top_p", v.get("top_p", 1.0), float, 0.01, 1.0)
    out["num_beams"] = _num("num_beams", v.get("num_beams", 1), int, 1, 8)
    out["penalty_alpha"] = _num("penalty_alpha", v.get("penalty_alpha", 0.0), float, 0.0, 1.0)
    out["repetition_penalty"] = _num("repetition_penalty", v.get("repetition_penalty", 1.0), float, 1.0, 2.0)
    seed = v.get("seed")
    out["seed"] = None if seed is None else _num("seed", seed, int, 0, 2**31 - 1)
    if out["strategy"] == "contrastive" and (out["top_k"] < 2 or out["penalty_alpha"] <= 0):
        raise EsllmError("La búsqueda contrastiva necesita top_k ≥ 2 y penalty_alpha > 0")
    if out["strategy"] == "beam" and out["num_beams"] < 2:
        raise EsllmError("La búsqueda en haz necesita num_beams ≥ 2")
    return out


def is_deterministic(params: GenParams) -> bool:
    """Whether two runs with other seeds give the same answer (greedy, beam and contrastive search do)."""
    return params.strategy != "sample"


def check_settings(preset: str, params: Optional[Mapping[str, Any]] = None) -> GenParams:
    """A preset and its overrides checked as `build` checks them (no server cap): for config files, which say
    where an error is; EsllmError names the bad value."""
    return GenParams.build(preset, params, max_new_tokens_cap=10**9)


def preset_choices() -> list[tuple[str, str]]:
    """(label, name) pairs for a dropdown."""
    return [(label, name) for name, (label, _) in PRESETS.items()]
