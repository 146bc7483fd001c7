"""How much of the bundled model's calibration is fitted to the faces it is then scored on.

    python benchmarks/calibration_crossfit.py [--model DIR] [--folds 5] [--json PATH]

Training and ``facegender.bundle`` fit the age classes' logit scales and the temperature on the
validation split, and ``bundled_model.py`` reports calibration on that same split. Five
scales and one temperature on about 7,900 faces cannot flatter the overall figure much, but each
scale is set by the few hundred faces the model takes for that age class: the very children
whose over-confidence the card reports. This benchmark refits the same calibration (the same
functions, on stored logits) in K folds of the split, each fold scored by a fit that never saw
it, and sets the result beside the in-sample fit:

- ``raw``: no calibration at all;
- ``temperature``: one temperature, cross-fitted (what the model had before the age head);
- ``in_sample``: age scales + temperature fitted on every face, as shipped;
- ``cross_fitted``: the same, fitted on the other folds.

Accuracy is the same in all four (a positive scale never flips a prediction). Folds are
stratified by source x age class x label; both crops of a face fall in the same fold, and
every fit uses both crops, as training does. The model runs once, without flip TTA (as the
bundle does), on the PyTorch backend, because the scales need the raw logits and the age head's.
Prints per-source and per-age tables and writes ``benchmarks/results/calibration_crossfit.json``.
Needs ../shared/data.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from _heldout import ROOT, heldout_views, split_config

from facegender.checkpoint import write_json
from facegender.labels import AGE_GROUP_ORDER, age_class, age_group
from facegender.metrics import (
    age_scaled_logits,
    bootstrap_interval,
    ece_noise_floor,
    expected_calibration_error,
    fit_age_scales,
    fit_temperature,
    overconfidence,
)
from facegender.preprocess import probability

VARIANTS = ("raw", "temperature", "in_sample", "cross_fitted")


def raw_heads(clf, arrays: dict) -> tuple[dict, dict]:
    """Per crop: the uncalibrated logits and the age head's logits (one class: no age head)."""
    model = clf.model
    model.tta_flip = False
    if getattr(model, "age_scale", None) is not None:
        model.age_scale.fill_(1.0)
    z, a = {}, {}
    for crop, x in arrays.items():
        z[crop], a[crop] = clf.heads(x)
        if a[crop] is None:  # one constant class: its scale is a temperature
            a[crop] = np.zeros((len(x), 1))
    return z, a


def fit_calibration(z: dict, a: dict, y: np.ndarray, rows: np.ndarray, age: bool = True):
    """Age scales (all 1 with ``age=False``) then a temperature, on ``rows`` of every crop."""
    crops = list(z)
    zs = np.concatenate([z[c][rows] for c in crops])
    az = np.concatenate([a[c][rows] for c in crops])
    ys = np.tile(y[rows], len(crops))
    scales = fit_age_scales(zs, az, ys) if age else np.ones(az.shape[1])
    return scales, fit_temperature(age_scaled_logits(zs, az, scales), ys)


def folds_of(samples, y: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Each face's fold, dealt round-robin inside every source x age class x label stratum."""
    rng = np.random.default_rng(seed)
    strata = [(s.source, age_class(s), int(label)) for s, label in zip(samples, y, strict=True)]
    fold = np.empty(len(y), dtype=int)
    for key in dict.fromkeys(strata):
        idx = np.flatnonzero([st == key for st in strata])
        fold[rng.permutation(idx)] = np.arange(len(idx)) % k
    return fold


def calibrated(z: dict, a: dict, y: np.ndarray, fold: np.ndarray) -> dict:
    """``{variant: {crop: P(female)}}`` for every face, each variant as described above."""
    crops, k = list(z), fold.max() + 1
    every = np.arange(len(y))
    out = {"raw": {c: probability(z[c]) for c in crops}}
    s, t = fit_calibration(z, a, y, every)
    out["in_sample"] = {c: probability(age_scaled_logits(z[c], a[c], s), t) for c in crops}
    for name, age in (("temperature", False), ("cross_fitted", True)):
        out[name] = {c: np.empty(len(y)) for c in crops}
        for f in range(k):
            s, t = fit_calibration(z, a, y, np.flatnonzero(fold != f), age=age)
            m = fold == f
            for c in crops:
                out[name][c][m] = probability(age_scaled_logits(z[c][m], a[c][m], s), t)
    return out


def group_rows(y: np.ndarray, probs: dict, mask: np.ndarray) -> dict:
    """Accuracy, and per variant ECE (with its floor) and over-confidence with its interval."""
    yy = y[mask]
    row = {"n": int(mask.sum()), "accuracy": float(((probs["raw"][mask] >= 0.5) == yy).mean())}
    row["ece_floor"] = ece_noise_floor(probs["in_sample"][mask])
    for v in VARIANTS:
        p = probs[v][mask]
        row[v] = {
            "ece": expected_calibration_error(yy, p),
            "overconfidence": overconfidence(yy, p),
            "overconfidence_ci95": list(bootstrap_interval(overconfidence, yy, p)),
        }
    return row


def summarise(samples, y: np.ndarray, cal: dict) -> dict:
    """Per crop: overall, per source, per source x age group."""
    src = np.array([s.source for s in samples])
    ages = np.array([age_group(s) or "" for s in samples])
    out = {}
    for crop in cal["raw"]:
        probs = {v: cal[v][crop] for v in VARIANTS}
        entry = {"all": group_rows(y, probs, np.ones(len(y), bool)), "sources": {}}
        for name in sorted(set(src)):
            m = src == name
            groups = [g for g in AGE_GROUP_ORDER if (m & (ages == g)).any()]
            entry["sources"][name] = {
                "all": group_rows(y, probs, m),
                "age": {g: group_rows(y, probs, m & (ages == g)) for g in groups},
            }
        out[crop] = entry
    return out


def _cell(d: dict) -> str:
    lo, hi = d["overconfidence_ci95"]
    flag = "**" if lo > 0 or hi < 0 else ""
    return f"{flag}{d['overconfidence']:+.3f}{flag} ({lo:+.3f} to {hi:+.3f})"


def print_tables(result: dict) -> None:
    for crop, entry in result["crops"].items():
        print(f"\n{crop} crops: over-confidence (95 % CI; bold: the interval excludes 0), ECE")
        print(
            "| group | n | accuracy | raw | temperature, cross-fitted | age scales, in sample "
            "| age scales, cross-fitted | ECE in sample / cross-fitted (floor) |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        rows = [("all", entry["all"])]
        for name, e in entry["sources"].items():
            rows.append((name, e["all"]))
            rows += [(f"{name} {g}", d) for g, d in e["age"].items()]
        for label, d in rows:
            print(
                f"| {label} | {d['n']} | {100 * d['accuracy']:.1f} % | "
                + " | ".join(_cell(d[v]) for v in VARIANTS)
                + f" | {d['in_sample']['ece']:.3f} / {d['cross_fitted']['ece']:.3f} "
                f"({d['ece_floor']:.3f}) |"
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint folder (default: bundled model)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/calibration_crossfit.json"))
    args = ap.parse_args()
    if args.folds < 2:
        ap.error("--folds must be at least 2")

    from facegender.classifier import load_classifier

    clf = load_classifier(args.model, backend="torch")
    cfg = split_config(clf.config, args.model)
    if cfg is None:
        return 2
    arrays, samples, no_face = heldout_views(cfg)
    y = np.array([s.label for s in samples])
    z, a = raw_heads(clf, arrays)
    fold = folds_of(samples, y, args.folds)
    result = {
        "model": clf.config["model"],
        "folds": args.folds,
        "no_face_through_predict": no_face["aligned"],
        "crops": summarise(samples, y, calibrated(z, a, y, fold)),
        "command": " ".join(sys.argv),
    }
    print_tables(result)
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
