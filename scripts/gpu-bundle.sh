#!/usr/bin/env bash
# Builds the GPU suite on this machine (no GPU needed) and bundles what a GPU host needs into
# gpu-bundle/ (git-ignored): the GPU test binaries, the GPU benches and run.sh. The GPU host needs
# no Rust and no network, only the NVIDIA driver and libnvrtc (a CUDA toolkit, or the PyPI wheel
# that PyTorch brings). There, run everything with one command:
#     bash gpu-bundle/run.sh
# and the training-step comparison with PyTorch (it needs PyTorch, transformers and PEFT) with
#     bash gpu-bundle/step.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=gpu-bundle
rm -rf "$out"
mkdir -p "$out/bin"

# Test binaries of the GPU suite (every tests/cuda_parity*.rs, so that a new one is never left
# out), and the GPU benches, by name.
mapfile -t tests < <(echo kernels_compile; cd tests && ls cuda_parity*.rs | sed 's/\.rs$//')
benches=(gpu_gemm gpu_memory)
# The training-step comparison with PyTorch (step.sh), run apart from the suite.
step_bench=gpu_step

trap 'echo "gpu-bundle: failed (line $LINENO)" >&2' ERR
list_executables() { # cargo arguments → "name path" lines of the built executables
  cargo "$@" --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])'
}

echo "gpu-bundle: building the test and bench binaries (release)"
cargo test --release --no-run >/dev/null
cargo bench --no-run >/dev/null
{ list_executables test --release; list_executables bench; } | sort -u > "$out/.executables"
for name in "${tests[@]}" "${benches[@]}" "$step_bench"; do
  path=$(awk -v n="$name" '$1 == n { print $2; exit }' "$out/.executables")
  if [ -z "$path" ]; then
    echo "gpu-bundle: no executable for $name" >&2
    exit 1
  fi
  cp "$path" "$out/bin/$name"
  # All symbols go: seventeen statically linked binaries must fit the 64 MiB carry.
  strip --strip-all "$out/bin/$name" 2>/dev/null || true
done
rm "$out/.executables"
# The CLI itself, for the test that runs `engine finetune` (run.sh names it in ENGINE_BIN).
cargo build --release --bin engine >/dev/null
cp "${CARGO_TARGET_DIR:-target}/release/engine" "$out/bin/engine"
strip --strip-all "$out/bin/engine" 2>/dev/null || true
printf '%s\n' "${tests[@]}" > "$out/tests.txt"
printf '%s\n' "${benches[@]}" > "$out/benches.txt"
git rev-parse --short HEAD > "$out/commit.txt" 2>/dev/null || echo unknown > "$out/commit.txt"
# Slices of the CS224N files for the short fine-tuning runs (tests/common/runs.rs).
mkdir -p "$out/data"
for f in data/*.csv; do head -n 201 "$f" > "$out/data/$(basename "$f")"; done
cp scripts/gpu-run.sh "$out/run.sh"
cp scripts/gpu-step.sh "$out/step.sh"
cp scripts/gpu-env.sh "$out/env.sh"
cp benches/torch_step.py benches/step_compare.py "$out/"
cp -r benches/configs "$out/configs"
chmod +x "$out/run.sh" "$out/step.sh"
size=$(du -sm "$out" | cut -f1)
echo "gpu-bundle: $out holds $(ls "$out/bin" | wc -l) binaries, ${size} MiB"
if [ "$size" -ge 60 ]; then
  echo "gpu-bundle: over the 60 MiB budget" >&2
  exit 1
fi
