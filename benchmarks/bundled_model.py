"""Accuracy of the bundled model on its held-out validation split, per source and per group,
on each data set's own crops and through ``predict``'s detector + alignment.

    python benchmarks/bundled_model.py [--model DIR|fast|accurate] [--backend auto|torch|onnx]
    python benchmarks/bundled_model.py --model runs/a runs/b    # ensemble: mean calibrated logit

Re-creates the validation split from the checkpoint's own training args (same data, seed and
split; never trained on). Each image is scored twice: on its own crop, and on the crop that
``facegender predict`` makes of it (YuNet + facegender.align, the largest centred face; an image
where no face is found keeps its own crop and is counted). Reports accuracy with 95 % intervals
overall, per source, per source x age group (own vs through predict), per source x race x gender,
the UTKFace adult race gap, and the calibration error per source and age group: ECE beside
its noise floor (what a perfectly calibrated model would read on a group that small) and the
over-confidence (mean confidence minus accuracy) with its bootstrap interval. The own-vs-predict
difference is also split by how much of predict's crop falls outside the data set's image (black
fill: pixels that exist in a photo but not in a pre-cut crop).
Prints markdown tables and writes benchmarks/results/bundled_model.json, and beside it each face's
probabilities (bundled_model.faces.csv.gz) for ``benchmarks/paired.py``. Needs ../shared/data.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import sys
import time
from pathlib import Path

import numpy as np
from _heldout import ROOT, heldout_views, split_config

from facegender.checkpoint import write_json
from facegender.labels import age_group
from facegender.metrics import (
    binary_metrics,
    bootstrap_interval,
    ece_noise_floor,
    expected_calibration_error,
    group_metrics,
    overconfidence,
)
from facegender.model_ref import BUNDLED


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
        help="checkpoint folder or a bundled name (default: the bundled model); several: their "
        "ensemble "
        "(mean of logit / temperature), all on the first one's split and preprocessing",
    )
    ap.add_argument("--backend", default="auto")
    ap.add_argument(
        "--json", default=None, help="default: results/bundled_model[_NAME].json, NAME not default"
    )
    ap.add_argument(
        "--faces",
        default=None,
        help="per-face probabilities for benchmarks/paired.py (default: the JSON's name with "
        ".faces.csv.gz)",
    )
    args = ap.parse_args()
    results = ROOT / "benchmarks" / "results"
    name = args.model[0] if len(args.model) == 1 and args.model[0] in BUNDLED else "default"
    args.json = args.json or str(
        results / ("bundled_model.json" if name == "default" else f"bundled_model_{name}.json")
    )
    args.faces = args.faces or str(Path(args.json).with_suffix(".faces.csv.gz"))

    from facegender.classifier import load_classifier
    from facegender.preprocess import probability

    members = [load_classifier(m, backend=args.backend) for m in args.model]
    clf, config = members[0], members[0].config
    for m, name in zip(members[1:], args.model[1:], strict=True):
        if m.preprocess != clf.preprocess:
            raise SystemExit(f"{name}: preprocessing differs from {args.model[0]}'s")
    cfg = split_config(config, args.model[0])
    if cfg is None:
        return 2
    arrays, samples, no_face = heldout_views(cfg)
    views, seconds = {}, 0.0
    for crop, x in arrays.items():
        t0 = time.perf_counter()
        z = np.mean([m.logits(x, batch_size=256) / m.temperature for m in members], axis=0)
        seconds += time.perf_counter() - t0
        views[crop] = probability(z)
    outside = black_share(arrays["aligned"])
    y = np.array([s.label for s in samples])
    result = summarise(samples, y, views)
    result["gap_by_outside"] = gap_by_outside(samples, y, views, outside)
    result.update(
        model=config["model"],
        ensemble_of=args.model if len(members) > 1 else None,
        backend=clf.backend,
        no_face_through_predict=no_face["aligned"],
        calibration=config.get("calibration"),
        faces_per_second_batch256=2 * len(y) / seconds,
        command=" ".join(sys.argv),
    )
    print_tables(result)
    write_json(args.json, result)
    write_faces(args.faces, samples, cfg.data, views)
    print(f"wrote {args.json} and {args.faces}")
    return 0


FACE_COLUMNS = ("face", "source", "label", "age_group", "race", "p_own", "p_predict")


def write_faces(path: str, samples, data_dirs, views: dict) -> None:
    """One row per held-out face: its name under the data root, groups and both probabilities.

    Two models' files, joined on the face, are what ``benchmarks/paired.py`` tests; names are
    relative to the data folders' parent, so files written on two machines still join.
    """
    roots = [Path(d).resolve().parent for d in data_dirs]
    with gzip.open(path, "wt", newline="") as f:
        w = csv.writer(f)
        w.writerow(FACE_COLUMNS)
        for i, s in enumerate(samples):
            w.writerow(
                (
                    _relative(Path(s.path).resolve(), roots),
                    s.source,
                    s.label,
                    age_group(s) or "",
                    s.race or "",
                    f"{views['own'][i]:.5f}",
                    f"{views['aligned'][i]:.5f}",
                )
            )


def _relative(path: Path, roots: list[Path]) -> str:
    for root in roots:
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
    return path.as_posix()


# Bins of the share of predict's crop that lies outside the data set's image.
OUTSIDE_BINS = ((0.0, 0.02), (0.02, 0.10), (0.10, 1.01))


def black_share(arrays: np.ndarray) -> np.ndarray:
    """Share of each crop's pixels that are black fill, i.e. outside the image it was cut from.

    The data sets' files are crops already, so the crop ``predict`` makes of one (a template
    that takes in the forehead and some hair) often reaches past its edge, where there are
    no pixels to take; align fills those black. On the data sets' own crops this share is 0
    for the median image, so it measures the missing pixels, not dark hair.
    """
    return (np.asarray(arrays).max(axis=3) <= 3).mean(axis=(1, 2))


def gap_by_outside(samples, y, views: dict, outside: np.ndarray) -> dict:
    """Per source: own vs through-predict accuracy by how much of predict's crop is missing."""
    out = {}
    correct = {crop: (p >= 0.5) == y for crop, p in views.items()}
    src = np.array([s.source for s in samples])
    for name in sorted(set(src)):
        rows = {}
        for lo, hi in OUTSIDE_BINS:
            m = (src == name) & (outside >= lo) & (outside < hi)
            if m.any():
                own, pred = float(correct["own"][m].mean()), float(correct["aligned"][m].mean())
                rows[f"{lo:.2f}-{min(hi, 1):.2f}"] = {
                    "n": int(m.sum()),
                    "own": own,
                    "predict": pred,
                    "difference": pred - own,
                }
        out[name] = {"median_outside": float(np.median(outside[src == name])), "bins": rows}
    return out


def _ece_by(keys, y, p) -> dict:
    out = {}
    for k in dict.fromkeys(keys):
        if k is None:
            continue
        m = np.array([kk == k for kk in keys])
        out[k] = {
            "n": int(m.sum()),
            "ece": expected_calibration_error(y[m], p[m]),
            "ece_floor": ece_noise_floor(p[m]),
            "overconfidence": overconfidence(y[m], p[m]),
            "overconfidence_ci95": list(bootstrap_interval(overconfidence, y[m], p[m])),
        }
    return out


def summarise(samples, y, views: dict) -> dict:
    """Per source: own vs through-predict accuracy by age group, race x gender, ECE by age."""
    keep = ("accuracy", "accuracy_ci95", "precision", "recall", "f1", "roc_auc", "ece", "confusion")
    out = {"n": int(len(y))}
    for crop, p in views.items():
        overall = binary_metrics(y, p)
        out[f"overall_{crop}"] = {k: overall[k] for k in keep}
    groups = {crop: group_metrics(samples, y, p) for crop, p in views.items()}
    out["per_source"] = {crop: g["source"] for crop, g in groups.items()}
    out["sources"] = {}
    for src in sorted({s.source for s in samples}):
        idx = np.array([i for i, s in enumerate(samples) if s.source == src])
        sub = [samples[i] for i in idx]
        ages = [age_group(s) for s in sub]
        entry = {}
        for crop, p in views.items():
            g = group_metrics(sub, y[idx], p[idx])
            entry[crop] = {
                "accuracy": float(((p[idx] >= 0.5) == y[idx]).mean()),
                "ece": expected_calibration_error(y[idx], p[idx]),
                "age": g.get("age", {}),
                "race_gender": g.get("race_gender", {}),
                "ece_by_age": _ece_by(ages, y[idx], p[idx]),
            }
        out["sources"][src] = entry
    out.update(_utk_adult_race_gap(samples, y, views["own"]))
    return out


def _utk_adult_race_gap(samples, y, p) -> dict:
    adults = [i for i, s in enumerate(samples) if s.age is not None and s.age >= 18]
    if not adults:
        return {"utkface_adult_race": {}, "utkface_adult_race_gap_points": None}
    race = group_metrics([samples[i] for i in adults], y[adults], p[adults])["race"]
    accs = [d["accuracy"] for d in race.values()]
    return {
        "utkface_adult_race": race,
        "utkface_adult_race_gap_points": 100 * (max(accs) - min(accs)),
    }


def _age_table(src: str, e: dict) -> str:
    """Own vs through-predict accuracy and calibration per age group of one source."""
    rows = [
        f"| {src} age | n | own crops | through predict | difference | ECE own | ECE predict "
        "| ECE floor | over-confidence own (95 % CI) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for k, d in e["own"]["age"].items():
        a = e["aligned"]["age"].get(k, {"accuracy": float("nan")})
        c = e["own"]["ece_by_age"][k]
        rows.append(
            f"| {k} | {d['n']} | {100 * d['accuracy']:.1f} % | {100 * a['accuracy']:.1f} % | "
            f"{100 * (a['accuracy'] - d['accuracy']):+.1f} | "
            f"{c['ece']:.3f} | {e['aligned']['ece_by_age'][k]['ece']:.3f} | "
            f"{c['ece_floor']:.3f} | {_signed_ci(c)} |"
        )
    return "\n".join(rows) + "\n"


def _outside_table(g: dict) -> str:
    rows = [
        "| source | share of predict's crop outside the image | n | own crops | through predict "
        "| difference |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for src, e in g.items():
        for k, d in e["bins"].items():
            rows.append(
                f"| {src} | {k} | {d['n']} | {100 * d['own']:.1f} % | {100 * d['predict']:.1f} % "
                f"| {100 * d['difference']:+.1f} |"
            )
    return "\n".join(rows)


def _signed_ci(c: dict) -> str:
    lo, hi = c["overconfidence_ci95"]
    return f"{c['overconfidence']:+.3f} ({lo:+.3f} to {hi:+.3f})"


def print_tables(r: dict) -> None:
    own, pred = r["overall_own"], r["overall_aligned"]
    print(
        f"validation split: n={r['n']}  own crops {100 * own['accuracy']:.2f} %  through "
        f"predict {100 * pred['accuracy']:.2f} % (no face found: {r['no_face_through_predict']})"
        f"  ROC-AUC {own['roc_auc']:.4f}  backend {r['backend']}\n"
    )
    print(table("source, own crops", r["per_source"]["own"]) + "\n")
    print(table("source, through predict", r["per_source"]["aligned"]) + "\n")
    for src, e in r["sources"].items():
        if e["own"]["age"]:  # a source without ages (kaggle-gender) has no age table
            print(_age_table(src, e))
        if e["own"]["race_gender"]:
            print(table(f"{src} race x gender, own crops", e["own"]["race_gender"]) + "\n")
    if "gap_by_outside" in r:
        print(_outside_table(r["gap_by_outside"]) + "\n")
    if r["utkface_adult_race_gap_points"] is not None:
        print(table("UTKFace adults (18+) race", r["utkface_adult_race"]))
        print(f"\nadult worst-to-best race gap: {r['utkface_adult_race_gap_points']:.1f} points")


if __name__ == "__main__":
    sys.exit(main())
