#!/usr/bin/env python3
"""`engine export --format sentence-transformers` against sentence-transformers itself (issue 15).

For a fine-tuned checkpoint (a full one, or a LoRA one whose adapters the export folds in), for
each pooling the check asks for:
1. `engine export --checkpoint C --output DIR`;
2. `SentenceTransformer(DIR)` encodes some sentences of the task data (on the CPU, float32);
3. `engine embed --model C --pooling <the run's>` embeds the same sentences (the engine's own
   forward; adapters unmerged for a LoRA checkpoint);
4. the two must agree within --tol (max |Δ| over every value).

Needs PyTorch and sentence-transformers (e.g. `/work/venvs/torch/bin/pip install
sentence-transformers`). Prints every figure; exits non-zero when a check fails.

    cargo build --release
    /work/venvs/torch/bin/python scripts/check-st-export.py --checkpoint runs/finetune/best [--engine target/release/engine]
"""

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from sentence_transformers import SentenceTransformer

ROOT = Path(__file__).resolve().parent.parent


def sentences(n):
    """The first n sentences of the SST dev file the project ships."""
    with open(ROOT / "data" / "ids-sst-dev.csv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [r["sentence"].strip() for r in rows[:n]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--engine", default=str(ROOT / "target" / "release" / "engine"))
    ap.add_argument("--sentences", type=int, default=64)
    ap.add_argument("--tol", type=float, default=1e-5)
    a = ap.parse_args()
    pooling = json.loads((a.checkpoint / "train.json").read_text())["pooling"]
    texts = sentences(a.sentences)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = tmp / "st"
        run = lambda *args: subprocess.run([a.engine, *args], check=True, capture_output=True, text=True)
        print(run("export", "--checkpoint", str(a.checkpoint), "--output", str(out)).stdout.strip())
        (tmp / "in.txt").write_text("\n".join(texts) + "\n")
        run("embed", "--model", str(a.checkpoint), "--pooling", pooling, "--device", "cpu",
            "--input", str(tmp / "in.txt"), "--output", str(tmp / "out.jsonl"), "--quiet")
        ours = np.array([json.loads(l)["embedding"] for l in (tmp / "out.jsonl").read_text().splitlines()])
        model = SentenceTransformer(str(out), device="cpu")
        theirs = model.encode(texts, batch_size=16, convert_to_numpy=True, normalize_embeddings=False)
    worst = float(np.abs(ours - theirs).max())
    ok = ours.shape == theirs.shape and worst <= a.tol
    print(f"pooling {pooling}: {len(texts)} sentences, {ours.shape[1]} dims; SentenceTransformer vs engine embed: "
          f"max |Δ| {worst:.2e} (tolerance {a.tol:g}, largest |value| {float(np.abs(ours).max()):.3f}): "
          f"{'ok' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
