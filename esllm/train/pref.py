"""Preference training (DPO / KTO) with TRL: `python -m esllm train RECIPE.yaml` with `method: dpo | kto`.

    python -m esllm train configs/recipes/gemma-270m-cpu-dpo.yaml
    python -m esllm train configs/recipes/gemma-270m-cpu-dpo.yaml data.session=piloto   # pairs from a session
    python -m esllm train configs/recipes/gemma-270m-cpu-dpo.yaml --resume

The base comes through the engine's loader; `preference.start_from` names an adapter folder to continue
(TRL keeps a frozen copy of it as the reference), else a new LoRA is trained on the base (the base alone is
the reference). TRL's DPOTrainer / KTOTrainer run the loop (progress bar with ETA); esllm adds what SFT
has: `train_log.jsonl` (loss, reward margin, held-out loss), `loss.png` (loss and reward margin),
checkpoints (Ctrl-C saves one, `--resume` continues), early stopping on the held-out loss with the best
checkpoint exported, metadata (data provenance: file + sha256 or session + rating ids, parent adapter +
sha256), a model card, and the portable files (esllm/train/portable.py).
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path
from typing import Callable, Optional

from esllm import EsllmError
from esllm.engine.loader import load_base
from esllm.engine.templates import get_template
from esllm.paths import file_sha256
from esllm.train import output as O
from esllm.train import portable as P
from esllm.train import pref_data as PD
from esllm.train.checkpoints import CKPT_DIR
from esllm.train.recipe import Recipe
from esllm.train.trainer import TrainResult, base_fingerprint, train_dtype

ADAPTER = "adapter_model.safetensors"


def _resolve(root: Path, p: str) -> Path:
    q = Path(p)
    return q if q.is_absolute() else root / q


def _parent(recipe: Recipe, root: Path) -> Optional[Path]:
    name = recipe.preference.start_from.strip()
    if not name:
        return None
    for cand in (_resolve(root, name), root / "adapters" / name):
        if (cand / ADAPTER).is_file():
            return cand
    raise EsllmError(f"preference.start_from: no hay un adaptador en {name!r} (ni en adapters/{name}).")


def _log_callback(out_dir: Path, t0: float, stop: dict):
    from transformers import TrainerCallback

    best = {"loss": float("inf"), "step": None}

    class EsllmLog(TrainerCallback):
        """train_log.jsonl in esllm's shape; a stop request (Ctrl-C, the app's «Detener») saves and ends."""

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            rec = {"step": state.global_step, "epoch": round(state.epoch or 0, 3),
                   "elapsed_s": round(time.perf_counter() - t0, 1)}
            if "loss" in logs:
                rec["loss"] = round(float(logs["loss"]), 5)
                rec["lr"] = logs.get("learning_rate")
                for k in ("rewards/margins", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "kl"):
                    if k in logs:
                        rec[k.replace("/", "_")] = round(float(logs[k]), 5)
            if "eval_loss" in logs:
                rec["eval_loss"] = round(float(logs["eval_loss"]), 5)
                for k in ("eval_rewards/margins", "eval_rewards/accuracies"):
                    if k in logs:
                        rec[k.replace("/", "_")] = round(float(logs[k]), 5)
                if state.global_step > 0 and logs["eval_loss"] < best["loss"]:
                    best.update(loss=logs["eval_loss"], step=state.global_step)
                rec["best_step"] = best["step"]
            if len(rec) > 3:
                O.append_log(out_dir, rec)

        def on_step_end(self, args, state, control, **kw):
            if stop["requested"]:
                control.should_save = True
                control.should_training_stop = True
                stop["at"] = state.global_step
            return control

    return EsllmLog()


def _step_of(ckpt: Optional[str]) -> Optional[int]:
    return int(str(ckpt).rsplit("-", 1)[1]) if ckpt else None


def train_preference(recipe: Recipe, *, root: Path = Path("."), resume: bool = False,
                     say: Callable[[str], None] = print, progress: bool = True,
                     data_file: Optional[Path] = None, provenance: Optional[dict] = None) -> TrainResult:
    """Train a DPO/KTO adapter. `data_file` replaces data.path (the CLI writes the store's ratings there)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from transformers import EarlyStoppingCallback

    t0 = time.perf_counter()
    t, pref, method = recipe.training, recipe.preference, recipe.method
    if t.threads:
        torch.set_num_threads(t.threads)
    out_dir = _resolve(root, recipe.output.dir)
    ckpt_dir = out_dir / CKPT_DIR
    if resume and not any(ckpt_dir.glob("checkpoint-*")):
        raise EsllmError(f"--resume: no hay checkpoints en {ckpt_dir}")
    if not resume and ckpt_dir.exists():
        raise EsllmError(f"{out_dir} ya tiene checkpoints de un entrenamiento anterior: continúe con --resume o borre la carpeta.")
    parent = _parent(recipe, root)
    parent_meta = json.loads((parent / O.META).read_text(encoding="utf-8")) if parent and (parent / O.META).is_file() else {}
    template = get_template(parent_meta.get("template") or recipe.output.template)

    # ---- data
    data_path = data_file or _resolve(root, recipe.data.path or "")
    records = PD.load_records(data_path, method)
    if recipe.data.eval_path:
        train_rec, eval_rec = records, PD.load_records(_resolve(root, recipe.data.eval_path), method)
    else:
        train_rec, eval_rec = PD.split(records, recipe.data.eval_fraction, t.seed)

    base = load_base("entrenamiento", recipe.model, say)
    model, tok = base.model, base.tokenizer
    model = train_dtype(model, recipe, base.device, say)
    train_rows, dropped = PD.too_long(PD.render(train_rec, tok, template, recipe.data.system_prompt), tok, recipe.data.max_seq_len)
    eval_rows, eval_dropped = PD.too_long(PD.render(eval_rec, tok, template, recipe.data.system_prompt), tok, recipe.data.max_seq_len)
    if not train_rows:
        raise EsllmError(f"Todos los ejemplos superan max_seq_len={recipe.data.max_seq_len} tokens: súbalo.")
    if method == "kto" and len({r["label"] for r in train_rows}) < 2:
        raise EsllmError("KTO necesita ejemplos 👍 y 👎 en la parte de entrenamiento.")
    say(f"Datos ({method}): {len(train_rows)} ejemplos de entrenamiento ({dropped} descartados por largos), "
        f"{len(eval_rows)} de validación ({eval_dropped} descartados)")

    # ---- model: continue the parent adapter (TRL copies it as the frozen reference) or a new LoRA
    peft_config = None
    if parent is not None:
        model = PeftModel.from_pretrained(model, str(parent), is_trainable=True)
        say(f"Se continúa el adaptador {parent.name} (la referencia es una copia congelada de él)")
    else:
        peft_config = LoraConfig(r=recipe.lora.r, lora_alpha=recipe.lora.alpha, lora_dropout=recipe.lora.dropout,
                                 target_modules=recipe.lora.target_modules, bias="none", task_type="CAUSAL_LM")
    device = base.device
    has_eval = bool(eval_rows)
    best = has_eval and t.export == "best"
    common = dict(
        output_dir=str(ckpt_dir), per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum, learning_rate=t.learning_rate, weight_decay=t.weight_decay,
        num_train_epochs=t.epochs, max_steps=t.max_steps or -1, lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio, max_grad_norm=t.max_grad_norm, seed=t.seed, data_seed=t.seed,
        logging_steps=1, eval_strategy="steps" if has_eval else "no", eval_steps=t.eval_every,
        save_strategy="steps", save_steps=t.eval_every if best else t.save_every, save_total_limit=2,
        load_best_model_at_end=best, metric_for_best_model="eval_loss", greater_is_better=False,
        report_to=[], bf16=False, use_cpu=device == "cpu", gradient_checkpointing=t.gradient_checkpointing,
        disable_tqdm=not progress, max_length=recipe.data.max_seq_len, beta=pref.beta, dataset_num_proc=None,
        optim="paged_adamw_8bit" if (t.optimizer == "paged_adamw_8bit" and device == "cuda") else "adamw_torch",
    )
    if pref.loss_type:
        common["loss_type"] = [pref.loss_type] if method == "dpo" else pref.loss_type
    stop = {"requested": False, "at": None}
    callbacks = [_log_callback(out_dir, t0, stop)]
    if t.patience and best:  # transformers' early stopping needs load_best_model_at_end
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=t.patience, early_stopping_threshold=t.min_delta))
    if method == "dpo":
        from trl import DPOConfig, DPOTrainer

        args, cls = DPOConfig(**common), DPOTrainer
    else:
        from trl import KTOConfig, KTOTrainer

        args = KTOConfig(**common, desirable_weight=pref.desirable_weight, undesirable_weight=pref.undesirable_weight)
        cls = KTOTrainer
    out_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        (out_dir / O.LOG).write_text("", encoding="utf-8")
    trainer = cls(model=model, args=args, train_dataset=Dataset.from_list(train_rows),
                  eval_dataset=Dataset.from_list(eval_rows) if has_eval else None, processing_class=tok,
                  peft_config=peft_config, callbacks=callbacks)

    # ---- reference losses before training (the reference = the parent, or the base)
    if has_eval and not resume:
        ref_eval = trainer.evaluate()  # logged as step 0 by EsllmLog
        say(f"Pérdida {method} de validación antes de entrenar: {ref_eval['eval_loss']:.4f}")
    if resume:
        last = max(ckpt_dir.glob("checkpoint-*"), key=lambda p: _step_of(p.name))
        O.truncate_log(out_dir, _step_of(last.name))
        say(f"Reanudando desde {last.name}")

    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):
        stop["requested"] = True
        say("\nDeteniendo: se guarda un checkpoint al terminar el paso…")

    try:
        signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread (tests): no signal handler
        previous = None
    try:
        trainer.train(resume_from_checkpoint=True if resume else None)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    state = trainer.state
    if stop["requested"]:
        say(f"Interrumpido en el paso {state.global_step}: checkpoint en {ckpt_dir}. Continúe con --resume.")
        return TrainResult(out_dir, state.global_step, float("nan"), float("nan"), interrupted=True)

    # ---- output
    last_step = state.global_step
    evals = [r for r in O.read_log(out_dir) if "eval_loss" in r and r["step"] > 0]
    exported = _step_of(state.best_model_checkpoint) if best and state.best_model_checkpoint else last_step
    stopped = bool(t.patience) and has_eval and last_step < state.max_steps
    if best and exported is not None:
        reason = (f"mejor pérdida {method} de validación ({state.best_metric:.4f}) en el paso {exported}; "
                  + (f"parada temprana en el paso {last_step} (paciencia {t.patience})" if stopped
                     else f"entrenamiento completo hasta el paso {last_step}"))
    else:
        reason = f"último paso ({last_step}): " + ("export: last" if t.export == "last" else "sin datos de validación")
    say(f"Se exportan los pesos del paso {exported}: {reason}")
    trainer.model.save_pretrained(str(out_dir), selected_adapters=["default"])
    public_base = P.public_base_name(recipe.model.source, recipe.output.base_model_name)
    P.write_portable(out_dir, tok, template, public_base)
    train_log = [r for r in O.read_log(out_dir) if "loss" in r]
    at = {r["step"]: r for r in train_log}  # the training record of each step (eval records share the step)
    final_eval = next((r["eval_loss"] for r in evals if r["step"] == exported), evals[-1]["eval_loss"] if evals else float("nan"))
    meta = {
        "method": method,
        "template": template.name,
        "stop_strings": list(template.stop_strings),
        "description": recipe.output.description,
        "limits": recipe.output.limits,
        "base_source": recipe.model.source,
        "base_model": public_base,
        "base_fingerprint": base_fingerprint(base.path, base.source_sha256),
        "parent_adapter": parent.name if parent else None,
        "parent_sha256": file_sha256(parent / ADAPTER) if parent else None,
        "recipe": json.loads(recipe.model_dump_json()),
        "data": {"file": str(data_path.name), "sha256": file_sha256(data_path), **(provenance or {})},
        "dataset_sha256": file_sha256(data_path),
        "examples_used": len(train_rows),
        "examples_dropped": dropped,
        "eval_examples": len(eval_rows),
        "eval_examples_dropped": eval_dropped,
        "steps": last_step,
        "epochs_done": float(state.epoch or 0),
        "exported_step": exported,
        "export_reason": reason,
        "stopped_early": stopped,
        "final_train_loss": at.get(exported, {}).get("loss", train_log[-1]["loss"] if train_log else float("nan")),
        "final_eval_loss": final_eval,
        "reference_eval_loss": next((r["eval_loss"] for r in O.read_log(out_dir) if r["step"] == 0 and "eval_loss" in r), None),
        "final_reward_margin": at.get(exported, {}).get("rewards_margins"),
        "wall_seconds": time.perf_counter() - t0,
        "device": device,
        "optimizer": args.optim,
        "torch": torch.__version__,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    O.write_meta(out_dir, meta)
    O.plot_preference(out_dir, f"{out_dir.name}: {method.upper()} por paso", exported)
    O.write_card(out_dir, meta)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    say(f"Adaptador {method} guardado en {out_dir} ({last_step} pasos, exportado el paso {exported}, "
        f"validación {final_eval:.4f}, {meta['wall_seconds']:.0f} s)")
    return TrainResult(out_dir, last_step, meta["final_train_loss"], final_eval, False,
                       exported_step=exported, stopped_early=stopped)
