#!/usr/bin/env python3
"""Writes the PTX NVRTC makes of every kernels/*.cu (compute_90, the engine's options) to a folder,
for reading it, and for the PTX emulator's opt-in tests and bench: PTXEMU_PTX_DIR=that folder.

    scripts/dump-ptx.py [OUT_DIR]      (default /tmp/ptx; needs .cache/nvrtc from scripts/test.sh)
"""
import ctypes, os, sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
lib = os.path.join(root, ".cache/nvrtc/nvidia/cu13/lib")
out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/ptx"
ctypes.CDLL(os.path.join(lib, "libnvrtc-builtins.so.13.0"), mode=ctypes.RTLD_GLOBAL)
nvrtc = ctypes.CDLL(os.path.join(lib, "libnvrtc.so.13"))
kdir = os.path.join(root, "kernels")
headers = sorted(f for f in os.listdir(kdir) if f.endswith(".cuh"))
sources = [open(os.path.join(kdir, h), "rb").read() for h in headers]
# As src/device/nvrtc.rs compiles them (OPTIONS there).
options = [b"--gpu-architecture=compute_90", b"--std=c++17", b"-lineinfo", b"--fmad=false"]
os.makedirs(out, exist_ok=True)
for f in sorted(os.listdir(kdir)):
    if not f.endswith(".cu"):
        continue
    prog = ctypes.c_void_p()
    n = len(headers)
    nvrtc.nvrtcCreateProgram(ctypes.byref(prog), open(os.path.join(kdir, f), "rb").read(), f.encode(), n,
                             (ctypes.c_char_p * n)(*sources), (ctypes.c_char_p * n)(*[h.encode() for h in headers]))
    rc = nvrtc.nvrtcCompileProgram(prog, len(options), (ctypes.c_char_p * len(options))(*options))
    if rc != 0:
        sys.exit(f"{f}: NVRTC error {rc}")
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size))
    buf = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetPTX(prog, buf)
    open(os.path.join(out, f.replace(".cu", ".ptx")), "wb").write(buf.value)
    print(f"{f}: {size.value} bytes of PTX")
