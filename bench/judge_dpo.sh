#!/usr/bin/env bash
# The DPO demonstration's judge comparison (issue 15): instrucciones-es-dpo vs its parent instrucciones-es vs the
# base, on the 34 held-out instructions of data/instrucciones-es/eval.json, graded by a judge model with both judge
# prompts (esllm's rubric prompt and the study's GPT-4 prompt). Everything runs through the app's own CLI.
#   bash bench/judge_dpo.sh            # ~1 h on 2 cores: DPO training (if not cached) + 102 answers + grading
# Trains configs/recipes/gemma-270m-cpu-dpo.yaml into .cache/retrain/instrucciones-es-dpo unless it is there, serves
# it beside copies of the shipped adapters from .cache/retrain/adapters-judge (ESLLM_ADAPTERS_DIR: adapters/ keeps
# only what ships; this adapter is not shipped), keeps its own database in
# .cache/retrain/judge_dpo.sqlite3, and writes bench/results/judge_dpo_cpu.txt. The judge is gemma-tributario (the
# other shipped adapter: a contestant should not grade its own answers), a 270M model: read its figures with that.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
S=.cache/retrain
RES=bench/results/judge_dpo_cpu.txt
JUDGE=gemma-tributario
NEW="gemma-3-270m + instrucciones-es-dpo"
mkdir -p "$S"
export ESLLM_DATABASE_URL="sqlite:///$PWD/$S/judge_dpo.sqlite3" OMP_NUM_THREADS=2
say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$RES"; }
: > "$RES"
say "bench/judge_dpo.sh; commit $(git rev-parse --short HEAD)"
if [ ! -f "$S/instrucciones-es-dpo/esllm_adapter.json" ]; then
  say "DPO: configs/recipes/gemma-270m-cpu-dpo.yaml -> $S/instrucciones-es-dpo"
  rm -rf "$S/instrucciones-es-dpo"
  $PY -m esllm train configs/recipes/gemma-270m-cpu-dpo.yaml "output.dir=$S/instrucciones-es-dpo" \
    > "$S/dpo.train.log" 2>&1
  tail -1 "$S/dpo.train.log" | tee -a "$RES"
fi
A="$S/adapters-judge"  # the shipped adapters + the DPO one, apart from adapters/ (which keeps what ships)
rm -rf "$A"; mkdir -p "$A"
cp -r adapters/instrucciones-es adapters/tributario-ec "$S/instrucciones-es-dpo" "$A"/
rm -rf "$A"/instrucciones-es-dpo/checkpoints
export ESLLM_ADAPTERS_DIR="$PWD/$A"
rm -f "$S"/judge_dpo.sqlite3*
$PY - > "$S/heldout.jsonl" <<'PYEOF'
import json
d = json.load(open("data/instrucciones-es/eval.json", encoding="utf-8"))
for i, ex in enumerate(d["data"], 1):
    text = ex["instruction"] + (("\n\n" + ex["input"]) if ex.get("input") else "")
    print(json.dumps({"id": f"h{i:02d}", "category": "instrucciones", "text": text, "reference": ex["output"]},
                     ensure_ascii=False))
PYEOF
$PY -m esllm prompts import "$S/heldout.jsonl" --name instrucciones-heldout | tee -a "$RES"
echo "clave-de-banco-de-pruebas" | $PY -m esllm users add --role rater --password-stdin nadie > /dev/null
t0=$(date +%s)
$PY -m esllm generate --set instrucciones-heldout --contestants "$NEW" gemma-instrucciones gemma-base \
  --attempts 1 --max-new-tokens 200 2>&1 | tail -3 | tee -a "$RES"
say "answers: $(( $(date +%s) - t0 )) s"
$PY -m esllm sessions create --set instrucciones-heldout --contestants "$NEW" gemma-instrucciones gemma-base \
  --raters nadie --k 1 dpo-vs-padre | tee -a "$RES"
for prompt in esllm estudio; do
  t0=$(date +%s)
  $PY -m esllm judge --session dpo-vs-padre --judge "$JUDGE" --prompt "$prompt" 2>&1 | tail -4 | tee -a "$RES"
  say "judge ($prompt prompt): $(( $(date +%s) - t0 )) s"
done
rm -rf "$S/judge_dpo_export"
$PY -m esllm export dpo-vs-padre --out "$S/judge_dpo_export" > /dev/null
for f in "$S"/judge_dpo_export/tabla_*.md; do
  case "$f" in *tabla_estudio*) continue ;; esac
  echo "## $(basename "$f")" | tee -a "$RES"; cat "$f" | tee -a "$RES"; echo | tee -a "$RES"
done
$PY - "$S/judge_dpo.sqlite3" <<'PYEOF' | tee -a "$RES"
# End-on-EOS share and mean length of the stored answers, per contestant (what the judge read).
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rows = db.execute("""select c.name, count(*), avg(a.ended_on_eos), avg(a.new_tokens) from answer a
                     join contestant c on c.id = a.contestant_id group by c.name order by c.name""").fetchall()
print("# stored answers (contrastive preset, <= 200 new tokens): contestant, n, ended on EOS, mean new tokens")
for name, n, eos, toks in rows:
    print(f"{name:40s} {n:3d}  EOS {eos:.0%}  {toks:.1f} tokens")
PYEOF
say "fin"
