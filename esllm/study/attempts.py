"""How the N attempts of a batch run differ, and which stored attempts are the same: plain functions.

Attempt 1 of a contestant uses its own settings (preset + the config's `params`). Attempts 2..N use the
variation: the batch run's (`--vary`, «Variar intentos») if given, else the contestant's `vary_attempts`
from the config; each is a (preset, params) taken in turn, with seed = the attempt number. A sampling
preset with per-attempt seeds gives different answers; a deterministic one (greedy, beam, contrastive) run
twice with the same values gives the same answer twice, so a plan in which two attempts would be identical
is refused (`plan_attempts` raises EsllmError), instead of silently storing N copies.

    plan = plan_attempts("contrastive", {"top_k": 4}, [("top-p", {})], 3, cap=512)
    plan[1].preset, plan[1].overrides           # "top-p", every value of top-p written out, seed 2

Every override is written out in full for a varied attempt, so nothing of the contestant's own `params`
(a contrastive `top_k`, say) leaks into another preset; only `max_new_tokens` and `repetition_penalty`
carry over unless the variation sets them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from esllm import EsllmError
from esllm.engine.presets import PRESETS, GenParams

Setting = tuple[str, Mapping[str, Any]]  # (preset, params)
CARRIED = ("max_new_tokens", "repetition_penalty")  # the contestant's values that every attempt keeps
MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class PlannedAttempt:
    """What the engine is asked for one attempt: `preset` None = the contestant's own (merged by the engine
    with its config params); `params` = the values that will be used (for messages and identity)."""

    attempt: int
    preset: Optional[str]
    overrides: dict[str, Any]
    params: GenParams


def parse_vary(text: str) -> list[Setting]:
    """A batch run's variation from text: settings separated by spaces or ';', each a preset name optionally
    followed by ':key=value,key=value' — "top-p", "top-p; top-k:temperature=0.8,top_k=20".
    EsllmError (Spanish) if malformed; the values themselves are checked by `plan_attempts`."""
    out: list[Setting] = []
    for part in (text or "").replace(";", " ").split():
        name, _, rest = part.partition(":")
        if name not in PRESETS:
            raise EsllmError(f"Preset desconocido {name!r} en la variación de intentos; use uno de {sorted(PRESETS)}.")
        params: dict[str, Any] = {}
        for kv in (x.strip() for x in rest.split(",") if x.strip()):
            key, eq, value = kv.partition("=")
            if not eq:
                raise EsllmError(f"Variación de intentos: {kv!r} debe ser clave=valor (p. ej. temperature=0.8).")
            try:
                params[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else float(value)
            except ValueError:
                raise EsllmError(f"Variación de intentos: {key.strip()} debe ser un número (recibido {value!r}).") from None
        out.append((name, params))
    return out


def plan_attempts(preset: str, params: Mapping[str, Any], vary: Sequence[Setting], n: int, *, cap: int,
                  max_new_tokens: Optional[int] = None) -> list[PlannedAttempt]:
    """The N attempts of one contestant; EsllmError if N is out of range, a setting is invalid, or two
    attempts would give the same answer (see the module docstring)."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_ATTEMPTS:
        raise EsllmError(f"El número de intentos debe estar entre 1 y {MAX_ATTEMPTS}.")
    own = dict(params)
    extra = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
    out = [PlannedAttempt(1, None, {"seed": 1, **extra},
                          GenParams.build(preset, {**own, "seed": 1, **extra}, max_new_tokens_cap=cap))]
    for k in range(2, n + 1):
        if not vary:
            out.append(PlannedAttempt(k, None, {"seed": k, **extra},
                                      GenParams.build(preset, {**own, "seed": k, **extra}, max_new_tokens_cap=cap)))
            continue
        v_preset, v_params = vary[(k - 2) % len(vary)]
        carried = {key: own[key] for key in CARRIED if key in own}
        p = GenParams.build(v_preset, {**carried, **dict(v_params), "seed": k, **extra}, max_new_tokens_cap=cap)
        full = {key: value for key, value in p.as_dict().items() if key not in ("preset", "strategy")}
        out.append(PlannedAttempt(k, v_preset, full, p))
    clashes = identical_groups({a.attempt: a.params.as_dict() for a in out})
    if clashes:
        groups = "; ".join(" = ".join(str(k) for k in g) for g in clashes)
        raise EsllmError(
            f"Los intentos {groups} darían la misma respuesta: el preset «{out[clashes[0][1] - 1].params.preset}» "
            "es determinista y cambiar la semilla no cambia nada. Declare cómo varían los intentos 2..N: un preset "
            "de muestreo (p. ej. --vary top-p en la línea de órdenes, «Variar intentos» en «Administrar», o "
            "vary_attempts en la configuración del concursante), o genere 1 intento.")
    return out


def identity_key(params: Mapping[str, Any]) -> tuple:
    """Two attempts with the same key give the same answer: the seed only matters when sampling."""
    d = {k: v for k, v in params.items() if k != "preset"}
    if d.get("strategy", "sample") != "sample":  # unknown: assume the seed matters
        d.pop("seed", None)
    return tuple(sorted((k, repr(v)) for k, v in d.items()))


def identical_groups(params_by_attempt: Mapping[int, Mapping[str, Any]]) -> list[list[int]]:
    """Groups (sorted, ≥ 2 attempts each) of attempts whose settings give the same answer."""
    groups: dict[tuple, list[int]] = {}
    for attempt in sorted(params_by_attempt):
        groups.setdefault(identity_key(params_by_attempt[attempt]), []).append(attempt)
    return [g for g in groups.values() if len(g) > 1]


def same_text_groups(texts_by_attempt: Mapping[int, str]) -> list[list[int]]:
    """Groups (≥ 2) of stored attempts with exactly the same text."""
    groups: dict[str, list[int]] = {}
    for attempt in sorted(texts_by_attempt):
        groups.setdefault(texts_by_attempt[attempt], []).append(attempt)
    return [g for g in groups.values() if len(g) > 1]


__all__ = ["PlannedAttempt", "plan_attempts", "parse_vary", "identical_groups", "identity_key", "same_text_groups"]
