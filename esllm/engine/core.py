"""The engine: base models loaded once, LoRA adapters hot-swapped on them, contestants, streaming chat.

    engine = Engine(load_config("configs/default.yaml"), root=Path("."))
    engine.start()                      # load bases, discover adapters
    for ev in engine.stream("gemma-base", [{"role": "user", "content": "Hola"}]):
        print(ev.text)                  # the answer so far; the last event has ev.result

Each base is one backend (esllm/engine/backend.py): llama.cpp on a GGUF file on the CPU, transformers +
peft otherwise. Switching contestants never reloads a base: every adapter is loaded once and named in
each call. A backend holds one model's state, so each generation holds its base's lock from the first
to the last token: two users on two adapters of one base take turns and each always gets their own
adapter. Batch jobs hand a backend several prompts of one contestant at once (`generate_many`), which
llama.cpp decodes together.

This module holds the registry (loading bases, adapters and contestants; what each is) and which backend a base
gets (`backend_for`, `open_backend`). Generation (`stream`, `generate`, `generate_many`) is the `Generation`
mixin in esllm/engine/generation.py, scoring (`loglikelihood`, `next_token_logprobs`, `encode`) the `Scoring`
mixin in esllm/engine/scoring.py; `Engine` derives from both.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from esllm import EsllmError
from esllm.engine.adapters import AdapterInfo, scan_dir
from esllm.engine.backend import Backend
from esllm.engine.config import AppConfig, ContestantSpec, ModelSpec
from esllm.engine.generation import Generation
from esllm.engine.loader import load_base
from esllm.engine.openai_backend import OpenAIBackend
from esllm.engine.scoring import Scoring
from esllm.engine.templates import get_template
from esllm.engine.types import LoadedContestant, RefreshReport

log = logging.getLogger(__name__)


class Engine(Generation, Scoring):
    def __init__(self, config: AppConfig, root: Path, *, loader: Callable[..., Any] = load_base,
                 progress: Optional[Callable[[str], None]] = None):
        self.config, self.root, self._loader = config, Path(root), loader
        self.progress = progress or log.info
        self.adapters_dir = config.resolve_adapters_dir(self.root)
        self.bases: dict[str, Backend] = {}
        self.base_errors: dict[str, str] = {}
        self.adapters: dict[str, AdapterInfo] = {}
        self.adapter_errors: dict[str, str] = {}  # adapter name -> why it is not usable
        self.contestants: dict[str, LoadedContestant] = {}
        self._registry = threading.RLock()
        # Decoding threads running now; a stopped or abandoned generation leaves at its next token.
        self.active = 0
        self._active_lock = threading.Lock()

    # ---------------------------------------------------------------- loading
    def start(self) -> None:
        """Load every base a contestant uses (once), then discover and load adapters."""
        for key in dict.fromkeys(c.model for c in self.config.contestants):
            self.ensure_base(key)
        self.refresh()

    def ensure_base(self, key: str) -> Optional[Backend]:
        with self._registry:
            if key in self.bases:
                return self.bases[key]
            try:
                self.bases[key] = open_backend(key, self.config.models[key], self.progress, self._loader)
                self.base_errors.pop(key, None)
            except EsllmError as e:
                self.base_errors[key] = str(e)
                self.progress(f"ERROR al cargar {key}: {e}")
            except Exception as e:  # torch/transformers errors: keep the app up, say what happened
                log.exception("loading %s", key)
                self.base_errors[key] = f"No se pudo cargar {key}: {type(e).__name__}: {e}"
            return self.bases.get(key)

    def _adapter_path(self, ref: str) -> Path:
        return self.adapters_dir / ref  # a folder name: the config refuses paths (config.ContestantSpec)

    def _base_for(self, info: AdapterInfo) -> Optional[str]:
        hint = info.base_hint.rstrip("/")
        for key, spec in self.config.models.items():
            if spec.remote:
                continue  # a server's adapters are served there, never loaded from adapters/
            names = {key, spec.source, spec.source.removeprefix("bundled:"), *spec.aliases}
            if hint and any(hint == n or hint.endswith("/" + n.split("/")[-1]) for n in names if n):
                return key
        local = [k for k, spec in self.config.models.items() if not spec.remote]
        return local[0] if len(local) == 1 else None

    def refresh(self) -> RefreshReport:
        """Rescan the adapter folders: load new or changed ones, drop removed ones, rebuild contestants."""
        report = RefreshReport()
        with self._registry:
            self._refresh_servers()
            found = {i.name: i for i in scan_dir(self.adapters_dir)}
            wanted: dict[str, str] = {}  # adapter -> base key
            for c in self.config.contestants:
                if c.adapter:
                    wanted[Path(c.adapter).name] = c.model
            if self.config.auto_contestants:
                for name, info in found.items():
                    if name not in wanted and info.ok and (key := self._base_for(info)):
                        wanted[name] = key
            changed: set[str] = set()  # unloaded because the folder changed: loading it again is a reload
            for name in list(self.adapters):
                info = found.get(name)
                if info is None or not info.ok or info.sha256 != self.adapters[name].sha256:
                    self._unload(name)
                    if info is None:
                        report.removed.append(name)
                    else:
                        changed.add(name)
            self.adapter_errors = {}
            for name, info in found.items():
                if not info.ok:
                    self.adapter_errors[name] = info.reason
                    report.errors[name] = info.reason
                    continue
                key = wanted.get(name)
                if key is None:
                    self.adapter_errors[name] = "no se sabe a qué modelo base pertenece; nómbrelo en la configuración"
                    report.errors[name] = self.adapter_errors[name]
                    continue
                base = self.bases.get(key) or self.ensure_base(key)
                if base is None or name in self.adapters:
                    continue
                try:
                    self._load_adapter(base, info)
                    (report.reloaded if name in changed else report.added).append(name)
                except EsllmError as e:
                    self.adapter_errors[name] = str(e)
                    report.errors[name] = str(e)
            self._build_contestants(found, wanted)
        return report

    def _refresh_servers(self) -> None:
        """Ask each OpenAI-compatible server again what it serves (one that was down may be up now)."""
        for key, spec in self.config.models.items():
            if not spec.remote:
                continue
            base = self.bases.get(key)
            if base is None:
                if key in self.base_errors:
                    del self.base_errors[key]
                    self.ensure_base(key)
                continue
            try:
                base.served = base.list_models()
                self.base_errors.pop(key, None)
            except EsllmError as e:
                self.base_errors[key] = str(e)

    def _load_adapter(self, base: Backend, info: AdapterInfo) -> None:
        with base.lock:
            t0 = time.perf_counter()
            base.load_adapter(info)
            self.adapters[info.name] = info
            self.progress(f"Adaptador {info.name} cargado en {base.key} ({time.perf_counter() - t0:.2f} s).")

    def _unload(self, name: str) -> None:
        info = self.adapters.pop(name, None)
        for base in self.bases.values():
            if name in base.adapters:
                with base.lock:
                    base.unload_adapter(name)
        if info:
            self.progress(f"Adaptador {name} descargado.")

    def _build_contestants(self, found: dict[str, AdapterInfo], wanted: dict[str, str]) -> None:
        specs: list[tuple[ContestantSpec, bool]] = [(c, False) for c in self.config.contestants]
        named = {Path(c.adapter).name for c in self.config.contestants if c.adapter}
        for name, key in wanted.items():
            if name not in named:
                default_preset = next((c.preset for c in self.config.contestants if c.model == key), "greedy")
                specs.append((ContestantSpec(name=f"{key} + {name}"[:64], model=key, adapter=name, preset=default_preset), True))
        out: dict[str, LoadedContestant] = {}
        for spec, auto in specs:
            adapter = Path(spec.adapter).name if spec.adapter else None
            info = self.adapters.get(adapter) if adapter else None
            model_spec = self.config.models[spec.model]
            template = get_template(spec.template) if spec.template else (
                info.template if info and info.template else get_template(model_spec.template))
            c = LoadedContestant(spec.name, spec.model, adapter, template, spec.preset, auto=auto,
                                 overrides=dict(spec.params), served_model=spec.served_model,
                                 lora=[x.model_dump() for x in spec.lora])
            base = self.bases.get(spec.model)
            if spec.model in self.base_errors or base is None:
                c.reason = f"modelo base no disponible: {self.base_errors.get(spec.model, 'no cargado')}"
            elif isinstance(base, OpenAIBackend) and spec.served_model not in base.served:
                c.reason = (f"el servidor {base.host} no sirve «{spec.served_model}» "
                            f"(sirve: {', '.join(base.served) or 'nada'})")
            elif adapter and info is None:
                why = self.adapter_errors.get(adapter) or (
                    f"no existe la carpeta {self._adapter_path(spec.adapter)} (se crea al entrenar el adaptador: "
                    "python -m esllm train)")
                c.reason = f"adaptador {adapter}: {why}"
            else:
                c.available = True
            out[c.name] = c
        self.contestants = out

    # ---------------------------------------------------------------- queries
    def available(self) -> list[str]:
        """Names of the contestants that can answer now, in config order (then adapters found)."""
        return [c.name for c in self.contestants.values() if c.available]

    def contestant(self, name: str) -> LoadedContestant:
        c = self.contestants.get(name)
        if c is None:
            raise EsllmError(f"No existe el concursante {name!r}.")
        if not c.available:
            raise EsllmError(f"El concursante {name} no está disponible: {c.reason}")
        return c

    def describe(self, name: str) -> dict[str, Any]:
        c = self.contestants.get(name)
        if c is None:
            raise EsllmError(f"No existe el concursante {name!r}.")
        d: dict[str, Any] = {"concursante": c.name, "disponible": c.available}
        if not c.available:
            d["motivo"] = c.reason
        base = self.bases.get(c.model_key)
        if base:
            d.update(base.describe())
        if c.served_model:  # on a server, «modelo servido» (and llama-server's lora) say what answers
            d["modelo_servido"] = c.served_model
            if c.lora:
                d["lora"] = c.lora
        else:
            d["adaptador"] = c.adapter or "ninguno (modelo base)"
        if c.adapter and c.adapter in self.adapters:
            info = self.adapters[c.adapter]
            d["adaptador_r"], d["adaptador_sha256"] = info.r, info.sha256[:16]
            d["adaptador_MiB"] = round(info.path.joinpath("adapter_model.safetensors").stat().st_size / 2**20, 2)
        remote_chat = c.served_model and base is not None and getattr(base.spec, "api", "") == "chat"
        d["plantilla"] = "la del servidor (API chat)" if remote_chat else (c.template.name if c.template else None)
        d["preset"] = c.preset
        if c.overrides:
            d["parámetros"] = dict(c.overrides)
        return d

    def adapter_card(self, name: str) -> tuple[dict[str, Any], Optional[Path]]:
        """(training metadata worth showing, loss plot path or None) of a contestant's adapter."""
        c = self.contestants.get(name)
        info = self.adapters.get(c.adapter) if c and c.adapter else None
        if info is None:
            return {}, None
        keys = ("description", "base_source", "examples_used", "examples_dropped", "eval_examples", "steps",
                "epochs_done", "final_train_loss", "final_eval_loss", "base_eval_loss", "wall_seconds", "device",
                "optimizer", "dataset_sha256", "finished_at", "limits")
        meta = {k: info.meta[k] for k in keys if k in info.meta}
        if "recipe" in info.meta:
            meta["lora"] = info.meta["recipe"].get("lora")
        plot = info.path / "loss.png"
        return meta, plot if plot.is_file() else None

    def hashes(self, contestant: str) -> dict[str, Any]:
        """What a contestant runs on, for tracing a result: base source, its file sha256 (when known),
        backend, quantisation, device, adapter name and the sha256 of its weights, template, preset."""
        c = self.contestant(contestant)
        base = self.bases[c.model_key]
        info = self.adapters.get(c.adapter) if c.adapter else None
        return {"contestant": c.name, "base": base.spec.source, "base_sha256": base.source_sha256,
                "backend": base.name, "quantization": base.quantization, "device": base.device,
                "adapter": c.adapter, "adapter_sha256": info.sha256 if info else None,
                "template": "servidor" if c.served_model and base.spec.api == "chat" else
                (c.template or get_template(base.spec.template)).name, "preset": c.preset,
                "params": dict(c.overrides),
                **({"served_model": c.served_model, "host": base.device} if c.served_model else {})}


def open_backend(key: str, spec: ModelSpec, progress: Callable[[str], None],
                 loader: Callable[..., Any] = load_base) -> Backend:
    """Load one base with the backend its spec asks for (`backend: auto` picks, see config.ModelSpec)."""
    from esllm.engine.hf_backend import TransformersBackend

    if backend_for(spec) == "openai":
        return OpenAIBackend.open(key, spec, progress)
    if backend_for(spec) == "llama.cpp":
        from esllm.engine.llamacpp_backend import LlamaCppBackend

        return LlamaCppBackend.load(key, spec, progress)
    return TransformersBackend.load(key, spec, progress, loader=loader)


def backend_for(spec: ModelSpec) -> str:
    """'llama.cpp', 'transformers' or 'openai' for a model spec (auto: openai for an `openai:` source, llama.cpp
    for a GGUF source without CUDA)."""
    if spec.remote:
        return "openai"
    if spec.backend != "auto":
        return spec.backend
    src = spec.source.strip()
    gguf = src.startswith("bundled:") or src.lower().endswith(".gguf")
    if not gguf or spec.device == "cuda":
        return "transformers"
    if spec.device == "auto" and _cuda_available():
        return "transformers"
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        log.warning("llama-cpp-python is not installed: %s runs on transformers", src)
        return "transformers"
    return "llama.cpp"


def _cuda_available() -> bool:
    """Whether torch sees a GPU, without importing torch (~2.5 s of every start) on a machine with no NVIDIA
    driver at all."""
    if not os.path.exists("/proc/driver/nvidia/version") and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()
