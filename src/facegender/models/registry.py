"""One factory for every architecture, so checkpoints can record ``(name, kwargs)`` and rebuild."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: register a model factory under its function name."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: Any):
    """Build a registered model.

    Every model maps ``N x C x S x S`` floats in [0, 1] to ``N`` logits for P(female), and accepts
    ``mean``/``std`` (normalisation), ``in_chans``, ``image_size`` and ``tta_flip``.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(list_models())}")
    model = _REGISTRY[name](**kwargs)
    model.model_name = name
    model.model_kwargs = dict(kwargs)
    return model
