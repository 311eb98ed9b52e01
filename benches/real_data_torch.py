#!/usr/bin/env python3
"""PyTorch's side of the real-data comparison (benches/real_data_compare.sh): the engine's
reference recipe as users run it in PyTorch, on the engine's own batches.

transformers' BertModel (eager, its default attention) from the checkpoint folder, shared by
SST (5 classes, cross-entropy), Quora (binary, BCE with logits) and STS (a linear regression head,
MSE against the 0-5 score, no scaling), pairs read jointly ([CLS] a [SEP] b [SEP]), mean pooling
over the attention mask, dropout 0.1 before each linear head, the encoder's own dropout in training
mode; one step = one batch of 16 of every task (round-robin), each task's forward and backward in
turn, then one AdamW step (lr 1e-4, weight decay 0.01, PyTorch's default CPU implementation) at
the learning rate of 10% warmup then linear decay over the epoch's steps (Hugging Face's
get_linear_schedule_with_warmup arithmetic). The batches are the engine's (benches/real_data_plan.py
ports its sampler), tokenized inside the step as the engine does, truncated to 128 tokens and
padded to each batch's longest.

Timing: the host clock at the end of every step; seconds per 100 steps from the end of step 1 to
the end of step N (so start-up and the first step are left out, as the engine's metrics.jsonl
elapsed_s are read). Then, unless --profile-steps 0, a few more steps under torch.profiler for the
GEMMs' share of a step (aten::mm/addmm/bmm/baddbmm self CPU time over the steps' wall time; a
fused SDPA kernel's own time, if one runs, is reported apart).

--count-tokens only walks the plan: the real (unpadded) and padded token counts of N steps, JSON.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import real_data_plan as plan  # noqa: E402


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="weights/all-MiniLM-L6-v2")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--steps", type=int, default=100, help="steps to run (N)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epoch-steps", type=int, default=0,
                   help="the LR schedule's length (default: one epoch of the plan, 875 on data/)")
    p.add_argument("--profile-steps", type=int, default=3)
    p.add_argument("--count-tokens", action="store_true")
    p.add_argument("--json", help="write the result here")
    args = p.parse_args()
    args.data_dir_is_default = os.path.realpath(args.data_dir) == os.path.realpath(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data"))
    if args.steps < 2:
        p.error("--steps must be at least 2 (the time is taken from step 1 to step N)")
    return args


def encode(tok, task, examples, max_len=128):
    a = [e[1] for e in examples]
    kw = dict(padding="longest", truncation="longest_first", max_length=max_len, return_tensors="pt")
    if task == "sst":
        return tok(a, **kw)
    return tok(a, [e[2] for e in examples], **kw)


def count_tokens(args, tok, data):
    real = padded = 0
    per_task = {t: [0, 0] for t in plan.TASKS}
    first = None
    for step in range(args.steps):
        if step == 1:
            first = {"real": real, "padded": padded}
        for task, ex in plan.step_batches(data, step):
            m = encode(tok, task, ex)["attention_mask"]
            r, p = int(m.sum()), m.numel()
            real, padded = real + r, padded + p
            per_task[task][0] += r
            per_task[task][1] += p
    return {"steps": args.steps, "real_tokens": real, "padded_tokens": padded, "first_step": first,
            "per_task": {t: {"real": r, "padded": p} for t, (r, p) in per_task.items()}}


def main():
    args = parse()
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model, use_fast=True)
    data = plan.load(args.data_dir)
    if args.count_tokens:
        out = count_tokens(args, tok, data)
        out["sizes"] = {t: len(v) for t, v in data.items()}
        want = plan.ENGINE_TOKENS.get(args.steps)
        if want is not None and args.data_dir_is_default:
            # the engine's own tokenizer's counts on these batches (benches/real_data_plan.py)
            out["engine_tokens_agree"] = want == out["per_task"]
            if not out["engine_tokens_agree"]:
                print(f"real_data_torch: token counts {out['per_task']} differ from the engine's {want}",
                      file=sys.stderr)
        print(json.dumps(out))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(out, f)
        return

    from torch import nn
    from transformers import BertModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(plan.SEED)
    bert = BertModel.from_pretrained(args.model, add_pooling_layer=False, dtype=torch.float32)
    hidden = bert.config.hidden_size
    widths = {"sst": 5, "quora": 1, "sts": 1}

    class MultiTask(nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert
            self.drop = nn.Dropout(0.1)
            self.heads = nn.ModuleDict({t: nn.Linear(hidden, widths[t]) for t in plan.TASKS})

        def forward(self, task, enc, labels):
            mask = enc["attention_mask"]
            h = self.bert(input_ids=enc["input_ids"], token_type_ids=enc["token_type_ids"],
                          attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out = self.heads[task](self.drop(pooled))
            if task == "sst":
                return nn.functional.cross_entropy(out, labels)
            if task == "quora":
                return nn.functional.binary_cross_entropy_with_logits(out.squeeze(-1), labels)
            return nn.functional.mse_loss(out.squeeze(-1), labels)

    model = MultiTask().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    total = args.epoch_steps or plan.epoch_steps([len(v) for v in data.values()])
    warmup = round(0.1 * total)

    def lr_at(step):  # Hugging Face's linear schedule with warmup, as src/train/schedule.rs
        if step < warmup:
            return 1e-4 * step / max(warmup, 1)
        return 1e-4 * max(0.0, 1.0 - (step - warmup) / max(total - warmup, 1))

    def train_step(step):
        opt.zero_grad(set_to_none=False)
        losses = {}
        for task, ex in plan.step_batches(data, step):
            enc = encode(tok, task, ex)
            if task == "sst":
                labels = torch.tensor([e[3] for e in ex], dtype=torch.long)
            else:
                labels = torch.tensor([e[3] for e in ex], dtype=torch.float32)
            loss = model(task, enc, labels)
            loss.backward()
            losses[task] = loss.detach()
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        opt.step()
        return {t: float(v) for t, v in losses.items()}

    ends = []
    first_losses = last_losses = None
    for step in range(args.steps):
        losses = train_step(step)
        ends.append(time.perf_counter())
        first_losses = first_losses or losses
        last_losses = losses
    secs = ends[-1] - ends[0]
    per100 = secs / (args.steps - 1) * 100

    gemm = None
    if args.profile_steps > 0:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            for k in range(args.profile_steps):
                train_step(args.steps + k)
            wall = time.perf_counter() - t0
        gemm_ops = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
        self_us = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
        gemm_s = sum(self_us.get(k, 0) for k in gemm_ops) / 1e6
        attn_s = sum(v for k, v in self_us.items() if "scaled_dot_product" in k) / 1e6
        gemm = {"steps": args.profile_steps, "wall_s": wall, "gemm_s": gemm_s, "share": gemm_s / wall,
                "sdpa_self_s": attn_s}

    out = {"framework": "pytorch", "torch": torch.__version__,
           "transformers": __import__("transformers").__version__,
           "attention": getattr(bert.config, "_attn_implementation", "?"), "threads": torch.get_num_threads(),
           "steps": args.steps, "timed_steps": args.steps - 1, "seconds": secs, "s_per_100": per100,
           "schedule_steps": total, "first_losses": first_losses, "last_losses": last_losses, "gemm": gemm}
    print(json.dumps(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    main()
