"""PyTorch's side of `cargo bench --bench cpu_gemm`: times torch.mm on the CPU for the shapes the
bench sends, so both run on the same machine, alternating. Out of CI.

Usage: python cpu_gemm_torch.py THREADS. Prints one line "torch VERSION THREADS BLAS", then for each
input line "M N K TA TB REPS" (TA/TB 1 when that operand is stored transposed) answers with the
median and the least seconds of one product over REPS calls. Exits 3 with a message when PyTorch is absent.
"""

import statistics
import sys
import time

try:
    import torch
except ImportError as e:
    print(f"PyTorch absent: {e}", flush=True)
    sys.exit(3)

threads = int(sys.argv[1])
torch.set_num_threads(threads)
blas = "MKL" if torch.backends.mkl.is_available() else "no MKL"
print(f"torch {torch.__version__} {torch.get_num_threads()} {blas}", flush=True)
torch.manual_seed(0)
cache = {}
for line in sys.stdin:
    m, n, k, ta, tb, reps = map(int, line.split())
    key = (m, n, k, ta, tb)
    if key not in cache:
        a = torch.randn(k, m).t() if ta else torch.randn(m, k)
        b = torch.randn(n, k).t() if tb else torch.randn(k, n)
        cache = {key: (a, b, torch.empty(m, n))}
    a, b, c = cache[key]
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b, out=c)
        times.append(time.perf_counter() - t)
    print(statistics.median(times), min(times), flush=True)
