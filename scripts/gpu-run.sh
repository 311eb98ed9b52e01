#!/usr/bin/env bash
# Runs the GPU suite bundled by scripts/gpu-bundle.sh, on a GPU host, in under 8 minutes: first the
# conformance micro-kernels (the GPU's results against the PTX emulator's, bit for bit where the
# PTX ISA defines them, so the first GPU run checks the emulator too), then every other GPU test
# binary, then the GPU benches in the time left. Each binary runs under a time limit; its row of
# the table is printed and appended to $OUT/table.txt as soon as it ends, so a run cut short still
# reports. Logs go to $OUT (or gpu-bundle/out).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
logs="${OUT:-$here/out}"
mkdir -p "$logs"
source "$here/env.sh"
export ENGINE_TEST_DATA="${ENGINE_TEST_DATA:-$here/data}"
export ENGINE_BIN="$here/bin/engine"
budget=${GPU_RUN_BUDGET_S:-450} # the whole run; a lease is ~15 minutes, and a rerun must fit
started=$(date +%s)
table="$logs/table.txt"
: > "$table"
left() { echo $(( budget - ($(date +%s) - started) )); }
row() { printf '%s\n' "$1" | tee -a "$table"; }

# Conformance first, then the rest in the bundle's order.
order=$( (grep -x cuda_parity_conformance "$here/tests.txt"; grep -vx cuda_parity_conformance "$here/tests.txt") )
for t in $order; do
  limit=$(( $(left) - 20 ))
  if [ "$limit" -le 10 ]; then row "$(printf '%-26s %-16s' "$t" "NOT RUN (time)")"; continue; fi
  start=$(date +%s)
  timeout "$limit" "$here/bin/$t" --test-threads=1 --nocapture > "$logs/$t.log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  summary=$(grep -E "^test result:" "$logs/$t.log" | tail -1 | sed -E 's/test result: //; s/; finished in.*//')
  skipped=$(grep -c "skipped:" "$logs/$t.log")
  case $rc in 0) status=ok ;; 124) status="TIMED OUT" ;; *) status=FAILED ;; esac
  [ "$skipped" -gt 0 ] && status="$status (skipped $skipped)"
  row "$(printf '%-26s %-16s %4ss  %s' "$t" "$status" "$secs" "${summary:-no summary}")"
  if [ $rc -ne 0 ]; then grep -E "panicked|relative error|differs|mismatch|FAILED" "$logs/$t.log" | head -20; fi
done
for b in $(cat "$here/benches.txt"); do
  limit=$(( $(left) - 5 ))
  if [ "$limit" -le 10 ]; then row "$(printf '%-26s %-16s' "$b (bench)" "NOT RUN (time)")"; continue; fi
  start=$(date +%s)
  timeout "$limit" "$here/bin/$b" --bench > "$logs/$b.log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  tail -40 "$logs/$b.log"
  case $rc in 0) status=ok ;; 124) status="TIMED OUT" ;; *) status=FAILED ;; esac
  row "$(printf '%-26s %-16s %4ss' "$b (bench)" "$status" "$secs")"
done
echo
echo "GPU suite ($(( $(date +%s) - started )) s of a ${budget} s budget)"
cat "$table"
