"""Evaluate a checkpoint on labelled face crops: headline metrics, groups, skipped files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facegender.abstain import risk_coverage
from facegender.classifier import load_classifier
from facegender.data import read_data
from facegender.data.cache import decode_dataset, default_cache_dir
from facegender.metrics import binary_metrics, group_metrics


def evaluate(
    data: list[str],
    model: str | Path | None = None,
    classifier=None,
    cache: bool = True,
    progress: bool = False,
    batch_size: int = 256,
    face_crop: str = "own",
) -> dict:
    """Metrics for each image in ``data``: one face crop (``own``), or the crop ``predict``
    makes of its largest centred face (``aligned``; see :mod:`facegender.data.cache`)."""
    clf = classifier or load_classifier(model)
    ds = read_data(data)
    arrays, ds = decode_dataset(
        ds,
        clf.preprocess,
        default_cache_dir() if cache else None,
        progress=progress,
        face_crop=face_crop,
    )
    y = np.array([s.label for s in ds.samples], dtype=int)
    p = clf.probabilities(arrays, batch_size=batch_size)
    result = binary_metrics(y, p) if len(y) else {"n": 0}
    result["groups"] = group_metrics(ds.samples, y, p) if len(y) else {}
    if len(y):
        result["risk_coverage"] = risk_coverage(ds.samples, y, p)
    result["skipped"] = [s.to_dict() for s in ds.skipped]
    result["face_crop"] = face_crop
    if face_crop != "own":
        result["no_face"] = len(ds.no_face)
    result["model"] = {
        "name": clf.config["model"]["name"],
        "backend": clf.backend,
        "temperature": clf.temperature,
    }
    result["predictions"] = [
        {"path": s.path, "label": int(s.label), "female_probability": float(pi)}
        for s, pi in zip(ds.samples, p, strict=True)
    ]
    return result


def _coverage_line(rc: dict | None) -> str:
    """'share answered at each target accuracy' from ``risk_coverage`` (min-confidence rule)."""
    if not rc:
        return "n/a"
    at = rc["overall"]["coverage_at_accuracy"]
    return ", ".join(f"{float(t):.0%} accuracy on {c:.1%} of faces" for t, c in at.items())


def format_table(result: dict) -> str:
    """Human-readable summary of :func:`evaluate`'s result."""
    lines = []
    if not result.get("n"):
        lines.append("no images evaluated")
    else:
        lo, hi = result["accuracy_ci95"]
        auc = result["roc_auc"]
        lines += [
            f"images     {result['n']}",
            f"accuracy   {result['accuracy']:.4f}  (95% CI {lo:.4f}-{hi:.4f})",
            f"precision  {result['precision']:.4f}   recall {result['recall']:.4f}   "
            f"F1 {result['f1']:.4f}   (positive: female)",
            f"ROC-AUC    {auc:.4f}" if auc is not None else "ROC-AUC    n/a (one class)",
            f"ECE        {result['ece']:.4f}",
            "abstaining " + _coverage_line(result.get("risk_coverage")),
            "confusion  rows = truth, columns = predicted",
            "           male    female",
        ]
        for name, row in zip(("male", "female"), result["confusion"]["matrix"], strict=True):
            lines.append(f"  {name:<8} {row[0]:>6}  {row[1]:>6}")
        groups = dict(result.get("groups", {}))
        per_source = groups.pop("by_source", {})
        tables = [(f"by {g}", t) for g, t in groups.items()]
        tables += [(f"{src} by {g}", t) for src, ts in per_source.items() for g, t in ts.items()]
        for title, table in tables:
            lines.append(f"{title}:")
            for key, d in table.items():
                lines.append(f"  {key:<22} n={d['n']:<6} accuracy {d['accuracy']:.4f}")
    if result.get("skipped"):
        lines.append(f"skipped {len(result['skipped'])}:")
        lines += [f"  {s['path']}: {s['reason']}" for s in result["skipped"][:50]]
        if len(result["skipped"]) > 50:
            lines.append(f"  ... and {len(result['skipped']) - 50} more (see --format json)")
    return "\n".join(lines)
