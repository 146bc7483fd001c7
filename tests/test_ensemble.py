"""An ensemble as one graph: ``Ensemble`` averages calibrated logits, ``bundle --partner`` makes
``model.accurate.onnx`` the int8 graph of the bundle's model and its partners."""

from __future__ import annotations

import json
import shutil
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


@pytest.fixture(scope="module")
def bundled(tiny_checkpoint, tmp_path_factory):
    """``tiny_checkpoint`` bundled once; a test that changes it works on a copy."""
    from facegender.bundle import bundle

    return bundle(tiny_checkpoint, tmp_path_factory.mktemp("bundle") / "bundled")


def _flip_logits(folder, x):
    model = load_model(folder)
    model.tta_flip = True
    with torch.no_grad():
        return model(torch.from_numpy(to_batch(x))).numpy()


def test_accurate_graph_with_a_partner(bundled, tiny_checkpoint, tiny_partner, tmp_path):
    """The accurate graph becomes the int8 ensemble of the two runs, flip TTA in each; the
    default graph, weights and config stay the bundle's own."""
    from facegender.bundle import add_accurate_graph
    from facegender.classifier import load_classifier

    dest = shutil.copytree(bundled, tmp_path / "bundled")
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


def test_accurate_graph_from_another_run(bundled, tiny_partner, tmp_path):
    """``--accurate-from RUN``: the accurate graph is RUN's model with flip TTA (a wider model
    than the default graph can afford), carrying RUN's config; the default graph is untouched."""
    from facegender.bundle import add_accurate_graph
    from facegender.classifier import load_classifier

    dest = shutil.copytree(bundled, tmp_path / "bundled")
    default_before = (dest / "model.onnx").read_bytes()
    add_accurate_graph(dest, accurate_from=tiny_partner)
    assert (dest / "model.onnx").read_bytes() == default_before
    acc = load_classifier(dest / "model.accurate.onnx")
    assert acc.config["bundled"]["from_run"] == tiny_partner.name
    assert acc.config["train_args"]["seed"] == 1 and "ensemble" not in acc.config
    x = np.random.default_rng(1).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    z, partner, own = acc.logits(x), _flip_logits(tiny_partner, x), _flip_logits(dest, x)
    assert np.corrcoef(z, partner)[0, 1] > 0.95
    assert np.corrcoef(z, partner)[0, 1] > np.corrcoef(z, own)[0, 1]


def test_a_member_trained_on_another_split_is_refused(bundled, tiny_partner, tmp_path):
    """Temperatures are fitted on the bundle's validation split: a member that trained on part
    of it would be scored on its own training faces."""
    from facegender.bundle import add_accurate_graph

    other = shutil.copytree(tiny_partner, tmp_path / "other_split")
    config = json.loads((other / "config.json").read_text())
    config["train_args"]["split_seed"] = 7
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit, match="another validation split"):
        add_accurate_graph(bundled, (other,))
    with pytest.raises(SystemExit, match="another validation split"):
        add_accurate_graph(bundled, accurate_from=other)
