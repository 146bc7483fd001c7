"""k-fold cross-validation: per fold, a real training run and an evaluation of the held-out part.

Folds are stratified by source x label (every fold gets the same mix), or, with
``group_by="source"``, whole sources are held out (``StratifiedGroupKFold``) to measure transfer
to an unseen collection. None of the readers knows person identities, so identity grouping is not
available. Inside each fold the training part is split again (``val_split``, stratified) for
checkpoint selection and temperature calibration, so the held-out fold is never looked at before
it is scored. The held-out files of each fold are written as a CSV manifest and scored by
:func:`facegender.evaluate.evaluate`, the same code path as ``facegender evaluate``.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from facegender.checkpoint import write_json
from facegender.data import DataSet, Sample, read_data
from facegender.data.cache import decode_dataset, default_cache_dir
from facegender.data.manifest import write_manifest

METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "ece")


def fold_splits(
    samples: list[Sample], folds: int, seed: int = 0, group_by: str = "none"
) -> list[np.ndarray]:
    """Held-out indices of each fold; every sample is held out exactly once."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if folds < 2:
        raise ValueError("--folds must be at least 2")
    x = np.zeros(len(samples))
    if group_by == "source":
        groups = [s.source for s in samples]
        if len(set(groups)) < folds:
            raise ValueError(
                f"grouping by source needs at least {folds} sources, found {len(set(groups))}"
            )
        y = [s.label for s in samples]
        splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
        parts = splitter.split(x, y, groups)
    elif group_by == "none":
        strata = [f"{s.source}|{s.label}" for s in samples]
        _, counts = np.unique(strata, return_counts=True)
        if counts.min() < folds:
            strata = [str(s.label) for s in samples]  # a tiny source: stratify by label only
        parts = StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, strata)
    else:
        raise ValueError(f"unknown group_by {group_by!r} (none | source)")
    return [np.sort(test) for _, test in parts]


def summarize(per_fold: list[dict]) -> dict[str, dict]:
    """Mean and sample standard deviation (ddof=1) of each metric over the folds."""
    out = {}
    for m in METRICS:
        vals = np.array([f[m] for f in per_fold if f.get(m) is not None], dtype=float)
        if len(vals):
            out[m] = {
                "mean": float(vals.mean()),
                "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                "n_folds": int(len(vals)),
            }
    return out


def cross_validate(cfg, folds: int = 5, group_by: str = "none", log=print) -> dict:
    """Run ``folds`` training runs from ``cfg`` (a :class:`TrainConfig`); write ``cv.json``.

    ``cfg.out`` is the CV folder: fold ``k`` trains into ``fold_k/``. A fold whose ``result.json``
    exists is not run again, so an interrupted CV continues where it stopped.
    """
    from facegender.evaluate import evaluate
    from facegender.metrics import binary_metrics
    from facegender.train import split_validation, train

    if cfg.val:
        raise ValueError("cross-validation makes its own validation splits; drop --val")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    # Decode once, exactly as train() will (same cache key), so indices refer to the same samples.
    _, ds = decode_dataset(read_data(cfg.data), cfg.preprocess(), cache, progress=cfg.progress)
    if len(ds.samples) < 2 * folds:
        raise ValueError(f"{len(ds.samples)} readable images are too few for {folds} folds")
    held_out = fold_splits(ds.samples, folds, cfg.seed, group_by)
    per_fold, oof_y, oof_p = [], [], []
    for k, test_idx in enumerate(held_out):
        fold_dir = out / f"fold_{k}"
        fold_dir.mkdir(exist_ok=True)
        result_file = fold_dir / "result.json"
        if result_file.is_file():
            log(f"fold {k + 1}/{folds}: already done, reading {result_file}")
            result = json.loads(result_file.read_text())
        else:
            rest = np.setdiff1d(np.arange(len(ds.samples)), test_idx)
            sub = DataSet([ds.samples[i] for i in rest])
            tr, va = split_validation(sub, cfg.val_split, cfg.seed + k)
            log(f"fold {k + 1}/{folds}: {len(tr)} train, {len(va)} val, {len(test_idx)} held out")
            t0 = time.perf_counter()
            train(
                replace(cfg, out=str(fold_dir), seed=cfg.seed + k),
                log=log,
                split=(rest[tr].tolist(), rest[va].tolist()),
            )
            manifest = write_manifest([ds.samples[i] for i in test_idx], fold_dir / "test.csv")
            result = evaluate([str(manifest)], model=fold_dir, cache=False)
            result["train_seconds"] = round(time.perf_counter() - t0, 1)
            result["n_train"], result["n_val"] = len(tr), len(va)
            write_json(result_file, result)
        row = {"fold": k, "n_test": result["n"], **{m: result.get(m) for m in METRICS}}
        row.update({key: result.get(key) for key in ("n_train", "n_val", "train_seconds")})
        per_fold.append(row)
        oof_y += [d["label"] for d in result["predictions"]]
        oof_p += [d["female_probability"] for d in result["predictions"]]
        log(
            f"fold {k + 1}/{folds}: accuracy {result['accuracy']:.4f} "
            f"ROC-AUC {result['roc_auc'] or float('nan'):.4f} on {result['n']} held-out images"
        )
    pooled = binary_metrics(np.array(oof_y), np.array(oof_p))
    report = {
        "folds": folds,
        "group_by": group_by,
        "seed": cfg.seed,
        "n": len(ds.samples),
        "skipped": len(ds.skipped),
        "summary": summarize(per_fold),
        "pooled_out_of_fold": {m: pooled.get(m) for m in (*METRICS, "accuracy_ci95")},
        "per_fold": per_fold,
        "train_config": cfg.to_dict(),
    }
    write_json(out / "cv.json", report)
    return report


def format_summary(report: dict) -> str:
    lines = [f"{report['folds']}-fold cross-validation on {report['n']} images (mean ± std)"]
    for m, d in report["summary"].items():
        lines.append(f"  {m:<10} {d['mean']:.4f} ± {d['std']:.4f}")
    pooled = report["pooled_out_of_fold"]
    lo, hi = pooled["accuracy_ci95"]
    lines.append(
        f"  pooled out-of-fold accuracy {pooled['accuracy']:.4f} (95% CI {lo:.4f}-{hi:.4f})"
    )
    return "\n".join(lines)
