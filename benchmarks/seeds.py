"""Reproduce the five seed projects (recipes/seed-*.toml) and compare them with the default model
on one held-out split; writes docs/seeds.md and benchmarks/results/seeds.json.

    python benchmarks/seeds.py                 # train every seed recipe, score all on the split
    python benchmarks/seeds.py --only seed-003 --reuse --epochs-scale 0.5 --max-train 8000
    python benchmarks/seeds.py --smoke         # tiny generated data, 1 epoch: checks the pipeline

The common split is recipes/default.toml's validation split: val_split 0.1, seed 0, stratified by
source x label over utkface + kaggle-gender, after the unreadable and duplicate-content files are
dropped. The default model never trained on it, and every model is scored on exactly those images
(``facegender evaluate`` on OUT_DIR/common/heldout.csv). Each seed trains only on its own
source(s) minus the held-out images (OUT_DIR/common/pool-SOURCE.csv: the default recipe's
training part), and inside that pool makes its own validation split (its recipe's val_split) for
checkpoint selection, early stopping and calibration. The script checks that no held-out file is
in any seed's manifest; byte-identical copies were already dropped by the default recipe's
duplicate filter, so none can slip in under another name.

The default model is reused from --default-model (default: runs/v2, else runs/default, else the
bundled model) after checking that its training record has the same data, val_split, seed and
validation count; --smoke trains the default recipe on the generated data instead.
Each run folder gets heldout_eval.json and heldout_report/ (``evaluate --report``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
SOURCES = ("utkface", "kaggle-gender")
# What each seed project said it reached (from issue 10); None: no figure stated.
CLAIMS = {
    "seed-000": None,
    "seed-001": None,
    "seed-002": {"text": "over 90 % accuracy (UTKFace, its own 80/20 split)", "accuracy": 0.90},
    "seed-003": None,
    "seed-004": {"text": "96.8 % on the Kaggle male/female Validation folder", "accuracy": 0.968},
}
# train_args that may differ between a reused run and this invocation without changing the model
_RUN_ONLY = {"out", "progress", "threads", "cache_dir", "device", "precision", "channels_last"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def seed_recipes(only: list[str] | None) -> list[Path]:
    found = sorted(RECIPES.glob("seed-*.toml"))
    if only:
        names = {p.stem: p for p in found}
        missing = [o for o in only if o not in names]
        if missing:
            raise SystemExit(f"no recipe for {', '.join(missing)}; have {', '.join(names)}")
        found = [names[o] for o in only]
    return found


def repoint(paths: list[str], data_root: Path | None) -> list[str]:
    """``--data-root``: the same source folders by name under another root (tiny data, tests)."""
    return [str(data_root / Path(p).name) for p in paths] if data_root else list(paths)


def common_split(default_cfg, log=log):
    """(held-out samples, training pool, skipped) of the default recipe's validation split."""
    from facegender.data import read_data
    from facegender.data.cache import decode_dataset, default_cache_dir
    from facegender.train import split_validation

    cache = Path(default_cfg.cache_dir) if default_cfg.cache_dir else default_cache_dir()
    ds = read_data(default_cfg.data)
    _, kept = decode_dataset(ds, default_cfg.preprocess(), cache, progress=False)
    tr, va = split_validation(kept, default_cfg.val_split, default_cfg.val_seed)
    log(
        f"common split: {len(va)} held out, {len(tr)} in the training pool, "
        f"{len(kept.skipped)} files dropped (unreadable, unlabelled or duplicate content)"
    )
    return [kept.samples[i] for i in va], [kept.samples[i] for i in tr], kept.skipped


def check_no_leak(heldout, manifests: list[Path]) -> int:
    """Raise if any held-out file is in a training manifest; returns the files checked."""
    from facegender.data import read_data

    held = {os.path.realpath(s.path) for s in heldout}
    n = 0
    for m in manifests:
        paths = {os.path.realpath(s.path) for s in read_data([m]).samples}
        shared = held & paths
        if shared:
            raise SystemExit(f"held-out images leak into {m}: e.g. {sorted(shared)[0]}")
        n += len(paths)
    return n


def find_default_model(given: str | None) -> Path:
    from facegender.model_ref import bundled_model_dir

    if given:
        return Path(given)
    for d in (ROOT / "runs" / "v2", ROOT / "runs" / "default"):
        cfg = d / "config.json"
        if cfg.is_file() and json.loads(cfg.read_text()).get("status") == "final":
            return d
    return bundled_model_dir()


def check_default(model_dir: Path, default_cfg, n_heldout: int) -> None:
    """The reused default model must have been trained with this very split held out."""
    from facegender.checkpoint import read_config

    config = read_config(model_dir)
    ta = config.get("train_args", {})
    problems = []
    if [Path(d).name for d in ta.get("data", [])] != [Path(d).name for d in default_cfg.data]:
        problems.append(f"data {ta.get('data')} is not {default_cfg.data}")
    if ta.get("val_split") != default_cfg.val_split:
        problems.append(f"val_split {ta.get('val_split')} is not {default_cfg.val_split}")
    split_seed = ta.get("split_seed", -1)
    val_seed = ta.get("seed") if split_seed < 0 else split_seed
    if val_seed != default_cfg.val_seed:
        problems.append(f"its split seed {val_seed} is not {default_cfg.val_seed}")
    if ta.get("val"):
        problems.append(f"it used an explicit --val {ta['val']}")
    n_val = config.get("data", {}).get("val")
    if n_val != n_heldout:
        problems.append(f"it held out {n_val} images, the common split has {n_heldout}")
    if config.get("status") != "final":
        problems.append(f"its status is {config.get('status')!r}, not 'final'")
    if problems:
        raise SystemExit(
            f"{model_dir} was not trained with the common split held out: " + "; ".join(problems)
        )


def run_recipe(cfg, reuse: bool) -> dict:
    """Train ``cfg`` into ``cfg.out``, or reuse/resume a run there with the same settings."""
    from facegender.train import train

    out = Path(cfg.out)
    config_file = out / "config.json"
    if config_file.is_file() or (out / "last").is_dir():
        if not reuse:
            raise SystemExit(f"{out} already holds a run; pass --reuse or another --out-dir")
        old = (
            json.loads(config_file.read_text()).get("train_args", {})
            if config_file.is_file()
            else {}
        )
        if old:
            new = cfg.to_dict()
            diff = sorted(k for k in new if k not in _RUN_ONLY and old.get(k) != new[k])
            if diff:
                raise SystemExit(f"{out} was trained with other settings ({', '.join(diff)})")
        if old and json.loads(config_file.read_text()).get("status") == "final":
            log(f"reusing {out}")
            return {"reused": True}
        log(f"resuming {out}")
        train(cfg, resume=True, log=lambda m: log(f"  [{out.name}] {m}"))
        return {"reused": False, "resumed": True}
    train(cfg, log=lambda m: log(f"  [{out.name}] {m}"))
    return {"reused": False}


def score(model_dir: Path, heldout_csv: Path, out_dir: Path, report: bool) -> dict:
    """``facegender evaluate`` on the held-out manifest (+ its report), and the model's size."""
    from facegender.checkpoint import load_model, read_config
    from facegender.evaluate import evaluate

    result = evaluate([str(heldout_csv)], model=model_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if report:
        from facegender.report import write_report

        write_report(result, out_dir / "heldout_report", model_dir=model_dir)
    result.pop("predictions", None)
    from facegender.checkpoint import write_json

    write_json(out_dir / "heldout_eval.json", result)
    config = read_config(model_dir)
    model = load_model(model_dir)
    weights = model_dir / "model.safetensors"
    own = config.get("metrics", {}).get("validation", {})
    training = config.get("training", {})
    return {
        "n": result["n"],
        "accuracy": result["accuracy"],
        "accuracy_ci95": result["accuracy_ci95"],
        "precision": result["precision"],
        "recall": result["recall"],
        "f1": result["f1"],
        "roc_auc": result["roc_auc"],
        "per_source": {
            k: {"n": v["n"], "accuracy": v["accuracy"]}
            for k, v in result.get("groups", {}).get("source", {}).items()
        },
        "own_split_accuracy": own.get("accuracy"),
        "own_split_n": own.get("n"),
        "minutes": round(training.get("seconds", float("nan")) / 60, 2),
        "epochs_run": training.get("epochs_run"),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "size_mb": round(weights.stat().st_size / 1e6, 3),
        "weights_dtype": _stored_dtype(weights),
        "model": config["model"]["name"],
        "image_size": config["preprocess"]["image_size"],
        "grayscale": config["preprocess"]["grayscale"],
        "train_images": config.get("data", {}).get("train"),
        "evaluation": str(out_dir / "heldout_eval.json"),
    }


def _stored_dtype(weights: Path) -> str:
    """The dtype(s) in a safetensors file's header (the bundled model stores float16)."""
    with weights.open("rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    kinds = sorted({v["dtype"] for k, v in header.items() if k != "__metadata__"})
    return "/".join(k.lower() for k in kinds)


def machine() -> dict:
    import torch

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _num(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _header_notes(recipe: Path) -> tuple[str, str]:
    """The recipe's 'What the seed did' and 'Deviations' comment paragraphs, unwrapped."""
    lines = [ln[1:].strip() for ln in recipe.read_text().splitlines() if ln.startswith("#")]
    text = " ".join(lines)
    did = text.split("What the seed did:", 1)[-1].split("What facegender reproduces:", 1)[0]
    dev = (
        text.split("Deviations:", 1)[-1].split("Evaluation", 1)[0] if "Deviations:" in text else ""
    )
    return did.strip(), dev.strip()


def write_doc(path: Path, summary: dict) -> None:
    rows = summary["rows"]
    m = summary["machine"]
    split = summary["split"]
    lines = [
        "# The seed projects, reproduced and compared on one held-out split",
        "",
        f"Generated by `{summary['command']}` on {summary['date']} "
        f"({m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, torch {m['torch']}, "
        f"load average {m['load_average_at_start'][0]} at the start). "
        "Regenerate it with that command; do not edit by hand.",
        "",
        "Each seed project is one recipe, runnable on its own with "
        "`facegender train --config recipes/seed-00N.toml --out runs/seed-00N`; the recipe's "
        "header says what the seed did, what facegender reproduces and where it deviates.",
        "",
        "## The split",
        "",
        f"Every model is scored on the same {split['heldout']} images: the validation split of "
        f"`recipes/default.toml` (val_split {split['val_split']}, seed {split['seed']}, stratified "
        f"by source x label over {' + '.join(split['sources'])}; "
        + ", ".join(f"{k} {v}" for k, v in split["heldout_per_source"].items())
        + "). The default model never trained on them. Each seed trained only on images of its "
        "own source(s) from the other "
        f"{split['pool']} (the default recipe's training part), and split those again with its "
        "own recipe's val_split for checkpoint selection, early stopping and calibration. "
        f"No held-out image is in any seed's training manifest (checked file by file over "
        f"{split['checked_training_files']} training files), and the "
        f"{split['dropped']} unreadable or duplicate-content files the default recipe drops are "
        "dropped for the seeds too, so a byte-identical copy of a held-out image cannot be "
        "trained on under another name (near-duplicates, e.g. two photos of one person, are not "
        "detected by anything).",
        "",
        "Seeds trained on one source are still scored on both: the other source's column is "
        "transfer to a collection they never saw. *Own split* is the accuracy on the seed's own "
        "validation split (its recipe's, what the seed project itself would report); the "
        "headline columns use the common split.",
        "",
        "## Results",
        "",
        "| recipe | model | input | trained on | train images | epochs | accuracy (95 % CI) | F1 "
        "| ROC-AUC | UTKFace | kaggle-gender | own split | minutes | parameters | MB | "
        "claimed by the seed |",
        "| --- | --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | --- |",
    ]
    for r in rows:
        lo, hi = r["accuracy_ci95"]
        src = r["per_source"]
        claim = r["claim"]["text"] if r["claim"] else "none stated"
        inp = f"{r['image_size']} px {'gray' if r['grayscale'] else 'RGB'}"
        epochs = f"{r['epochs_run']}/{r['epochs_planned']}" if r.get("epochs_planned") else "?"
        lines.append(
            f"| {r['name']} | `{r['model']}` | {inp} | {' + '.join(r['trained_on'])} | "
            f"{r['train_images']} | {epochs} | {_pct(r['accuracy'])} ({100 * lo:.1f}-"
            f"{100 * hi:.1f}) | {_num(r['f1'])} | {_num(r['roc_auc'])} | "
            f"{_pct(src.get('utkface', {}).get('accuracy'))} | "
            f"{_pct(src.get('kaggle-gender', {}).get('accuracy'))} | "
            f"{_pct(r['own_split_accuracy'])} | {r['minutes']:.1f}{'*' if r.get('resumed') else ''}"
            f" | {r['parameters']:,} | "
            f"{r['size_mb']:.2f} | {claim} |"
        )
    lines += [
        "",
        "*epochs*: run / planned (early stopping can end a run sooner). *minutes*: the run's own "
        "training record (decoding, training, calibration; reused runs keep the minutes of when "
        "they were trained; * marks a resumed run, whose record counts its last leg only). "
        "*MB*: `model.safetensors` in 10^6 bytes "
        "(" + ", ".join(f"{r['name']} {r['weights_dtype']}" for r in rows) + "). "
        "*parameters*: trainable and frozen weights, no buffers.",
        "",
    ]
    options = summary["options"]
    if options.get("note"):
        lines += [f"**Conditions**: {options['note']}", ""]
    if options["epochs_scale"] != 1.0 or options["max_train"]:
        lines += [
            "**Shortened runs**: "
            + (
                f"every seed's epochs were scaled by {options['epochs_scale']} "
                if options["epochs_scale"] != 1.0
                else ""
            )
            + (f"training images capped at {options['max_train']} " if options["max_train"] else "")
            + "(`--epochs-scale` / `--max-train`), so the seeds are under-trained compared with "
            "their recipes.",
            "",
        ]
    if options.get("smoke"):
        lines += ["**Smoke run on tiny generated data: the figures mean nothing.**", ""]
    lines += ["## What each seed did, and the deviations", ""]
    for r in rows:
        if r["name"] == "default":
            lines.append(
                f"- **default**: `recipes/default.toml`, the bundled model's recipe; checkpoint "
                f"`{r['checkpoint']}`; its *own split* is the common split."
            )
            continue
        lines.append(
            f"- **{r['name']}** (`recipes/{r['name']}.toml`): {r['seed_did']} Deviations: "
            f"{r['deviations'] or 'none.'} Claimed: "
            f"{r['claim']['text'] if r['claim'] else 'no figure stated'}."
        )
    lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def make_smoke_data(root: Path, n: int = 40) -> Path:
    """Generated stand-ins for every source the default recipe reads."""
    from facegender.synthetic import (
        write_class_folders,
        write_fairface_folder,
        write_utkface_folder,
    )

    write_utkface_folder(root / "utkface", n=n, seed=0)
    write_class_folders(root / "kaggle-gender", n=n, seed=1)
    write_fairface_folder(root / "fairface", n=n, seed=2)
    return root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", nargs="+", help="seed recipes to run, e.g. seed-003 (default: all)")
    ap.add_argument("--out-dir", default=str(ROOT / "runs" / "seeds"))
    ap.add_argument("--reuse", action="store_true", help="reuse (or resume) runs in --out-dir")
    ap.add_argument("--default-model", help="checkpoint of the default recipe to compare with")
    ap.add_argument("--epochs-scale", type=float, default=1.0, help="scale every seed's epochs")
    ap.add_argument("--max-train", type=int, default=0, help="cap on training images; 0 = all")
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's choice")
    ap.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="train --precision for every seed (bf16: about 2x faster on AVX512-BF16 CPUs)",
    )
    ap.add_argument("--data-root", help="folder holding the source folders (utkface/ ...) instead")
    ap.add_argument("--cache-dir", help="decoded-image cache (default ~/.cache/facegender)")
    ap.add_argument("--no-report", action="store_true", help="skip the per-model HTML reports")
    ap.add_argument("--smoke", action="store_true", help="tiny generated data, 1 epoch")
    ap.add_argument("--note", help="a sentence on the run's conditions, printed in the doc")
    ap.add_argument("--doc", help="markdown output (default docs/seeds.md)")
    ap.add_argument("--json", help="JSON output (default benchmarks/results/seeds.json)")
    args = ap.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    out_dir = Path(args.out_dir)
    data_root = Path(args.data_root) if args.data_root else None
    if args.smoke:
        data_root = make_smoke_data(out_dir / "smoke-data")
        args.cache_dir = args.cache_dir or str(out_dir / "cache")
    old_cache = os.environ.get("FACEGENDER_CACHE")
    if args.cache_dir:  # evaluate() reads the cache location from here
        os.environ["FACEGENDER_CACHE"] = args.cache_dir
    try:
        return _run(args, data_root)
    finally:
        if args.cache_dir:
            if old_cache is None:
                os.environ.pop("FACEGENDER_CACHE", None)
            else:
                os.environ["FACEGENDER_CACHE"] = old_cache


def _run(args, data_root: Path | None) -> int:
    from facegender.checkpoint import write_json
    from facegender.data.manifest import write_manifest
    from facegender.recipe import load_recipe

    out_dir = Path(args.out_dir)
    doc = Path(args.doc) if args.doc else (out_dir if args.smoke else ROOT / "docs") / "seeds.md"
    json_path = (
        Path(args.json)
        if args.json
        else (out_dir if args.smoke else ROOT / "benchmarks" / "results") / "seeds.json"
    )
    common = dict(
        progress=False, threads=args.threads, cache_dir=args.cache_dir, precision=args.precision
    )

    default_cfg = load_recipe(RECIPES / "default.toml", out=str(out_dir / "default"), **common)
    default_cfg = dataclasses.replace(default_cfg, data=repoint(default_cfg.data, data_root))
    missing = [d for d in default_cfg.data if not Path(d).is_dir()]
    if missing:
        log(f"data not found: {missing} (needs ../shared/data, or --data-root / --smoke)")
        return 2
    machine_info = machine()
    t_start = time.perf_counter()
    heldout, pool, dropped = common_split(default_cfg)
    cdir = out_dir / "common"
    cdir.mkdir(parents=True, exist_ok=True)
    heldout_csv = write_manifest(heldout, cdir / "heldout.csv")
    pools = {
        src: write_manifest([s for s in pool if s.source == src], cdir / f"pool-{src}.csv")
        for src in sorted({s.source for s in pool})
    }
    if dropped:
        from facegender.train import report_skipped

        report_skipped(dropped, cdir / "dropped.csv", log=lambda m: log(f"  {m}"))

    rows = []
    if args.smoke and not args.default_model:
        cfg = dataclasses.replace(default_cfg, epochs=1)
        run = run_recipe(cfg, args.reuse)
        default_dir = Path(cfg.out)
    else:
        default_dir = find_default_model(args.default_model)
        check_default(default_dir, default_cfg, len(heldout))
        run = {"reused": True}
    log(f"default model: {default_dir}")
    default_row = score(default_dir, heldout_csv, out_dir / "default", not args.no_report)
    ta = json.loads((default_dir / "config.json").read_text()).get("train_args", {})
    rows.append(
        {
            "name": "default",
            "recipe": "recipes/default.toml",
            "checkpoint": str(default_dir),
            "trained_on": [Path(d).name for d in ta.get("data", default_cfg.data)],
            "epochs_planned": ta.get("epochs"),
            "claim": None,
            **run,
            **default_row,
        }
    )

    manifests = []
    for recipe in seed_recipes(args.only):
        name = recipe.stem
        cfg = load_recipe(recipe, out=str(out_dir / name), **common)
        sources = [Path(d).name for d in cfg.data]
        unknown = [s for s in sources if s not in pools]
        if unknown:
            raise SystemExit(f"{recipe}: source(s) {unknown} are not in the common data {SOURCES}")
        epochs = 1 if args.smoke else max(1, round(cfg.epochs * args.epochs_scale))
        cfg = dataclasses.replace(
            cfg,
            data=[str(pools[s]) for s in sources],
            val=[],
            epochs=epochs,
            max_train=args.max_train or cfg.max_train,
        )
        manifests += [pools[s] for s in sources]
        check_no_leak(heldout, [pools[s] for s in sources])
        log(f"{name}: {cfg.model} {cfg.image_size} px on {' + '.join(sources)}, {epochs} epochs")
        run = run_recipe(cfg, args.reuse)
        did, dev = _header_notes(recipe)
        row = score(Path(cfg.out), heldout_csv, Path(cfg.out), not args.no_report)
        rows.append(
            {
                "name": name,
                "recipe": str(recipe.relative_to(ROOT)),
                "checkpoint": cfg.out,
                "trained_on": sources,
                "epochs_planned": epochs,
                "recipe_epochs": tomllib.loads(recipe.read_text()).get("epochs"),
                "claim": CLAIMS.get(name),
                "seed_did": did,
                "deviations": dev,
                **run,
                **row,
            }
        )
        log(
            f"{name}: accuracy {row['accuracy']:.4f} (utkface "
            f"{row['per_source'].get('utkface', {}).get('accuracy', float('nan')):.4f}, "
            f"kaggle-gender "
            f"{row['per_source'].get('kaggle-gender', {}).get('accuracy', float('nan')):.4f}), "
            f"{row['minutes']:.1f} min"
        )
    n_checked = check_no_leak(heldout, sorted(set(manifests))) if manifests else 0

    summary = {
        "command": " ".join(["python benchmarks/seeds.py", *args.argv]),
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": machine_info,
        "wall_minutes": round((time.perf_counter() - t_start) / 60, 1),
        "options": {
            "epochs_scale": args.epochs_scale,
            "max_train": args.max_train,
            "reuse": args.reuse,
            "smoke": args.smoke,
            "note": args.note,
            "data_root": str(data_root) if data_root else None,
        },
        "split": {
            "recipe": "recipes/default.toml",
            "val_split": default_cfg.val_split,
            "seed": default_cfg.val_seed,
            "sources": [Path(d).name for d in default_cfg.data],
            "heldout": len(heldout),
            "heldout_per_source": {
                src: sum(s.source == src for s in heldout)
                for src in sorted({s.source for s in heldout})
            },
            "pool": len(pool),
            "dropped": len(dropped),
            "checked_training_files": n_checked,
            "manifest": str(heldout_csv),
        },
        "rows": rows,
    }
    write_json(json_path, summary)
    write_doc(doc, summary)
    log(f"wrote {doc} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
