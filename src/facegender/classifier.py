"""Run a checkpoint's classifier on preprocessed face arrays (PyTorch backend).

Evaluation, training-time validation and the predictor all go through :meth:`logits`, so batching
and the ``uint8 -> [0, 1]`` layout live in one place (:func:`facegender.preprocess.to_batch`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facegender.preprocess import PreprocessConfig, probability, to_batch


class TorchClassifier:
    backend = "torch"

    def __init__(self, model, config: dict):
        self.model = model.eval()
        self.config = config
        self.preprocess = PreprocessConfig.from_dict(config["preprocess"])
        self.temperature = float(config.get("calibration", {}).get("temperature", 1.0))

    @classmethod
    def load(cls, path: str | Path | None = None) -> TorchClassifier:
        from facegender.checkpoint import load_model

        model = load_model(path)
        return cls(model, model.config)

    def logits(self, arrays: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Raw logits for ``N x S x S x C`` uint8 face arrays."""
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(arrays), batch_size):
                x = torch.from_numpy(to_batch(np.asarray(arrays[i : i + batch_size])))
                out.append(self.model(x).float().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def probabilities(self, arrays: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Calibrated P(female) for each face array."""
        return probability(self.logits(arrays, batch_size), self.temperature)


def load_classifier(model: str | Path | None = None):
    """The classifier for a checkpoint folder (the bundled model when ``model`` is None).

    Every consumer (evaluate, predict, the web service) gets its classifier here, so the choice
    of backend is made in one place.
    """
    return TorchClassifier.load(model)
