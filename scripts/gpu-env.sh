# Sourced by the GPU bundle's scripts (run.sh, step.sh), with $here set to the bundle: the kernel
# cache beside the binaries, and libnvrtc found (the CUDA toolkit's, or the PyPI wheel PyTorch
# brings); prints the commit, time, library and GPU.
export ENGINE_KERNEL_CACHE="${ENGINE_KERNEL_CACHE:-$here/kernel-cache}"

# libnvrtc: the toolkit's, or the PyPI wheel PyTorch brings.
if [ -z "${ENGINE_NVRTC_DIR:-}" ]; then
  for d in /usr/local/cuda/lib64 /usr/local/cuda-13.0/lib64 /usr/lib/x86_64-linux-gnu; do
    if ls "$d"/libnvrtc.so.1[23]* >/dev/null 2>&1; then export ENGINE_NVRTC_DIR="$d"; break; fi
  done
fi
if [ -z "${ENGINE_NVRTC_DIR:-}" ] && command -v python3 >/dev/null; then
  d=$(python3 - <<'PY' 2>/dev/null
import glob, os, site
for base in site.getsitepackages() + [site.getusersitepackages()]:
    for lib in glob.glob(os.path.join(base, "nvidia", "**", "libnvrtc.so.1[23]*"), recursive=True):
        print(os.path.dirname(lib)); raise SystemExit
PY
)
  [ -n "$d" ] && export ENGINE_NVRTC_DIR="$d"
fi
echo "commit $(cat "$here/commit.txt"), $(date -u +%FT%TZ), libnvrtc from ${ENGINE_NVRTC_DIR:-the loader path}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
