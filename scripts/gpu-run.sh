#!/usr/bin/env bash
# Runs the GPU suite bundled by scripts/gpu-bundle.sh, on a GPU host: every GPU test binary, then
# the GPU benches; logs go to $OUT (or gpu-bundle/out); a short table comes last.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
logs="${OUT:-$here/out}"
mkdir -p "$logs"
source "$here/env.sh"
export ENGINE_TEST_DATA="${ENGINE_TEST_DATA:-$here/data}"

declare -a rows
for t in $(cat "$here/tests.txt"); do
  start=$(date +%s)
  "$here/bin/$t" --test-threads=1 --nocapture > "$logs/$t.log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  summary=$(grep -E "^test result:" "$logs/$t.log" | tail -1 | sed -E 's/test result: //; s/; finished in.*//')
  skipped=$(grep -c "skipped:" "$logs/$t.log")
  status=$([ $rc -eq 0 ] && echo ok || echo FAILED)
  [ "$skipped" -gt 0 ] && status="$status (skipped $skipped)"
  rows+=("$(printf '%-26s %-16s %4ss  %s' "$t" "$status" "$secs" "${summary:-no summary}")")
  if [ $rc -ne 0 ]; then grep -E "panicked|relative error|differs|FAILED" "$logs/$t.log" | head -20; fi
done
for b in $(cat "$here/benches.txt"); do
  start=$(date +%s)
  "$here/bin/$b" --bench > "$logs/$b.log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  cat "$logs/$b.log"
  rows+=("$(printf '%-26s %-16s %4ss' "$b (bench)" "$([ $rc -eq 0 ] && echo ok || echo FAILED)" "$secs")")
done
echo
echo "GPU suite"
printf '%s\n' "${rows[@]}"
