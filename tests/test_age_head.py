"""``train --age-weight``: the auxiliary age head, its loss, and the per-age-class logit scales
that calibrate faces the model reads as children apart from adults."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import facegender.train as tr
from facegender.checkpoint import load_model, make_config, save_checkpoint
from facegender.classifier import TorchClassifier
from facegender.data.samples import Sample
from facegender.export import export_onnx
from facegender.labels import AGE_CLASSES, age_class
from facegender.metrics import age_scaled_logits, fit_age_scales
from facegender.models import create_model
from facegender.preprocess import PreprocessConfig
from facegender.runtime import OnnxClassifier

K = len(AGE_CLASSES)


@pytest.mark.parametrize(
    ("age", "bucket", "expected"),
    [
        (1, None, "0-2"),
        (9, None, "3-9"),
        (13, None, "10-19"),
        (59, None, "20-59"),
        (80, None, "60+"),
        (None, "0-2", "0-2"),
        (None, "3-9", "3-9"),
        (None, "30-39", "20-59"),
        (None, "60-69", "60+"),
        (None, "more than 70", "60+"),
        (None, "5-14", None),  # straddles two classes
        (None, None, None),  # kaggle-gender: no age
    ],
)
def test_age_class_reads_ages_and_buckets(age, bucket, expected):
    got = age_class(Sample("x.jpg", 0, "s", age=age, age_group=bucket))
    assert (AGE_CLASSES[got][0] if got >= 0 else None) == expected


def test_fit_age_scales_recovers_each_groups_temperature():
    """Children over-confident 3x, adults calibrated: the fitted scales are about 1 and 1/3,
    where one temperature for all would sit between the two."""
    rng = np.random.default_rng(0)
    n = 20_000
    child = rng.integers(0, 2, n).astype(bool)
    true = rng.normal(0, 3.0, n) * np.where(child, 0.4, 1.0)
    y = (rng.random(n) < 1 / (1 + np.exp(-true))).astype(int)
    z = true * np.where(child, 3.0, 1.0)
    age_logits = np.zeros((n, K))
    age_logits[np.arange(n), np.where(child, 1, 3)] = 8.0  # the head is sure: "3-9" or "20-59"
    s = fit_age_scales(z, age_logits, y)
    assert s[3] == pytest.approx(1.0, abs=0.08)
    assert s[1] == pytest.approx(1 / 3, abs=0.05)


def _age_model(seed: int = 0, tta_flip: bool = False):
    torch.manual_seed(seed)
    m = create_model("fgnet_s", image_size=32, age_classes=K, tta_flip=tta_flip)
    for lin in (m.head[-1], m.age_head):
        lin.weight.data.mul_(20.0)
    return m.eval()


def test_eval_logits_are_scaled_by_the_expected_age_scale_and_training_ones_are_raw():
    m = _age_model(tta_flip=False)
    x = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        raw, age = m(x, aux=True)
        m.age_scale.copy_(torch.tensor([0.2, 0.5, 1.0, 2.0, 3.0]))
        scaled, age2 = m(x, aux=True)
        expected = raw * (age.softmax(1) @ m.age_scale)
        assert torch.allclose(scaled, expected, atol=1e-5) and torch.equal(age, age2)
        assert not torch.allclose(scaled, raw)
        # the numpy copy that benchmarks refit stored logits with computes the model's product
        stored = age_scaled_logits(raw.numpy(), age.numpy(), m.age_scale.numpy())
        np.testing.assert_allclose(stored, scaled.numpy(), rtol=1e-4, atol=1e-4)
        assert torch.equal(m(x), scaled)
        m.train()  # training sees the raw logits: the scales do not change them
        torch.manual_seed(0)
        trained = m(x)
        m.age_scale.fill_(1.0)
        torch.manual_seed(0)
        assert torch.equal(m(x), trained)


def test_models_without_an_age_head_keep_their_weights_layout():
    """No ``age_scale`` buffer without ``age_classes``: older checkpoints load as they were."""
    plain = create_model("fgnet_m")
    assert "age_scale" not in plain.state_dict() and plain.age_head is None
    z, age = plain.eval()(torch.rand(2, 3, 64, 64), aux=True)
    assert z.shape == (2,) and age is None


def test_age_loss_counts_only_known_ages():
    logits = torch.randn(4, K)
    ages = torch.tensor([0, -1, 3, -1])
    expected = F.cross_entropy(logits[[0, 2]], ages[[0, 2]])
    assert tr.age_loss(logits, ages).item() == pytest.approx(expected.item(), rel=1e-6)
    assert tr.age_loss(logits, torch.full((4,), -1)).item() == 0.0


def test_a_mixed_batch_teaches_no_age():
    data = type("D", (), {"ages": np.array([0, 1, 2, 3, -1])})()
    idx = np.array([0, 2, 3])
    assert tr.batch_ages(data, idx, mixed=False).tolist() == [0, 2, 3]
    assert tr.batch_ages(data, idx, mixed=True).tolist() == [-1, -1, -1]


def test_age_weight_is_refused_for_a_model_without_an_age_head(tiny_config, tmp_path):
    cfg = tiny_config(tmp_path / "r", age_weight=0.5)  # seed_cnn
    with pytest.raises(ValueError, match="no age head"):
        tr._build_model(cfg, cfg.preprocess(), torch.device("cpu"), lambda m: None)


@pytest.fixture(scope="module")
def age_run(tiny_config, tmp_path_factory):
    """fgnet_s trained with --age-weight for 2 epochs on the generated UTKFace faces (ages 1-89)."""
    out = tmp_path_factory.mktemp("age") / "run"
    cfg = tiny_config(
        out, model="fgnet_s", model_kwargs={"widths": [4, 8, 8, 8]}, age_weight=0.5, epochs=2
    )
    return tr.train(cfg, log=lambda m: None)


def test_a_run_with_an_age_head_stores_fitted_scales_every_backend_applies(age_run):
    """The config records one scale per age class and the head's accuracy, the weights carry
    the scales (not all 1), and the ONNX export computes the same logits as PyTorch."""
    cal = json.loads((age_run / "config.json").read_text())["calibration"]
    assert list(cal["age_scales"]) == [name for name, _, _ in AGE_CLASSES]
    assert 0.0 <= cal["age_head_accuracy"] <= 1.0
    model = load_model(age_run)
    assert np.allclose(model.age_scale.numpy(), list(cal["age_scales"].values()), rtol=1e-6)
    assert not np.allclose(model.age_scale.numpy(), 1.0)
    faces = (np.random.default_rng(0).random((5, 16, 16, 3)) * 255).astype(np.uint8)
    torch_logits = TorchClassifier(model, model.config).logits(faces)
    onnx_logits = OnnxClassifier.load(export_onnx(age_run, age_run / "model.onnx")).logits(faces)
    assert np.allclose(torch_logits, onnx_logits, atol=1e-4)


def test_bundling_refits_the_scales_for_the_graph_without_flip_tta(age_run, tmp_path):
    from safetensors.torch import load_file

    from facegender.bundle import bundle

    dest = bundle(age_run, tmp_path / "bundled")
    run_cal = json.loads((age_run / "config.json").read_text())["calibration"]
    cal = json.loads((dest / "config.json").read_text())["calibration"]
    scale = load_file(str(dest / "model.safetensors"))["age_scale"]
    assert scale.dtype == torch.float32
    assert np.allclose(scale.numpy(), list(cal["age_scales"].values()), rtol=1e-6)
    assert cal["age_scales"] != run_cal["age_scales"]  # fitted again, on logits without TTA
    assert cal["graph"].startswith("int8") and cal["temperature"] != run_cal["temperature"]


def test_age_head_round_trips_through_a_checkpoint(tmp_path):
    m = _age_model(seed=1, tta_flip=True)
    m.age_scale.copy_(torch.tensor([0.3, 0.6, 0.9, 1.1, 0.8]))
    save_checkpoint(tmp_path, m, make_config(m, PreprocessConfig(image_size=32)))
    back = load_model(tmp_path)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(back(x), m(x))


def test_fine_tunes_keep_or_gain_an_age_head(age_run, tiny_config, tmp_path):
    """--init from a model with an age head keeps it (and refits its scales), with or without
    --age-weight; a model without one gains a fresh head with --age-weight."""
    kw = {"model": "fgnet_s", "model_kwargs": {"widths": [4, 8, 8, 8]}, "epochs": 1}
    with_head = {**kw, "model_kwargs": {"widths": [4, 8, 8, 8], "age_classes": K}}
    for name, weight in (("keep", 0.0), ("keep_weighted", 0.5)):
        cfg = tiny_config(tmp_path / name, init=str(age_run), age_weight=weight, **with_head)
        out = tr.train(cfg, log=lambda m: None)
        assert "age_scales" in json.loads((out / "config.json").read_text())["calibration"]
        assert load_model(out).age_head is not None
    plain = tr.train(tiny_config(tmp_path / "plain", **kw), log=lambda m: None)
    assert load_model(plain).age_head is None
    cfg = tiny_config(tmp_path / "gain", init=str(plain), age_weight=0.5, **kw)
    assert load_model(tr.train(cfg, log=lambda m: None)).age_head is not None


def test_the_report_shows_the_age_classes_scales(age_run, synthetic_dirs, tmp_path):
    from click.testing import CliRunner

    from facegender.cli import cli

    args = ["evaluate", str(synthetic_dirs["utk"]), "--model", str(age_run), "--no-cache"]
    run = CliRunner().invoke(cli, [*args, "--report", str(tmp_path / "rep")])
    assert run.exit_code == 0, run.output
    md = "".join(f.read_text() for f in (tmp_path / "rep").glob("*.md"))
    scales = json.loads((age_run / "config.json").read_text())["calibration"]["age_scales"]
    assert "logit scale per age class" in md
    assert f"0-2 {scales['0-2']:.2f}, 3-9 {scales['3-9']:.2f}" in md
