"""What ``--model`` names, decided in one place.

Every command, the Python API, the web service, the Ray engine and the report turn "no model / a
bundled name / a checkpoint folder / an ``.onnx`` file" into a location here, so a name that works
for one of them works for all of them, and a missing model fails with the same message everywhere.

The bundled names and the files they stand for live in :data:`BUNDLED` and nowhere else.
Torch-free (the ONNX runtime imports it).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from facegender.checkpoint import (
    ACCURATE_ONNX_FILE,
    CONFIG_FILE,
    FAST_ONNX_FILE,
    ONNX_FILE,
    WEIGHTS_FILE,
)

# Bundled model name -> what it runs inside the bundled folder: the first of these that is there,
# a graph file, or None for the folder as a checkpoint (its model.onnx, else PyTorch). The first
# name is what None means. ``default``'s model.onnx is the int8 graph (bundle.py); ``fast`` is
# its alias, or an older bundle's separate model.fast.onnx while one is installed; ``accurate``
# is the same weights with flip TTA inside the graph (half the faces/s).
BUNDLED: dict[str, tuple[str | None, ...]] = {
    "default": (None,),
    "fast": (FAST_ONNX_FILE, None),
    "accurate": (ACCURATE_ONNX_FILE,),
}
KINDS = ("checkpoint", "onnx")
HOW = f"give a checkpoint folder, an .onnx file or a bundled name ({', '.join(BUNDLED)})"


def bundled_model_dir() -> Path:
    """The folder of the pretrained model shipped inside the package."""
    return Path(str(resources.files("facegender") / "weights" / "default"))


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: what it is and where its files are.

    ``kind`` is ``checkpoint`` (a folder with ``config.json``: weights and/or ``model.onnx``) or
    ``onnx`` (one graph file carrying its config in its metadata). ``folder`` is the checkpoint
    folder the model comes from (config, training record), None for a lone graph; ``graph`` is
    the ONNX file onnxruntime runs, None when the checkpoint has no export. ``name`` is the
    bundled name, when it is one.
    """

    kind: str
    folder: Path | None
    graph: Path | None
    name: str | None = None

    def __str__(self) -> str:
        if self.name:
            return f"the bundled model {self.name!r}"
        return str(self.graph if self.kind == "onnx" else self.folder)

    @property
    def spec(self) -> str:
        """A string that resolves to this model from any folder or process (env vars, Ray)."""
        if self.name:
            return self.name
        return str((self.graph if self.kind == "onnx" else self.folder).resolve())

    @property
    def weights(self) -> Path | None:
        """The safetensors weights PyTorch loads, when this is a checkpoint that has them."""
        if self.kind != "checkpoint" or not (self.folder / WEIGHTS_FILE).is_file():
            return None
        return self.folder / WEIGHTS_FILE

    def checkpoint_dir(self) -> Path:
        """The checkpoint folder, for what needs weights (PyTorch, export); else ValueError."""
        if self.kind != "checkpoint":
            raise ValueError(
                f"{self} is an ONNX graph, not a checkpoint folder with {WEIGHTS_FILE}: "
                "PyTorch and export need the checkpoint it was exported from"
            )
        return self.folder


def resolve_model(model: str | Path | ModelRef | None = None) -> ModelRef:
    """The :class:`ModelRef` for ``model``: None or a bundled name, a folder or an ``.onnx`` file.

    A path that exists wins over a bundled name of the same spelling. Raises
    ``FileNotFoundError`` with one clear message when there is nothing usable there.
    """
    if isinstance(model, ModelRef):
        return model
    text = next(iter(BUNDLED)) if model is None else str(model)
    path = Path(text)
    if text in BUNDLED and not path.exists():
        return _bundled(text)
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{path} is not a facegender checkpoint (no {CONFIG_FILE})")
        graph = path / ONNX_FILE
        return ModelRef("checkpoint", path, graph if graph.is_file() else None)
    if path.is_file() and path.suffix.lower() == ".onnx":
        folder = path.parent if (path.parent / CONFIG_FILE).is_file() else None
        return ModelRef("onnx", folder, path)
    if path.is_file():
        raise FileNotFoundError(f"{path} is not a model: {HOW}")
    raise FileNotFoundError(f"no model at {text}: {HOW}")


def _bundled(name: str) -> ModelRef:
    folder = bundled_model_dir()
    for file in BUNDLED[name]:
        location = folder / (file or CONFIG_FILE)
        if not location.is_file():
            continue
        if file is not None:
            return ModelRef("onnx", folder, location, name)
        graph = folder / ONNX_FILE
        return ModelRef("checkpoint", folder, graph if graph.is_file() else None, name)
    raise FileNotFoundError(
        f"the bundled model {name!r} is not there ({folder}); train it with "
        "`make bundle` or pass --model CHECKPOINT"
    )
