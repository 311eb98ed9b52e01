#!/usr/bin/env python3
"""Sets the engine's training steps (benches/gpu_step.rs) beside PyTorch's (benches/torch_step.py)
from the JSON records both append to one file, and checks the GPU-speed issue's targets.

Step times of the same (framework, mode, model, method) from several rounds are pooled and their
median taken. Model FLOP utilisation: (6 · matmul parameters · tokens + attention FLOPs) per step
over the step time, against the cuBLAS bf16 8192³ rate measured in the same run; matmul
parameters are the encoder's linear weights, L · (4H² + 2·H·I) (embedding lookups do no
multiply-adds); attention is 12 · L · H · T FLOPs per token (QKᵀ and PV, forward and backward).

usage: step_compare.py RECORDS.jsonl
"""

import json
import statistics
import sys
from collections import defaultdict


def load(path):
    pooled = defaultdict(list)
    meta, rate = {}, None
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r["framework"] == "cublas":
                rate = r["tflops"] if rate is None else max(rate, r["tflops"])
                continue
            key = (r["model"], r["framework"], r["mode"], r["method"])
            pooled[key].extend(r["times_ms"])
            meta[key] = r
    return pooled, meta, rate


def flops_per_step(r):
    layers, h, i = r["layers"], r["hidden"], r["intermediate"]
    tokens = r["encoder_passes"] * r["batch"] * r["len"]
    matmul_params = layers * (4 * h * h + 2 * h * i)
    return 6 * matmul_params * tokens + 12 * layers * h * r["len"] * tokens


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    pooled, meta, rate = load(sys.argv[1])
    if not pooled:
        sys.exit(f"step_compare: no step records in {sys.argv[1]}")
    med = {k: statistics.median(v) for k, v in pooled.items()}
    models = sorted({k[0] for k in med})
    checks = []

    def get(model, fw, method, mode=None):
        for (m, f, md, me), v in med.items():
            if m == model and f == fw and me == method and (mode is None or md == mode):
                return v, meta[(m, f, md, me)]
        return None, None

    def check(what, value, target, le=True):
        if value is None:
            checks.append(f"  {what:<46} not measured")
            return
        ok = value <= target if le else value >= target
        checks.append(f"  {what:<46} {value:7.3f}  target {'≤' if le else '≥'} {target:<5} {'met' if ok else 'MISSED'}")

    print(f"cuBLAS bf16 8192³: {rate:.0f} TFLOP/s" if rate else "cuBLAS rate: not measured (MFU left out)")
    for model in models:
        keys = sorted((k for k in med if k[0] == model), key=lambda k: (k[1] != "engine", k[2], k[3]))
        print(f"\n{model}")
        print(f"{'framework':<10} {'mode':<9} {'method':<12} {'steps':>6} {'median ms':>10} {'peak MB':>9} {'MFU':>6}")
        for k in keys:
            r = meta[k]
            # (LoRA steps skip the weight gradients: 6·N·tokens does not count their work)
            full = "lora" not in k[3]
            mfu = flops_per_step(r) / (med[k] * 1e-3) / (rate * 1e12) if rate and full else None
            peak = f"{r['peak_mb']:.0f}" if r.get("peak_mb") is not None else "-"
            print(f"{k[1]:<10} {k[2]:<9} {k[3]:<12} {len(pooled[k]):>6} {med[k]:>10.2f} {peak:>9} "
                  f"{(f'{mfu:.3f}' if mfu is not None else '-'):>6}")
        e = {m: get(model, "engine", m) for m in ("joint", "pcgrad", "lora", "pcgrad-lora")}
        eager = {m: get(model, "torch", m, "eager") for m in ("joint", "pcgrad", "lora")}
        comp, _ = get(model, "torch", "joint", "compile")
        ratio = lambda a, b: a / b if a is not None and b is not None else None
        (ej, ejr), (ep, _), (el, elr) = e["joint"], e["pcgrad"], e["lora"]
        checks.append(f"{model}:")
        big = "base" in model
        check("engine / PyTorch eager (joint step)", ratio(ej, eager["joint"][0]), 0.70 if big else 0.50)
        if big:
            check("engine / torch.compile (joint step)", ratio(ej, comp), 1.00)
            if rate and ej is not None:
                check("engine MFU (joint step)", flops_per_step(ejr) / (ej * 1e-3) / (rate * 1e12), 0.40, le=False)
        check("engine PCGrad / engine joint", ratio(ep, ej), 1.10)
        check("engine PCGrad / PyTorch PCGrad", ratio(ep, eager["pcgrad"][0]), 0.40)
        check("engine LoRA / engine full", ratio(el, ej), 0.75)
        check("engine LoRA / PyTorch+PEFT", ratio(el, eager["lora"][0]), 0.60)
        if ejr and elr and ejr.get("peak_mb") and elr.get("peak_mb"):
            check("engine LoRA peak memory / full", elr["peak_mb"] / ejr["peak_mb"], 0.65)
    print("\ntargets (GPU speed issue)")
    print("\n".join(checks))


if __name__ == "__main__":
    main()
