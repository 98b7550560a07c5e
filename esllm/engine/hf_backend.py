"""The transformers + peft backend: one base model (nf4 / int8 / none, CPU or CUDA) with LoRA adapters
loaded once by `load_adapter` and selected per call with `set_adapter` (the base alone runs under
`disable_adapter()`); nothing is merged into the 4-bit weights.

It is the reference the llama.cpp backend is tested against, the study's GPU NF4 path, and the model
training starts from (esllm/train/ loads it with `loader.load_base`). Decoding is esllm/engine/decoding.py.
Sequences of one call are decoded one after the other (`max_batch = 1`).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

from esllm import EsllmError
from esllm.engine.adapters import AdapterInfo, check_compatible, peft_name
from esllm.engine.backend import Backend, OnToken
from esllm.engine.config import ModelSpec
from esllm.engine.decoding import decode
from esllm.engine.loader import load_base
from esllm.engine.presets import GenParams
from esllm.engine.tokens import HFTok, StopRule


@dataclass
class TransformersBackend(Backend):
    model: Any = None  # PreTrainedModel, or PeftModel once an adapter is loaded
    name = "transformers"

    @classmethod
    def load(cls, key: str, spec: ModelSpec, progress: Optional[Callable[[str], None]] = None,
             loader: Callable[..., Any] = load_base) -> "TransformersBackend":
        b = loader(key, spec, progress)
        return cls(key=key, spec=spec, tok=HFTok(b.tokenizer), device=b.device, quantization=b.quantization,
                   dtype=b.dtype, path=b.path, source_sha256=b.source_sha256,
                   load_seconds=b.load_seconds, model=b.model)

    @property
    def footprint_bytes(self) -> int:
        return int(self.model.get_memory_footprint())

    @property
    def tokenizer(self):
        """The transformers tokenizer itself (training and tests format with it)."""
        return self.tok.hf

    # ------------------------------------------------------------ adapters
    def load_adapter(self, info: AdapterInfo) -> None:
        from peft import PeftModel

        raw = self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model
        check_compatible(info, raw)
        pname = peft_name(info.name)
        try:
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(info.path), adapter_name=pname, is_trainable=False)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(info.path), adapter_name=pname, is_trainable=False)
            self.model.eval()
        except Exception as e:
            if isinstance(self.model, PeftModel) and pname in self.model.peft_config:
                self.model.delete_adapter(pname)
            raise EsllmError(f"no se pudo cargar el adaptador {info.name}: {type(e).__name__}: {e}") from None
        self.adapters[info.name] = info

    def unload_adapter(self, name: str) -> None:
        from peft import PeftModel

        self.adapters.pop(name, None)
        if isinstance(self.model, PeftModel) and peft_name(name) in self.model.peft_config:
            self.model.delete_adapter(peft_name(name))
            if not self.model.peft_config:
                # A PeftModel with no adapter left fails in disable_adapter(): back to the plain model.
                self.model = self.model.unload()

    @contextmanager
    def activated(self, adapter: Optional[str]) -> Iterator[Any]:
        """The model with `adapter` active (None: the base alone). The caller holds `lock`."""
        from peft import PeftModel

        model = self.model
        if adapter is None:
            ctx = model.disable_adapter() if isinstance(model, PeftModel) else nullcontext()
        else:
            if adapter not in self.adapters:
                raise EsllmError(f"El adaptador {adapter} ya no está cargado; pulse «Actualizar».")
            if model.active_adapter != peft_name(adapter):  # peft walks every module: skip if set
                model.set_adapter(peft_name(adapter))
            ctx = nullcontext()
        with ctx:
            yield model

    # ------------------------------------------------------------ generation and scoring
    def generate(self, adapter: Optional[str], prompts: Sequence[Sequence[int]], params: GenParams, *,
                 stop: StopRule, on_token: OnToken) -> list[list[int]]:
        import torch

        outs = []
        with self.activated(adapter) as model:
            for i, p in enumerate(prompts):
                ids = torch.tensor([list(p)], dtype=torch.long, device=model.device)
                outs.append(decode(model, self.tok.hf, ids, params, eos_ids=stop.eos_ids,
                                   stop_strings=stop.stop_strings, should_stop=stop.should_stop,
                                   on_token=lambda t, i=i: on_token(i, t)))
                if stop.should_stop():
                    outs.extend([] for _ in prompts[i + 1:])
                    break
        return outs

    def next_logprobs(self, adapter: Optional[str], prompts: Sequence[Sequence[int]]):
        import torch

        pad = self.tok.hf.pad_token_id if self.tok.hf.pad_token_id is not None else 0
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), int(pad), dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding: every row's last position is its next token
            ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
            mask[i, width - len(p):] = 1
        # Positions count real tokens only, so a padded row sees the same positions as when it runs alone.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with self.activated(adapter) as model, torch.no_grad():
            dev = model.device
            out = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=positions.to(dev),
                        use_cache=False, logits_to_keep=1)
            return torch.log_softmax(out.logits[:, -1].float(), dim=-1).cpu().numpy()

    def token_logprobs(self, adapter: Optional[str], ids: Sequence[int], start: int) -> tuple[list[float], list[bool]]:
        import torch

        if not 1 <= start < len(ids):
            raise ValueError("start must leave at least one token before and one to score")
        with self.activated(adapter) as model, torch.no_grad():
            x = torch.tensor([list(ids)], dtype=torch.long, device=model.device)
            logp = torch.log_softmax(model(input_ids=x, use_cache=False).logits[0].float(), dim=-1)
        rows = logp[start - 1:len(ids) - 1]
        target = x[0, start:].cpu()
        rows = rows.cpu()
        return ([float(rows[j, t]) for j, t in enumerate(target.tolist())],
                [int(rows[j].argmax()) == t for j, t in enumerate(target.tolist())])
