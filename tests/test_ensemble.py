"""An ensemble as one graph: ``Ensemble`` averages calibrated logits, ``bundle --partner`` makes
``model.accurate.onnx`` the int8 graph of the bundle's model and its partners."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from facegender.checkpoint import load_model
from facegender.models import create_model
from facegender.models.ensemble import Ensemble, same_input
from facegender.preprocess import to_batch


def test_ensemble_is_the_mean_of_temperature_scaled_logits():
    torch.manual_seed(0)
    a, b = (create_model("fgnet_s", image_size=32).eval() for _ in range(2))
    x = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        z = Ensemble([a, b], [2.0, 0.5])(x)
        want = 0.5 * (a(x) / 2.0 + b(x) / 0.5)
    torch.testing.assert_close(z, want)
    with pytest.raises(ValueError, match="one temperature per member"):
        Ensemble([a, b], [1.0])


def test_members_must_take_the_same_input():
    def config(size, grayscale=False, mean=(0.5, 0.5, 0.5)):
        return {"preprocess": {"image_size": size, "grayscale": grayscale, "mean": list(mean)}}

    same_input([config(64), config(64, mean=(0.4, 0.4, 0.4))])  # normalisation is inside
    with pytest.raises(ValueError, match="other input"):
        same_input([config(64), config(80)])
    with pytest.raises(ValueError, match="other input"):
        same_input([config(64), config(64, grayscale=True)])


def test_accurate_graph_with_a_partner(tiny_checkpoint, tiny_partner, tmp_path):
    """The accurate graph becomes the int8 ensemble of the two runs, flip TTA in each; the
    default graph, weights and config stay the bundle's own."""
    from facegender.bundle import add_accurate_graph, bundle
    from facegender.classifier import load_classifier

    dest = bundle(tiny_checkpoint, tmp_path / "bundled")
    default_before = (dest / "model.onnx").read_bytes()
    config_before = (dest / "config.json").read_text()
    alone = load_classifier(dest / "model.accurate.onnx")
    add_accurate_graph(dest, (tiny_partner,))
    assert (dest / "model.onnx").read_bytes() == default_before
    assert (dest / "config.json").read_text() == config_before
    acc = load_classifier(dest / "model.accurate.onnx")
    ens = acc.config["ensemble"]
    assert ens["members"] == [tiny_checkpoint.name, tiny_partner.name]
    assert len(ens["temperatures"]) == 2 and all(t > 0 for t in ens["temperatures"])
    assert ens["partners"][0]["train_args"]["seed"] == 1
    assert acc.config["calibration"]["graph"].endswith("mean of 2 models")
    x = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    members = [load_model(dest), load_model(tiny_partner)]
    for m in members:
        m.tta_flip = True
    with torch.no_grad():
        want = Ensemble(members, ens["temperatures"])(torch.from_numpy(to_batch(x))).numpy()
    z = acc.logits(x)
    assert np.corrcoef(z, want)[0, 1] > 0.95  # the ensemble, up to int8 rounding
    assert np.corrcoef(z, want)[0, 1] > np.corrcoef(alone.logits(x), want)[0, 1]
    gap = np.abs(z - acc.logits(x[:, :, ::-1])).mean()
    assert gap < 0.1 * np.abs(z).mean()  # flip TTA inside each member


def test_a_partner_that_is_not_a_finished_run_is_refused(tiny_checkpoint, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "facegender.bundle", str(tiny_checkpoint), "--add-accurate"]
        + ["--partner", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "is not a training run" in r.stderr
    run = tmp_path / "unfinished"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"status": "running"}))
    r = subprocess.run(
        [sys.executable, "-m", "facegender.bundle", str(tiny_checkpoint), "--add-accurate"]
        + ["--partner", str(run)],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "not a finished run" in r.stderr
