"""Checkpoints of the training loop (esllm/train/trainer.py): their folder (`CKPT_DIR`, pref.py's too), the
latest one to resume from, and the best weights by held-out loss that early stopping keeps (`BestKeeper`).

    checkpoints/step-000120/      adapter weights, optimizer.pt, scheduler.pt, rng.pt, state.json
    checkpoints/best-step-000080/ the best adapter weights so far
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, Optional

CKPT_DIR = "checkpoints"


def latest_checkpoint(out_dir: Path) -> Optional[Path]:
    """The newest complete `step-*` checkpoint (one with its state.json) under `out_dir`, or None."""
    ck = sorted((out_dir / CKPT_DIR).glob("step-*")) if (out_dir / CKPT_DIR).is_dir() else []
    ck = [c for c in ck if (c / "state.json").is_file()]
    return ck[-1] if ck else None


class BestKeeper:
    """Early stopping: the best held-out loss so far, its weights on disk, evaluations since it.

    The best weights live in `checkpoints/best-step-N/`; a regular checkpoint's state records the best
    it knew, so a resume restores the same best and count. Best folders no checkpoint refers to are pruned.
    """

    def __init__(self, ckpt_root: Path, patience: Optional[int], min_delta: float):
        self.root, self.patience, self.min_delta = ckpt_root, patience, min_delta
        self.step: Optional[int] = None
        self.loss = float("inf")
        self.bad = 0

    def state(self) -> dict:
        return {"step": self.step, "loss": self.loss if self.step is not None else None, "bad": self.bad}

    def restore(self, state: Optional[dict]) -> None:
        if state and state.get("step") is not None:
            self.step, self.loss, self.bad = state["step"], state["loss"], state["bad"]

    def folder(self, step: Optional[int] = None) -> Path:
        return self.root / f"best-step-{(self.step if step is None else step):06d}"

    def update(self, step: int, loss: float, save: Callable[[Path], None]) -> bool:
        """Record an evaluation; True when the run should stop (patience exhausted)."""
        if loss < self.loss - self.min_delta:
            self.step, self.loss, self.bad = step, loss, 0
            d = self.folder()
            shutil.rmtree(d, ignore_errors=True)
            save(d)
            self.prune()
        else:
            self.bad += 1
        return bool(self.patience) and self.bad >= self.patience

    def prune(self) -> None:
        keep = {self.step}
        for ck in self.root.glob("step-*"):
            if (ck / "state.json").is_file():
                keep.add((json.loads((ck / "state.json").read_text()).get("best") or {}).get("step"))
        for d in self.root.glob("best-step-*"):
            if int(d.name.rsplit("-", 1)[1]) not in keep:
                shutil.rmtree(d, ignore_errors=True)

    def reason(self, last_step: int, stopped: bool, export: str) -> str:
        if export == "last" or self.step is None:
            why = "export: last" if export == "last" else "sin evaluaciones de validación"
            return f"último paso ({last_step}): {why}"
        tail = (f"parada temprana en el paso {last_step} tras {self.bad} evaluaciones sin mejora (paciencia {self.patience})"
                if stopped else f"entrenamiento completo hasta el paso {last_step}")
        return f"mejor pérdida de validación ({self.loss:.4f}) en el paso {self.step}; {tail}"
