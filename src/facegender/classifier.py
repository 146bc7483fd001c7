"""Run a checkpoint's classifier on preprocessed face arrays (PyTorch backend).

Evaluation, training-time validation and the predictor all go through :meth:`logits`, so batching
and the ``uint8 -> [0, 1]`` layout live in one place (:func:`facegender.preprocess.to_batch`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from facegender.model_ref import ModelRef, resolve_model
from facegender.preprocess import PreprocessConfig, probability, to_batch


class TorchClassifier:
    backend = "torch"

    def __init__(self, model, config: dict):
        self.model = model.eval()
        self.config = config
        self.preprocess = PreprocessConfig.from_dict(config["preprocess"])
        self.temperature = float(config.get("calibration", {}).get("temperature", 1.0))

    @classmethod
    def load(
        cls, path: str | Path | ModelRef | None = None, threads: int | None = None
    ) -> TorchClassifier:
        """``threads`` sets torch's (process-wide) intra-op thread count; None leaves it."""
        import torch

        from facegender.checkpoint import load_model

        if threads:
            torch.set_num_threads(int(threads))
        model = load_model(path)
        return cls(model, model.config)

    def logits(self, arrays: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Raw logits for ``N x S x S x C`` uint8 face arrays (on the model's device)."""
        return self.heads(arrays, batch_size)[0]

    def heads(
        self, arrays: np.ndarray, batch_size: int = 256
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The logits and the age head's ``N x K`` logits (None for a model without one)."""
        import torch

        device = next(self.model.parameters()).device
        out, ages = [], []
        with torch.inference_mode():
            for i in range(0, len(arrays), batch_size):
                x = torch.from_numpy(to_batch(np.asarray(arrays[i : i + batch_size])))
                z, a = self.model(x.to(device), aux=True)
                out.append(z.float().cpu().numpy())
                ages.append(None if a is None else a.float().cpu().numpy())
        if not out:
            return np.zeros(0, dtype=np.float32), None
        return np.concatenate(out), None if ages[0] is None else np.concatenate(ages)

    def probabilities(self, arrays: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Calibrated P(female) for each face array."""
        return probability(self.logits(arrays, batch_size), self.temperature)


BACKENDS = ("auto", "onnx", "torch")


def load_classifier(
    model: str | Path | ModelRef | None = None, backend: str = "auto", threads: int | None = None
):
    """The classifier for what ``model`` names (:func:`facegender.model_ref.resolve_model`:
    a checkpoint folder, an ``.onnx`` file or a bundled name; None is the bundled default).

    Every consumer (evaluate, predict, the web service) gets its classifier here, so the choice
    of backend is made in one place. ``backend="auto"`` runs the model's ONNX graph with
    onnxruntime when it has one (no torch import: fast start, small install), else PyTorch;
    ``"onnx"``/``"torch"`` force one. ``threads`` caps the intra-op threads (None: all cores).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    ref = resolve_model(model)
    if backend == "auto":
        usable = ref.graph is not None and importlib.util.find_spec("onnxruntime") is not None
        backend = "onnx" if usable else "torch"
    if backend == "onnx":
        from facegender.runtime import OnnxClassifier

        return OnnxClassifier.load(ref, threads=threads)
    ref.checkpoint_dir()  # an ONNX graph cannot run on PyTorch: say so before importing torch
    if importlib.util.find_spec("torch") is None:
        raise FileNotFoundError(
            f"{ref} has no model.onnx and PyTorch is not installed: "
            "install `facegender[train]` or export it with `facegender export`"
        )
    return TorchClassifier.load(ref, threads=threads)
