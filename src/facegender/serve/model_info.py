"""What ``GET /v1/model`` says about the loaded checkpoint, taken from its ``config.json``."""

from __future__ import annotations

import math
from typing import Any

from facegender import __version__

# Headline numbers per evaluated split; per-group tables and curves stay in the model card.
HEADLINE = ("n", "accuracy", "accuracy_ci95", "roc_auc", "f1", "precision", "recall", "ece")


def model_summary(
    config: dict[str, Any], detector: str | None = None, backend: str | None = None
) -> dict[str, Any]:
    """Name, version, preprocessing and a metrics summary; every number JSON-safe."""
    metrics = config.get("metrics") or {}
    summary = {
        split: {k: m[k] for k in HEADLINE if k in m}
        for split, m in metrics.items()
        if isinstance(m, dict)
    }
    out = {
        "name": (config.get("model") or {}).get("name"),
        "version": config.get("version"),
        "package_version": __version__,
        "status": config.get("status"),
        "labels": config.get("labels"),
        "positive_label": config.get("positive_label"),
        "image_size": (config.get("preprocess") or {}).get("image_size"),
        "backend": backend,
        "detector": detector,
        "calibration": config.get("calibration") or {},
        "metrics": summary,
    }
    return _finite(out)


def _finite(x: Any) -> Any:
    """NaN/inf become None: strict JSON (and Starlette's encoder) refuses them."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
