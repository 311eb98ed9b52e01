#!/usr/bin/env python3
"""PyTorch's version of the engine's multi-task training step (benches/gpu_step.rs), timed alike.

The same step as the engine's reference recipe: one BERT (transformers' BertModel, SDPA
attention) shared by SST (5 classes, cross-entropy), Quora (binary, BCE with logits) and STS
(regression, MSE), pairs read jointly, mean pooling, dropout 0.1 and one linear layer per task;
each task's forward and backward in turn, then one fused AdamW step (lr 1e-4, weight decay 0.01).
bf16 autocast over float32 master weights; `--mode compile` wraps the model in torch.compile.
Methods: joint; pcgrad (Yu et al. 2020 as PyTorch code does it: each task's encoder gradient
flattened and copied, the projections on those vectors in a random order, the sum written
back); lora (PEFT, r 8, alpha 8, query and value, the encoder frozen); pcgrad-lora.

Each step is timed on the host clock from the batch's copy to the GPU until the GPU is idle
again; median of --steps after --warmup. Peak memory: what the caching allocator held from the
GPU at most (max_memory_reserved), from before the model was loaded; max_memory_allocated too.

Also: --make-random CONFIG OUT writes a randomly initialised BertModel of CONFIG as a Hugging Face
folder (config.json + model.safetensors) that both frameworks load; --matmul-rate times the
8192³ bf16 matrix product (the MFU yardstick).
"""

import argparse
import json
import os
import random
import statistics
import sys
import time


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="a Hugging Face BERT folder")
    p.add_argument("--name", help="the model's name in the output (default: the folder's name)")
    p.add_argument("--mode", choices=["eager", "compile"], default="eager")
    p.add_argument("--batch", type=int, default=32, help="sequences per task per step")
    p.add_argument("--len", type=int, default=128, help="tokens per sequence")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--methods", default="joint,pcgrad,lora,pcgrad-lora")
    p.add_argument("--json", help="append one JSON record per method here")
    p.add_argument("--make-random", nargs=2, metavar=("CONFIG", "OUT"))
    p.add_argument("--matmul-rate", action="store_true")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    methods = args.methods.split(",")
    bad = [m for m in methods if m not in ("joint", "pcgrad", "lora", "pcgrad-lora")]
    if bad:
        p.error(f"--methods: unknown method {bad[0]!r} (joint, pcgrad, lora, pcgrad-lora)")
    if not (args.make_random or args.matmul_rate or args.model):
        p.error("give --model, --make-random or --matmul-rate")
    if args.steps < 1:
        p.error("--steps must be at least 1")
    args.methods = methods
    return args


def emit(args, record):
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(record) + "\n")


def make_random(config_path, out, seed):
    import torch
    from transformers import BertConfig, BertModel

    if os.path.exists(os.path.join(out, "model.safetensors")):
        print(f"torch_step: {out} is already there")
        return
    torch.manual_seed(seed)
    model = BertModel(BertConfig.from_json_file(config_path), add_pooling_layer=False)
    tmp = out + ".tmp"  # written whole, then renamed: never half a folder
    model.save_pretrained(tmp, safe_serialization=True)
    os.replace(tmp, out)
    n = sum(p.numel() for p in model.parameters())
    print(f"torch_step: wrote {out} ({n / 1e6:.1f}M parameters, random, seed {seed})")


def matmul_rate(args):
    import torch

    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    ms = statistics.median(times)
    tflops = 2 * n**3 / (ms * 1e-3) / 1e12
    print(f"cuBLAS bf16 {n}³ on {torch.cuda.get_device_name()}: {ms:.3f} ms, {tflops:.0f} TFLOP/s")
    emit(args, {"framework": "cublas", "what": "bf16 8192^3 matmul", "ms": ms, "tflops": tflops,
                "device": torch.cuda.get_device_name()})


TASKS = [("sst", 5), ("quora", 1), ("sts", 1)]


def build(args, method):
    import torch
    from torch import nn
    from transformers import BertModel

    bert = BertModel.from_pretrained(args.model, attn_implementation="sdpa", add_pooling_layer=False,
                                     dtype=torch.float32)
    config = bert.config
    if "lora" in method:
        from peft import LoraConfig, get_peft_model

        bert = get_peft_model(bert, LoraConfig(r=8, lora_alpha=8, lora_dropout=0.0,
                                               target_modules=["query", "value"]))
    hidden = config.hidden_size

    class MultiTask(nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert
            self.drop = nn.Dropout(0.1)
            self.heads = nn.ModuleList([nn.Linear(hidden, k) for _, k in TASKS])

        def forward(self, task: int, ids, types, mask, labels):
            h = self.bert(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)
            out = self.heads[task](self.drop(pooled))
            if task == 0:
                return nn.functional.cross_entropy(out.float(), labels)
            if task == 1:
                return nn.functional.binary_cross_entropy_with_logits(out.float().squeeze(-1), labels)
            return nn.functional.mse_loss(out.float().squeeze(-1), labels)

    model = MultiTask().cuda().train()
    shared = [p for p in model.bert.parameters() if p.requires_grad]
    heads = [p for p in model.heads.parameters()]
    opt = torch.optim.AdamW(shared + heads, lr=1e-4, weight_decay=0.01, fused=True)
    step_fn = torch.compile(model) if args.mode == "compile" else model
    return model, step_fn, shared, opt, config


def batches(args, vocab, gen):
    """One step's batches on the host, as the engine's bench makes them: random ids, [CLS] … [SEP],
    a second [SEP] mid-row and type ids 1 after it for the pair tasks, no padding."""
    import torch

    out = []
    b, t = args.batch, args.len
    for i, (name, k) in enumerate(TASKS):
        ids = torch.randint(1000, vocab, (b, t), generator=gen)
        ids[:, 0], ids[:, -1] = 101, 102
        types = torch.zeros(b, t, dtype=torch.long)
        if name != "sst":
            ids[:, t // 2] = 102
            types[:, t // 2 + 1:] = 1
        mask = torch.ones(b, t, dtype=torch.long)
        if name == "sst":
            labels = torch.randint(0, 5, (b,), generator=gen)
        elif name == "quora":
            labels = torch.randint(0, 2, (b,), generator=gen).float()
        else:
            labels = torch.rand(b, generator=gen) * 5
        out.append((i, ids, types, mask, labels))
    return out


def pcgrad_combine(shared, grads, rng):
    """The textbook surgery on flattened task gradients: for each task, the others in a random
    order, projecting out conflicting components against the original gradients; the sum is
    written back into the shared parameters' .grad."""
    import torch

    projected = []
    for i, g in enumerate(grads):
        gp = g.clone()
        others = [j for j in range(len(grads)) if j != i]
        rng.shuffle(others)
        for j in others:
            dot = torch.dot(gp, grads[j])
            if dot < 0:
                gp -= dot / grads[j].dot(grads[j]).clamp(min=1e-20) * grads[j]
        projected.append(gp)
    total = torch.stack(projected).sum(0)
    offset = 0
    for p in shared:
        n = p.numel()
        p.grad = total[offset:offset + n].view_as(p).clone()
        offset += n


def run_method(args, method):
    import torch

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before_reserved = torch.cuda.memory_reserved()
    model, step_fn, shared, opt, config = build(args, method)
    vocab = config.vocab_size
    gen = torch.Generator().manual_seed(args.seed)
    rng = random.Random(args.seed)
    pcgrad = method.startswith("pcgrad")

    def step(host):
        opt.zero_grad(set_to_none=True)
        grads = []
        for task, ids, types, mask, labels in host:
            ids, types, mask, labels = (x.cuda(non_blocking=True) for x in (ids, types, mask, labels))
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = step_fn(task, ids, types, mask, labels)
            loss.backward()
            if pcgrad:
                grads.append(torch.cat([p.grad.reshape(-1) for p in shared]))
                for p in shared:
                    p.grad = None
        if pcgrad:
            pcgrad_combine(shared, grads, rng)
        opt.step()

    times = []
    for i in range(args.warmup + args.steps):
        host = batches(args, vocab, gen)
        torch.cuda.synchronize()
        start = time.perf_counter()
        step(host)
        torch.cuda.synchronize()
        if i >= args.warmup:
            times.append((time.perf_counter() - start) * 1e3)
    peak_reserved = (torch.cuda.max_memory_reserved() - before_reserved) / 1e6
    peak_allocated = torch.cuda.max_memory_allocated() / 1e6
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    del model, step_fn, shared, opt
    return times, peak_reserved, peak_allocated, trainable, config


def main():
    args = parse()
    if args.make_random:
        make_random(*args.make_random, args.seed)
        return
    import torch

    if not torch.cuda.is_available():
        sys.exit("torch_step: no CUDA GPU visible to PyTorch")
    if args.matmul_rate:
        matmul_rate(args)
        if not args.model:
            return
    name = args.name or os.path.basename(os.path.normpath(args.model))
    print(f"PyTorch {torch.__version__} training step ({args.mode}, bf16 autocast): {name} on "
          f"{torch.cuda.get_device_name()}, batch {args.batch} per task, {args.len} tokens, 3 tasks "
          f"(3 encoder passes), median of {args.steps} steps after {args.warmup}")
    print(f"{'method':<14} {'median ms':>10} {'p10 ms':>10} {'p90 ms':>10} {'min ms':>10} {'tokens/s':>12} {'peak MB':>12}")
    for method in args.methods:
        times, reserved, allocated, trainable, config = run_method(args, method)
        s = sorted(times)
        q = lambda f: s[round((len(s) - 1) * f)]
        median = q(0.5)
        tokens = 3 * args.batch * args.len
        print(f"{method:<14} {median:>10.2f} {q(0.1):>10.2f} {q(0.9):>10.2f} {s[0]:>10.2f} "
              f"{tokens / (median * 1e-3):>12.0f} {reserved:>12.0f}")
        emit(args, {
            "framework": "torch", "mode": args.mode, "model": name, "method": method,
            "device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "batch": args.batch, "len": args.len, "tasks": 3, "encoder_passes": 3,
            "layers": config.num_hidden_layers, "hidden": config.hidden_size,
            "intermediate": config.intermediate_size, "trainable": trainable,
            "median_ms": median, "times_ms": times, "peak_mb": reserved, "peak_allocated_mb": allocated,
        })


if __name__ == "__main__":
    main()
