"""Every registered model: forward shape, determinism in eval, exact save/load round trip."""

from __future__ import annotations

import pytest
import torch

import facegender
from facegender.checkpoint import load_model, make_config, save_checkpoint
from facegender.preprocess import PreprocessConfig

MODELS = facegender.list_models()


def test_registry_lists_the_required_models():
    assert {"seed_cnn", "fgnet_s", "fgnet_m", "fgnet_l"} <= set(MODELS)
    with pytest.raises(ValueError, match="unknown model"):
        facegender.create_model("resnet9000")


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(("size", "chans"), [(64, 3), (48, 1)])
def test_forward_shape(name, size, chans):
    m = facegender.create_model(
        name, image_size=size, in_chans=chans, mean=[0.5] * chans, std=[0.25] * chans
    ).eval()
    with torch.no_grad():
        y = m(torch.rand(3, chans, size, size))
    assert y.shape == (3,) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", MODELS)
def test_save_load_round_trip_is_exact(name, tmp_path):
    torch.manual_seed(0)
    m = facegender.create_model(name, image_size=32, tta_flip=True)
    m.train()
    m(torch.rand(8, 3, 32, 32))  # move BN running stats away from their init
    m.eval()
    save_checkpoint(tmp_path, m, make_config(m, PreprocessConfig(image_size=32)))
    m2 = load_model(tmp_path)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))
    assert m2.config["model"]["name"] == name
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.pkl"))


def test_flip_tta_is_mirror_invariant():
    m = facegender.create_model("fgnet_s", tta_flip=True).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(m(x), m(torch.flip(x, dims=[3])), atol=1e-5)
