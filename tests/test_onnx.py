"""ONNX export and the torch-free runtime: parity with PyTorch, metadata, backend choice."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from facegender.checkpoint import make_config, read_config, save_checkpoint, write_json
from facegender.classifier import TorchClassifier, load_classifier
from facegender.cli import cli
from facegender.data import read_data
from facegender.evaluate import evaluate
from facegender.export import export_onnx
from facegender.models import create_model
from facegender.preprocess import PreprocessConfig, load_face
from facegender.runtime import CONFIG_KEY, OnnxClassifier, StaleExportError


def _faces(folder, cfg: PreprocessConfig, n: int = 40) -> np.ndarray:
    """Real decoded inputs (generated faces through the one preprocessing path)."""
    samples = read_data([str(folder)]).samples[:n]
    return np.stack([load_face(s.path, cfg) for s in samples])


def _random_checkpoint(out, grayscale: bool, tta_flip: bool, seed: int = 0):
    """An untrained fgnet_s whose BN statistics and head are randomised so logits spread widely."""
    torch.manual_seed(seed)
    pre = PreprocessConfig(image_size=32, grayscale=grayscale)
    if grayscale:
        pre = PreprocessConfig(image_size=32, grayscale=True, mean=(0.45,), std=(0.2,))
    model = create_model(
        "fgnet_s", in_chans=pre.channels, mean=list(pre.mean), std=list(pre.std), tta_flip=tta_flip
    )
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
        if isinstance(m, torch.nn.Linear):
            m.weight.data.mul_(20.0)
    config = make_config(model, pre)
    config["calibration"]["temperature"] = 1.3
    return save_checkpoint(out, model, config)


@pytest.fixture(scope="module")
def onnx_checkpoint(tiny_checkpoint, tmp_path_factory):
    """A copy of the tiny checkpoint with ``model.onnx`` beside its weights (fixture untouched)."""
    d = tmp_path_factory.mktemp("onnx") / "tiny"
    shutil.copytree(tiny_checkpoint, d)
    export_onnx(d)
    return d


def test_trained_model_parity(onnx_checkpoint, synthetic_dirs):
    onnx_clf = load_classifier(onnx_checkpoint, backend="onnx")
    torch_clf = load_classifier(onnx_checkpoint, backend="torch")
    assert (onnx_clf.backend, torch_clf.backend) == ("onnx", "torch")
    assert onnx_clf.config["model"]["kwargs"]["tta_flip"] is True
    assert onnx_clf.preprocess == torch_clf.preprocess
    assert onnx_clf.temperature == torch_clf.temperature != 1.0
    x = _faces(synthetic_dirs["folders"], onnx_clf.preprocess)
    p_onnx, p_torch = onnx_clf.probabilities(x), torch_clf.probabilities(x)
    assert p_torch.std() > 0.05  # a trained model: probabilities that actually differ
    np.testing.assert_allclose(p_onnx, p_torch, atol=1e-4, rtol=0)


@pytest.mark.parametrize("grayscale", [False, True])
@pytest.mark.parametrize("tta_flip", [False, True])
def test_parity_grayscale_and_tta(tmp_path, synthetic_dirs, grayscale, tta_flip):
    ckpt = _random_checkpoint(tmp_path / "m", grayscale, tta_flip)
    export_onnx(ckpt)
    onnx_clf = OnnxClassifier.load(ckpt)
    torch_clf = TorchClassifier.load(ckpt)
    x = _faces(synthetic_dirs["utk"], onnx_clf.preprocess)
    assert x.shape[1:] == (32, 32, 1 if grayscale else 3)
    l_onnx, l_torch = onnx_clf.logits(x, batch_size=7), torch_clf.logits(x)
    assert l_torch.std() > 0.2  # logits that differ: parity is not trivially met
    np.testing.assert_allclose(l_onnx, l_torch, atol=1e-3, rtol=1e-4)
    np.testing.assert_allclose(
        onnx_clf.probabilities(x), torch_clf.probabilities(x), atol=1e-4, rtol=0
    )


def test_flip_tta_is_inside_the_graph(tmp_path, synthetic_dirs):
    """With TTA the graph gives a face and its mirror the same logit; without, it does not."""
    for tta in (False, True):
        ckpt = _random_checkpoint(tmp_path / str(tta), grayscale=False, tta_flip=tta)
        clf = OnnxClassifier.load(export_onnx(ckpt))
        x = _faces(synthetic_dirs["utk"], clf.preprocess, n=8)
        same = np.allclose(clf.logits(x), clf.logits(x[:, :, ::-1]), atol=1e-4)
        assert same is tta


def test_float16_weights_halve_the_file_and_round_only_the_weights(onnx_checkpoint, tmp_path):
    full = onnx_checkpoint / "model.onnx"
    half = export_onnx(onnx_checkpoint, tmp_path / "half.onnx", float16_weights=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    x = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    a, b = OnnxClassifier.load(half).logits(x), OnnxClassifier.load(full).logits(x)
    assert not np.array_equal(a, b)  # float32 weights were rounded to float16
    np.testing.assert_allclose(a, b, atol=0.05 * np.abs(b).max(), rtol=0)


def test_batch_size_does_not_change_results(onnx_checkpoint, synthetic_dirs):
    clf = load_classifier(onnx_checkpoint)
    x = _faces(synthetic_dirs["utk"], clf.preprocess, n=33)
    one = np.concatenate([clf.logits(x[i : i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(clf.logits(x, batch_size=64), one, atol=1e-5)
    assert clf.logits(x[:0]).shape == (0,)


def test_metadata_round_trip(onnx_checkpoint, tmp_path):
    config = read_config(onnx_checkpoint)
    props = {p.key: p.value for p in onnx.load(str(onnx_checkpoint / "model.onnx")).metadata_props}
    assert json.loads(props[CONFIG_KEY]) == config
    assert int(props["image_size"]) == config["preprocess"]["image_size"]
    assert float(props["temperature"]) == config["calibration"]["temperature"]
    assert json.loads(props["labels"]) == ["male", "female"]
    # A lone .onnx file, away from its checkpoint folder, carries everything needed.
    lone = export_onnx(onnx_checkpoint, tmp_path / "elsewhere" / "gender.onnx")
    clf = load_classifier(lone)
    assert clf.backend == "onnx" and clf.config == config
    assert clf.temperature == config["calibration"]["temperature"]


def test_no_torch_needed(onnx_checkpoint, synthetic_dirs):
    """Import, load and predict in a process where importing torch would fail."""
    code = textwrap.dedent(
        f"""
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, NoTorch())
        import facegender.runtime
        assert "torch" not in sys.modules
        from facegender.evaluate import evaluate
        r = evaluate([{str(synthetic_dirs["folders"])!r}], model={str(onnx_checkpoint)!r},
                     cache=False)
        assert r["model"]["backend"] == "onnx", r["model"]
        assert "torch" not in sys.modules
        print(r["n"], r["accuracy"])
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    n, acc = out.stdout.split()
    assert int(n) == 160 and float(acc) > 0.8


def test_plain_import_does_not_load_torch():
    code = "import sys, facegender.runtime, facegender.classifier; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_backend_selection(tiny_checkpoint, onnx_checkpoint):
    assert load_classifier(tiny_checkpoint).backend == "torch"  # no model.onnx there
    assert load_classifier(onnx_checkpoint).backend == "onnx"
    assert load_classifier(onnx_checkpoint, backend="torch").backend == "torch"
    assert load_classifier(onnx_checkpoint / "model.onnx").backend == "onnx"
    with pytest.raises(FileNotFoundError, match="no ONNX model"):
        load_classifier(tiny_checkpoint, backend="onnx")
    with pytest.raises(ValueError, match="unknown backend"):
        load_classifier(onnx_checkpoint, backend="tensorrt")


def test_threads_reach_the_session(onnx_checkpoint):
    clf = load_classifier(onnx_checkpoint, threads=1)
    assert clf.session.get_session_options().intra_op_num_threads == 1


def test_stale_export_is_refused(tmp_path):
    ckpt = _random_checkpoint(tmp_path / "m", grayscale=False, tta_flip=False, seed=0)
    export_onnx(ckpt)
    config = read_config(ckpt)
    retrained = _random_checkpoint(tmp_path / "other", grayscale=False, tta_flip=False, seed=1)
    shutil.copy(retrained / "model.safetensors", ckpt / "model.safetensors")
    write_json(ckpt / "config.json", config)
    with pytest.raises(StaleExportError, match="re-export"):
        load_classifier(ckpt)


def test_export_cli_and_evaluate_with_onnx(onnx_checkpoint, synthetic_dirs, tmp_path):
    out = tmp_path / "cli.onnx"
    r = CliRunner().invoke(cli, ["export", "--model", str(onnx_checkpoint), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.is_file() and "wrote" in r.output
    res = evaluate([str(synthetic_dirs["folders"])], model=onnx_checkpoint, cache=False)
    ref = evaluate(
        [str(synthetic_dirs["folders"])],
        classifier=load_classifier(onnx_checkpoint, backend="torch"),
        cache=False,
    )
    assert res["model"]["backend"] == "onnx" and ref["model"]["backend"] == "torch"
    assert res["n"] == ref["n"] == 160
    p = np.array([d["female_probability"] for d in res["predictions"]])
    q = np.array([d["female_probability"] for d in ref["predictions"]])
    np.testing.assert_allclose(p, q, atol=1e-4)
    r = CliRunner().invoke(cli, ["export", "--model", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "no model at" in r.output


def test_int8_model_tracks_fp32(onnx_checkpoint, synthetic_dirs):
    from facegender.quantize import quantize_int8

    q = quantize_int8(onnx_checkpoint / "model.onnx", [str(synthetic_dirs["utk"])])
    assert q.name == "model.int8.onnx"
    int8, fp32 = load_classifier(q), load_classifier(onnx_checkpoint)
    assert int8.config == fp32.config
    x = _faces(synthetic_dirs["folders"], fp32.preprocess, n=160)
    pi, pf = int8.probabilities(x), fp32.probabilities(x)
    assert not np.allclose(pi, pf, atol=1e-6)  # really quantised
    assert np.mean((pi > 0.5) == (pf > 0.5)) >= 0.95
    assert np.abs(pi - pf).mean() < 0.05


def test_bundle_ships_the_int8_graph_as_default(tiny_checkpoint, tmp_path, monkeypatch):
    """bundle() writes float16 weights and, as model.onnx, the int8 no-TTA graph with its own
    calibration in config.json; an older bundle's model.fast.onnx is removed, and `fast` is then
    an alias of the bundled folder. `accurate` is the int8 graph with flip TTA inside and its
    own calibration in its metadata."""
    import facegender.model_ref
    from facegender.bundle import bundle
    from facegender.checkpoint import FAST_ONNX_FILE
    from facegender.classifier import load_classifier
    from facegender.model_ref import resolve_model

    dest = tmp_path / "bundled"
    dest.mkdir()
    (dest / FAST_ONNX_FILE).write_bytes(b"stale")
    bundle(tiny_checkpoint, dest)
    assert sorted(f.name for f in dest.glob("*.onnx")) == ["model.accurate.onnx", "model.onnx"]
    run = json.loads((tiny_checkpoint / "config.json").read_text())
    config = json.loads((dest / "config.json").read_text())
    assert run["model"]["kwargs"]["tta_flip"] is True
    assert config["model"]["kwargs"]["tta_flip"] is False
    assert config["calibration"]["fitted_on"] == "validation split"
    assert config["calibration"]["temperature"] != run["calibration"]["temperature"]
    graph = onnx.load(str(dest / "model.onnx"))
    ops = {n.op_type for n in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # really int8
    int8, torch_fp32 = load_classifier(dest), load_classifier(dest, backend="torch")
    assert int8.backend == "onnx" and int8.temperature == config["calibration"]["temperature"]
    x = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    z8, z32 = int8.logits(x), torch_fp32.logits(x)
    assert not np.allclose(z8, z32, atol=1e-5)  # quantised, not a copy of the float graph
    assert np.mean((z8 >= 0) == (z32 >= 0)) >= 0.9
    assert np.corrcoef(z8, z32)[0, 1] > 0.95
    monkeypatch.setattr(facegender.model_ref, "bundled_model_dir", lambda: dest)
    refs = {(r.kind, r.folder, r.graph) for r in map(resolve_model, ("fast", "default", None))}
    assert refs == {("checkpoint", dest, dest / "model.onnx")}  # fast: the default's alias
    accurate = load_classifier("accurate")
    assert accurate.path == dest / "model.accurate.onnx"
    own = accurate.config["calibration"]
    assert accurate.config["model"]["kwargs"]["tta_flip"] is True
    assert own["graph"].endswith("with flip TTA") and accurate.temperature == own["temperature"]
    assert json.loads((dest / "config.json").read_text()) == config  # the default's untouched
    # flip TTA inside the graph: a face and its mirror get the same answer, as they do not
    # without it (a trained model is not mirror-symmetric by itself)
    mirrored = x[:, :, ::-1]
    gap = np.abs(accurate.logits(x) - accurate.logits(mirrored)).mean()
    assert gap < 0.25 * np.abs(z8 - int8.logits(mirrored)).mean()
