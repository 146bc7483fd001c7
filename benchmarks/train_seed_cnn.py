"""Train the seeds' baseline (`seed_cnn`, 64 px) on ../shared/data and report accuracy and minutes.

    python benchmarks/train_seed_cnn.py [--epochs 10] [--out runs/seed_cnn]

Prints validation accuracy overall and per source, minutes taken, and writes
benchmarks/results/train_seed_cnn.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from facegender.checkpoint import write_json

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--data", nargs="+", default=[str(DATA / "utkface"), str(DATA / "kaggle-gender")]
    )
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "runs" / "seed_cnn"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "train_seed_cnn.json"))
    args = ap.parse_args()
    if not all(Path(d).is_dir() for d in args.data):
        print(f"data not found: {args.data} (this benchmark needs ../shared/data)", file=sys.stderr)
        return 2

    from facegender.augment import AugmentConfig
    from facegender.checkpoint import read_config
    from facegender.train import TrainConfig, train

    cfg = TrainConfig(
        data=args.data,
        out=args.out,
        model="seed_cnn",
        image_size=64,
        epochs=args.epochs,
        batch_size=64,
        lr=1e-3,
        weight_decay=0.0,
        optimizer="adam",
        warmup_epochs=0,
        schedule="constant",
        tta_flip=False,
        threads=args.threads,
        progress=False,
        augment=AugmentConfig(flip=0.5, rotation=15, shift=0.1, shear=10, zoom=0.1),
    )
    t0 = time.perf_counter()
    train(cfg, log=lambda m: print(m, file=sys.stderr))
    minutes = (time.perf_counter() - t0) / 60
    val = read_config(args.out)["metrics"]["validation"]
    result = {
        "model": "seed_cnn",
        "epochs": args.epochs,
        "minutes": round(minutes, 1),
        "val_accuracy": val["accuracy"],
        "val_f1": val["f1"],
        "val_roc_auc": val["roc_auc"],
        "per_source": {k: v["accuracy"] for k, v in val["groups"]["source"].items()},
        "command": " ".join(sys.argv),
    }
    print(json.dumps(result, indent=2))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
