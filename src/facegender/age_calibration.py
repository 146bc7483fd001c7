"""Per-age-class calibration of a model with an age head (``train --age-weight``).

One temperature serves adults well but leaves children over-confident, because the model reads
their gender far worse. The age head tells the two apart at inference, so each age class gets its
own logit scale, kept in the model's ``age_scale`` buffer: every backend and every export then
applies it without a line of code of its own.
"""

from __future__ import annotations

import numpy as np

from facegender.labels import AGE_CLASSES
from facegender.metrics import fit_age_scales


def fit_age_calibration(clf, val_views: list, y: np.ndarray, ages: np.ndarray) -> dict:
    """Fit the age classes' scales on every validation view and set them in ``clf.model``.

    ``ages``: each validation face's age class (-1 unknown), to score the head. Returns what a
    config records, ``{"age_scales": {class: scale}, "age_head_accuracy": ...}``, or ``{}`` for a
    model without an age head. The caller stores the weights.
    """
    import torch

    model = clf.model
    if getattr(model, "age_head", None) is None:
        return {}
    model.age_scale.fill_(1.0)  # the raw logits, also when a fitted model is fitted again
    heads = [clf.heads(v) for v in val_views]
    z = np.concatenate([h[0] for h in heads])
    scales = fit_age_scales(z, np.concatenate([h[1] for h in heads]), np.tile(y, len(heads)))
    model.age_scale.copy_(torch.from_numpy(scales).float())
    known = np.asarray(ages) >= 0
    hit = heads[0][1].argmax(axis=1) == np.asarray(ages)
    return {
        "age_scales": {name: float(v) for (name, _, _), v in zip(AGE_CLASSES, scales, strict=True)},
        "age_head_accuracy": float(hit[known].mean()) if known.any() else None,
    }
