"""Metrics for binary face-gender classification (positive class: female), by group and calibrated.

scikit-learn computes the standard metrics; calibration error and temperature fitting are the two
small pieces it does not provide.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from facegender.labels import AGE_GROUP_ORDER, LABELS, age_group


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval for a proportion k/n (sane at n small and p near 0 or 1)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict:
    """Exact McNemar test of two models scored on the same faces.

    Two accuracies on one split share most of their noise: the faces both models get right or
    both get wrong say nothing about which is better. Only the discordant faces do, and under
    "no difference" each of them is a fair coin, so the two-sided binomial test on them is the
    paired test. It separates a 2-point change in a group of 290 from chance where the two
    groups' Wilson intervals overlap.
    """
    from scipy.stats import binomtest

    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same faces: {a.shape} vs {b.shape}")
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    discordant = a_only + b_only
    p = binomtest(a_only, discordant, 0.5).pvalue if discordant else 1.0
    return {"n": int(a.size), "a_only": a_only, "b_only": b_only, "p_value": float(p)}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: p-values that hold for a whole table of comparisons.

    With 40 groups compared at 0.05, two "significant" differences are expected by chance alone;
    the adjusted values keep the chance of any false one at the level read.
    """
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (p.size - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def calibration_bins(y: np.ndarray, p: np.ndarray, bins: int = 15) -> dict[str, np.ndarray]:
    """Per equal-width bin of P(female): count, mean prediction and observed female rate.

    Empty bins hold NaN means; this is what a reliability diagram draws and what ECE sums.
    """
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(idx, weights=p, minlength=bins) / count
        rate = np.bincount(idx, weights=y, minlength=bins) / count
    return {"edges": edges, "count": count, "mean_p": mean_p, "rate": rate}


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 15) -> float:
    """ECE of P(female) over equal-width bins of the predicted probability."""
    if len(y) == 0:
        return float("nan")
    b = calibration_bins(y, p, bins)
    m = b["count"] > 0
    return float(np.sum(b["count"][m] / len(y) * np.abs(b["rate"][m] - b["mean_p"][m])))


def ece_noise_floor(p: np.ndarray, bins: int = 15, draws: int = 200, seed: int = 0) -> float:
    """Median ECE of a perfectly calibrated model with these predictions on this many images.

    ECE is biased upwards on small groups: with labels drawn from ``p`` itself (calibrated by
    construction) 100 images read about 0.1 at 15 bins. A group's ECE says something only
    where it stands above this floor; the floor also says whether a bar such as ECE <= 0.05 can
    be measured on a group of that size at all.
    """
    p = np.asarray(p, dtype=float)
    if len(p) == 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    sims = [expected_calibration_error(rng.random(len(p)) < p, p, bins) for _ in range(draws)]
    return float(np.median(sims))


def overconfidence(y: np.ndarray, p: np.ndarray) -> float:
    """Mean confidence in the predicted class minus accuracy (> 0: over-confident).

    Unlike ECE it has no small-sample bias, so it is the figure to read on small groups
    (children, the very old); :func:`bootstrap_interval` gives its interval.
    """
    y, p = np.asarray(y), np.asarray(p, dtype=float)
    if len(y) == 0:
        return float("nan")
    return float(np.maximum(p, 1 - p).mean() - ((p >= 0.5) == y).mean())


def bootstrap_interval(
    stat, y: np.ndarray, p: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Percentile 95 % interval of ``stat(y, p)`` over resamples of the images (with replacement).

    For statistics with no closed-form interval (F1, ROC-AUC, ECE); resamples where ``stat``
    is undefined (e.g. one class only for ROC-AUC) are dropped.
    """
    y, p = np.asarray(y), np.asarray(p)
    if len(y) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        try:
            v = stat(y[i], p[i])
        except ValueError:
            continue
        if v is not None and np.isfinite(v):
            vals.append(v)
    if not vals:
        return (float("nan"), float("nan"))
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return (float(lo), float(hi))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature T minimising the validation NLL of ``sigmoid(logit / T)``."""
    from scipy.optimize import minimize_scalar

    z, y = np.asarray(logits, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def nll(log_t: float) -> float:
        s = z / math.exp(log_t)
        return float(np.mean(np.logaddexp(0, s) - y * s))

    res = minimize_scalar(nll, bounds=(math.log(0.05), math.log(20)), method="bounded")
    return float(math.exp(res.x))


def age_scaled_logits(logits: np.ndarray, age_logits: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """``logit * (softmax(age_logits) @ scales)``: each face's logit scaled by the age classes'
    scales, weighted by how sure the age head is of each class. The same product as
    :meth:`facegender.models.fgnet.FGNet.forward_heads` in eval, for fitting and checking the
    scales on stored logits without running the model again."""
    from scipy.special import softmax

    p = softmax(np.asarray(age_logits, dtype=np.float64), axis=1)
    return np.asarray(logits, dtype=np.float64) * (p @ np.asarray(scales, dtype=np.float64))


def fit_age_scales(logits: np.ndarray, age_logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """One logit scale per age class, minimising the validation NLL of
    ``sigmoid(logit * (softmax(age_logits) @ scales))``: a temperature per age the model reads,
    so the faces it takes for children get their own (softer) calibration.

    Bounded to [0.05, 20] like :func:`fit_temperature`; fitted in log space.
    """
    from scipy.optimize import minimize
    from scipy.special import softmax

    z, y = np.asarray(logits, dtype=np.float64), np.asarray(y, dtype=np.float64)
    p = softmax(np.asarray(age_logits, dtype=np.float64), axis=1)

    def nll(log_s: np.ndarray) -> tuple[float, np.ndarray]:
        scale = p @ np.exp(log_s)
        s = z * scale
        q = 1.0 / (1.0 + np.exp(-s))
        grad_s = (q - y) / len(z)  # d mean NLL / d s
        return float(np.mean(np.logaddexp(0, s) - y * s)), p.T @ (grad_s * z) * np.exp(log_s)

    k = p.shape[1]
    bounds = [(math.log(0.05), math.log(20))] * k
    res = minimize(nll, np.zeros(k), jac=True, method="L-BFGS-B", bounds=bounds)
    return np.exp(res.x)


def binary_metrics(y: Sequence[int], p: Sequence[float], threshold: float = 0.5) -> dict:
    """Headline metrics; positive class is ``female`` (label 1)."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        log_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y, p = np.asarray(y, dtype=int), np.asarray(p, dtype=float)
    pred = (p >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    k = int((pred == y).sum())
    lo, hi = wilson_interval(k, len(y))
    return {
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, pred)) if len(y) else float("nan"),
        "accuracy_ci95": [lo, hi],
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "roc_auc": float(roc_auc_score(y, p)) if both else None,
        "log_loss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1]))
        if len(y)
        else None,
        "ece": expected_calibration_error(y, p),
        "confusion": {
            "labels": list(LABELS),
            "matrix": confusion_matrix(y, pred, labels=[0, 1]).tolist(),
        },
    }


def _group_table(keys: Iterable[str | None], correct: np.ndarray) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for key, ok in zip(keys, correct, strict=True):
        if key is None:
            continue
        d = out.setdefault(key, {"n": 0, "correct": 0})
        d["n"] += 1
        d["correct"] += int(ok)
    for d in out.values():
        d["accuracy"] = d["correct"] / d["n"]
        d["accuracy_ci95"] = list(wilson_interval(d["correct"], d["n"]))
    return out


def group_metrics(samples: Sequence, y: np.ndarray, p: np.ndarray) -> dict[str, dict]:
    """Accuracy per age group, race, race x gender and source, where the labels exist.

    Groups are each source's own names (UTKFace's age bands, FairFace's buckets and 7 race
    groups). With several sources, ``by_source`` repeats the tables for each source alone, so a
    name two sources share ("White") is never only seen pooled.
    """
    correct = (np.asarray(p) >= 0.5).astype(int) == np.asarray(y)
    groups = _group_tables(samples, correct)
    sources = sorted({s.source for s in samples})
    if len(sources) > 1:
        groups["by_source"] = {}
        for src in sources:
            idx = [i for i, s in enumerate(samples) if s.source == src]
            tables = _group_tables([samples[i] for i in idx], correct[idx])
            tables.pop("source", None)
            if tables:
                groups["by_source"][src] = tables
    return {k: v for k, v in groups.items() if v}


def _group_tables(samples: Sequence, correct: np.ndarray) -> dict[str, dict]:
    races = [s.race for s in samples]
    race_gender = [
        f"{r} {LABELS[s.label]}" if r else None for r, s in zip(races, samples, strict=True)
    ]
    ages = _group_table([age_group(s) for s in samples], correct)
    groups = {
        "age": {k: ages[k] for k in AGE_GROUP_ORDER if k in ages}
        | {k: v for k, v in ages.items() if k not in AGE_GROUP_ORDER},
        "race": _group_table(races, correct),
        "race_gender": _group_table(race_gender, correct),
        "source": _group_table([s.source for s in samples], correct),
    }
    return {k: v for k, v in groups.items() if v}
