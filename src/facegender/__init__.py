"""facegender: tell whether a face is male or female, with a small CNN you can train and audit."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Predictor", "__version__", "create_model", "list_models", "load_model"]


def __getattr__(name: str):
    # Lazy: `import facegender` stays cheap and torch-free; torch loads only when a model is built.
    if name in ("create_model", "list_models"):
        from facegender import models

        return getattr(models, name)
    if name == "Predictor":
        from facegender.predict import Predictor

        return Predictor
    if name == "load_model":
        from facegender.checkpoint import load_model

        return load_model
    raise AttributeError(f"module 'facegender' has no attribute {name!r}")
