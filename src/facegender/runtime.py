"""The torch-free classifier: an exported ONNX graph run by onnxruntime.

Same interface as :class:`facegender.classifier.TorchClassifier` and the same preprocessing
(:func:`facegender.preprocess.to_batch`), so the two backends differ only in who multiplies the
matrices. Imports onnxruntime, numpy and the image stack only: never torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from facegender.checkpoint import CONFIG_FILE, ONNX_FILE, WEIGHTS_FILE
from facegender.model_ref import ModelRef, resolve_model
from facegender.preprocess import PreprocessConfig, probability, to_batch

CONFIG_KEY = "facegender_config"  # metadata_props key holding the whole config.json
WEIGHTS_HASH_KEY = "facegender_weights_sha256"  # sha256 of the safetensors it was exported from


class StaleExportError(ValueError):
    """``model.onnx`` was exported from other weights than the folder's ``model.safetensors``."""


def session_options(threads: int | None = None, spin: bool = False):
    """One intra-op pool of ``threads`` (None/0: onnxruntime's choice), sequential execution.

    ``spin=False``: the pool's threads sleep between runs instead of spinning for the next one.
    Spinning buys microseconds per run on an idle machine and costs a core's worth of CPU taken
    from the detector, the decode workers or the neighbours the rest of the time (issue 16;
    ``benchmarks/cpu_share.py`` measures both).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or 0)
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return so


class OnnxClassifier:
    backend = "onnx"

    def __init__(self, session, config: dict, path: Path | None = None):
        self.session = session
        self.config = config
        self.path = path
        self.preprocess = PreprocessConfig.from_dict(config["preprocess"])
        self.temperature = float(config.get("calibration", {}).get("temperature", 1.0))
        self._input = session.get_inputs()[0].name
        self._output = session.get_outputs()[0].name

    @classmethod
    def load(
        cls, path: str | Path | ModelRef | None = None, threads: int | None = None
    ) -> OnnxClassifier:
        """Load what ``path`` names (:func:`~facegender.model_ref.resolve_model`): a checkpoint
        folder holding ``model.onnx``, a lone ``.onnx`` file or a bundled name.

        In a folder, ``config.json`` is the truth (as for the torch backend) and the export must
        come from the folder's current weights; a lone file uses the config in its metadata.
        """
        import onnxruntime as ort

        ref = resolve_model(path)
        if ref.graph is None:
            raise FileNotFoundError(f"no ONNX model in {ref} (export one with `facegender export`)")
        f = ref.graph
        session = ort.InferenceSession(
            str(f), session_options(threads), providers=["CPUExecutionProvider"]
        )
        meta = session.get_modelmeta().custom_metadata_map
        folder = ref.folder
        if folder is not None and f == folder / ONNX_FILE:
            config = json.loads((folder / CONFIG_FILE).read_text())
            _check_fresh(meta, folder / WEIGHTS_FILE, f)
        elif CONFIG_KEY in meta:
            config = json.loads(meta[CONFIG_KEY])
        else:
            raise ValueError(f"{f} carries no facegender config (metadata key {CONFIG_KEY!r})")
        return cls(session, config, f)

    def logits(self, arrays: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Raw logits for ``N x S x S x C`` uint8 face arrays."""
        out = []
        for i in range(0, len(arrays), batch_size):
            x = to_batch(np.asarray(arrays[i : i + batch_size]))
            out.append(self.session.run([self._output], {self._input: x})[0].reshape(-1))
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, dtype=np.float32)

    def probabilities(self, arrays: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Calibrated P(female) for each face array."""
        return probability(self.logits(arrays, batch_size), self.temperature)


def file_sha256(path: str | Path) -> str:
    """Hash of a weights file: stored at export, checked at load, so a stale export is caught."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_fresh(meta: dict, weights: Path, onnx_file: Path) -> None:
    expected = meta.get(WEIGHTS_HASH_KEY)
    if not expected or not weights.is_file():
        return
    if file_sha256(weights) != expected:
        raise StaleExportError(
            f"{onnx_file} was exported from other weights than {weights}; "
            f"re-export with `facegender export --model {onnx_file.parent}`"
        )
