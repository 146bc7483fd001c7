"""Abstaining: answer ``"uncertain"`` when the calibrated probability is too close to 0.5.

A face whose confidence ``max(p, 1 - p)`` is below ``min_confidence`` gets the label
:data:`UNCERTAIN` (its probability is still reported), so a user who prefers no answer to a
wrong one can say how sure the model must be. The probabilities are temperature-calibrated on
the validation split, so ``min_confidence=0.9`` means roughly "answer only where the model is
right nine times in ten or more".

The same rule gives the risk-coverage curve that ``evaluate`` reports: for each threshold, the
share of faces answered (coverage) and the accuracy on those. Off by default (None): every face
is labelled male or female, as the output contract always said.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facegender.labels import AGE_GROUP_ORDER, LABELS, age_group

UNCERTAIN = "uncertain"
# Thresholds of the risk-coverage curve in evaluate's JSON and the report's plot.
THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99)
# The accuracy targets whose best coverage evaluate states (e.g. the model card's 98 %).
TARGETS = (0.95, 0.98, 0.99)


def check_min_confidence(value: float | None) -> float | None:
    """``value`` if it is a usable threshold (None, or 0.5 to 1); else a ``ValueError``."""
    if value is None:
        return None
    value = float(value)
    if not 0.5 <= value <= 1.0:
        raise ValueError(
            f"min_confidence must be between 0.5 (answer every face) and 1.0, not {value:g}"
        )
    return value


def gender_label(p: float, min_confidence: float | None = None) -> str:
    """``male``/``female`` for P(female) ``p``, or ``uncertain`` below ``min_confidence``."""
    if min_confidence is not None and max(p, 1.0 - p) < min_confidence:
        return UNCERTAIN
    return LABELS[int(p >= 0.5)]


def relabel(result, min_confidence: float | None):
    """An :class:`~facegender.predict.ImageResult` with its faces labelled at this threshold
    (the web service's per-request ``min_confidence``, without touching the shared predictor)."""
    if min_confidence is None:
        return result
    for f in result.faces:
        f.gender = gender_label(f.female_probability, min_confidence)
    return result


def curve(y: np.ndarray, p: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> dict:
    """Coverage, number answered and accuracy on the answered faces at each threshold.

    Accuracy is None where no face is answered.
    """
    y, p = np.asarray(y, dtype=int), np.asarray(p, dtype=float)
    conf = np.maximum(p, 1.0 - p)
    correct = (p >= 0.5).astype(int) == y
    out: dict[str, list] = {"coverage": [], "answered": [], "accuracy": []}
    for t in thresholds:
        ok = conf >= t
        k = int(ok.sum())
        out["answered"].append(k)
        out["coverage"].append(k / len(y) if len(y) else 0.0)
        out["accuracy"].append(float(correct[ok].mean()) if k else None)
    return out


def coverage_at(y: np.ndarray, p: np.ndarray, target: float) -> float:
    """The largest share of faces (most confident first) answered with accuracy >= ``target``."""
    y, p = np.asarray(y, dtype=int), np.asarray(p, dtype=float)
    if not len(y):
        return 0.0
    conf = np.maximum(p, 1.0 - p)
    correct = ((p >= 0.5).astype(int) == y)[np.argsort(-conf, kind="stable")]
    running = np.cumsum(correct) / np.arange(1, len(y) + 1)
    ok = np.flatnonzero(running >= target)
    return float((ok[-1] + 1) / len(y)) if len(ok) else 0.0


def _group_keys(samples: Sequence) -> dict[str, list[str | None]]:
    return {
        "age": [age_group(s) for s in samples],
        "race": [s.race for s in samples],
        "source": [s.source for s in samples],
    }


def risk_coverage(samples: Sequence, y: np.ndarray, p: np.ndarray) -> dict:
    """Evaluate's ``risk_coverage``: the curve and coverage at each target, overall and per
    age band, race and source (groups with labels only)."""
    y, p = np.asarray(y, dtype=int), np.asarray(p, dtype=float)

    def entry(idx: np.ndarray) -> dict:
        return {
            "n": int(len(idx)),
            **curve(y[idx], p[idx]),
            "coverage_at_accuracy": {str(t): coverage_at(y[idx], p[idx], t) for t in TARGETS},
        }

    groups: dict[str, dict] = {}
    for name, keys in _group_keys(samples).items():
        table = {}
        order = {k: i for i, k in enumerate(AGE_GROUP_ORDER)} if name == "age" else {}
        for key in sorted({k for k in keys if k is not None}, key=lambda k: (order.get(k, 99), k)):
            table[key] = entry(np.array([i for i, k in enumerate(keys) if k == key]))
        if table:
            groups[name] = table
    return {
        "thresholds": list(THRESHOLDS),
        "overall": entry(np.arange(len(y))),
        "groups": groups,
    }
