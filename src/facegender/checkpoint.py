"""The one checkpoint format: a folder with ``model.safetensors`` and ``config.json``. No pickle.

``config.json`` carries everything needed to rebuild and use the model: architecture name and
kwargs, preprocessing, label map, calibration temperature, training args, data summary, metrics
and the package version.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from facegender import __version__
from facegender.labels import LABELS
from facegender.preprocess import PreprocessConfig

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
ONNX_FILE = "model.onnx"
# Where bundles before the default became the int8 graph kept it (bundle.py now removes it).
FAST_ONNX_FILE = "model.fast.onnx"
ACCURATE_ONNX_FILE = "model.accurate.onnx"  # the bundle's int8 graph with flip TTA inside


def checkpoint_dir(path: str | Path | None) -> Path:
    """The checkpoint folder ``path`` names (see :mod:`facegender.model_ref`; None: bundled)."""
    from facegender.model_ref import resolve_model

    return resolve_model(path).checkpoint_dir()


def read_config(path: str | Path | None) -> dict[str, Any]:
    return json.loads((checkpoint_dir(path) / CONFIG_FILE).read_text())


def make_config(model, preprocess: PreprocessConfig, **extra: Any) -> dict[str, Any]:
    return {
        "format": "facegender-checkpoint/1",
        "version": __version__,
        "model": {"name": model.model_name, "kwargs": _jsonable(model.model_kwargs)},
        "preprocess": preprocess.to_dict(),
        "labels": list(LABELS),
        "positive_label": LABELS[1],
        "calibration": {"temperature": 1.0},
        **extra,
    }


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    return x


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (no half-written file after a kill)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def save_checkpoint(out_dir: str | Path, model, config: dict[str, Any]) -> Path:
    """Write weights and config atomically enough that a kill never leaves a half checkpoint."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = out / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / WEIGHTS_FILE)
    write_json(out / CONFIG_FILE, config)
    return out


def build_model(config: dict[str, Any]):
    from facegender.models import create_model

    pre = PreprocessConfig.from_dict(config["preprocess"])
    kwargs = dict(config["model"].get("kwargs", {}))
    kwargs.setdefault("in_chans", pre.channels)
    kwargs.setdefault("mean", list(pre.mean))
    kwargs.setdefault("std", list(pre.std))
    return create_model(config["model"]["name"], **kwargs)


def load_model(path: str | Path | None = None):
    """Rebuild a checkpoint's model in eval mode; ``path=None`` loads the bundled model.

    The returned module has ``.config`` (the checkpoint's config dict).
    """
    from safetensors.torch import load_file

    d = checkpoint_dir(path)
    config = json.loads((d / CONFIG_FILE).read_text())
    model = build_model(config)
    model.load_state_dict(load_file(str(d / WEIGHTS_FILE)))
    model.eval()
    model.config = config
    return model
