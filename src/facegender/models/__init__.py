"""Model registry and architectures: ``create_model(name, **kwargs)``, ``list_models()``."""

from facegender.models import fgnet, seed_cnn  # noqa: F401  (registers the models)
from facegender.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
