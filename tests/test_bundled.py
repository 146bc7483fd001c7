"""The shipped model: `default` is the int8 graph without flip TTA, and `fast` is its alias."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from facegender.classifier import load_classifier


def test_default_is_the_int8_graph_and_fast_its_alias():
    try:
        folder = load_classifier().path.parent  # where the bundled model is, by either resolver
    except FileNotFoundError:
        pytest.skip("no bundled model in this checkout")
    assert sorted(f.name for f in folder.glob("*.onnx")) == ["model.onnx"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model"]["kwargs"]["tta_flip"] is False
    ops = {n.op_type for n in onnx.load(str(folder / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    default, fast = load_classifier("default"), load_classifier("fast")
    assert default.backend == fast.backend == "onnx" and default.path == fast.path
    assert default.temperature == fast.temperature == config["calibration"]["temperature"]
    x = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(default.logits(x), fast.logits(x))


def test_bundled_files_fit_the_size_budget():
    """Every file the package ships for the model, together, within 5 MB (issue 15's bar): a
    wider model that trains better but does not fit is not a bundle."""
    try:
        folder = load_classifier().path.parent
    except FileNotFoundError:
        pytest.skip("no bundled model in this checkout")
    total = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert 0 < total <= 5_000_000, f"{total / 1e6:.2f} MB in {folder}"
