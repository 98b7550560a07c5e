"""lm-evaluation-harness itself on a Belebele JSONL file: the reference esllm's lm-eval mode is checked against
(tests/test_belebele_lmeval_parity.py, bench/belebele_lmeval_parity.py).

    rows = run_lmeval(model_dir, "data/belebele/muestra-es.jsonl", workdir)   # [{"doc_id", "lls", "acc", …}]

The task is made from the installed package's own belebele template (lm_eval/tasks/belebele/
_default_template_yaml: doc_to_text, doc_to_choice, doc_to_target, metrics) with the data replaced by the local
file (`dataset_path: json`); lm-eval's `hf` model loads `model_dir` in `dtype`. It runs offline
(HF_HUB_OFFLINE=1, HF_DATASETS_OFFLINE=1) in a child process of `python`, the interpreter that has lm-eval
(`lm-eval==0.4.13`, requirements-dev.txt; its dependencies leave the project's pins as they are), so esllm never
imports it. What it does not know: any other lm-eval model type than `hf`, few-shot, chat templates.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from esllm import EsllmError

TASK = "belebele_esllm_local"
TEMPLATE_FILE = "lm_eval/tasks/belebele/_default_template_yaml"

# Run in the child process: lm-eval's Python API, one line per item (the log-likelihood of each choice).
_DRIVER = r"""
import importlib.metadata, json, sys
import lm_eval
from lm_eval.tasks import TaskManager
a = json.loads(sys.argv[1])
res = lm_eval.simple_evaluate(model="hf", model_args=a["model_args"], tasks=[a["task"]], batch_size=1,
                              device="cpu", task_manager=TaskManager(include_path=a["task_dir"]),
                              log_samples=True, bootstrap_iters=0)
def ll(r):
    while isinstance(r, (list, tuple)) and isinstance(r[0], (list, tuple)):
        r = r[0]
    return float(r[0])
rows = [{"doc_id": s["doc_id"], "lls": [ll(r) for r in s["filtered_resps"]], "acc": s["acc"],
         "acc_norm": s["acc_norm"]} for s in sorted(res["samples"][a["task"]], key=lambda s: s["doc_id"])]
json.dump({"version": importlib.metadata.version("lm_eval"), "rows": rows}, open(a["out"], "w"))
"""


def template_path(python: str = sys.executable) -> Path:
    """The installed belebele template of the lm-eval that `python` imports (without importing it here)."""
    code = "import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec('lm_eval').origin).parent)"
    r = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        raise EsllmError("lm-evaluation-harness no está instalado: `pip install -r requirements-dev.txt`.")
    return Path(r.stdout.strip()).parent / TEMPLATE_FILE


def write_task(jsonl: str | Path, folder: Path, python: str = sys.executable) -> Path:
    """A task folder with TASK: the installed template's fields, the data from `jsonl` (its "test" split)."""
    spec = yaml.safe_load(template_path(python).read_text(encoding="utf-8"))
    spec.update(task=TASK, dataset_path="json", dataset_kwargs={"data_files": {"test": str(Path(jsonl).resolve())}},
                test_split="test", fewshot_split="test")
    spec.pop("dataset_name", None)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{TASK}.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return folder


def run_lmeval(model_dir: str | Path, jsonl: str | Path, workdir: Path, *, dtype: str = "float32",
               python: str = sys.executable, timeout: float = 1800) -> dict[str, Any]:
    """lm-eval's result on every item of `jsonl`: {"version", "rows": [{"doc_id", "lls", "acc", "acc_norm"}]}."""
    task_dir = write_task(jsonl, workdir / "tasks", python)
    out = workdir / "lmeval.json"
    args = {"model_args": f"pretrained={Path(model_dir).resolve()},dtype={dtype}", "task": TASK,
            "task_dir": str(task_dir), "out": str(out)}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(workdir / "datasets"), "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run([python, "-c", _DRIVER, json.dumps(args)], capture_output=True, text=True, env=env,
                       timeout=timeout, cwd=workdir)
    if r.returncode != 0 or not out.is_file():
        raise EsllmError(f"lm-eval falló (código {r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(out.read_text(encoding="utf-8"))
