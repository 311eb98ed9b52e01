#!/usr/bin/env python3
"""The engine's LoRA checkpoints against PEFT, both ways (issue 17, finding 9).

1. `engine finetune --lora 4 --lora-targets query,value` for a few steps on the CPU (over a slice
   of the CS224N files), so that lora_B is non-zero.
2. PEFT loads O/best over the base model: `PeftModel.from_pretrained(BertModel.from_pretrained(base),
   O/best)`. Every lora_B must be non-zero and equal to the file's tensor, and the mean-pooled
   embeddings of a few sentences must equal `engine embed --model O/best` (the engine's own
   forward of the adapted model: base weights and adapters, unmerged) within --tol.
3. The reverse: a PEFT LoraConfig model over the same base with random non-zero lora_B (targets
   covering the attention and feed-forward outputs, whose names share the suffix output.dense),
   saved with save_pretrained, embedded by `engine embed --model <that folder>`, compared the same way.

Needs PyTorch, transformers, PEFT and safetensors (e.g. the venv /work/venvs/torch). Prints every
figure; exits non-zero when a check fails.

    cargo build --release
    /work/venvs/torch/bin/python scripts/check-peft.py [--engine target/release/engine]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertModel
from transformers.utils import logging as hf_logging

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = [
    "The movie was a delight from start to finish.",
    "I would not watch it again.",
    "A quiet, careful film about two brothers and their father.",
    "What is the capital of France?",
]


def default_engine() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "release" / "engine"


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"check-peft: command failed ({p.returncode}): {p.stderr.strip().splitlines()[-1:]}")


def tiny_data(src: Path, dst: Path, n: int) -> None:
    """The first n records of every SST file (header kept)."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.glob("ids-sst-*.csv"):
        lines = f.read_text().splitlines()[: n + 1]
        (dst / f.name).write_text("\n".join(lines) + "\n")


def engine_embeddings(engine: Path, model: Path, work: Path, name: str) -> torch.Tensor:
    inp, out = work / f"{name}.txt", work / f"{name}.jsonl"
    inp.write_text("\n".join(SENTENCES) + "\n")
    run([str(engine), "embed", "--model", str(model), "--input", str(inp), "--output", str(out),
         "--pooling", "mean", "--device", "cpu", "--quiet"])
    rows = [json.loads(line)["embedding"] for line in out.read_text().splitlines()]
    return torch.tensor(rows, dtype=torch.float64)


@torch.no_grad()
def peft_embeddings(model: torch.nn.Module, tok) -> torch.Tensor:
    model.eval()
    enc = tok(SENTENCES, padding=True, truncation=True, max_length=128, return_tensors="pt")
    h = model(**enc).last_hidden_state  # (B, T, C)
    mask = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
    return ((h * mask).sum(1) / mask.sum(1)).double()


def lora_tensors(model: torch.nn.Module, which: str) -> dict[str, torch.Tensor]:
    """The model's lora_A or lora_B weights under the keys save_pretrained writes."""
    return {n.replace(".default", ""): p.detach() for n, p in model.named_parameters() if f".{which}." in n}


class Checks:
    def __init__(self) -> None:
        self.failed = []

    def check(self, what: str, ok: bool, figure: str) -> None:
        print(f"  {'ok  ' if ok else 'FAIL'} {what}: {figure}", flush=True)
        if not ok:
            self.failed.append(what)


def engine_to_peft(args, engine: Path, base: Path, work: Path, tok, c: Checks) -> None:
    print("1. engine finetune --lora 4 --lora-targets query,value, then PEFT loads O/best")
    data, out = work / "data", work / "run"
    tiny_data(args.data_dir, data, 64)
    run([str(engine), "finetune", "--model", str(base), "--data-dir", str(data), "--out", str(out),
         "--tasks", "sst", "--lora", "4", "--lora-targets", "query,value", "--max-steps", str(args.steps),
         "--eval-every", str(args.steps), "--batch-size", "8", "--max-len", "64", "--lr", "1e-2",
         "--device", "cpu", "--quiet"])
    best = out / "best"
    saved = load_file(str(best / "adapter_model.safetensors"))
    heads = sorted(k for k in saved if ".lora_" not in k)
    print(f"  {best}: {len(saved) - len(heads)} adapter tensors, heads {heads}")
    print(f"  adapter_config.json target_modules: {json.loads((best / 'adapter_config.json').read_text())['target_modules']}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = PeftModel.from_pretrained(BertModel.from_pretrained(str(base)), str(best))
    notes = [str(w.message) for w in caught if "adapter" in str(w.message).lower() or "key" in str(w.message).lower()]
    c.check("PEFT loads without a warning about keys", not notes, f"{len(notes)} warnings {notes}")
    b = lora_tensors(model, "lora_B")
    a = lora_tensors(model, "lora_A")
    c.check("PEFT has the adapters the file holds", len(a) + len(b) == len(saved) - len(heads) and len(b) == 12,
            f"{len(a)} lora_A, {len(b)} lora_B (6 layers x 2 targets each)")
    zero = [k for k, v in b.items() if not bool(v.abs().max() > 0)]
    c.check("every lora_B is non-zero", not zero, f"smallest max|lora_B| {min(v.abs().max().item() for v in b.values()):.3e}")
    diff = max((v - saved[k]).abs().max().item() if k in saved else float("inf") for k, v in {**a, **b}.items())
    c.check("every lora_A and lora_B equals the file's", diff == 0.0, f"largest difference {diff:.1e}")
    want = peft_embeddings(model, tok)
    base_emb = peft_embeddings(BertModel.from_pretrained(str(base)), tok)
    got = engine_embeddings(engine, best, work, "engine-lora")
    d, moved = (got - want).abs().max().item(), (want - base_emb).abs().max().item()
    c.check(f"engine embed of O/best vs PEFT (tol {args.tol:g})", d <= args.tol and got.shape == want.shape,
            f"largest difference {d:.2e} over {tuple(got.shape)}; the adapters move PEFT's embeddings by {moved:.2e}")
    c.check("the adapters change the embeddings", moved > 10 * args.tol, f"{moved:.2e}")


def peft_to_engine(args, engine: Path, base: Path, work: Path, tok, c: Checks) -> None:
    print("2. PEFT save_pretrained, then engine embed of that folder")
    torch.manual_seed(0)
    targets = ["query", "key", "value", "attention.output.dense", "intermediate.dense"] + [
        f"encoder.layer.{l}.output.dense" for l in range(BertModel.from_pretrained(str(base)).config.num_hidden_layers)]
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets)
    model = get_peft_model(BertModel.from_pretrained(str(base)), config)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.normal_(0.0, 0.02)
    folder = work / "peft-adapter"
    model.save_pretrained(str(folder))
    files = sorted(p.name for p in folder.iterdir())
    keys = sorted(load_file(str(folder / "adapter_model.safetensors")))
    print(f"  {folder}: {files}; {len(keys)} tensors, e.g. {keys[0]}")
    got = engine_embeddings(engine, folder, work, "peft-adapter")
    want = peft_embeddings(model, tok)
    base_emb = peft_embeddings(BertModel.from_pretrained(str(base)), tok)
    d, moved = (got - want).abs().max().item(), (want - base_emb).abs().max().item()
    c.check(f"engine embed of the PEFT folder vs PEFT (tol {args.tol:g})", d <= args.tol and got.shape == want.shape,
            f"largest difference {d:.2e} over {tuple(got.shape)}; the adapters move PEFT's embeddings by {moved:.2e}")
    c.check("the adapters change the embeddings", moved > 10 * args.tol, f"{moved:.2e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=ROOT / "weights" / "all-MiniLM-L6-v2", help="base BERT folder")
    p.add_argument("--engine", type=Path, default=default_engine(), help="the engine binary (cargo build --release)")
    p.add_argument("--data-dir", type=Path, default=ROOT / "data", help="CS224N files (ids-sst-*.csv)")
    p.add_argument("--steps", type=int, default=6, help="fine-tuning steps")
    p.add_argument("--tol", type=float, default=1e-5, help="largest absolute embedding difference")
    p.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = p.parse_args()
    base = args.model.resolve()
    if not (base / "model.safetensors").is_file():
        sys.exit(f"check-peft: {base} has no model.safetensors (weights/fetch.sh fetches the default)")
    if not args.engine.is_file():
        sys.exit(f"check-peft: no engine binary at {args.engine} (cargo build --release, or --engine)")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    hf_logging.disable_progress_bar()
    print(f"torch {torch.__version__}, peft {__import__('peft').__version__}, "
          f"transformers {__import__('transformers').__version__}; base {base}; engine {args.engine}")
    tok = AutoTokenizer.from_pretrained(str(base))
    c = Checks()
    with tempfile.TemporaryDirectory(prefix="check-peft-") as tmp:
        work = args.keep.resolve() if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        engine_to_peft(args, args.engine.resolve(), base, work, tok, c)
        peft_to_engine(args, args.engine.resolve(), base, work, tok, c)
    if c.failed:
        sys.exit(f"check-peft: {len(c.failed)} check(s) failed: {'; '.join(c.failed)}")
    print("check-peft: all checks passed")


if __name__ == "__main__":
    main()
