"""The registry of what the engine holds: base models loaded once, adapter folders loaded onto them, and the
contestants (a base, an adapter or none, a template, a preset) with one runner each.

    reg = Registry(config, root)
    reg.start()                         # load every base a contestant uses, then discover adapters
    reg.refresh()                       # rescan adapters/ (new, changed, removed) and ask servers again
    reg.runners["gemma-base"]           # an available contestant's runner.Runner

A base is a `runner.LoadedModel` opened by `open_model` from its config: llama.cpp for a GGUF on the CPU,
transformers + peft otherwise, an OpenAI-compatible server for an `openai:` source (`backend_for`). The registry
never asks which kind a base is: each one says whether a contestant can run on it and gives its runner.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from esllm import EsllmError
from esllm.engine.adapters import AdapterInfo, scan_dir
from esllm.engine.config import AppConfig, ContestantSpec, ModelSpec
from esllm.engine.hf_backend import TransformersBackend
from esllm.engine.llamacpp_backend import LlamaCppBackend
from esllm.engine.loader import load_base
from esllm.engine.remote import RemoteModel
from esllm.engine.runner import LoadedModel, Runner
from esllm.engine.templates import get_template
from esllm.engine.types import LoadedContestant, RefreshReport

log = logging.getLogger(__name__)


class Registry:
    """Bases, adapters and contestants as loaded now; `runners` holds one runner per available contestant."""

    def __init__(self, config: AppConfig, root: Path, *, loader: Callable[..., Any] = load_base,
                 opener: Optional[Callable[..., LoadedModel]] = None, progress: Optional[Callable[[str], None]] = None):
        self.config, self.root, self._loader = config, Path(root), loader
        self._open = opener or open_model  # (key, spec, progress, loader) -> LoadedModel
        self.progress = progress or log.info
        self.adapters_dir = config.resolve_adapters_dir(self.root)
        self.bases: dict[str, LoadedModel] = {}
        self.base_errors: dict[str, str] = {}
        self.adapters: dict[str, AdapterInfo] = {}
        self.adapter_errors: dict[str, str] = {}  # adapter name -> why it is not usable
        self.contestants: dict[str, LoadedContestant] = {}
        self.runners: dict[str, Runner] = {}
        self.retired: list[Runner] = []  # runners replaced by a refresh while they still decoded
        self.lock = threading.RLock()

    def start(self) -> None:
        """Load every base a contestant uses (once), then discover and load adapters."""
        for key in dict.fromkeys(c.model for c in self.config.contestants):
            self.ensure_base(key)
        self.refresh()

    def ensure_base(self, key: str) -> Optional[LoadedModel]:
        with self.lock:
            if key in self.bases:
                return self.bases[key]
            try:
                self.bases[key] = self._open(key, self.config.models[key], self.progress, self._loader)
                self.base_errors.pop(key, None)
            except EsllmError as e:
                self.base_errors[key] = str(e)
                self.progress(f"ERROR al cargar {key}: {e}")
            except Exception as e:  # torch/transformers errors: keep the app up, say what happened
                log.exception("loading %s", key)
                self.base_errors[key] = f"No se pudo cargar {key}: {type(e).__name__}: {e}"
            return self.bases.get(key)

    # ---------------------------------------------------------------- refresh
    def refresh(self) -> RefreshReport:
        """Ask bases again (a server that was down may be up), rescan the adapter folders (load new or changed
        ones, drop removed ones), rebuild the contestants and their runners."""
        report = RefreshReport()
        with self.lock:
            self._refresh_bases()
            found = {i.name: i for i in scan_dir(self.adapters_dir)}
            wanted = self._wanted(found)
            changed = self._drop_changed(found, report)
            self.adapter_errors.clear()
            for name, info in found.items():
                why = info.reason if not info.ok else (None if name in wanted else
                      "no se sabe a qué modelo base pertenece; nómbrelo en la configuración")
                if why is None:
                    why = self._load_adapter(wanted[name], info, name in changed, report)
                if why:
                    self.adapter_errors[name] = report.errors[name] = why
            self._build_contestants(wanted)
        return report

    def _refresh_bases(self) -> None:
        for key in list(self.config.models):
            base = self.bases.get(key)
            if base is None:
                if self.config.models[key].remote and self.base_errors.pop(key, None) is not None:
                    self.ensure_base(key)  # a server that was down at start
                continue
            try:
                base.refresh()
                self.base_errors.pop(key, None)
            except EsllmError as e:
                self.base_errors[key] = str(e)

    def _wanted(self, found: dict[str, AdapterInfo]) -> dict[str, str]:
        """adapter folder -> the base it goes on: the config's contestants, then (auto_contestants) every ok
        folder whose adapter_config names a local base."""
        wanted = {Path(c.adapter).name: c.model for c in self.config.contestants if c.adapter}
        if self.config.auto_contestants:
            for name, info in found.items():
                if name not in wanted and info.ok and (key := self._base_for(info)):
                    wanted[name] = key
        return wanted

    def _base_for(self, info: AdapterInfo) -> Optional[str]:
        hint = info.base_hint.rstrip("/")
        local = {k: spec for k, spec in self.config.models.items() if not spec.remote}  # servers hold their own
        for key, spec in local.items():
            names = {key, spec.source, spec.source.removeprefix("bundled:"), *spec.aliases}
            if hint and any(hint == n or hint.endswith("/" + n.split("/")[-1]) for n in names if n):
                return key
        return next(iter(local)) if len(local) == 1 else None

    def _drop_changed(self, found: dict[str, AdapterInfo], report: RefreshReport) -> set[str]:
        """Unload adapters whose folder went away, broke or changed; the names of the changed ones."""
        changed = set()
        for name in list(self.adapters):
            info = found.get(name)
            if info is None or not info.ok or info.sha256 != self.adapters[name].sha256:
                self._unload(name)
                if info is None:
                    report.removed.append(name)
                else:
                    changed.add(name)
        return changed

    def _load_adapter(self, key: str, info: AdapterInfo, reload: bool, report: RefreshReport) -> Optional[str]:
        """Load `info` on base `key` unless it is there already; why it failed, or None."""
        base = self.bases.get(key) or self.ensure_base(key)
        if base is None or info.name in self.adapters:
            return None
        try:
            with base.lock:
                t0 = time.perf_counter()
                base.load_adapter(info)
            self.adapters[info.name] = info
            self.progress(f"Adaptador {info.name} cargado en {key} ({time.perf_counter() - t0:.2f} s).")
        except EsllmError as e:
            return str(e)
        (report.reloaded if reload else report.added).append(info.name)
        return None

    def _unload(self, name: str) -> None:
        info = self.adapters.pop(name, None)
        for base in self.bases.values():
            if name in base.adapters:
                with base.lock:
                    base.unload_adapter(name)
        if info:
            self.progress(f"Adaptador {name} descargado.")

    # ---------------------------------------------------------------- contestants
    def _specs(self, wanted: dict[str, str]) -> list[tuple[ContestantSpec, bool]]:
        """The config's contestants, then one per adapter found that no contestant names (auto)."""
        specs = [(c, False) for c in self.config.contestants]
        named = {Path(c.adapter).name for c in self.config.contestants if c.adapter}
        for name, key in wanted.items():
            if name not in named:
                preset = next((c.preset for c in self.config.contestants if c.model == key), "greedy")
                specs.append((ContestantSpec(name=f"{key} + {name}"[:64], model=key, adapter=name, preset=preset), True))
        return specs

    def _contestant(self, spec: ContestantSpec, auto: bool) -> LoadedContestant:
        adapter = Path(spec.adapter).name if spec.adapter else None
        info = self.adapters.get(adapter) if adapter else None
        template = get_template(spec.template) if spec.template else (info.template if info and info.template else None)
        c = LoadedContestant(spec.name, spec.model, adapter, template or get_template(self.config.models[spec.model].template),
                             spec.preset, auto=auto, overrides=dict(spec.params), served_model=spec.served_model,
                             lora=[x.model_dump() for x in spec.lora])
        base = self.bases.get(spec.model)
        if spec.model in self.base_errors or base is None:
            c.reason = f"modelo base no disponible: {self.base_errors.get(spec.model, 'no cargado')}"
        elif why := base.unavailable_reason(c):
            c.reason = why
        elif adapter and info is None:
            why = self.adapter_errors.get(adapter) or (
                f"no existe la carpeta {self.adapters_dir / adapter} (se crea al entrenar el adaptador: "
                "python -m esllm train)")
            c.reason = f"adaptador {adapter}: {why}"
        else:
            c.available = True
        return c

    def _build_contestants(self, wanted: dict[str, str]) -> None:
        old = self.runners
        self.contestants = {}
        self.runners = {}
        for spec, auto in self._specs(wanted):
            c = self._contestant(spec, auto)
            self.contestants[c.name] = c
            if c.available:
                self.runners[c.name] = self.bases[c.model_key].runner(c, self.config.limits)
        self.retired = [r for r in [*self.retired, *old.values()] if r.active]

    def active(self) -> int:
        """Decodes in flight now, over every runner (those a refresh replaced included)."""
        return sum(r.active for r in [*self.runners.values(), *self.retired])


def open_model(key: str, spec: ModelSpec, progress: Callable[[str], None],
               loader: Callable[..., Any] = load_base) -> LoadedModel:
    """Load one base with the backend its spec asks for (`backend: auto` picks, see config.ModelSpec)."""
    kind = backend_for(spec)
    if kind == "openai":
        return RemoteModel.open(key, spec, progress)
    if kind == "llama.cpp":
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
    if importlib.util.find_spec("llama_cpp") is None:
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
