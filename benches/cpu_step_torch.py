#!/usr/bin/env python3
"""PyTorch's side of `cargo bench --bench cpu_step`: the same multi-task training step on the CPU.

transformers' BertModel (no pooler, float32, the attention implementation transformers picks by
default: SDPA) loaded from the checkpoint folder (--model; --random builds a randomly initialised
model of MiniLM's shape instead, as the engine's bench does when the checkpoint is not fetched),
in train mode (the config's dropout, 0.1). Batch 16 per task, 32 tokens, all real: random ids in
[1000, vocab) with [CLS]=101 first and [SEP]=102 last, token types 0, attention mask all ones.
Five encoder passes per step, each task's forward and backward in turn:
  SST    masked mean pooling, dropout 0.1, linear(5), cross-entropy (label 2);
  Quora  linear(1) on [u, v, |u-v|, u*v] of the mean-pooled a and b, BCE with logits (label 1);
  STS    5 * cos(mean a, mean b), MSE (label 2.5);
then one torch.optim.AdamW step (lr 1e-4, weight decay 0.01, foreach/fused left to PyTorch's
default) over every parameter. The gradients are cleared with PyTorch's default zero_grad().

Timing: the host clock around each step (zero_grad to the end of AdamW), split into forward (the
batch's creation included, as on the engine), backward and AdamW; the median step of --steps after
--warmup, with that step's split. Prints one human line; --json FILE appends a JSON record.
"""

import argparse
import json
import sys
import time

B, T = 16, 32
CLS, SEP = 101, 102


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="weights/all-MiniLM-L6-v2", help="a Hugging Face BERT folder")
    p.add_argument("--random", action="store_true",
                   help="a randomly initialised MiniLM-shaped model instead of --model")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--steps", type=int, default=10, help="steps timed (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", help="append one JSON record here")
    args = p.parse_args()
    if args.steps < 1:
        p.error("--steps must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must be at least 0")
    if args.threads < 1:
        p.error("--threads must be at least 1")
    return args


def main():
    args = parse()
    try:
        import torch
        import transformers
        from torch import nn
        from torch.nn import functional as F
        from transformers import BertConfig, BertModel
    except ImportError as e:
        print(f"cpu_step_torch: PyTorch or transformers absent: {e}", file=sys.stderr)
        sys.exit(3)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.random:
        cfg = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                         intermediate_size=1536, max_position_embeddings=512)
        bert = BertModel(cfg, add_pooling_layer=False)
        source = "a random MiniLM-shaped model"
    else:
        bert = BertModel.from_pretrained(args.model, add_pooling_layer=False, dtype=torch.float32)
        source = args.model
    attention = getattr(bert.config, "_attn_implementation", None) or "?"
    vocab, hidden = bert.config.vocab_size, bert.config.hidden_size

    def head(out, inp):
        lin = nn.Linear(inp, out)
        nn.init.normal_(lin.weight, std=0.02)
        nn.init.zeros_(lin.bias)
        return lin

    sst, para = head(5, hidden), head(1, 4 * hidden)
    drop = nn.Dropout(0.1)
    modules = nn.ModuleList([bert, sst, para, drop]).train()
    opt = torch.optim.AdamW(modules.parameters(), lr=1e-4, weight_decay=0.01)

    def encode():
        ids = torch.randint(1000, vocab, (B, T))
        ids[:, 0] = CLS
        ids[:, -1] = SEP
        types = torch.zeros(B, T, dtype=torch.long)
        mask = torch.ones(B, T, dtype=torch.long)
        h = bert(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)  # the masked mean

    def task_loss(task):
        if task == 0:
            logits = sst(drop(encode()))
            return F.cross_entropy(logits, torch.full((B,), 2, dtype=torch.long))
        u, v = encode(), encode()
        if task == 1:
            logits = para(torch.cat([u, v, (u - v).abs(), u * v], dim=-1)).squeeze(-1)
            return F.binary_cross_entropy_with_logits(logits, torch.ones(B))
        return F.mse_loss(5.0 * F.cosine_similarity(u, v, dim=-1), torch.full((B,), 2.5))

    def step():
        start = time.perf_counter()
        opt.zero_grad()
        fwd = bwd = 0.0
        for task in range(3):
            t0 = time.perf_counter()
            loss = task_loss(task)
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            fwd += t1 - t0
            bwd += t2 - t1
        t3 = time.perf_counter()
        opt.step()
        end = time.perf_counter()
        return end - start, fwd, bwd, end - t3

    for _ in range(args.warmup):
        step()
    steps = sorted((step() for _ in range(args.steps)), key=lambda s: s[0])
    total, fwd, bwd, adam = steps[len(steps) // 2]  # the engine's pick: the upper median

    rec = {"side": "pytorch", "median_ms": total * 1e3, "forward_ms": fwd * 1e3, "backward_ms": bwd * 1e3,
           "adamw_ms": adam * 1e3, "steps": args.steps, "threads": torch.get_num_threads(),
           "torch": torch.__version__, "transformers": transformers.__version__, "attention": attention}
    print(f"PyTorch {torch.__version__} (transformers {transformers.__version__}, attention {attention}, "
          f"{source}), {rec['threads']} threads: median step {rec['median_ms']:.1f} ms: forward "
          f"{rec['forward_ms']:.1f} ms, backward {rec['backward_ms']:.1f} ms, AdamW {rec['adamw_ms']:.1f} ms "
          f"({args.steps} steps after {args.warmup} warm-up)", flush=True)
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
