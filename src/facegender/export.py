"""Export a checkpoint to ONNX so prediction needs only onnxruntime, numpy and Pillow.

The exported graph is the whole model, normalisation and flip-TTA included: it maps ``float32``
``N x C x S x S`` in ``[0, 1]`` (what :func:`facegender.preprocess.to_batch` gives) to ``N`` logits.
The checkpoint's whole ``config.json`` rides along in the model's ``metadata_props``, so a lone
``.onnx`` file still knows its image size, crop, colour mode, label map and temperature.

Export uses PyTorch's TorchScript-based exporter (``dynamo=False``): it works offline without
``onnxscript``, folds BatchNorm into the convolutions, and gives a plain graph with a dynamic
batch axis. Needs the ``train`` extra (torch + onnx).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from facegender.checkpoint import ONNX_FILE, WEIGHTS_FILE, checkpoint_dir
from facegender.preprocess import PreprocessConfig
from facegender.runtime import CONFIG_KEY, WEIGHTS_HASH_KEY, file_sha256

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 17


def metadata(config: dict[str, Any], weights_sha256: str | None) -> dict[str, str]:
    """The ``metadata_props`` written into the graph: the whole config plus a few flat keys."""
    pre = PreprocessConfig.from_dict(config["preprocess"])
    props = {
        CONFIG_KEY: json.dumps(config, sort_keys=False),
        "model_name": str(config["model"]["name"]),
        "facegender_version": str(config.get("version", "")),
        "image_size": str(pre.image_size),
        "channels": str(pre.channels),
        "labels": json.dumps(list(config.get("labels", []))),
        "temperature": repr(float(config.get("calibration", {}).get("temperature", 1.0))),
        "input": "float32 NCHW RGB in [0, 1]; normalisation and flip-TTA are inside the graph",
    }
    if weights_sha256:
        props[WEIGHTS_HASH_KEY] = weights_sha256
    return props


def export_onnx(
    model_dir: str | Path | None = None,
    out: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    float16_weights: bool = False,
) -> Path:
    """Write ``model_dir``'s model as ONNX to ``out`` (default: ``model_dir/model.onnx``).

    ``float16_weights`` stores the large weight tensors as float16, each behind a ``Cast`` to
    float32, so the file is half the size and the arithmetic stays float32 (onnxruntime folds the
    casts and fuses BatchNorm when it loads the graph). BatchNorm is then exported as its own
    node instead of being folded into the convolutions, so the stored weights are exactly the
    checkpoint's: lossless for a checkpoint that already holds float16 weights (the bundled
    model), a float16 rounding of the weights otherwise.
    """
    from facegender.checkpoint import load_model

    src = checkpoint_dir(model_dir)
    weights = src / WEIGHTS_FILE
    model = load_model(src)
    return export_module(
        model,
        model.config,
        out if out is not None else src / ONNX_FILE,
        weights_sha256=file_sha256(weights) if weights.is_file() else None,
        opset=opset,
        dynamic_batch=dynamic_batch,
        float16_weights=float16_weights,
    )


def export_module(
    model,
    config: dict[str, Any],
    out: str | Path,
    weights_sha256: str | None = None,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    float16_weights: bool = False,
) -> Path:
    """Write any module that maps ``[0, 1]`` faces to ``N`` logits (one model or an
    :class:`~facegender.models.ensemble.Ensemble`) as ONNX, with ``config`` as its metadata."""
    import onnx
    import torch

    out = Path(out)
    pre = PreprocessConfig.from_dict(config["preprocess"])
    example = torch.rand(2, pre.channels, pre.image_size, pre.image_size)
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is deliberate
        torch.onnx.export(
            # wrapped, so the exporter sees forward(input) and does not trace ``aux`` as an input
            torch.nn.Sequential(model),
            (example,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=not float16_weights,
            dynamo=False,
        )
    graph = onnx.load(str(tmp))
    if float16_weights:
        store_weights_as_float16(graph)
    set_metadata(graph, metadata(config, weights_sha256))
    graph.producer_name = "facegender"
    graph.doc_string = f"facegender {config['model']['name']}: P(female) = sigmoid(logit / T)"
    onnx.checker.check_model(graph)
    onnx.save(graph, str(tmp))
    os.replace(tmp, out)
    return out


def store_weights_as_float16(graph, min_elements: int = 1024) -> int:
    """Replace each float32 initializer of ``min_elements`` or more by a float16 copy and a
    ``Cast`` back to float32 under the original name; returns how many were replaced."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    casts = []
    for init in graph.graph.initializer:
        if init.data_type != TensorProto.FLOAT or np.prod(init.dims) < min_elements:
            continue
        name = init.name
        half = numpy_helper.from_array(
            numpy_helper.to_array(init).astype(np.float16), name + "_f16"
        )
        init.CopyFrom(half)
        casts.append(helper.make_node("Cast", [half.name], [name], to=TensorProto.FLOAT))
    nodes = casts + list(graph.graph.node)
    del graph.graph.node[:]
    graph.graph.node.extend(nodes)
    return len(casts)


def set_metadata(graph, props: dict[str, str]) -> None:
    """Replace ``graph``'s metadata_props with ``props`` (keys not in ``props`` are kept)."""
    keep = [p for p in graph.metadata_props if p.key not in props]
    del graph.metadata_props[:]
    graph.metadata_props.extend(keep)
    for k, v in props.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = k, v
