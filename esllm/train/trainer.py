"""QLoRA / LoRA training loop: `python -m esllm train RECIPE.yaml [key=value ...] [--resume]`.

    python -m esllm train configs/recipes/gemma-270m-cpu-instrucciones.yaml
    python -m esllm train configs/recipes/gemma-270m-cpu-instrucciones.yaml training.epochs=1 --resume

Loads the base through the engine's loader (so any loadable base works), wraps it with a LoRA
adapter, trains on the answer tokens only, evaluates on a held-out split, checkpoints every
`save_every` steps (and on Ctrl-C), and writes a peft adapter folder the app loads like any other:
adapter weights (safetensors), `esllm_adapter.json` (metadata), `train_log.jsonl`, `loss.png`,
`README.md` (model card). On CUDA with a 4-bit base: prepare_model_for_kbit_training, gradient
checkpointing, paged AdamW 8-bit. On CPU: bf16 base weights, fp32 LoRA weights, torch AdamW
(bitsandbytes' paged optimisers need CUDA); the log says which was used.

The loss (`answer_loss`, `eval_loss`) lives in esllm/train/loss.py, the checkpoint folders and early stopping's
`BestKeeper` in esllm/train/checkpoints.py: import them from there (a test that fakes the held-out loss patches
`trainer.eval_loss`, the name `train` looks up).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from esllm import EsllmError
from esllm.engine.loader import load_base
from esllm.engine.templates import get_template
from esllm.paths import file_sha256
from esllm.train import data as D
from esllm.train import output as O
from esllm.train import portable as P
from esllm.train.checkpoints import CKPT_DIR, BestKeeper, latest_checkpoint
from esllm.train.loss import answer_loss, eval_loss
from esllm.train.recipe import Recipe


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    final_train_loss: float
    final_eval_loss: float
    interrupted: bool = False
    exported_step: Optional[int] = None
    stopped_early: bool = False


def base_fingerprint(path: str, source_sha: Optional[str]) -> str:
    """The GGUF's sha256 for the bundled model; else a hash of config.json and weight file names/sizes."""
    if source_sha:
        return source_sha
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for f in sorted(p.iterdir()):
            if f.name == "config.json":
                h.update(f.read_bytes())
            elif f.suffix == ".safetensors":
                h.update(f"{f.name}:{f.stat().st_size}".encode())
    else:
        h.update(path.encode())
    return h.hexdigest()


def train_dtype(model, recipe: Recipe, device: str, say: Callable[[str], None]):
    """The base in float32 on CPU, or as TrainingSpec.dtype asks (whatever dtype the model spec loaded it in);
    quantized bases are left as they are."""
    want = recipe.training.dtype
    if recipe.model.quantization != "none":
        return model
    if want == "fp32" or (want == "auto" and device == "cpu"):
        model = model.float()
        say("Pesos del modelo base en float32 para entrenar (bf16 es lento en CPU)")
    elif want == "bf16":
        model = model.bfloat16()
    return model


def _optimizer(recipe: Recipe, params, device: str, say):
    t = recipe.training
    if t.optimizer == "paged_adamw_8bit":
        if device == "cuda":
            import bitsandbytes as bnb

            say("Optimizador: paged AdamW 8-bit (bitsandbytes)")
            return bnb.optim.PagedAdamW8bit(params, lr=t.learning_rate, weight_decay=t.weight_decay), "paged_adamw_8bit"
        say("Optimizador: paged AdamW 8-bit necesita CUDA; en CPU se usa torch AdamW (32-bit)")
    else:
        say("Optimizador: torch AdamW")
    return torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay), "adamw"


def _scheduler(recipe: Recipe, opt, total_steps: int):
    from transformers import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    warm = int(math.ceil(recipe.training.warmup_ratio * total_steps))
    if recipe.training.scheduler == "cosine":
        return get_cosine_schedule_with_warmup(opt, warm, total_steps)
    if recipe.training.scheduler == "linear":
        return get_linear_schedule_with_warmup(opt, warm, total_steps)
    return get_constant_schedule_with_warmup(opt, warm)


def train(recipe: Recipe, *, root: Path = Path("."), resume: bool = False,
          say: Callable[[str], None] = print, progress: bool = True) -> TrainResult:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training, set_peft_model_state_dict
    from safetensors.torch import load_file

    t0 = time.perf_counter()
    t = recipe.training
    if t.threads:
        torch.set_num_threads(t.threads)
    random.seed(t.seed)
    torch.manual_seed(t.seed)
    out_dir = Path(recipe.output.dir)
    out_dir = out_dir if out_dir.is_absolute() else root / out_dir
    ckpt = latest_checkpoint(out_dir) if resume else None
    if resume and ckpt is None:
        raise EsllmError(f"--resume: no hay checkpoints en {out_dir / CKPT_DIR}")
    if not resume and (out_dir / CKPT_DIR).exists():
        raise EsllmError(f"{out_dir} ya tiene checkpoints de un entrenamiento anterior: continúe con --resume o borre la carpeta.")

    # ---- data
    template = get_template(recipe.output.template)
    data_path = Path(recipe.data.path) if Path(recipe.data.path).is_absolute() else root / recipe.data.path
    examples = D.load_examples(data_path, recipe.data.format)
    if recipe.data.eval_path:
        eval_path = Path(recipe.data.eval_path) if Path(recipe.data.eval_path).is_absolute() else root / recipe.data.eval_path
        train_ex, eval_ex = examples, D.load_examples(eval_path, recipe.data.format)
    else:
        train_ex, eval_ex = D.split(examples, recipe.data.eval_fraction, t.seed)

    base = load_base("entrenamiento", recipe.model, say)
    model, tok = base.model, base.tokenizer
    device = base.device
    model = train_dtype(model, recipe, device, say)
    train_tok, dropped = D.tokenize_all(train_ex, tok, template, recipe.data.max_seq_len, recipe.data.system_prompt)
    eval_tok, eval_dropped = D.tokenize_all(eval_ex, tok, template, recipe.data.max_seq_len, recipe.data.system_prompt)
    if not train_tok:
        raise EsllmError(f"Todos los ejemplos superan max_seq_len={recipe.data.max_seq_len} tokens: súbalo.")
    say(f"Datos: {len(train_tok)} ejemplos de entrenamiento ({dropped} descartados por largos), "
        f"{len(eval_tok)} de validación ({eval_dropped} descartados)")

    # ---- model
    quantized = recipe.model.quantization in ("nf4", "int8")
    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=t.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif t.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    lcfg = LoraConfig(r=recipe.lora.r, lora_alpha=recipe.lora.alpha, lora_dropout=recipe.lora.dropout,
                      target_modules=recipe.lora.target_modules, bias="none", task_type="CAUSAL_LM")
    try:
        model = get_peft_model(model, lcfg)
    except ValueError as e:
        raise EsllmError(f"lora.target_modules no encaja con este modelo: {e}") from None
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    say(f"Dispositivo {device}, base {recipe.model.quantization}, gradient checkpointing "
        f"{'sí' if t.gradient_checkpointing else 'no'}; parámetros LoRA entrenables: {n_train:,}")
    with model.disable_adapter():
        base_eval = eval_loss(model, eval_tok, tok.pad_token_id, t.batch_size) if eval_tok else float("nan")
    say(f"Pérdida de validación del modelo base (sin adaptador): {base_eval:.4f}")

    opt, opt_name = _optimizer(recipe, [p for p in model.parameters() if p.requires_grad], device, say)
    batches_per_epoch = math.ceil(len(train_tok) / t.batch_size)
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / t.grad_accum))
    total_steps = t.max_steps or int(math.ceil(t.epochs * steps_per_epoch))
    sched = _scheduler(recipe, opt, total_steps)
    step = 0
    out_dir.mkdir(parents=True, exist_ok=True)
    best = BestKeeper(out_dir / CKPT_DIR, t.patience, t.min_delta)
    if ckpt is not None:
        set_peft_model_state_dict(model, load_file(str(ckpt / "adapter_model.safetensors")))
        opt.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
        sched.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
        state = json.loads((ckpt / "state.json").read_text())
        step = state["step"]
        best.restore(state.get("best"))
        torch.set_rng_state(torch.load(ckpt / "rng.pt", weights_only=True))
        O.truncate_log(out_dir, step)
        say(f"Reanudando desde {ckpt.name} (paso {step} de {total_steps})")
    else:
        (out_dir / O.LOG).write_text("", encoding="utf-8")

    def micro_batches(start_micro: int):
        """Deterministic order: epoch e shuffles with seed+e, so a resume skips exactly what was done."""
        m = 0
        epoch = 0
        while True:
            order = list(range(len(train_tok)))
            random.Random(t.seed + epoch).shuffle(order)
            for i in range(0, len(order), t.batch_size):
                if m >= start_micro:
                    yield epoch, [train_tok[j] for j in order[i:i + t.batch_size]]
                m += 1
            epoch += 1

    def save_checkpoint() -> Path:
        d = out_dir / CKPT_DIR / f"step-{step:06d}"
        tmp = d.with_name(d.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        torch.save(sched.state_dict(), tmp / "scheduler.pt")
        torch.save(torch.get_rng_state(), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "total_steps": total_steps, "best": best.state()}))
        shutil.rmtree(d, ignore_errors=True)
        tmp.rename(d)
        for old in sorted((out_dir / CKPT_DIR).glob("step-*"))[:-2]:  # keep the last two
            shutil.rmtree(old, ignore_errors=True)
        best.prune()
        return d

    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=step, desc=f"entrenando {out_dir.name}", unit="paso", disable=not progress)
    model.train()
    it = micro_batches(step * t.grad_accum)
    last_loss, last_eval = float("nan"), float("nan")
    interrupted = stopped = False
    try:
        while step < total_steps and not stopped:
            micro = [next(it)[1] for _ in range(t.grad_accum)]
            n_tokens = sum(sum(1 for x in ex.labels[1:] if x != D.IGNORE) for mb in micro for ex in mb)
            acc_loss = 0.0
            for mb in micro:  # loss = mean over every answer token of the whole optimizer step
                batch = {k: v.to(model.device) for k, v in D.collate(mb, tok.pad_token_id).items()}
                loss_sum, _ = answer_loss(model, batch, tok.eos_token_id, t.eos_weight)
                (loss_sum / n_tokens).backward()
                acc_loss += float(loss_sum.detach()) / n_tokens
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], t.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            last_loss = acc_loss
            rec = {"step": step, "epoch": round(step / steps_per_epoch, 3), "loss": round(acc_loss, 5),
                   "lr": sched.get_last_lr()[0], "elapsed_s": round(time.perf_counter() - t0, 1)}
            if step % t.eval_every == 0 or step == total_steps:
                if eval_tok:
                    last_eval = eval_loss(model, eval_tok, tok.pad_token_id, t.batch_size)
                    rec["eval_loss"] = round(last_eval, 5)
                    stopped = best.update(step, last_eval, model.save_pretrained)
                    rec["best_step"] = best.step
            O.append_log(out_dir, rec)
            bar.set_postfix(loss=f"{acc_loss:.3f}", eval=f"{last_eval:.3f}")
            bar.update(1)
            if step % t.save_every == 0 and step < total_steps and not stopped:
                save_checkpoint()
    except KeyboardInterrupt:
        interrupted = True
        d = save_checkpoint()
        bar.close()
        say(f"\nInterrumpido en el paso {step}: checkpoint en {d}. Continúe con --resume.")
        return TrainResult(out_dir, step, last_loss, last_eval, interrupted=True)
    bar.close()

    # ---- output: the best weights by held-out loss (or the last step's), and why
    last_step, last_train_eval = step, last_eval
    exported = step
    if t.export == "best" and best.step is not None and best.step != step:
        set_peft_model_state_dict(model, load_file(str(best.folder() / "adapter_model.safetensors")))
        exported, last_eval = best.step, best.loss
        last_loss = next((r["loss"] for r in O.read_log(out_dir) if r.get("step") == best.step), last_loss)
    elif t.export == "best" and best.step is not None:
        last_eval = best.loss
    reason = best.reason(last_step, stopped, t.export)
    say(f"Se exportan los pesos del paso {exported}: {reason}")
    model.save_pretrained(out_dir)  # adapter_config.json + adapter_model.safetensors
    public_base = P.public_base_name(recipe.model.source, recipe.output.base_model_name)
    P.write_portable(out_dir, tok, template, public_base)  # chat_template.jinja, tokenizer, generation_config.json
    recipe_dict = json.loads(recipe.model_dump_json())
    meta = {
        "template": template.name,
        "stop_strings": list(template.stop_strings),
        "description": recipe.output.description,
        "limits": recipe.output.limits,
        "base_source": recipe.model.source,
        "base_model": public_base,
        "base_fingerprint": base_fingerprint(base.path, base.source_sha256),
        "recipe": recipe_dict,
        "dataset_sha256": file_sha256(data_path),
        "examples_used": len(train_tok),
        "examples_dropped": dropped,
        "eval_examples": len(eval_tok),
        "eval_examples_dropped": eval_dropped,
        "steps": step,
        "epochs_done": step / steps_per_epoch,
        "exported_step": exported,
        "export_reason": reason,
        "stopped_early": stopped,
        "last_step_eval_loss": last_train_eval,
        "final_train_loss": last_loss,
        "final_eval_loss": last_eval,
        "base_eval_loss": base_eval,
        "wall_seconds": time.perf_counter() - t0,
        "device": device,
        "optimizer": opt_name,
        "torch": torch.__version__,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    O.write_meta(out_dir, meta)
    O.plot_losses(out_dir, f"{out_dir.name}: pérdida por paso", exported)
    O.write_card(out_dir, meta)
    shutil.rmtree(out_dir / CKPT_DIR, ignore_errors=True)
    say(f"Adaptador guardado en {out_dir} ({step} pasos, exportado el paso {exported}, pérdida {last_loss:.4f}, "
        f"validación {last_eval:.4f}, base {base_eval:.4f}, {meta['wall_seconds']:.0f} s)")
    return TrainResult(out_dir, step, last_loss, last_eval, interrupted, exported_step=exported, stopped_early=stopped)
