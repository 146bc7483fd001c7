"""Accuracy of the bundled model on its held-out validation split, per source and per group.

    python benchmarks/bundled_model.py [--model DIR|fast] [--backend auto|torch|onnx]
    python benchmarks/bundled_model.py --model runs/a runs/b    # ensemble: mean calibrated logit

Re-creates the validation split from the checkpoint's own training args (same data, seed and
split; never trained on), then reports accuracy with 95 % intervals overall, per source, and on
the UTKFace part per age band, race, race x gender and the adult race gap; plus calibration.
Prints markdown tables and writes benchmarks/results/bundled_model.json. Needs ../shared/data.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from facegender.checkpoint import write_json

ROOT = Path(__file__).resolve().parents[1]


def table(title: str, groups: dict) -> str:
    rows = [f"| {title} | n | accuracy | 95 % CI |", "| --- | ---: | ---: | --- |"]
    for k, d in groups.items():
        lo, hi = d["accuracy_ci95"]
        rows.append(
            f"| {k} | {d['n']} | {100 * d['accuracy']:.1f} % | {100 * lo:.1f}-{100 * hi:.1f} |"
        )
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--model",
        nargs="+",
        default=[None],
        help="checkpoint folder, or `fast` (default: bundled model); several: their ensemble "
        "(mean of logit / temperature), all on the first one's split and preprocessing",
    )
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--json", default=None, help="default: results/bundled_model[_fast].json")
    args = ap.parse_args()
    results = ROOT / "benchmarks" / "results"
    args.json = args.json or str(
        results / ("bundled_model_fast.json" if args.model == ["fast"] else "bundled_model.json")
    )

    from facegender.classifier import load_classifier
    from facegender.metrics import binary_metrics, group_metrics
    from facegender.preprocess import probability
    from facegender.train import TrainConfig, prepare_data

    members = [load_classifier(m, backend=args.backend) for m in args.model]
    clf, config = members[0], members[0].config
    for m, name in zip(members[1:], args.model[1:], strict=True):
        if m.preprocess != clf.preprocess:
            raise SystemExit(f"{name}: preprocessing differs from {args.model[0]}'s")
    cfg = TrainConfig.from_dict(config["train_args"])
    cfg.progress = False
    if args.model[0] in (None, "default", "fast"):  # recipe paths were absolute: re-point them
        shared = ROOT.parent / "shared" / "data"
        cfg.data = [str(shared / Path(d).name) for d in cfg.data]
    if not all(Path(d).is_dir() for d in cfg.data):
        print(f"data not found: {cfg.data} (this benchmark needs ../shared/data)", file=sys.stderr)
        return 2
    arrays, ds, _, va_idx = prepare_data(cfg, log=lambda m: None)
    samples = [ds.samples[i] for i in va_idx]
    x = np.ascontiguousarray(arrays[va_idx])
    y = np.array([s.label for s in samples])
    t0 = time.perf_counter()
    z = np.mean([m.logits(x, batch_size=256) / m.temperature for m in members], axis=0)
    p = probability(z)
    seconds = time.perf_counter() - t0
    overall = binary_metrics(y, p)
    groups = group_metrics(samples, y, p)
    utk = [i for i, s in enumerate(samples) if s.age is not None]
    utk_groups = group_metrics([samples[i] for i in utk], y[utk], p[utk]) if utk else {}
    adults = [i for i in utk if samples[i].age >= 18]
    adult_race = (
        group_metrics([samples[i] for i in adults], y[adults], p[adults])["race"] if adults else {}
    )
    accs = [d["accuracy"] for d in adult_race.values()]
    result = {
        "model": config["model"],
        "ensemble_of": args.model if len(members) > 1 else None,
        "backend": clf.backend,
        "n": int(len(y)),
        "overall": {
            k: overall[k]
            for k in (
                "accuracy",
                "accuracy_ci95",
                "precision",
                "recall",
                "f1",
                "roc_auc",
                "ece",
                "confusion",
            )
        },
        "per_source": groups["source"],
        "utkface": {k: utk_groups.get(k, {}) for k in ("age", "race", "race_gender")},
        "utkface_adult_race": adult_race,
        "utkface_adult_race_gap_points": 100 * (max(accs) - min(accs)) if accs else None,
        "calibration": config.get("calibration"),
        "faces_per_second_batch256": len(y) / seconds,
        "command": " ".join(sys.argv),
    }
    print(
        f"validation split: n={len(y)}  accuracy {100 * overall['accuracy']:.2f} %  "
        f"ROC-AUC {overall['roc_auc']:.4f}  F1 {overall['f1']:.4f}  backend {clf.backend}\n"
    )
    print(table("source", groups["source"]) + "\n")
    for key in ("age", "race", "race_gender"):
        print(table(f"UTKFace {key.replace('_', ' x ')}", utk_groups.get(key, {})) + "\n")
    print(table("UTKFace adults (18+) race", adult_race))
    if accs:
        print(
            f"\nadult worst-to-best race gap: {result['utkface_adult_race_gap_points']:.1f} points"
        )
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
