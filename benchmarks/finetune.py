"""Does ``train --init`` pay? Fine-tuning on 1,000 images of a new source, against two baselines.

    python benchmarks/finetune.py                      # leave out fairface (defaults below)
    nice -n 15 python benchmarks/finetune.py --threads 1 --model fgnet_s --base-epochs 4
    python benchmarks/finetune.py --smoke              # generated data, seconds: the pipeline only

Three models, each scored on the same held-out split of the left-out source (never trained on):

1. **base**: trained from scratch on the other sources only (``--base-sources``, at most
   ``--base-max-train`` images), as a user's starting model that has never seen their photos;
2. **fine-tuned**: ``train --init BASE`` on ``--n-finetune`` images of the left-out source with
   the fine-tune defaults (:data:`facegender.finetune.FINETUNE_DEFAULTS`);
3. **scratch**: the same architecture trained from scratch on the same ``--n-finetune`` images
   with the from-scratch defaults (``--scratch-epochs`` at lr 3e-3).

The left-out source is shuffled once (``--seed``); the first ``--n-test`` images are the held-out
split, the next ``--n-finetune`` the fine-tuning pool (fine-tune and scratch each keep 10 % of it
for their own validation: checkpoint choice and temperature). The script checks that no held-out
path is in any training manifest. Each model is also scored on the base's own validation split,
to show what fine-tuning costs on the sources it started from. Writes
benchmarks/results/finetune.json (``--smoke``: finetune_smoke.json in the work folder).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def machine() -> dict:
    """The shared machine record (benchmarks/_machine.py) with torch's threads and version."""
    import torch
    from _machine import machine as machine_record

    m = machine_record(threads={"torch": torch.get_num_threads()}, reference=False)
    return {**m, "torch": torch.__version__}


def split_left_out(spec: str, n_test: int, n_finetune: int, seed: int, work: Path) -> dict:
    """Held-out and fine-tuning manifests of the left-out source, disjoint by construction."""
    import numpy as np

    from facegender.data import read_data
    from facegender.data.manifest import write_manifest

    samples = read_data([spec]).samples
    if len(samples) < n_test + n_finetune:
        raise SystemExit(f"{spec}: {len(samples)} images, need {n_test} + {n_finetune}")
    order = np.random.default_rng(seed).permutation(len(samples))
    test = [samples[i] for i in order[:n_test]]
    pool = [samples[i] for i in order[n_test : n_test + n_finetune]]
    work.mkdir(parents=True, exist_ok=True)
    paths = {
        "heldout": write_manifest(test, work / "heldout.csv"),
        "finetune": write_manifest(pool, work / "finetune.csv"),
    }
    if {s.path for s in test} & {s.path for s in pool}:
        raise SystemExit("held-out and fine-tuning images overlap")
    return paths


def train_run(out: Path, data: list[str], args, reuse: bool = False, **kw) -> tuple[Path, float]:
    """One ``facegender.train.train`` call; returns the checkpoint and its minutes."""
    from facegender.train import TrainConfig, train

    if reuse and (out / "config.json").is_file():
        status = json.loads((out / "config.json").read_text()).get("status")
        if status == "final":
            log(f"reusing {out}")
            return out, 0.0
    cfg = TrainConfig(
        data=data,
        out=str(out),
        model=kw.pop("model", args.model),
        image_size=kw.pop("image_size", args.image_size),
        batch_size=args.batch_size,
        threads=args.threads,
        seed=args.seed,
        progress=False,
        cache_dir=args.cache_dir,
        **kw,
    )
    t0 = time.perf_counter()
    train(cfg, log=log)
    return out, (time.perf_counter() - t0) / 60


def score(model_dir: Path, manifest: Path, cache: bool) -> dict:
    from facegender.evaluate import evaluate

    r = evaluate([str(manifest)], model=model_dir, cache=cache)
    right = {
        d["path"]: int((d["female_probability"] >= 0.5) == d["label"]) for d in r["predictions"]
    }
    return {
        "n": r["n"],
        "accuracy": r["accuracy"],
        "accuracy_ci95": r["accuracy_ci95"],
        "_right": right,
    }


def paired_difference(a: dict, b: dict, n_boot: int = 2000, seed: int = 0) -> dict:
    """Accuracy of ``a`` minus ``b`` on the same images, with a paired bootstrap 95 % interval
    (resampling images, both models together): the fair test when the two share a test set."""
    import numpy as np

    paths = sorted(set(a) & set(b))
    d = np.array([a[k] - b[k] for k in paths], dtype=float)
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"difference": float(d.mean()), "ci95": [float(lo), float(hi)], "n": len(d)}


def check_no_leak(heldout: Path, manifests: list[Path]) -> None:
    from facegender.data import read_data

    held = {s.path for s in read_data([str(heldout)]).samples}
    for m in manifests:
        if held & {s.path for s in read_data([str(m)]).samples}:
            raise SystemExit(f"held-out images found in {m}")


def run(args) -> dict:
    from facegender.finetune import FINETUNE_DEFAULTS

    work = Path(args.work)
    m = machine()
    t_all = time.perf_counter()
    split = split_left_out(args.left_out, args.n_test, args.n_finetune, args.seed, work)
    base, base_min = train_run(
        work / "base",
        list(args.base_sources),
        args,
        reuse=args.reuse,
        epochs=args.base_epochs,
        max_train=args.base_max_train,
    )
    base_val = base / "validation.csv"
    check_no_leak(split["heldout"], [split["finetune"], base_val])
    ft, ft_min = _finetune(work, split, base, args)
    scratch, scratch_min = train_run(
        work / "scratch", [str(split["finetune"])], args, epochs=args.scratch_epochs
    )
    cache = not args.smoke
    rows = []
    for name, d, minutes in (
        ("base", base, base_min),
        ("finetuned", ft, ft_min),
        ("scratch", scratch, scratch_min),
    ):
        rows.append(
            {
                "model": name,
                "left_out_heldout": score(d, split["heldout"], cache),
                "base_sources_val": score(d, base_val, cache),
                "train_minutes": round(minutes, 2),
                "train_args": {
                    k: json.loads((d / "config.json").read_text())["train_args"].get(k)
                    for k in ("model", "image_size", "epochs", "lr", "warmup_epochs", "init")
                },
            }
        )
    acc = {r["model"]: r["left_out_heldout"]["accuracy"] for r in rows}
    right = {r["model"]: r["left_out_heldout"].pop("_right") for r in rows}
    for r in rows:
        r["base_sources_val"].pop("_right")
    paired = {
        f"finetuned_minus_{other}": paired_difference(right["finetuned"], right[other])
        for other in ("base", "scratch")
    }
    return {
        "command": "python benchmarks/finetune.py " + " ".join(sys.argv[1:]),
        "smoke": args.smoke,
        "left_out": args.left_out,
        "base_sources": list(args.base_sources),
        "n_test": args.n_test,
        "n_finetune": args.n_finetune,
        "finetune_defaults": FINETUNE_DEFAULTS,
        "machine": m,  # torch_threads: before training; each run used train_threads
        "train_threads": args.threads,
        "minutes_total": round((time.perf_counter() - t_all) / 60, 2),
        "rows": rows,
        "paired": paired,
        "finetune_beats_base_and_scratch": acc["finetuned"] > max(acc["base"], acc["scratch"]),
    }


def _finetune(work: Path, split: dict, base: Path, args) -> tuple[Path, float]:
    """``train --init BASE`` with the fine-tune defaults: architecture and size from BASE."""
    from facegender.finetune import apply_init
    from facegender.train import TrainConfig, train

    cfg = TrainConfig(
        data=[str(split["finetune"])],
        out=str(work / "finetuned"),
        init=str(base),
        batch_size=args.batch_size,
        threads=args.threads,
        seed=args.seed,
        progress=False,
        cache_dir=args.cache_dir,
    )
    given = {"data", "out", "init", "batch_size", "threads", "seed", "progress", "cache_dir"}
    if args.finetune_epochs:
        cfg.epochs = args.finetune_epochs
        given.add("epochs")
    cfg = apply_init(cfg, given)
    t0 = time.perf_counter()
    train(cfg, log=log)
    return work / "finetuned", (time.perf_counter() - t0) / 60


def make_smoke_data(root: Path) -> tuple[list[str], str]:
    """Two generated 'sources' with different crops: UTKFace-named squares and class folders."""
    from facegender.synthetic import write_class_folders, write_utkface_folder

    base = write_utkface_folder(root / "base", n=64, seed=3)
    other = write_class_folders(root / "other", n=96, seed=4)
    return [str(base)], str(other)


def format_rows(summary: dict) -> str:
    n = summary["rows"][0]["left_out_heldout"]["n"]
    lines = [
        f"left out: {summary['left_out']}; held-out n = {n}",
        f"{'model':<10} {'held-out acc':>12}  {'95 % CI':<15} {'base-val acc':>12} {'minutes':>8}",
    ]
    for r in summary["rows"]:
        h, b = r["left_out_heldout"], r["base_sources_val"]
        lo, hi = h["accuracy_ci95"]
        lines.append(
            f"{r['model']:<10} {h['accuracy']:>12.4f}  {lo:.3f}-{hi:.3f}     "
            f"{b['accuracy']:>12.4f} {r['train_minutes']:>8.1f}"
        )
    for name, d in summary["paired"].items():
        lo, hi = d["ci95"]
        lines.append(f"{name}: {100 * d['difference']:+.1f} points (paired 95 % CI {100 * lo:+.1f} "
                     f"to {100 * hi:+.1f})")  # fmt: skip
    lines.append(f"fine-tune beats base and scratch: {summary['finetune_beats_base_and_scratch']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=str(DEFAULT_DATA))
    ap.add_argument("--left-out", default="fairface", help="Source fine-tuned on and scored on.")
    ap.add_argument("--base-sources", nargs="+", default=["utkface", "kaggle-gender"])
    ap.add_argument("--n-finetune", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--model", default="fgnet_s")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--base-epochs", type=int, default=4)
    ap.add_argument("--base-max-train", type=int, default=12000)
    ap.add_argument("--finetune-epochs", type=int, default=0, help="0: the fine-tune default.")
    ap.add_argument("--scratch-epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--work", default=str(ROOT / "runs" / "finetune-bench"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "finetune.json"))
    ap.add_argument("--reuse", action="store_true", help="Reuse a finished base model in --work.")
    ap.add_argument("--smoke", action="store_true", help="Generated data, tiny settings.")
    args = ap.parse_args(argv)
    if args.smoke:
        work = Path(args.work)
        args.base_sources, args.left_out = make_smoke_data(work / "data")
        args.n_test, args.n_finetune = 32, 64
        args.model, args.image_size, args.batch_size = "fgnet_s", 32, 16
        args.base_epochs, args.base_max_train, args.scratch_epochs = 1, 0, 1
        args.finetune_epochs = 1
        args.cache_dir = args.cache_dir or str(work / "cache")
        args.out = str(work / "finetune_smoke.json")
    else:
        root = Path(args.data_root)
        args.base_sources = [str(root / s) for s in args.base_sources]
        args.left_out = str(root / args.left_out)
    summary = run(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(format_rows(summary))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
