"""Time one training step (forward, BCE loss, backward, AdamW step) per model, input size,
precision and memory layout, on random data: what ``--precision`` and ``--channels-last`` buy
on this machine. Needs no data set.

    python benchmarks/train_step.py
    python benchmarks/train_step.py --models fgnet_m fgnet_l --sizes 64 96 --threads 2

Prints ms per step and images/s, and writes benchmarks/results/train_step.json. Training speed
depends on the CPU's instructions (AVX512-BF16 or AMX for bf16), which are recorded too.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from _machine import describe, machine
from torch.nn import functional as F

from facegender.checkpoint import write_json
from facegender.models import create_model
from facegender.train import forward_precision, resolve_precision

ROOT = Path(__file__).resolve().parents[1]


def step_ms(model_name: str, size: int, precision: str, channels_last: bool, args) -> float:
    torch.manual_seed(0)
    model = create_model(model_name, image_size=size)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(args.batch_size, 3, size, size).contiguous(memory_format=fmt)
    y = (torch.rand(args.batch_size) > 0.5).float()
    times = []
    for i in range(args.warmup + args.steps):
        t = time.perf_counter()
        with forward_precision(precision):
            logits = model(x).float()
        loss = F.binary_cross_entropy_with_logits(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["fgnet_m", "fgnet_l", "seed_cnn_bn"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[64])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "train_step.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    mach = machine(threads={"torch": args.threads})
    auto = resolve_precision("auto")
    print(f"{describe(mach)}; --precision auto picks {auto}")
    rows = []
    print(f"{'model':<12} {'px':>4} {'precision':<9} {'layout':<8} {'ms/step':>8} {'img/s':>7}")
    for name, size, prec, cl in itertools.product(
        args.models, args.sizes, args.precisions, (False, True)
    ):
        ms = step_ms(name, size, prec, cl, args)
        layout = "nhwc" if cl else "nchw"
        rows.append(
            {
                "model": name,
                "image_size": size,
                "precision": prec,
                "layout": layout,
                "ms_per_step": round(ms, 1),
                "images_per_s": round(1000 * args.batch_size / ms, 1),
            }
        )
        ips = rows[-1]["images_per_s"]
        print(f"{name:<12} {size:>4} {prec:<9} {layout:<8} {ms:>8.0f} {ips:>7.0f}")
    write_json(
        args.json,
        {
            "command": " ".join(["python benchmarks/train_step.py", *sys.argv[1:]]),
            "batch_size": args.batch_size,
            "threads": args.threads,
            "steps": args.steps,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "torch": torch.__version__,
            "precision_auto_picks": auto,
            "machine": mach,
            "rows": rows,
        },
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
