#!/usr/bin/env bash
# Retrain the shipped adapters with early stopping + EOS weight, measure them, and run the DPO demonstration.
#   nohup nice -n 19 bash bench/retrain_pipeline.sh > .cache/retrain/pipeline.log 2>&1 &
# Everything is written under .cache/retrain/ first (git-ignored). A shipped folder (adapters/NAME) is replaced
# only when its retrained version ends on EOS within 200 greedy tokens on >= 80% of its held-out prompts AND
# its held-out loss is below the base's (bench/eval_retrain.py); the old folder is kept as .cache/retrain/NAME.old.
# The figures go to bench/results/retrain_cpu.txt (+ .json per step). Nothing is committed.
set -u
cd "$(dirname "$0")/.."
S=.cache/retrain
mkdir -p "$S"
PY=.venv/bin/python
export OMP_NUM_THREADS=2
RES=bench/results/retrain_cpu.txt
say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$RES"; }

meets() {  # meets JSON NAME -> exit 0 when NAME has eos_share >= 0.8 and loss < base loss
  $PY - "$1" "$2" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))["rows"]
a, b = r[sys.argv[2]], r["base"]
ok = a.get("eos_share", 0) >= 0.8 and a["heldout_loss"] < b["heldout_loss"]
print(f"{sys.argv[2]}: EOS {a.get('eos_share', 0):.0%} (objetivo >= 80%), pérdida {a['heldout_loss']:.4f} vs base {b['heldout_loss']:.4f} -> {'CUMPLE' if ok else 'no cumple'}")
sys.exit(0 if ok else 1)
PYEOF
}

sft() {  # sft NAME RECIPE OVERRIDES...
  local name=$1 recipe=$2; shift 2
  rm -rf "$S/$name"
  say "SFT $name: $recipe $*"
  $PY -m esllm train "$recipe" "output.dir=$S/$name" training.threads=2 "$@" > "$S/$name.train.log" 2>&1 \
    || { say "SFT $name falló (ver $S/$name.train.log)"; return 1; }
  $PY - "$S/$name/esllm_adapter.json" <<'PYEOF' | tee -a "$RES"
import json, sys
m = json.load(open(sys.argv[1]))
print(f"  pasos {m['steps']}, exportado {m['exported_step']} ({m['export_reason']}); validación {m['final_eval_loss']:.4f}, base {m['base_eval_loss']:.4f}, {m['wall_seconds']:.0f} s")
PYEOF
  $PY bench/eval_retrain.py --set "$name" --no-base-generation --threads 2 \
    --adapter "reentrenado=$S/$name" --adapter "publicado=adapters/$name" --out "$S/$name.eval.json" 2>/dev/null | tee -a "$RES"
  cp "$S/$name.eval.json" "bench/results/retrain_$name.json"
  local verdict rc
  verdict=$(meets "$S/$name.eval.json" reentrenado); rc=$?
  echo "$verdict" | tee -a "$RES"
  if [ "$rc" = 0 ]; then
    rm -rf "$S/$name.old"; cp -r "adapters/$name" "$S/$name.old"
    rm -rf "adapters/$name"; cp -r "$S/$name" "adapters/$name"
    say "adapters/$name reemplazado (el anterior en $S/$name.old); sin commit"
  fi
}

say "=== reentrenamiento (nice 19, 2 hilos) ==="
sft tributario-ec configs/recipes/gemma-270m-cpu-tributario.yaml \
  training.learning_rate=0.0005 training.epochs=4 training.eos_weight=15 training.eval_every=3 training.save_every=3 \
  training.patience=4 training.export=best
sft instrucciones-es configs/recipes/gemma-270m-cpu-instrucciones.yaml \
  training.learning_rate=0.0003 training.epochs=3 training.eos_weight=15 training.eval_every=6 training.save_every=6 \
  training.patience=3 training.export=best

say "DPO sobre adapters/instrucciones-es (configs/recipes/gemma-270m-cpu-dpo.yaml)"
rm -rf "$S/instrucciones-es-dpo"
if $PY -m esllm train configs/recipes/gemma-270m-cpu-dpo.yaml "output.dir=$S/instrucciones-es-dpo" training.threads=2 \
    > "$S/dpo.train.log" 2>&1; then
  $PY bench/eval_retrain.py --set instrucciones-es --no-base-generation --threads 2 \
    --adapter "dpo=$S/instrucciones-es-dpo" --adapter "padre=adapters/instrucciones-es" --out "$S/dpo.eval.json" 2>/dev/null | tee -a "$RES"
  cp "$S/dpo.eval.json" bench/results/retrain_dpo.json
else
  say "DPO falló (ver $S/dpo.train.log)"
fi
say "=== fin ==="
