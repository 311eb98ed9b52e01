#!/usr/bin/env bash
# The GPU-speed comparison in one command, on a GPU host with PyTorch, transformers and PEFT
# (bundled by scripts/gpu-bundle.sh as step.sh):
#     bash gpu-bundle/step.sh [ROUNDS] [STEPS]        (defaults: 2 rounds of 50 timed steps)
# The engine's training step (bin/gpu_step) and PyTorch's (torch_step.py: eager for every
# method, torch.compile for the joint step), alternated model by model in each round, on
# randomly initialised checkpoints of MiniLM's and BERT-base's configurations that
# torch_step.py writes once and both load (step times do not depend on the weights' values);
# the cuBLAS bf16 8192³ rate first, for the MFU. Batch 32 per task, 128 tokens, three tasks.
# Records go to $OUT/step.jsonl (or gpu-bundle/out), logs beside them; step_compare.py's table
# and the issue's targets come last.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
logs="${OUT:-$here/out}"
rounds="${1:-2}"
steps="${2:-50}"
models_dir="${STEP_MODELS:-/tmp/engine-step-models}"
mkdir -p "$logs" "$models_dir"
source "$here/env.sh"
export PYTHONUNBUFFERED=1
records="$logs/step.jsonl"
rm -f "$records"
models=(all-MiniLM-L6-v2 bert-base-uncased)

for m in "${models[@]}"; do
  python3 "$here/torch_step.py" --make-random "$here/configs/$m.json" "$models_dir/$m" || exit 1
done
python3 "$here/torch_step.py" --matmul-rate --json "$records" || exit 1
for round in $(seq "$rounds"); do
  for m in "${models[@]}"; do
    echo "== round $round/$rounds, $m"
    "$here/bin/gpu_step" --model "$models_dir/$m" --name "$m" --steps "$steps" --json "$records" 2>&1 | tee -a "$logs/step-engine.log"
    python3 "$here/torch_step.py" --model "$models_dir/$m" --name "$m" --mode eager --steps "$steps" --json "$records" 2>&1 | tee -a "$logs/step-torch.log"
    python3 "$here/torch_step.py" --model "$models_dir/$m" --name "$m" --mode compile --methods joint --steps "$steps" --json "$records" 2>&1 | tee -a "$logs/step-torch.log"
  done
done
echo
python3 "$here/step_compare.py" "$records" | tee "$logs/step-compare.txt"
