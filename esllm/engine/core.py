"""The engine: base models loaded once, LoRA adapters hot-swapped on them, contestants, streaming chat.

    engine = Engine(load_config("configs/default.yaml"), root=Path("."))
    engine.start()                      # load bases, discover adapters
    for ev in engine.stream("gemma-base", [{"role": "user", "content": "Hola"}]):
        print(ev.text)                  # the answer so far; the last event has ev.result

Switching contestants never reloads a base: every adapter is loaded once with `load_adapter` and
selected with `set_adapter`; the base alone runs under `disable_adapter()`. `set_adapter` is
global state of the model, so each generation holds its base's lock from activation to the last
token: two users on two adapters of one base take turns and each always gets their own adapter.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from esllm import EsllmError
from esllm.engine.adapters import AdapterInfo, check_compatible, peft_name, scan_dir
from esllm.engine.config import AppConfig, ContestantSpec
from esllm.engine.loader import BaseModel, load_base
from esllm.engine.messages import check_messages, eos_token_ids, prompt_ids, visible
from esllm.engine.presets import GenParams
from esllm.engine.templates import ChatTemplate, get_template
from esllm.engine.types import GenerationResult, LoadedContestant, RefreshReport, StreamEvent

log = logging.getLogger(__name__)


class Engine:
    def __init__(self, config: AppConfig, root: Path, *, loader: Callable[..., BaseModel] = load_base,
                 progress: Optional[Callable[[str], None]] = None):
        self.config, self.root, self._loader = config, Path(root), loader
        self.progress = progress or log.info
        self.adapters_dir = config.resolve_adapters_dir(self.root)
        self.bases: dict[str, BaseModel] = {}
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

    def ensure_base(self, key: str) -> Optional[BaseModel]:
        with self._registry:
            if key in self.bases:
                return self.bases[key]
            try:
                self.bases[key] = self._loader(key, self.config.models[key], self.progress)
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
            names = {key, spec.source, spec.source.removeprefix("bundled:"), *spec.aliases}
            if hint and any(hint == n or hint.endswith("/" + n.split("/")[-1]) for n in names if n):
                return key
        return next(iter(self.config.models)) if len(self.config.models) == 1 else None

    def refresh(self) -> RefreshReport:
        """Rescan the adapter folders: load new or changed ones, drop removed ones, rebuild contestants."""
        report = RefreshReport()
        with self._registry:
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

    def _load_adapter(self, base: BaseModel, info: AdapterInfo) -> None:
        from peft import PeftModel

        with base.lock:
            raw = base.model.get_base_model() if isinstance(base.model, PeftModel) else base.model
            check_compatible(info, raw)
            pname = peft_name(info.name)
            t0 = time.perf_counter()
            try:
                if isinstance(base.model, PeftModel):
                    base.model.load_adapter(str(info.path), adapter_name=pname, is_trainable=False)
                else:
                    base.model = PeftModel.from_pretrained(base.model, str(info.path), adapter_name=pname, is_trainable=False)
                base.model.eval()
            except Exception as e:
                if isinstance(base.model, PeftModel) and pname in base.model.peft_config:
                    base.model.delete_adapter(pname)
                raise EsllmError(f"no se pudo cargar el adaptador {info.name}: {type(e).__name__}: {e}") from None
            base.adapters[info.name] = info
            self.adapters[info.name] = info
            self.progress(f"Adaptador {info.name} cargado en {base.key} ({time.perf_counter() - t0:.2f} s).")

    def _unload(self, name: str) -> None:
        from peft import PeftModel

        info = self.adapters.pop(name, None)
        for base in self.bases.values():
            if name in base.adapters:
                with base.lock:
                    base.adapters.pop(name)
                    if isinstance(base.model, PeftModel) and peft_name(name) in base.model.peft_config:
                        base.model.delete_adapter(peft_name(name))
                        if not base.model.peft_config:
                            # A PeftModel with no adapter left fails in disable_adapter(): back to the plain model.
                            base.model = base.model.unload()
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
            c = LoadedContestant(spec.name, spec.model, adapter, template, spec.preset, auto=auto)
            if spec.model in self.base_errors or spec.model not in self.bases:
                c.reason = f"modelo base no disponible: {self.base_errors.get(spec.model, 'no cargado')}"
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
        d["adaptador"] = c.adapter or "ninguno (modelo base)"
        if c.adapter and c.adapter in self.adapters:
            info = self.adapters[c.adapter]
            d["adaptador_r"], d["adaptador_sha256"] = info.r, info.sha256[:16]
            d["adaptador_MiB"] = round(info.path.joinpath("adapter_model.safetensors").stat().st_size / 2**20, 2)
        d["plantilla"] = c.template.name if c.template else None
        d["preset"] = c.preset
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

    # ---------------------------------------------------------------- generation
    def stream(
        self,
        contestant: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        preset: Optional[str] = None,
        overrides: Optional[Mapping[str, Any]] = None,
        stop_event: Optional[threading.Event] = None,
    ) -> Iterator[StreamEvent]:
        """Yield the answer as it grows; the last event carries the GenerationResult.

        Closing the iterator (a browser that went away) or setting `stop_event` stops decoding.
        """
        c = self.contestant(contestant)
        msgs = check_messages(messages, self.config.limits)
        params = GenParams.build(preset or c.preset, overrides, max_new_tokens_cap=self.config.limits.max_new_tokens)
        base = self.bases[c.model_key]
        template = c.template or get_template(base.spec.template)
        tok = base.tokenizer
        input_ids, dropped = prompt_ids(tok, template, msgs, self.config.limits.max_prompt_tokens)
        eos_ids = eos_token_ids(tok, template)
        stop = stop_event or threading.Event()
        q: "queue.Queue[tuple[str, Any]]" = queue.Queue()
        t_start = time.perf_counter()

        def work() -> None:
            from esllm.engine.decoding import decode

            try:
                with self.activated(c.name) as (model, _, _):  # the base's lock, held to the last token
                    ids, reason = decode(
                        model, tok, input_ids.to(model.device), params, eos_ids=eos_ids,
                        stop_strings=template.stop_strings, should_stop=stop.is_set,
                        on_token=lambda t: q.put(("tok", t)),
                    )
                q.put(("done", (ids, reason)))
            except BaseException as e:  # reported to the consumer, never lost in a thread
                q.put(("error", e))
            finally:
                with self._active_lock:
                    self.active -= 1

        with self._active_lock:
            self.active += 1
        threading.Thread(target=work, name=f"gen-{contestant}", daemon=True).start()
        generated: list[int] = []
        shown, first_token_s = "", None
        try:
            while True:
                kind, val = q.get()
                if kind == "tok":
                    if first_token_s is None:
                        first_token_s = time.perf_counter() - t_start
                    generated.append(val)
                    text, _ = visible(tok, generated, eos_ids, template, final=False)
                    if text != shown:
                        shown = text
                        yield StreamEvent(text)
                elif kind == "error":
                    if isinstance(val, EsllmError):
                        raise val
                    log.error("generation failed", exc_info=val)
                    raise EsllmError(f"La generación falló: {type(val).__name__}: {val}")
                else:
                    ids, reason = val
                    text, _ = visible(tok, ids, eos_ids, template, final=True)
                    result = GenerationResult(
                        text=text, contestant=c.name, base=c.model_key, adapter=c.adapter, template=template.name,
                        params=params.as_dict(), prompt_tokens=int(input_ids.shape[1]), new_tokens=len(ids) + (reason == "eos"),
                        latency_s=round(time.perf_counter() - t_start, 3),
                        first_token_s=None if first_token_s is None else round(first_token_s, 3),
                        finish_reason=reason, dropped_turns=dropped,
                    )
                    yield StreamEvent(text, result)
                    return
        finally:
            stop.set()  # consumer gone or done: the worker stops at its next token

    @contextmanager
    def activated(self, contestant: str) -> Iterator[tuple[Any, Any, ChatTemplate]]:
        """(model, tokenizer, template) with the contestant's adapter active (or the base alone), holding
        the base's lock until the block ends: for evaluations that score with the model directly."""
        from peft import PeftModel

        c = self.contestant(contestant)
        base = self.bases[c.model_key]
        template = c.template or get_template(base.spec.template)
        with base.lock:
            model = base.model
            if c.adapter is None:
                ctx = model.disable_adapter() if isinstance(model, PeftModel) else nullcontext()
            else:
                if c.adapter not in base.adapters:
                    raise EsllmError(f"El adaptador {c.adapter} ya no está cargado; pulse «Actualizar».")
                if model.active_adapter != peft_name(c.adapter):  # peft walks every module: skip if set
                    model.set_adapter(peft_name(c.adapter))
                ctx = nullcontext()
            with ctx:
                yield model, base.tokenizer, template

    def hashes(self, contestant: str) -> dict[str, Any]:
        """What a contestant runs on, for tracing a result: base source, its file sha256 (when known),
        quantisation, device, adapter name and the sha256 of its weights, template, preset."""
        c = self.contestant(contestant)
        base = self.bases[c.model_key]
        info = self.adapters.get(c.adapter) if c.adapter else None
        return {"contestant": c.name, "base": base.spec.source, "base_sha256": base.source_sha256,
                "quantization": base.quantization, "device": base.device, "adapter": c.adapter,
                "adapter_sha256": info.sha256 if info else None,
                "template": (c.template or get_template(base.spec.template)).name, "preset": c.preset}

    def generate(self, contestant: str, messages: Sequence[Mapping[str, Any]], **kw) -> GenerationResult:
        """Non-streaming convenience: the final result."""
        result = None
        for ev in self.stream(contestant, messages, **kw):
            result = ev.result
        assert result is not None
        return result
