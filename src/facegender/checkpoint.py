"""The one checkpoint format: a folder with ``model.safetensors`` and ``config.json``. No pickle.

``config.json`` carries everything needed to rebuild and use the model: architecture name and
kwargs, preprocessing, label map, calibration temperature, training args, data summary, metrics
and the package version.
"""

from __future__ import annotations

import json
import os
from importlib import resources
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
BUNDLED_NAMES = ("default", "fast")


def bundled_model_dir() -> Path:
    """The pretrained model shipped inside the package."""
    return Path(str(resources.files("facegender") / "weights" / "default"))


def resolve_model(model: str | Path | None) -> Path:
    """What ``--model`` names: a checkpoint folder or ``.onnx`` file, or a bundled model by name;
    a path that exists wins over a name. ``default`` is the int8 graph (bundle.py), and ``fast``
    stays as its alias (an older bundle's separate ``model.fast.onnx`` while one is installed)."""
    if model is None or (str(model) in BUNDLED_NAMES and not Path(model).exists()):
        folder = bundled_model_dir()
        legacy = folder / FAST_ONNX_FILE
        return legacy if str(model) == "fast" and legacy.is_file() else folder
    return Path(model)


def resolve_model_dir(path: str | Path | None) -> Path:
    p = bundled_model_dir() if path is None else Path(path)
    if not (p / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{p} is not a facegender checkpoint (no {CONFIG_FILE})")
    return p


def read_config(path: str | Path | None) -> dict[str, Any]:
    return json.loads((resolve_model_dir(path) / CONFIG_FILE).read_text())


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

    d = resolve_model_dir(path)
    config = json.loads((d / CONFIG_FILE).read_text())
    model = build_model(config)
    model.load_state_dict(load_file(str(d / WEIGHTS_FILE)))
    model.eval()
    model.config = config
    return model
